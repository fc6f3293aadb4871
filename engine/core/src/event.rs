//! Input events: the envelope and every payload of DESIGN §3, in their domain
//! form. The JSON form is this module's serde representation; the protobuf
//! form lives in the `overlay-proto` crate and converts into these types.
//!
//! Validation that needs no state happens here, at decode time
//! ([`Envelope::validate`]): a bad number never reaches a decision.

use crate::ids::{AccountId, HouseholdId, ModelId, OrderId, RestrictionId, SecurityId};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The schema versions this build reads. Version 1 is the current one.
pub const SCHEMA_VERSION_CURRENT: u32 = 1;
/// Bounds that keep one event from holding the engine hostage.
pub const MODEL_SECURITIES_MAX: usize = 5_000;
pub const HOUSEHOLD_ACCOUNTS_MAX: usize = 64;
pub const ACCOUNT_SLEEVES_MAX: usize = 16;
pub const ACCOUNT_OPENING_LOTS_MAX: usize = 20_000;
pub const ID_LEN_MAX: usize = 128;
/// Most attributes one security carries, and the longest attribute name.
pub const SECURITY_ATTRIBUTES_MAX: usize = 64;
pub const ATTRIBUTE_NAME_LEN_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Producer-assigned idempotency key.
    pub event_id: String,
    pub producer: String,
    pub event_time: DateTime<Utc>,
    pub schema_version: u32,
    pub payload: Payload,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    SecurityUpserted(SecurityUpserted),
    ModelPublished(ModelPublished),
    PriceTick(PriceTick),
    EsgScoreChanged(EsgScoreChanged),
    HouseholdUpserted(HouseholdUpserted),
    RestrictionEdited(RestrictionEdited),
    CashFlow(CashFlow),
    Fill(Fill),
    Clock(Clock),
    CorporateAction(CorporateAction),
    TaxObjectiveSet(TaxObjectiveSet),
    WithdrawalScheduled(WithdrawalScheduled),
    TransitionSet(TransitionSet),
}

