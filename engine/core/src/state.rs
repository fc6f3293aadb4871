//! The engine's state: reference data (securities, models, prices, ESG) and
//! households (accounts, lots, cash, pending orders, restrictions), plus the
//! indexes that keep reactions proportional and the counters that number the
//! outputs. Every map is ordered, so anything derived from state is stable;
//! the price table is hashed for speed and only ever iterated in order.

use crate::event::{
    AccountKind, AccountSettings, EsgMode, Frequency, ModelKind, RestrictionRule, SecurityUpserted, Side, Sleeve,
    TaxObjective, TaxProfile, TransitionPlan,
};
use crate::ids::{AccountId, HouseholdId, ModelId, OrderId, RestrictionId, SecurityId};
use crate::output::{LotRelief, OrderReason};
use chrono::{DateTime, NaiveDate, Utc};
use fxhash::FxHasher;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

/// The audit stream that reference-data inputs chain into.
pub const REFERENCE_STREAM: &str = "reference";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub securities: BTreeMap<SecurityId, SecurityUpserted>,
    pub models: BTreeMap<ModelId, Model>,
    pub prices: PriceTable,
    pub esg: BTreeMap<SecurityId, EsgScore>,
    pub households: BTreeMap<HouseholdId, Household>,
    /// Index: model → households with an account following it.
    pub subscribers: BTreeMap<ModelId, BTreeSet<HouseholdId>>,
    /// Index: security → households holding it or with a pending order in it.
    pub holders: BTreeMap<SecurityId, BTreeSet<HouseholdId>>,
    pub meta: Meta,
}

/// Counters and chain heads. They reach the outputs (sequence numbers,
/// hashes), so they are state like everything else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Inputs applied so far (including refused ones): the state version.
    pub applied: u64,
    pub order_seq: u64,
    pub audit_seq: u64,
    pub dead_letter_seq: u64,
    /// Audit chain head per stream: (records in the stream, hash of the last).
    pub chains: Chains,
    /// Event ids applied so far, with the state version at which they were.
    /// Stored one key per id, never serialized with `Meta`.
    #[serde(skip)]
    pub seen: SeenEvents,
    pub settings: EngineSettings,
}

/// The idempotency set: event id → the state version that applied it.
/// Lookups and inserts; its ids are read out only in order ([`SeenEvents::sorted_ids`]),
/// so its hash order cannot reach state or output (and its hasher is fixed,
/// so even that order would not vary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenEvents(std::collections::HashMap<String, u64, std::hash::BuildHasherDefault<std::hash::DefaultHasher>>);