/// Which stream an event belongs to: reference data is read in full by every
/// engine instance; household events are keyed (and partitioned) by household.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKey<'a> {
    Reference(&'a str),
    Household(&'a HouseholdId),
}

impl Payload {
    pub fn type_name(&self) -> &'static str {
        match self {
            Payload::SecurityUpserted(_) => "security_upserted",
            Payload::ModelPublished(_) => "model_published",
            Payload::PriceTick(_) => "price_tick",
            Payload::EsgScoreChanged(_) => "esg_score_changed",
            Payload::HouseholdUpserted(_) => "household_upserted",
            Payload::RestrictionEdited(_) => "restriction_edited",
            Payload::CashFlow(_) => "cash_flow",
            Payload::Fill(_) => "fill",
            Payload::Clock(_) => "clock",
            Payload::CorporateAction(_) => "corporate_action",
            Payload::TaxObjectiveSet(_) => "tax_objective_set",
            Payload::WithdrawalScheduled(_) => "withdrawal_scheduled",
            Payload::TransitionSet(_) => "transition_set",
        }
    }

    pub fn key(&self) -> EventKey<'_> {
        match self {
            Payload::SecurityUpserted(e) => EventKey::Reference(e.security.as_str()),
            Payload::ModelPublished(e) => EventKey::Reference(e.model.as_str()),
            Payload::PriceTick(e) => EventKey::Reference(e.security.as_str()),
            Payload::EsgScoreChanged(e) => EventKey::Reference(e.security.as_str()),
            Payload::CorporateAction(e) => EventKey::Reference(e.security.as_str()),
            Payload::Clock(_) => EventKey::Reference("clock"),
            Payload::HouseholdUpserted(e) => EventKey::Household(&e.household),
            Payload::RestrictionEdited(e) => EventKey::Household(&e.household),
            Payload::CashFlow(e) => EventKey::Household(&e.household),
            Payload::Fill(e) => EventKey::Household(&e.household),
            Payload::TaxObjectiveSet(e) => EventKey::Household(&e.household),
            Payload::WithdrawalScheduled(e) => EventKey::Household(&e.household),
            Payload::TransitionSet(e) => EventKey::Household(&e.household),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityUpserted {
    pub security: SecurityId,
    #[serde(default)]
    pub name: String,
    pub sector: String,
    #[serde(default)]
    pub sub_industry: String,
    /// Securities in one group are "substantially identical" for wash sales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identical_group: Option<String>,
    /// Preferred replacements, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitutes: Vec<SecurityId>,
    /// Numeric attributes by name, for attribute filters and tilts: a
    /// dividend yield (`0.031`), a risk or ESG rating, a flag as 1 or 0
    /// (`profitable`). Names are lower-case letters, digits and `_`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Decimal>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Standard,
    DirectIndex,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPublished {
    pub model: ModelId,
    pub version: u64,
    #[serde(default)]
    pub kind: ModelKind,
    pub weights: Vec<ModelWeight>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelWeight {
    pub security: SecurityId,
    pub weight: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTick {
    pub security: SecurityId,
    pub price: Decimal,
    pub as_of: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EsgScoreChanged {
    pub security: SecurityId,
    pub provider: String,
    /// Score on the provider's scale (0–100 by convention here).
    pub score: Decimal,
    pub as_of: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    #[default]
    Taxable,
    Ira,
    Roth,
}

impl AccountKind {
    pub fn is_taxable(self) -> bool {
        self == AccountKind::Taxable
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LotPolicy {
    /// Least tax per dollar sold: losses first, then long-term gains, then short-term gains.
    #[default]
    MinTax,
    Fifo,
    Hifo,
}

/// Per-account trading settings. Fractions are plain decimals (0.03 = 3%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    pub fractional: bool,
    pub min_trade_usd: Decimal,
    pub cash_reserve_pct: Decimal,
    /// Absolute drift band, as a fraction of account value (0.03 = ±3 percentage points).
    pub drift_band_abs: Decimal,
    /// Relative drift band, as a fraction of the target weight (0.5 = ±half the target).
    pub drift_band_rel: Decimal,
    pub lot_policy: LotPolicy,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            fractional: false,
            min_trade_usd: Decimal::new(100, 0),
            cash_reserve_pct: Decimal::new(1, 2),
            drift_band_abs: Decimal::new(3, 2),
            drift_band_rel: Decimal::new(5, 1),
            lot_policy: LotPolicy::MinTax,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleeve {
    pub model: ModelId,
    /// Share of the account that follows this model (sleeves sum to 1).
    pub percent: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpeningLot {
    pub security: SecurityId,
    pub quantity: Decimal,
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub account: AccountId,
    #[serde(default)]
    pub kind: AccountKind,
    #[serde(default)]
    pub sleeves: Vec<Sleeve>,
    #[serde(default)]
    pub settings: AccountSettings,
    /// Cash and lots the account arrives with; applied only when the account is created.
    #[serde(default)]
    pub opening_cash: Decimal,
    #[serde(default)]
    pub opening_lots: Vec<OpeningLot>,
}

/// Household tax profile. Rates are fractions (0.37 = 37%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaxProfile {
    pub short_term_rate: Decimal,
    pub long_term_rate: Decimal,
    /// Most net realized gain accepted per calendar year; none = no budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annual_gain_budget_usd: Option<Decimal>,
    /// A discretionary sell keeps a lot with a short-term gain that turns
    /// long-term within this many days (forced sales do not wait).
    pub short_term_deferral_days: u32,
    pub harvest: HarvestSettings,
}

impl Default for TaxProfile {
    fn default() -> Self {
        Self {
            short_term_rate: Decimal::new(37, 2),
            long_term_rate: Decimal::new(20, 2),
            annual_gain_budget_usd: None,
            short_term_deferral_days: 30,
            harvest: HarvestSettings::default(),
        }
    }
}

/// Tax-loss harvesting in taxable accounts, scanned on market-close clock events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HarvestSettings {
    pub enabled: bool,
    /// A lot is harvested when its price is at least this fraction below its basis (0.1 = 10%)…
    pub min_loss_pct: Decimal,
    /// …and the security's harvestable lots lose at least this much in all.
    pub min_loss_usd: Decimal,
    /// After the wash-sale window, sell the substitute and buy the original
    /// back (false: the substitute keeps standing in for it).
    pub swap_back: bool,
}

impl Default for HarvestSettings {
    fn default() -> Self {
        Self { enabled: true, min_loss_pct: Decimal::new(10, 2), min_loss_usd: Decimal::new(500, 0), swap_back: true }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdUpserted {
    pub household: HouseholdId,
    #[serde(default)]
    pub tax: TaxProfile,
    pub accounts: Vec<AccountSpec>,
    /// Restrictions that come with the household (at onboarding, the client's
    /// rules arrive with the account), so its first decision honours them.
    /// Each is added, or changed where it differs from the one in force;
    /// restrictions not listed are kept (remove them with restriction_edited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<RestrictionSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionSpec {
    pub restriction_id: RestrictionId,
    pub rule: RestrictionRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    pub effective: DateTime<Utc>,
}

/// Most lots one fill names.
pub const FILL_LOTS_MAX: usize = 1024;

/// Most restrictions one household carries.
pub const HOUSEHOLD_RESTRICTIONS_MAX: usize = 256;

/// Most withdrawal schedules one household carries.
pub const HOUSEHOLD_SCHEDULES_MAX: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EsgMode {
    /// Sell holdings below the minimum.
    Divest,
    /// Keep holdings below the minimum, but buy no more.
    NoNewBuys,
}

/// One client rule. `account` narrows it to one account; otherwise it applies
/// to every account of the household.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestrictionRule {
    DoNotBuy {
        security: SecurityId,
    },
    DoNotHold {
        security: SecurityId,
    },
    SectorExclusion {
        sector: String,
    },
    EsgMinimum {
        min_score: Decimal,
        mode: EsgMode,
    },
    KeepLegacy {
        security: SecurityId,
    },
    MaxWeight {
        security: SecurityId,
        max_weight: Decimal,
    },
    Substitute {
        security: SecurityId,
        substitute: SecurityId,
    },
    /// Moves the target's weight in one sector, or one sub-industry, by
    /// `delta` relative to the model (−0.05: five percentage points less),
    /// taking it from or giving it to the rest of the target pro rata.
    Tilt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sector: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub_industry: Option<String>,
        delta: Decimal,
    },
    /// Moves `delta` of the target's weight toward the names whose attribute
    /// is above the target's weighted average (away from them when negative),
    /// pro rata: a yield tilt is `attribute: dividend_yield`.
    AttributeTilt {
        attribute: String,
        delta: Decimal,
    },
    /// Securities whose attribute is below `min` or above `max` are excluded
    /// like a sector (sold, not bought, their weight redistributed), or,
    /// with `max_weight`, capped at that weight each. Securities without the
    /// attribute pass.
    AttributeFilter {
        attribute: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<Decimal>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<Decimal>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_weight: Option<Decimal>,
    },
}

impl RestrictionRule {
    /// Whether a security fails an attribute filter (a missing attribute passes).
    pub fn attribute_fails(min: Option<Decimal>, max: Option<Decimal>, value: Option<Decimal>) -> bool {
        value.is_some_and(|v| min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOp {
    Add,
    Change,
    Remove,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionEdited {
    pub household: HouseholdId,
    pub restriction_id: RestrictionId,
    pub op: EditOp,
    /// Required for add and change; absent for remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RestrictionRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    /// When the edit takes effect (it is stored at once, enforced from then).
    pub effective: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CashFlowKind {
    Deposit,
    Withdrawal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CashFlow {
    pub household: HouseholdId,
    pub account: AccountId,
    pub kind: CashFlowKind,
    pub amount: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillStatus {
    /// Part of the order executed; more fills may follow.
    Partial,
    /// The order is complete with this fill.
    Filled,
    /// The custodian refused the order; nothing executed in this report.
    Rejected,
    /// Nothing more will execute (the rest of the order is released).
    Cancelled,
}

/// A custodian execution report. With `order_id` it answers an engine order;
/// without, it reports a trade made outside the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    pub household: HouseholdId,
    pub account: AccountId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    pub security: SecurityId,
    pub side: Side,
    pub status: FillStatus,
    /// Shares executed in this report (0 for a rejection).
    pub quantity: Decimal,
    pub price: Decimal,
    pub trade_date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Specific identification for a sell from outside the engine: the lots to
    /// relieve and how many shares of each (they must add up to `quantity`).
    /// Without it, an order's own lots are relieved, else the account's policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotPick>,
}

impl Fill {
    /// A custodian's report that `order` was filled in full at `price` on `trade_date`.
    pub fn of_order(order: &crate::output::Order, price: Decimal, trade_date: NaiveDate) -> Self {
        Self {
            household: order.household.clone(),
            account: order.account.clone(),
            order_id: Some(order.order_id.clone()),
            security: order.security.clone(),
            side: order.side,
            status: FillStatus::Filled,
            quantity: order.quantity,
            price,
            trade_date,
            reason: None,
            lots: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotPick {
    pub lot_id: u64,
    pub quantity: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    MarketClose,
    Review,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clock {
    pub kind: ClockKind,
    pub trade_date: NaiveDate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum CorporateActionKind {
    /// `numerator` new shares for every `denominator` old ones (7-for-1: 7 / 1).
    Split { numerator: u32, denominator: u32 },
}

/// (No `deny_unknown_fields` here: serde cannot combine it with `flatten`;
/// unknown fields are still refused by the flattened action's own rule.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorporateAction {
    pub security: SecurityId,
    pub ex_date: NaiveDate,
    #[serde(flatten)]
    pub kind: CorporateActionKind,
}

/// What a household wants from its taxes this year (taxable accounts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaxObjective {
    /// Harvest losses on the daily close (the default).
    #[default]
    HarvestLosses,
    /// Realize net gains up to `target_usd` this calendar year (to use a low
    /// bracket or offset carried losses): on the daily close, gain lots are
    /// sold and bought straight back; no loss is harvested.
    RealizeGains { target_usd: Decimal },
    /// Keep this year's net realized gain within ±`tolerance_usd`: sales
    /// are trimmed so it stays inside, harvesting stops at −tolerance, and
    /// gains are realized to bring it back up when it falls below.
    TaxNeutral { tolerance_usd: Decimal },
}

/// A household's tax objective changed; later decisions follow it.
/// Produced by the advisor workstation / CRM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxObjectiveSet {
    pub household: HouseholdId,
    pub objective: TaxObjective,
}

/// How often a scheduled withdrawal is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    Monthly,
    Quarterly,
    Annually,
}

impl Frequency {
    /// Months between payments.
    pub fn months(self) -> u32 {
        match self {
            Frequency::Monthly => 1,
            Frequency::Quarterly => 3,
            Frequency::Annually => 12,
        }
    }
}

/// Most days ahead of a payment its cash may be raised.
pub const WITHDRAWAL_LEAD_DAYS_MAX: u32 = 60;

fn lead_days_default() -> u32 {
    5
}

/// A retirement income: `amount` paid out of `account` every period from
/// `first_payment` (until `until`, if given). The cash is raised `lead_days`
/// ahead of each payment from the lots that cost the least tax while drift
/// stays inside the bands. Sending the same `schedule_id` again replaces the
/// schedule. Produced by the advisor workstation / CRM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalScheduled {
    pub household: HouseholdId,
    pub account: AccountId,
    pub schedule_id: String,
    pub amount: Decimal,
    pub frequency: Frequency,
    pub first_payment: NaiveDate,
    #[serde(default = "lead_days_default")]
    pub lead_days: u32,
    /// Last day a payment may fall on (none: open-ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<NaiveDate>,
    /// Tilt the account toward names with a dividend yield above the
    /// target's average by this much (like an `attribute_tilt` on
    /// `dividend_yield`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yield_tilt: Option<Decimal>,
}

/// Most periods a transition is planned over, and most positions it keeps.
pub const TRANSITION_PERIODS_MAX: u32 = 120;
pub const TRANSITION_KEEP_MAX: usize = 256;

fn complete_below_default() -> Decimal {
    Decimal::new(2, 2)
}

/// How a household funded with legacy positions moves to its model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionPlan {
    /// How often a period starts (its first clock trades).
    pub period: Frequency,
    /// Periods the tax budget is spread over (after them, what is left may be used at once).
    pub periods: u32,
    /// Most net realized gain over the whole transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<Decimal>,
    /// Most net realized gain of the transition in one calendar year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly_budget_usd: Option<Decimal>,
    /// Positions the client keeps (a concentrated holding, say): never sold,
    /// counted toward the account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<SecurityId>,
    /// The transition is complete once no taxable account drifts more than
    /// this (half the sum of |actual − target| weights). Default 0.02.
    #[serde(default = "complete_below_default")]
    pub complete_below: Decimal,
}

/// A household starts (or replaces) a tax-aware transition to its model:
/// each period, legacy positions are sold toward the target within the tax
/// budget, losses and long-term gains first. Between periods nothing is
/// sold at a gain. Produced by the advisor workstation / CRM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionSet {
    pub household: HouseholdId,
    pub plan: TransitionPlan,
}

/// Why an input was refused. The kind is stable (it is matched on by tools);
/// the message is for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{kind}: {message}")]
pub struct InputError {
    pub kind: InputErrorKind,
    pub message: String,
    /// The refused event's id and type, when it parsed but did not validate
    /// (so its dead letter names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip)]
    pub event_type: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputErrorKind {
    /// The bytes are not a well-formed event (bad JSON or protobuf, missing field).
    Malformed,
    UnsupportedSchemaVersion,
    /// A field has a value outside its domain (negative quantity, weight > 1, …).
    InvalidValue,
    /// The event names something the engine does not know (unknown security, account, order).
    UnknownReference,
    /// The event is older than what it would replace (stale model version, old price).
    OutOfOrder,
}

impl std::fmt::Display for InputErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputErrorKind::Malformed => "malformed",
            InputErrorKind::UnsupportedSchemaVersion => "unsupported_schema_version",
            InputErrorKind::InvalidValue => "invalid_value",
            InputErrorKind::UnknownReference => "unknown_reference",
            InputErrorKind::OutOfOrder => "out_of_order",
        })
    }
}

impl InputError {
    pub fn new(kind: InputErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), event_id: None, event_type: None }
    }
    /// The same error, naming the event it refuses.
    pub fn concerning(mut self, env: &Envelope) -> Self {
        self.event_id = Some(env.event_id.clone());
        self.event_type = Some(env.payload.type_name());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(InputErrorKind::InvalidValue, message)
    }
}

fn check_id(field: &str, value: &str) -> Result<(), InputError> {
    if value.is_empty() {
        return Err(InputError::invalid(format!("{field} is empty")));
    }
    if value.len() > ID_LEN_MAX {
        return Err(InputError::invalid(format!("{field} is longer than {ID_LEN_MAX} bytes")));
    }
    // (ASCII's control characters are those below 0x20 and 0x7f; the rest of
    // Unicode's, 0x80..=0x9f, are not ASCII.)
    let bad = if value.is_ascii() {
        value.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'/')
    } else {
        value.chars().any(|c| c.is_control() || c == '/')
    };
    if bad {
        return Err(InputError::invalid(format!("{field} {value:?} contains a control character or '/'")));
    }
    Ok(())
}

/// Times travel as microseconds since the epoch in protobuf: finer ones, and
/// leap seconds (`…:59:60`, which the epoch count cannot name and would read
/// back as the next minute), would not survive the wire, so they are refused
/// rather than silently changed.
fn check_time(field: &str, t: &DateTime<Utc>) -> Result<(), InputError> {
    if t.timestamp_subsec_nanos() >= 1_000_000_000 {
        return Err(InputError::invalid(format!("{field} is a leap second ({t}); the wire cannot carry one")));
    }
    if !t.timestamp_subsec_nanos().is_multiple_of(1_000) {
        return Err(InputError::invalid(format!("{field} has sub-microsecond precision ({t}); microseconds at most")));
    }
    Ok(())
}

/// A date the wire can carry: `YYYY-MM-DD`, a year of four digits (0 to
/// 9999). chrono reads and writes years beyond it with a sign ("-0025"),
/// which the protobuf form refuses.
fn check_date(field: &str, d: NaiveDate) -> Result<(), InputError> {
    if !(0..=9999).contains(&d.year()) {
        return Err(InputError::invalid(format!("{field} {d} is outside the years 0000 to 9999")));
    }
    Ok(())
}

pub(crate) fn check_positive(field: &str, value: Decimal) -> Result<(), InputError> {
    if value <= Decimal::ZERO {
        return Err(InputError::invalid(format!("{field} must be positive, got {value}")));
    }
    Ok(())
}

pub(crate) fn check_non_negative(field: &str, value: Decimal) -> Result<(), InputError> {
    if value < Decimal::ZERO {
        return Err(InputError::invalid(format!("{field} must not be negative, got {value}")));
    }
    Ok(())
}

fn check_fraction(field: &str, value: Decimal) -> Result<(), InputError> {
    if value < Decimal::ZERO || value > Decimal::ONE {
        return Err(InputError::invalid(format!("{field} must be between 0 and 1, got {value}")));
    }
    Ok(())
}

/// Attribute names: 1 to 64 of `a-z`, `0-9`, `_`.
fn check_attribute_name(name: &str) -> Result<(), InputError> {
    if name.is_empty() || name.len() > ATTRIBUTE_NAME_LEN_MAX {
        return Err(InputError::invalid(format!(
            "attribute name {name:?} must be 1 to {ATTRIBUTE_NAME_LEN_MAX} bytes"
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(InputError::invalid(format!("attribute name {name:?} may hold only a-z, 0-9 and _")));
    }
    Ok(())
}

/// A tilt moves at most the whole account: −1 ≤ delta ≤ 1, and not 0.
fn check_delta(value: Decimal) -> Result<(), InputError> {
    if value.is_zero() || value < -Decimal::ONE || value > Decimal::ONE {
        return Err(InputError::invalid(format!("delta must be between -1 and 1 and not 0, got {value}")));
    }
    Ok(())
}

fn check_count(field: &str, len: usize, max: usize) -> Result<(), InputError> {
    if len > max {
        return Err(InputError::invalid(format!("{field} has {len} entries, more than the limit of {max}")));
    }
    Ok(())
}

impl Envelope {
    /// Checks everything that can be checked without state. Upgrading older
    /// schema versions would happen here; version 1 is the first.
    pub fn validate(&self) -> Result<(), InputError> {
        if self.schema_version != SCHEMA_VERSION_CURRENT {
            return Err(InputError::new(
                InputErrorKind::UnsupportedSchemaVersion,
                format!(
                    "schema_version {} is not supported (this build reads {})",
                    self.schema_version, SCHEMA_VERSION_CURRENT
                ),
            ));
        }
        check_id("event_id", &self.event_id)?;
        check_id("producer", &self.producer)?;
        check_time("event_time", &self.event_time)?;
        self.payload.validate()
    }
}

impl Payload {
    pub fn validate(&self) -> Result<(), InputError> {
        match self {
            Payload::SecurityUpserted(e) => {
                check_id("security", e.security.as_str())?;
                if e.sector.is_empty() {
                    return Err(InputError::invalid("sector is empty"));
                }
                for s in &e.substitutes {
                    check_id("substitute", s.as_str())?;
                    if *s == e.security {
                        return Err(InputError::invalid(format!("{} names itself as a substitute", e.security)));
                    }
                }
                check_count("attributes", e.attributes.len(), SECURITY_ATTRIBUTES_MAX)?;
                for name in e.attributes.keys() {
                    check_attribute_name(name)?;
                }
                Ok(())
            }
            Payload::ModelPublished(e) => validate_model(e),
            Payload::PriceTick(e) => {
                check_id("security", e.security.as_str())?;
                check_time("as_of", &e.as_of)?;
                check_positive("price", e.price)
            }
            Payload::EsgScoreChanged(e) => {
                check_id("security", e.security.as_str())?;
                check_id("provider", &e.provider)?;
                check_time("as_of", &e.as_of)?;
                if e.score < Decimal::ZERO || e.score > Decimal::ONE_HUNDRED {
                    return Err(InputError::invalid(format!("score must be between 0 and 100, got {}", e.score)));
                }
                Ok(())
            }
            Payload::HouseholdUpserted(e) => validate_household(e),
            Payload::RestrictionEdited(e) => {
                check_id("household", e.household.as_str())?;
                check_id("restriction_id", e.restriction_id.as_str())?;
                check_time("effective", &e.effective)?;
                if let Some(a) = &e.account {
                    check_id("account", a.as_str())?;
                }
                match (e.op, &e.rule) {
                    (EditOp::Remove, _) => Ok(()),
                    (_, None) => Err(InputError::invalid("add and change need a rule")),
                    (_, Some(rule)) => validate_rule(rule),
                }
            }
            Payload::CashFlow(e) => {
                check_id("household", e.household.as_str())?;
                check_id("account", e.account.as_str())?;
                check_positive("amount", e.amount)
            }
            Payload::Fill(e) => {
                check_id("household", e.household.as_str())?;
                check_id("account", e.account.as_str())?;
                check_id("security", e.security.as_str())?;
                if let Some(o) = &e.order_id {
                    check_id("order_id", o.as_str())?;
                }
                check_date("trade_date", e.trade_date)?;
                match e.status {
                    FillStatus::Partial | FillStatus::Filled => {
                        if e.status == FillStatus::Partial || e.order_id.is_none() {
                            check_positive("quantity", e.quantity)?;
                        } else {
                            check_non_negative("quantity", e.quantity)?;
                        }
                        check_positive("price", e.price)?;
                        if !e.lots.is_empty() {
                            if e.side != Side::Sell {
                                return Err(InputError::invalid("only a sell names the lots it relieves"));
                            }
                            check_count("lots", e.lots.len(), FILL_LOTS_MAX)?;
                            let mut sum = Decimal::ZERO;
                            for l in &e.lots {
                                check_positive(&format!("quantity of lot {}", l.lot_id), l.quantity)?;
                                sum += l.quantity;
                            }
                            if sum != e.quantity {
                                return Err(InputError::invalid(format!(
                                    "the named lots add up to {sum} shares, but the fill is for {}",
                                    e.quantity
                                )));
                            }
                        }
                        Ok(())
                    }
                    FillStatus::Rejected | FillStatus::Cancelled => {
                        if e.order_id.is_none() {
                            return Err(InputError::invalid("a rejection or cancellation must name its order_id"));
                        }
                        check_non_negative("quantity", e.quantity)?;
                        check_non_negative("price", e.price)
                    }
                }
            }
            Payload::Clock(e) => check_date("trade_date", e.trade_date),
            Payload::TaxObjectiveSet(e) => {
                check_id("household", e.household.as_str())?;
                match e.objective {
                    TaxObjective::HarvestLosses => Ok(()),
                    TaxObjective::RealizeGains { target_usd } => check_positive("target_usd", target_usd),
                    TaxObjective::TaxNeutral { tolerance_usd } => check_non_negative("tolerance_usd", tolerance_usd),
                }
            }
            Payload::WithdrawalScheduled(e) => {
                check_id("household", e.household.as_str())?;
                check_id("account", e.account.as_str())?;
                check_id("schedule_id", &e.schedule_id)?;
                check_positive("amount", e.amount)?;
                check_date("first_payment", e.first_payment)?;
                if let Some(until) = e.until {
                    check_date("until", until)?;
                }
                if e.lead_days > WITHDRAWAL_LEAD_DAYS_MAX {
                    return Err(InputError::invalid(format!(
                        "lead_days {} is more than {WITHDRAWAL_LEAD_DAYS_MAX}",
                        e.lead_days
                    )));
                }
                if let Some(until) = e.until {
                    if until < e.first_payment {
                        return Err(InputError::invalid(format!(
                            "until {until} is before the first payment {}",
                            e.first_payment
                        )));
                    }
                }
                if let Some(t) = e.yield_tilt {
                    check_delta(t)?;
                }
                Ok(())
            }
            Payload::TransitionSet(e) => {
                check_id("household", e.household.as_str())?;
                validate_transition(&e.plan)
            }
            Payload::CorporateAction(e) => {
                check_id("security", e.security.as_str())?;
                check_date("ex_date", e.ex_date)?;
                match e.kind {
                    CorporateActionKind::Split { numerator, denominator } => {
                        if numerator == 0 || denominator == 0 {
                            return Err(InputError::invalid("split ratio terms must be positive"));
                        }
                        if numerator == denominator {
                            return Err(InputError::invalid("a split of 1-for-1 changes nothing"));
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}

/// Checks a transition plan (also a household snapshot's).
pub fn validate_transition(p: &TransitionPlan) -> Result<(), InputError> {
    if p.periods == 0 || p.periods > TRANSITION_PERIODS_MAX {
        return Err(InputError::invalid(format!("periods must be 1 to {TRANSITION_PERIODS_MAX}, got {}", p.periods)));
    }
    if p.budget_usd.is_none() && p.yearly_budget_usd.is_none() {
        return Err(InputError::invalid("a transition needs a budget_usd, a yearly_budget_usd, or both"));
    }
    for b in [p.budget_usd, p.yearly_budget_usd].into_iter().flatten() {
        check_non_negative("budget", b)?;
    }
    check_fraction("complete_below", p.complete_below)?;
    check_count("keep", p.keep.len(), TRANSITION_KEEP_MAX)?;
    for s in &p.keep {
        check_id("keep", s.as_str())?;
    }
    Ok(())
}

fn validate_model(e: &ModelPublished) -> Result<(), InputError> {
    check_id("model", e.model.as_str())?;
    if e.version == 0 {
        return Err(InputError::invalid("model version must be at least 1"));
    }
    check_count("weights", e.weights.len(), MODEL_SECURITIES_MAX)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut sum = Decimal::ZERO;
    for w in &e.weights {
        check_id("security", w.security.as_str())?;
        check_fraction(&format!("weight of {}", w.security), w.weight)?;
        if !seen.insert(&w.security) {
            return Err(InputError::invalid(format!("{} appears twice in the model", w.security)));
        }
        sum = sum.checked_add(w.weight).ok_or_else(|| InputError::invalid("weights overflow when summed"))?;
    }
    if sum > Decimal::ONE {
        return Err(InputError::invalid(format!("model weights sum to {sum}, more than 1")));
    }
    Ok(())
}

fn validate_household(e: &HouseholdUpserted) -> Result<(), InputError> {
    check_id("household", e.household.as_str())?;
    check_fraction("short_term_rate", e.tax.short_term_rate)?;
    check_fraction("long_term_rate", e.tax.long_term_rate)?;
    if let Some(b) = e.tax.annual_gain_budget_usd {
        check_non_negative("annual_gain_budget_usd", b)?;
    }
    check_fraction("harvest.min_loss_pct", e.tax.harvest.min_loss_pct)?;
    check_non_negative("harvest.min_loss_usd", e.tax.harvest.min_loss_usd)?;
    if e.accounts.is_empty() {
        return Err(InputError::invalid("a household needs at least one account"));
    }
    check_count("restrictions", e.restrictions.len(), HOUSEHOLD_RESTRICTIONS_MAX)?;
    let mut rids = std::collections::BTreeSet::new();
    for r in &e.restrictions {
        check_id("restriction_id", r.restriction_id.as_str())?;
        if !rids.insert(&r.restriction_id) {
            return Err(InputError::invalid(format!("restriction {} appears twice", r.restriction_id)));
        }
        if let Some(a) = &r.account {
            if !e.accounts.iter().any(|x| &x.account == a) {
                return Err(InputError::invalid(format!(
                    "restriction {} names account {a}, which the household does not list",
                    r.restriction_id
                )));
            }
        }
        check_time("effective", &r.effective)?;
        validate_rule(&r.rule)?;
    }
    check_count("accounts", e.accounts.len(), HOUSEHOLD_ACCOUNTS_MAX)?;
    let mut ids = std::collections::BTreeSet::new();
    for a in &e.accounts {
        check_id("account", a.account.as_str())?;
        if !ids.insert(&a.account) {
            return Err(InputError::invalid(format!("account {} appears twice", a.account)));
        }
        check_count("sleeves", a.sleeves.len(), ACCOUNT_SLEEVES_MAX)?;
        check_count("opening_lots", a.opening_lots.len(), ACCOUNT_OPENING_LOTS_MAX)?;
        let mut sum = Decimal::ZERO;
        for s in &a.sleeves {
            check_id("model", s.model.as_str())?;
            check_fraction(&format!("sleeve percent of {}", s.model), s.percent)?;
            sum += s.percent;
        }
        if !a.sleeves.is_empty() && sum != Decimal::ONE {
            return Err(InputError::invalid(format!("sleeve percents of account {} sum to {sum}, not 1", a.account)));
        }
        let st = &a.settings;
        check_non_negative("min_trade_usd", st.min_trade_usd)?;
        check_fraction("cash_reserve_pct", st.cash_reserve_pct)?;
        check_fraction("drift_band_abs", st.drift_band_abs)?;
        check_non_negative("drift_band_rel", st.drift_band_rel)?;
        check_non_negative("opening_cash", a.opening_cash)?;
        for l in &a.opening_lots {
            check_id("security", l.security.as_str())?;
            check_positive(&format!("quantity of opening lot in {}", l.security), l.quantity)?;
            check_non_negative(&format!("cost_per_share of opening lot in {}", l.security), l.cost_per_share)?;
            check_date(&format!("acquired of opening lot in {}", l.security), l.acquired)?;
        }
    }
    Ok(())
}

fn validate_rule(rule: &RestrictionRule) -> Result<(), InputError> {
    match rule {
        RestrictionRule::DoNotBuy { security }
        | RestrictionRule::DoNotHold { security }
        | RestrictionRule::KeepLegacy { security } => check_id("security", security.as_str()),
        RestrictionRule::SectorExclusion { sector } => {
            if sector.is_empty() {
                return Err(InputError::invalid("sector is empty"));
            }
            Ok(())
        }
        RestrictionRule::EsgMinimum { min_score, .. } => {
            if *min_score < Decimal::ZERO || *min_score > Decimal::ONE_HUNDRED {
                return Err(InputError::invalid(format!("min_score must be between 0 and 100, got {min_score}")));
            }
            Ok(())
        }
        RestrictionRule::MaxWeight { security, max_weight } => {
            check_id("security", security.as_str())?;
            check_fraction("max_weight", *max_weight)
        }
        RestrictionRule::Substitute { security, substitute } => {
            check_id("security", security.as_str())?;
            check_id("substitute", substitute.as_str())?;
            if security == substitute {
                return Err(InputError::invalid("a security cannot substitute for itself"));
            }
            Ok(())
        }
        RestrictionRule::Tilt { sector, sub_industry, delta } => {
            match (sector, sub_industry) {
                (Some(s), None) | (None, Some(s)) if !s.is_empty() => {}
                _ => return Err(InputError::invalid("a tilt names exactly one non-empty sector or sub_industry")),
            }
            check_delta(*delta)
        }
        RestrictionRule::AttributeTilt { attribute, delta } => {
            check_attribute_name(attribute)?;
            check_delta(*delta)
        }
        RestrictionRule::AttributeFilter { attribute, min, max, max_weight } => {
            check_attribute_name(attribute)?;
            match (min, max) {
                (None, None) => return Err(InputError::invalid("an attribute filter needs a min or a max")),
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(InputError::invalid(format!("attribute filter min {lo} is above its max {hi}")))
                }
                _ => {}
            }
            if let Some(w) = max_weight {
                check_fraction("max_weight", *w)?;
            }
            Ok(())
        }
    }
}

/// Decodes and validates the JSON form of one event.
pub fn decode_json(bytes: &[u8]) -> Result<Envelope, InputError> {
    let env: Envelope = serde_json::from_slice(bytes)
        .map_err(|e| InputError::new(InputErrorKind::Malformed, format!("not a valid event: {e}")))?;
    env.validate().map_err(|e| e.concerning(&env))?;
    Ok(env)
}

#[cfg(test)]
mod id_tests {
    use super::check_id;

    #[test]
    fn an_id_is_refused_for_a_control_character_or_a_slash_ascii_or_not() {
        // given ids with each ASCII byte in turn, and some with other characters
        let others = ['\u{80}', '\u{9f}', '\u{a0}', 'é', '\u{2028}', '/'];
        let ids = (0..=127u8).map(char::from).chain(others).map(|c| format!("ab{c}cd"));
        for id in ids {
            // then one is refused exactly when a character is a control character or '/'
            let plain = id.chars().any(|c| c.is_control() || c == '/');
            assert_eq!(check_id("id", &id).is_err(), plain, "{id:?}");
        }
    }
}