impl SeenEvents {
    pub fn get(&self, event_id: &str) -> Option<&u64> {
        self.0.get(event_id)
    }
    pub fn insert(&mut self, event_id: String, applied: u64) {
        self.0.insert(event_id, applied);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Every id, in order.
    pub fn sorted_ids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.0.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// Engine-wide settings that decisions depend on. They are state: recorded
/// with the store and used unchanged by replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// A tick moving more than this fraction from the last confirmed price is
    /// held until a later tick confirms it.
    pub price_jump_max: Decimal,
    /// Decimal places of fractional-share quantities (rounded toward zero).
    pub fractional_dp: u32,
    /// How many names a direct-index sleeve holds, by the sleeve's value:
    /// each row applies from its `value_usd_min` up. A sleeve holds the full
    /// index when the row's `names` is 0 or at least the index's size.
    pub direct_index_names: Vec<SubsetRow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetRow {
    pub value_usd_min: Decimal,
    /// Names with whole shares.
    pub names: u32,
    /// Names when the account trades fractional shares (small positions cost nothing to hold).
    pub names_fractional: u32,
}

impl EngineSettings {
    /// The subset size for a direct-index sleeve worth `value` (0 = full index).
    pub fn direct_index_size(&self, value: Decimal, fractional: bool) -> u32 {
        self.direct_index_names
            .iter()
            .filter(|r| r.value_usd_min <= value)
            .max_by_key(|r| r.value_usd_min)
            .map_or(0, |r| if fractional { r.names_fractional } else { r.names })
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        // Industry practice: about 30 names at $500k, 40 at $1M, 80 at $2M,
        // the full index for large accounts.
        let row = |usd: i64, names, names_fractional| SubsetRow {
            value_usd_min: Decimal::from(usd),
            names,
            names_fractional,
        };
        Self {
            price_jump_max: Decimal::new(25, 2),
            fractional_dp: 4,
            direct_index_names: vec![
                row(0, 20, 40),
                row(250_000, 25, 50),
                row(500_000, 30, 60),
                row(1_000_000, 40, 80),
                row(2_000_000, 80, 160),
                row(5_000_000, 0, 0),
            ],
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub count: u64,
    pub hash: String,
}

/// The audit chain heads by stream name, in name order. The reference
/// stream, which every reference input (most inputs: price ticks) extends,
/// is kept apart from the households' streams: found by name in one map,
/// its head cost a dozen string comparisons, twice per input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chains {
    reference: Option<ChainHead>,
    others: BTreeMap<String, ChainHead>,
}

impl Chains {
    pub fn get(&self, stream: &str) -> Option<&ChainHead> {
        if stream == REFERENCE_STREAM {
            self.reference.as_ref()
        } else {
            self.others.get(stream)
        }
    }

    pub fn get_mut(&mut self, stream: &str) -> Option<&mut ChainHead> {
        if stream == REFERENCE_STREAM {
            self.reference.as_mut()
        } else {
            self.others.get_mut(stream)
        }
    }

    /// The head of `stream`, opened (empty) if it has none yet.
    pub fn head_mut(&mut self, stream: &str) -> &mut ChainHead {
        if stream == REFERENCE_STREAM {
            return self.reference.get_or_insert_with(ChainHead::default);
        }
        // Looked up before inserting, so an existing stream's name is not copied.
        if !self.others.contains_key(stream) {
            self.others.insert(stream.to_string(), ChainHead::default());
        }
        self.others.get_mut(stream).expect("inserted above")
    }

    pub fn insert(&mut self, stream: String, head: ChainHead) {
        if stream == REFERENCE_STREAM {
            self.reference = Some(head);
        } else {
            self.others.insert(stream, head);
        }
    }

    /// Every stream and its head, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ChainHead)> {
        let reference = self.reference.as_ref().map(|h| (REFERENCE_STREAM, h));
        use std::ops::Bound::{Excluded, Unbounded};
        let before = self.others.range::<str, _>((Unbounded, Excluded(REFERENCE_STREAM))).map(|(k, h)| (k.as_str(), h));
        let after = self.others.range::<str, _>((Excluded(REFERENCE_STREAM), Unbounded));
        before.chain(reference).chain(after.map(|(k, h)| (k.as_str(), h)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }

    pub fn len(&self) -> usize {
        self.others.len() + usize::from(self.reference.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Index<&str> for Chains {
    type Output = ChainHead;
    fn index(&self, stream: &str) -> &ChainHead {
        self.get(stream).unwrap_or_else(|| panic!("no audit chain {stream}"))
    }
}

/// As a map from stream name to head, in name order (as the map it replaced).
impl Serialize for Chains {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Chains {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let all = BTreeMap::<String, ChainHead>::deserialize(d)?;
        let mut chains = Chains::default();
        for (stream, head) in all {
            chains.insert(stream, head);
        }
        Ok(chains)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub version: u64,
    pub kind: ModelKind,
    pub weights: BTreeMap<SecurityId, Decimal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceState {
    /// The last confirmed price: the only one decisions use.
    pub price: Decimal,
    pub as_of: DateTime<Utc>,
    /// A print that jumped too far from `price`, held until a later tick confirms it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldPrint>,
    /// The state version that applied the latest tick (a repeat of that tick
    /// is a duplicate of this input).
    pub version: u64,
}

/// The price of every security, looked up on every tick and by every
/// decision. Hashed (with a fixed, seedless hasher) rather than ordered for
/// speed; nothing iterates it except [`PriceTable::sorted`], so no hash order
/// reaches state or output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceTable(HashMap<SecurityId, PriceState, BuildHasherDefault<FxHasher>>);

impl PriceTable {
    pub fn get(&self, id: &SecurityId) -> Option<&PriceState> {
        self.0.get(id)
    }
    pub fn get_mut(&mut self, id: &SecurityId) -> Option<&mut PriceState> {
        self.0.get_mut(id)
    }
    pub fn insert(&mut self, id: SecurityId, p: PriceState) -> Option<PriceState> {
        self.0.insert(id, p)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Every price in security order.
    pub fn sorted(&self) -> Vec<(&SecurityId, &PriceState)> {
        let mut v: Vec<_> = self.0.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
}

impl std::ops::Index<&SecurityId> for PriceTable {
    type Output = PriceState;
    fn index(&self, id: &SecurityId) -> &PriceState {
        &self.0[id]
    }
}

impl Serialize for PriceTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.sorted())
    }
}

impl<'de> Deserialize<'de> for PriceTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = BTreeMap::<SecurityId, PriceState>::deserialize(d)?;
        Ok(Self(m.into_iter().collect()))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPrint {
    pub price: Decimal,
    pub as_of: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsgScore {
    pub provider: String,
    pub score: Decimal,
    pub as_of: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Household {
    pub id: HouseholdId,
    pub tax: TaxProfile,
    /// Stored under keys of their own, so a household's record stays small.
    #[serde(skip)]
    pub accounts: BTreeMap<AccountId, Account>,
    pub restrictions: BTreeMap<RestrictionId, Restriction>,
    /// Realized gains (+) and losses (−) by calendar year, short and long term.
    pub realized: BTreeMap<i32, RealizedYear>,
    /// Recent loss sales and purchases, household-wide, for the wash-sale rule.
    #[serde(default, skip_serializing_if = "WashLedger::is_empty")]
    pub wash: WashLedger,
    /// The tax objective in force, once one was set (none: harvest losses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<ObjectiveInForce>,
    /// Scheduled withdrawals (retirement income), by schedule id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub income: BTreeMap<String, IncomeSchedule>,
    /// A tax-aware transition from legacy positions, while one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
}

/// A transition and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub plan: TransitionPlan,
    /// The first period starts on this day; period k on this day + k periods.
    pub started: NaiveDate,
    /// Periods begun so far.
    pub periods_done: u32,
    /// Net realized gain of the transition's executed sales, in all and by calendar year.
    pub used_usd: Decimal,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used_by_year: BTreeMap<i32, Decimal>,
    /// The day it was found complete (no taxable account drifting more than `complete_below`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<NaiveDate>,
    /// Starts at 1 and grows with every transition_set.
    pub version: u32,
}

impl Transition {
    /// Whether it still steers the household's sales.
    pub fn active(&self) -> bool {
        self.completed.is_none()
    }

    /// The day the next period starts.
    pub fn next_period(&self) -> NaiveDate {
        add_months(self.started, self.plan.period.months() * self.periods_done)
    }
}

/// A scheduled withdrawal and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomeSchedule {
    pub account: AccountId,
    pub amount: Decimal,
    pub frequency: Frequency,
    /// The next payment date.
    pub next_payment: NaiveDate,
    pub lead_days: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yield_tilt: Option<Decimal>,
    /// The payment whose cash is set aside (reserved in the account), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_for: Option<NaiveDate>,
    /// Starts at 1 and grows with every change.
    pub version: u32,
}

impl IncomeSchedule {
    /// Whether a payment may fall on `d`.
    pub fn pays_on(&self, d: NaiveDate) -> bool {
        self.until.is_none_or(|u| d <= u)
    }

    /// The payment after `d`: the same day of the month `months` later
    /// (the month's last day when it is shorter).
    pub fn after(&self, d: NaiveDate) -> NaiveDate {
        add_months(d, self.frequency.months())
    }
}

/// `d` plus `months` calendar months, clamped to the month's last day.
pub fn add_months(d: NaiveDate, months: u32) -> NaiveDate {
    use chrono::Datelike;
    let total = d.year() * 12 + d.month0() as i32 + months as i32;
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    (0..4)
        .find_map(|back| NaiveDate::from_ymd_opt(y, m, d.day().saturating_sub(back)))
        .expect("a month has at least 28 days")
}

/// A tax objective as set, with when and how often it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveInForce {
    pub objective: TaxObjective,
    pub since: DateTime<Utc>,
    /// Starts at 1 and grows with every change.
    pub version: u32,
}

/// The wash-sale rule's memory (IRC §1091), household-wide with IRAs
/// included: shares sold at a loss that a purchase within 30 days after could
/// still replace, and shares bought that a loss sale within 30 days after
/// could still be matched with. A share serves as a replacement once.
/// Entries older than the window are dropped when the household next trades.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WashLedger {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_sales: Vec<LossSale>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buys: Vec<RecentBuy>,
}

impl WashLedger {
    pub fn is_empty(&self) -> bool {
        self.loss_sales.is_empty() && self.buys.is_empty()
    }

    /// Drops what no trade on or after `on` can match any more.
    pub fn prune(&mut self, on: NaiveDate) {
        let first = on - chrono::Days::new(WASH_WINDOW_DAYS);
        self.loss_sales.retain(|s| s.date >= first && s.open_shares > Decimal::ZERO);
        self.buys.retain(|b| b.date >= first && b.open_shares > Decimal::ZERO);
    }
}

/// Days either side of a loss sale in which a purchase makes it a wash sale.
pub const WASH_WINDOW_DAYS: u64 = 30;

/// Whether `a` and `b` are within the wash-sale window of each other.
pub fn within_wash_window(a: NaiveDate, b: NaiveDate) -> bool {
    (a - b).num_days().unsigned_abs() <= WASH_WINDOW_DAYS
}

/// Shares of one lot sold at a loss in a taxable account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossSale {
    /// The fill that sold them (the sale the audit names).
    pub sale_event_id: String,
    pub account: AccountId,
    pub security: SecurityId,
    /// The wash-sale key: the security's identical group, else the security.
    pub key: String,
    pub date: NaiveDate,
    pub lot_id: u64,
    /// Shares whose loss a purchase could still disallow.
    pub open_shares: Decimal,
    /// Loss per share, positive.
    pub loss_per_share: Decimal,
    /// Days the sold shares were held (sale date − holding start): a
    /// replacement's holding period starts that many days earlier.
    pub held_days: i64,
}

/// Shares bought (in any account) that a later loss sale could be matched with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentBuy {
    pub account: AccountId,
    pub security: SecurityId,
    pub key: String,
    pub date: NaiveDate,
    pub lot_id: u64,
    /// Shares not yet used as a replacement.
    pub open_shares: Decimal,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealizedYear {
    /// Short-term gains minus losses, as sold (before wash-sale disallowance).
    pub short_term_usd: Decimal,
    pub long_term_usd: Decimal,
    /// Losses of this year's sales disallowed by the wash-sale rule (positive).
    pub disallowed_usd: Decimal,
}

impl RealizedYear {
    /// Net gain for the tax budget: gains minus the losses that count.
    pub fn net_usd(&self) -> Decimal {
        self.short_term_usd + self.long_term_usd + self.disallowed_usd
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Restriction {
    pub rule: RestrictionRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    pub effective: DateTime<Utc>,
    /// Starts at 1 and grows with every change.
    pub version: u32,
}

impl Restriction {
    pub fn in_force(&self, account: &AccountId, now: DateTime<Utc>) -> bool {
        self.effective <= now && self.account.as_ref().is_none_or(|a| a == account)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub kind: AccountKind,
    pub sleeves: Vec<Sleeve>,
    pub settings: AccountSettings,
    pub cash: Decimal,
    /// Withdrawals requested and not yet paid out (paid as cash allows).
    pub withdrawal_due: Decimal,
    /// Cash set aside for scheduled withdrawals raised ahead of their date.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub income_reserved: Decimal,
    /// Open lots by security, in acquisition order. Stored per security under
    /// keys of their own, so a trade rewrites one security's lots only.
    #[serde(skip)]
    pub lots: BTreeMap<SecurityId, Vec<Lot>>,
    /// Open orders, each stored under a key of its own (a fill rewrites one).
    #[serde(skip)]
    pub pending: BTreeMap<OrderId, PendingOrder>,
    /// Next lot id in this account (lot ids never repeat).
    pub next_lot_id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub lot_id: u64,
    pub quantity: Decimal,
    /// Adjusted basis per share (wash-sale adjustments included).
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
    /// Start of the holding period for the one-year test (differs from
    /// `acquired` when a wash sale carried a holding period over).
    pub holding_start: NaiveDate,
}

impl Lot {
    /// Long term means held more than one year: a lot bought on 2024-03-15
    /// is long-term when sold on 2025-03-16 or later, not on 2025-03-15.
    pub fn is_long_term(&self, on: NaiveDate) -> bool {
        on > one_year_after(self.holding_start)
    }
}

/// The same calendar day one year later (Feb 29 maps to Feb 28).
pub fn one_year_after(d: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    d.with_year(d.year() + 1).unwrap_or_else(|| NaiveDate::from_ymd_opt(d.year() + 1, 2, 28).expect("Feb 28 exists"))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOrder {
    pub security: SecurityId,
    pub side: Side,
    /// Shares not yet executed.
    pub open_quantity: Decimal,
    pub ref_price: Decimal,
    pub reason: OrderReason,
    /// For sells: the lots still to relieve, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotRelief>,
}

impl Account {
    pub fn quantity(&self, security: &SecurityId) -> Decimal {
        self.lots.get(security).map_or(Decimal::ZERO, |lots| lots.iter().map(|l| l.quantity).sum())
    }

    /// Held quantity plus open buys minus open sells.
    pub fn projected_quantity(&self, security: &SecurityId) -> Decimal {
        let mut q = self.quantity(security);
        for p in self.pending.values().filter(|p| &p.security == security) {
            match p.side {
                Side::Buy => q += p.open_quantity,
                Side::Sell => q -= p.open_quantity,
            }
        }
        q
    }

    /// Cash after every open order executes at its reference price and due
    /// withdrawals (and those set aside for) are paid.
    pub fn projected_cash(&self) -> Decimal {
        let mut c = self.cash - self.withdrawal_due - self.income_reserved;
        for p in self.pending.values() {
            let v = p.open_quantity * p.ref_price;
            match p.side {
                Side::Buy => c -= v,
                Side::Sell => c += v,
            }
        }
        c
    }
}

impl Household {
    pub fn restrictions_in_force<'a>(
        &'a self,
        account: &'a AccountId,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = (&'a RestrictionId, &'a Restriction)> + 'a {
        self.restrictions.iter().filter(move |(_, r)| r.in_force(account, now))
    }

    /// The tax objective in force (harvest losses unless one was set).
    pub fn tax_objective(&self) -> &TaxObjective {
        const DEFAULT: TaxObjective = TaxObjective::HarvestLosses;
        self.objective.as_ref().map_or(&DEFAULT, |o| &o.objective)
    }

    pub fn has_esg_screen(&self) -> bool {
        self.restrictions.values().any(|r| matches!(r.rule, RestrictionRule::EsgMinimum { .. }))
    }

    pub fn models(&self) -> BTreeSet<ModelId> {
        self.accounts.values().flat_map(|a| a.sleeves.iter().map(|s| s.model.clone())).collect()
    }
}

impl EsgMode {
    pub fn sells(self) -> bool {
        self == EsgMode::Divest
    }
}
