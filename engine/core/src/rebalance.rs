//! The first rebalance (DESIGN §5, rules 1–4 and 7): sleeve targets blended
//! into one account target, restrictions and screens applied, drift compared
//! with bands, trades sized, and sells given their lots. Pure: it reads state
//! and returns a plan; the fold turns the plan into orders and changes.

use crate::event::{AccountKind, LotPolicy, ModelKind, RestrictionRule, Side, TaxObjective};
use crate::ids::{HouseholdId, ModelId, RestrictionId, SecurityId};
use crate::output::{DecisionInputs, LotRelief, OrderReason, Skip, SkipReason};
use crate::state::{one_year_after, within_wash_window, Account, EsgScore, Household, Lot, Model, Restriction, State};
use crate::tax::wash_key;
use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// What a decision is for: a full drift check, or a cash flow that only buys
/// (deposit) or only sells (withdrawal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    InvestCash,
    RaiseCash,
}

#[derive(Clone, Debug)]
pub struct Context {
    pub now: DateTime<Utc>,
    pub trade_date: NaiveDate,
    /// The reason given to discretionary (drift) trades of this decision.
    pub reason: OrderReason,
    pub mode: Mode,
    /// Direct-index subset plans by (model, names), shared by the accounts of
    /// one decision (a clock event plans hundreds of accounts on one index).
    subsets: RefCell<BTreeMap<(ModelId, usize), Rc<SubsetPlan>>>,
    /// Each index model's sector grouping and tracking-error terms, shared the same way.
    index_models: RefCell<BTreeMap<ModelId, Rc<IndexModel>>>,
    /// Tracking-error estimates by (model, the subset's names): accounts
    /// holding the same names of one index get the same subset weights.
    tracking_errors: RefCell<BTreeMap<(ModelId, Vec<u8>), Decimal>>,
    /// Reference data as the event being decided will leave it, where it
    /// differs from the state decided against: a model version being
    /// published, an ESG score being changed. Plans read models and scores
    /// through [`Context::model`] and [`Context::esg`], so a decision needs no
    /// copy of the reference data with the change made.
    pub pending_model: Option<(ModelId, Model)>,
    pub pending_esg: Option<(SecurityId, EsgScore)>,
    /// Scan taxable accounts for losses to harvest (market-close clock events).
    pub harvest: bool,
    /// A period of the household's transition begins with this decision.
    pub transition_period: bool,
}

impl Context {
    /// Model `id` as this decision sees it (the version being published, if it is that model).
    pub fn model<'s>(&'s self, state: &'s State, id: &ModelId) -> Option<&'s Model> {
        match &self.pending_model {
            Some((m, model)) if m == id => Some(model),
            _ => state.models.get(id),
        }
    }

    /// The ESG score of `sec` as this decision sees it (the one being set, if it is that security's).
    pub fn esg<'s>(&'s self, state: &'s State, sec: &SecurityId) -> Option<&'s EsgScore> {
        match &self.pending_esg {
            Some((s, score)) if s == sec => Some(score),
            _ => state.esg.get(sec),
        }
    }

    /// What the accounts of this decision share of index model `model`
    /// (weights `index`): computed once per decision.
    fn index_model(&self, state: &State, model: &ModelId, index: &BTreeMap<SecurityId, Decimal>) -> Rc<IndexModel> {
        if let Some(m) = self.index_models.borrow().get(model) {
            return m.clone();
        }
        let m = Rc::new(IndexModel { sectors: Rc::new(IndexSectors::of(state, index)), terms: IndexTerms::of(index) });
        self.index_models.borrow_mut().insert(model.clone(), m.clone());
        m
    }

    /// The estimated tracking error of `subset` of index model `model`
    /// (weights `index`), computed once per decision for each set of names
    /// (a subset's weights follow from its names and the index).
    fn tracking_error(
        &self,
        state: &State,
        model: &ModelId,
        index: &BTreeMap<SecurityId, Decimal>,
        subset: &BTreeMap<&SecurityId, Decimal>,
    ) -> Decimal {
        // The names, each with its length before it: one key per set of names.
        let mut names = Vec::with_capacity(subset.len() * 8);
        for s in subset.keys() {
            names.extend_from_slice(&(s.as_str().len() as u32).to_be_bytes());
            names.extend_from_slice(s.as_str().as_bytes());
        }
        let key = (model.clone(), names);
        if let Some(te) = self.tracking_errors.borrow().get(&key) {
            return *te;
        }
        let te = self.index_model(state, model, index).terms.tracking_error(index, subset);
        self.tracking_errors.borrow_mut().insert(key, te);
        te
    }

    pub fn new(now: DateTime<Utc>, trade_date: NaiveDate, reason: OrderReason, mode: Mode) -> Self {
        Self {
            now,
            trade_date,
            reason,
            mode,
            subsets: RefCell::new(BTreeMap::new()),
            index_models: RefCell::new(BTreeMap::new()),
            tracking_errors: RefCell::new(BTreeMap::new()),
            pending_model: None,
            pending_esg: None,
            harvest: false,
            transition_period: false,
        }
    }
}

/// "1 security", "2 securities".
fn securities(n: usize) -> String {
    match n {
        1 => "1 security".into(),
        n => format!("{n} securities"),
    }
}

/// A sale decided at a small gain can fill at a loss: with a purchase in
/// the window, a lot counts as a possible loss unless its gain per share is
/// at least this fraction of the price.
pub const WASH_GAIN_MARGIN: Decimal = Decimal::from_parts(5, 0, 0, false, 2);

/// Whether a lot sold with `gain` per share at `price` could realize a loss
/// once executed (see [`WASH_GAIN_MARGIN`]).
fn may_lose(gain: Decimal, price: Decimal) -> bool {
    gain < WASH_GAIN_MARGIN * price
}

/// Whether a planned sale could realize a loss on any of its lots.
fn sale_may_lose(lots: &[LotRelief], price: Decimal) -> bool {
    lots.iter().any(|l| may_lose(l.est_gain_usd / l.quantity.max(Decimal::new(1, 8)), price))
}

/// What the household's recent trades, open orders and already planned
/// accounts mean for the next account's plan: the wash-sale windows open (by
/// wash key, with the latest date) and the tax budget left this year. Built
/// once per household per decision and updated after each account's plan, so
/// one account never buys what another just sold at a loss.
#[derive(Clone, Debug, Default)]
pub struct HouseholdView {
    /// Keys sold at a loss in a taxable account within the window (or about to be).
    pub loss_sold: BTreeMap<String, NaiveDate>,
    /// Keys bought in any account within the window (or about to be).
    pub bought: BTreeMap<String, NaiveDate>,
    /// Net realized gain the budget still allows this year (None: no budget).
    pub budget_left: Option<Decimal>,
    /// This year's net realized gain plus the exact gain of open and planned
    /// sales in taxable accounts: what a tax objective steers.
    pub realized_net: Decimal,
    /// Exact gain of the transition sales planned by this decision so far.
    pub transition_planned: Decimal,
}

impl HouseholdView {
    pub fn of(state: &State, hh: &Household, on: NaiveDate) -> Self {
        let mut v = Self::default();
        for s in hh.wash.loss_sales.iter().filter(|s| s.open_shares > Decimal::ZERO && within_wash_window(s.date, on)) {
            v.note_loss(s.key.clone(), s.date);
        }
        for b in hh.wash.buys.iter().filter(|b| b.open_shares > Decimal::ZERO && within_wash_window(b.date, on)) {
            v.note_buy(b.key.clone(), b.date);
        }
        let mut pending_gain = Decimal::ZERO;
        let mut pending_exact = Decimal::ZERO;
        for account in hh.accounts.values() {
            for p in account.pending.values() {
                let key = wash_key(state, &p.security).into_owned();
                match p.side {
                    Side::Buy => v.note_buy(key, on),
                    Side::Sell if account.kind.is_taxable() => {
                        if sale_may_lose(&p.lots, p.ref_price) {
                            v.note_loss(key, on);
                        }
                        pending_gain += p.lots.iter().map(|l| l.est_gain_usd).sum::<Decimal>();
                        pending_exact += crate::objective::exact_gain(&p.lots, p.ref_price);
                    }
                    Side::Sell => {}
                }
            }
        }
        let realized = hh.realized.get(&on.year()).map_or(Decimal::ZERO, |y| y.net_usd());
        v.budget_left = hh.tax.annual_gain_budget_usd.map(|budget| budget - realized - pending_gain);
        v.realized_net = realized + pending_exact;
        v
    }

    fn note_loss(&mut self, key: String, on: NaiveDate) {
        let d = self.loss_sold.entry(key).or_insert(on);
        *d = (*d).max(on);
    }

    fn note_buy(&mut self, key: String, on: NaiveDate) {
        let d = self.bought.entry(key).or_insert(on);
        *d = (*d).max(on);
    }

    /// Takes in an account's plan: its buys and loss sales open windows, its
    /// sales use budget.
    pub fn record(&mut self, state: &State, account: &Account, plan: &Plan, on: NaiveDate) {
        for o in &plan.orders {
            let key = wash_key(state, &o.security).into_owned();
            match o.side {
                Side::Buy => self.note_buy(key, on),
                Side::Sell if account.kind.is_taxable() => {
                    if sale_may_lose(&o.lots, o.ref_price) {
                        self.note_loss(key, on);
                    }
                    if let Some(left) = self.budget_left.as_mut() {
                        *left -= o.lots.iter().map(|l| l.est_gain_usd).sum::<Decimal>();
                    }
                    self.realized_net += crate::objective::exact_gain(&o.lots, o.ref_price);
                    if o.reason == OrderReason::Transition {
                        self.transition_planned += crate::objective::exact_gain(&o.lots, o.ref_price);
                    }
                }
                Side::Sell => {}
            }
        }
    }
}

/// An index grouped by sector, in sector order: each sector's index weight
/// and its names largest first. Depends on the index alone, so one grouping
/// serves every account of a decision, whatever its subset size.
#[derive(Debug)]
pub struct IndexSectors {
    total: Decimal,
    sectors: Vec<Sector>,
}

#[derive(Debug)]
struct Sector {
    name: String,
    /// Σ of its weights, summed in index order (for its share of the names).
    share_sum: Decimal,
    /// Σ of its weights, summed largest first (the weight its names keep).
    weight: Decimal,
    names: Vec<(SecurityId, Decimal)>,
}

/// How many names each sector of an [`IndexSectors`] gets in a subset of n
/// names (a quota per sector, in its order). One plan serves every account of that size.
#[derive(Debug)]
pub struct SubsetPlan {
    index: Rc<IndexSectors>,
    quotas: Vec<usize>,
}

impl IndexSectors {
    fn of(state: &State, index: &BTreeMap<SecurityId, Decimal>) -> Self {
        let unknown = String::new();
        let mut by_sector: BTreeMap<&str, Vec<(SecurityId, Decimal)>> = BTreeMap::new();
        for (sec, w) in index {
            let sector = state.securities.get(sec).map_or(unknown.as_str(), |s| s.sector.as_str());
            by_sector.entry(sector).or_default().push((sec.clone(), *w));
        }
        let total: Decimal = index.values().sum();
        let sectors = by_sector
            .into_iter()
            .map(|(name, mut names)| {
                let share_sum = names.iter().map(|(_, w)| *w).sum::<Decimal>();
                names.sort_by(|a, b| (std::cmp::Reverse(a.1), &a.0).cmp(&(std::cmp::Reverse(b.1), &b.0)));
                let weight = names.iter().map(|(_, w)| *w).sum();
                Sector { name: name.to_string(), share_sum, weight, names }
            })
            .collect();
        Self { total, sectors }
    }
}

impl SubsetPlan {
    fn new(index: Rc<IndexSectors>, n: usize) -> Self {
        let total = index.total;
        if total <= Decimal::ZERO {
            return Self { quotas: vec![0; index.sectors.len()], index };
        }
        // Quotas: floor of the proportional share, then one each by largest remainder.
        let mut quotas: Vec<(usize, Decimal)> = index
            .sectors
            .iter()
            .map(|sector| {
                let share = sector.share_sum / total * Decimal::from(n);
                let floor = share.floor();
                (floor.to_usize().unwrap_or(0), share - floor)
            })
            .collect();
        let mut left = n.saturating_sub(quotas.iter().map(|q| q.0).sum());
        let mut by_remainder: Vec<(&str, Decimal, usize, usize)> =
            quotas.iter().enumerate().map(|(i, q)| (index.sectors[i].name.as_str(), q.1, q.0, i)).collect();
        // Empty sectors first (every sector represented while names last), then largest remainder.
        by_remainder
            .sort_by(|a, b| (a.2 > 0, std::cmp::Reverse(a.1), a.0).cmp(&(b.2 > 0, std::cmp::Reverse(b.1), b.0)));
        for (_, _, _, i) in by_remainder {
            if left == 0 {
                break;
            }
            quotas[i].0 += 1;
            left -= 1;
        }
        let quotas = quotas.iter().zip(&index.sectors).map(|(q, sector)| q.0.min(sector.names.len())).collect();
        Self { index, quotas }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOrder {
    pub security: SecurityId,
    pub side: Side,
    pub quantity: Decimal,
    pub ref_price: Decimal,
    pub reason: OrderReason,
    pub lots: Vec<LotRelief>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub orders: Vec<PlannedOrder>,
    pub skipped: Vec<Skip>,
    pub rules: Vec<String>,
    pub inputs: DecisionInputs,
    /// The cash shortfall this plan's income sales (reason `income`) raise.
    pub income_shortfall: Option<Decimal>,
    /// Records to follow the decision's (a transition period).
    pub extra_audit: Vec<crate::output::AuditBody>,
}

/// Why a security is constrained for this account.
#[derive(Clone, Debug, Default)]
struct Constraints<'a> {
    /// Must be sold entirely, with the reason to give the sale.
    forced_sell: BTreeMap<&'a SecurityId, OrderReason>,
    /// May not be bought: why (a restriction, a wash-sale window) and which rule says so.
    no_buy: BTreeMap<&'a SecurityId, (SkipReason, String)>,
    /// Bought as a stand-in for a security the household may not buy now (reason `replacement`).
    replacements: BTreeSet<&'a SecurityId>,
    /// Never traded; counts toward the account.
    legacy: BTreeSet<&'a SecurityId>,
}

/// The blended account target after restrictions, plus the constraints.
struct Target<'a> {
    weights: BTreeMap<&'a SecurityId, Decimal>,
    constraints: Constraints<'a>,
}

/// Positions and cash as if every open order executed: computed once per
/// decision, since every rule reads them.
pub struct Projection<'a> {
    quantity: BTreeMap<&'a SecurityId, Decimal>,
    cash: Decimal,
    /// Cash plus holdings at confirmed prices (unpriced holdings count zero).
    value: Decimal,
}

impl<'a> Projection<'a> {
    pub fn of(state: &State, account: &'a Account) -> Self {
        let mut quantity: BTreeMap<&'a SecurityId, Decimal> = BTreeMap::new();
        for (sec, lots) in &account.lots {
            quantity.insert(sec, lots.iter().map(|l| l.quantity).sum());
        }
        for p in account.pending.values() {
            let q = quantity.entry(&p.security).or_default();
            match p.side {
                Side::Buy => *q += p.open_quantity,
                Side::Sell => *q -= p.open_quantity,
            }
        }
        let cash = account.projected_cash();
        let mut value = cash;
        for (sec, q) in &quantity {
            if let Ok(p) = confirmed_price(state, sec) {
                value += *q * p;
            }
        }
        Self { quantity, cash, value: value.max(Decimal::ZERO) }
    }

    pub fn quantity(&self, sec: &SecurityId) -> Decimal {
        self.quantity.get(sec).copied().unwrap_or_default()
    }

    /// Cash plus holdings at confirmed prices.
    pub fn value(&self) -> Decimal {
        self.value
    }

    /// The securities held or bought (projected quantity not zero).
    pub fn held(&self) -> impl Iterator<Item = &'a SecurityId> + '_ {
        self.quantity.iter().filter(|(_, q)| !q.is_zero()).map(|(s, _)| *s)
    }

    fn weight(&self, state: &State, sec: &SecurityId) -> Decimal {
        match confirmed_price(state, sec) {
            Ok(p) if self.value > Decimal::ZERO => self.quantity(sec) * p / self.value,
            _ => Decimal::ZERO,
        }
    }
}

pub fn plan_account<'a>(
    state: &'a State,
    household: &'a Household,
    account: &'a Account,
    ctx: &'a Context,
    view: &HouseholdView,
) -> Plan {
    let mut plan = Plan::default();
    plan.inputs.state_version = state.meta.applied;
    let mut proj = Projection::of(state, account);
    let mut view = view.clone();
    plan.inputs.account_value_usd = proj.value;
    plan.inputs.cash_usd = account.cash;
    for (id, r) in household.restrictions_in_force(&account.id, ctx.now) {
        plan.inputs.restrictions.insert(id.clone(), r.version);
    }
    if account.sleeves.is_empty() {
        // Held away or self-directed: the engine keeps its books (lots, wash
        // sales) but does not trade it.
        plan.rules.push("unmanaged account: no sleeves, not traded".to_string());
        return plan;
    }
    let objective = household.tax_objective();
    let steered = account.kind.is_taxable() && household.objective.is_some();
    if steered {
        objective_rule(household, &view, ctx, &mut plan);
    }
    // Harvest first: the losses it takes open wash-sale windows that send the
    // harvested names' weight to their substitutes below.
    let mut harvested = if ctx.harvest && ctx.mode == Mode::Full && account.kind.is_taxable() {
        // Realizing gains, a household harvests no loss; tax-neutral, it
        // harvests down to −tolerance at most.
        let loss_room = match objective {
            TaxObjective::HarvestLosses => Some(None),
            TaxObjective::RealizeGains { .. } => None,
            TaxObjective::TaxNeutral { tolerance_usd } => Some(Some(view.realized_net + *tolerance_usd)),
        };
        match loss_room {
            Some(room) => harvest(state, household, account, &mut proj, &mut view, ctx, room, &mut plan),
            None => {
                plan.rules.push("harvest: off while the tax objective is to realize gains".to_string());
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if steered {
        for o in plan.orders.iter().filter(|o| o.side == Side::Sell) {
            view.realized_net += crate::objective::exact_gain(&o.lots, o.ref_price);
        }
    }
    let mut target = account_target(state, household, account, &proj, ctx, &mut plan);
    wash_blocks(state, household, account, &proj, &view, ctx, &mut target, &mut plan);
    if proj.value <= Decimal::ZERO {
        plan.rules.push("account_value: nothing to invest".to_string());
        return plan;
    }
    // Gains realized on purpose, on the daily close.
    if steered && ctx.harvest && ctx.mode == Mode::Full {
        let want = crate::objective::gain_wanted(objective, view.realized_net, view.budget_left);
        if want > Decimal::ZERO {
            let rules_in_force: Vec<(&RestrictionId, &Restriction)> =
                household.restrictions_in_force(&account.id, ctx.now).collect();
            let excluded = |s: &SecurityId| {
                target.constraints.legacy.contains(s)
                    || harvested.contains(&s)
                    || target.constraints.no_buy.contains_key(s)
                    || rule_check(state, ctx, &rules_in_force, s).is_some()
            };
            let (traded, gain) = crate::objective::gain_harvest(
                state,
                household,
                account,
                &view.loss_sold,
                &excluded,
                ctx.trade_date,
                want,
                state.meta.settings.fractional_dp,
                &mut plan,
            );
            view.realized_net += gain;
            if let Some(left) = view.budget_left.as_mut() {
                *left -= gain;
            }
            harvested.extend(traded);
        }
    }
    // Scheduled withdrawals set aside: raise what the account lacks.
    if ctx.mode == Mode::Full && account.income_reserved > Decimal::ZERO {
        let shortfall = proj.value * account.settings.cash_reserve_pct - proj.cash;
        // A shortfall below the minimum trade (a fill dearer than its
        // reference, say) is left to the reserve.
        if shortfall > Decimal::ZERO && shortfall >= account.settings.min_trade_usd {
            let taxable = account.kind.is_taxable();
            let blocked = |sec: &SecurityId, lot: &Lot, price: Decimal| {
                target.constraints.legacy.contains(sec)
                    || target.constraints.forced_sell.contains_key(sec)
                    || harvested.contains(&sec)
                    || (taxable
                        && view.bought.contains_key(wash_key(state, sec).as_ref())
                        && may_lose(price - lot.cost_per_share, price))
            };
            let sales = crate::income::raise(
                state,
                household,
                account,
                &proj,
                &target.weights,
                &blocked,
                shortfall,
                ctx.trade_date,
            );
            let raised: Decimal = sales.iter().map(|o| o.quantity * o.ref_price).sum();
            let tax: Decimal = sales.iter().map(|o| crate::income::est_tax(household, account.kind, &o.lots)).sum();
            plan.rules.push(format!(
                "income: ${} set aside for scheduled withdrawals; ${} short, ${} raised from {}, estimated tax ${}",
                account.income_reserved,
                shortfall.round_dp(2),
                raised.round_dp(2),
                securities(sales.len()),
                tax
            ));
            for o in &sales {
                let (key, _) = account.lots.get_key_value(&o.security).expect("sold from held lots");
                if let Some(q) = proj.quantity.get_mut(key) {
                    *q -= o.quantity;
                }
                proj.cash += o.quantity * o.ref_price;
                if taxable && sale_may_lose(&o.lots, o.ref_price) {
                    view.note_loss(wash_key(state, key).into_owned(), ctx.trade_date);
                }
                plan.inputs.prices.insert(o.security.clone(), o.ref_price);
                harvested.push(key);
            }
            plan.income_shortfall = Some(shortfall);
            plan.orders.extend(sales);
        }
    }
    let transition = household
        .transition
        .as_ref()
        .filter(|t| t.active() && account.kind.is_taxable() && ctx.mode == Mode::Full && !account.sleeves.is_empty());
    let mut transition_held = 0usize;
    let mut candidates: BTreeSet<&SecurityId> = target.weights.keys().copied().collect();
    candidates.extend(proj.quantity.iter().filter(|(_, q)| **q != Decimal::ZERO).map(|(s, _)| *s));

    let mut sells: Vec<(&SecurityId, Decimal, Decimal, OrderReason)> = Vec::new();
    let mut buys: Vec<(&SecurityId, Decimal, Decimal)> = Vec::new(); // (security, value wanted, drift)
    let mut inside_band = 0usize;
    let mut inside_band_max = (Decimal::ZERO, None::<&SecurityId>);

    for sec in candidates {
        if harvested.contains(&sec) {
            continue;
        }
        let qty = proj.quantity(sec);
        let wanted = target.weights.get(sec).copied().unwrap_or_default();
        let price = match confirmed_price(state, sec) {
            Ok(p) => p,
            Err(reason) => {
                if qty > Decimal::ZERO || wanted > Decimal::ZERO {
                    let side = if wanted > Decimal::ZERO { Side::Buy } else { Side::Sell };
                    plan.skipped.push(skip(sec, side, reason, "no confirmed price to size a trade"));
                }
                continue;
            }
        };
        let current = qty * price / proj.value;
        let drift = current - wanted;

        if target.constraints.legacy.contains(sec) {
            if drift != Decimal::ZERO {
                plan.skipped.push(skip(sec, Side::Sell, SkipReason::LegacyHolding, "legacy holding kept as is"));
            }
            continue;
        }
        if let Some(reason) = target.constraints.forced_sell.get(sec) {
            if qty > Decimal::ZERO && ctx.mode != Mode::InvestCash {
                sells.push((sec, qty, price, *reason));
            }
            continue;
        }
        let band = drift_band(account, wanted);
        let outside = drift.abs() > band;
        match ctx.mode {
            Mode::Full if !outside => {
                inside_band += 1;
                if drift.abs() > inside_band_max.0 {
                    inside_band_max = (drift.abs(), Some(sec));
                }
            }
            Mode::Full | Mode::InvestCash if drift < Decimal::ZERO => {
                buys.push((sec, -drift * proj.value, drift));
            }
            // A transition sells on its own terms (below).
            Mode::Full if drift > Decimal::ZERO && transition.is_some() => transition_held += 1,
            Mode::Full if drift > Decimal::ZERO => {
                let q = round_quantity(drift * proj.value / price, account.settings.fractional, state);
                sells.push((sec, q.min(qty), price, ctx.reason));
            }
            _ => {}
        }
    }
    if inside_band > 0 {
        let detail = match inside_band_max.1 {
            Some(s) => {
                format!(
                    "{} inside their bands; largest drift {} ({s})",
                    securities(inside_band),
                    pct(inside_band_max.0)
                )
            }
            None => format!("{} on target", securities(inside_band)),
        };
        plan.skipped.push(skip(&SecurityId::new("*"), Side::Buy, SkipReason::InsideBand, detail));
    }

    if ctx.mode == Mode::RaiseCash {
        sells = raise_cash_sells(state, account, &proj, &target.constraints);
    }

    // Sells first: their proceeds fund the buys.
    let mut sold = Vec::new();
    for (sec, qty, price, reason) in sells {
        if let Some(order) = size_sell(state, household, account, &proj, &view, sec, qty, price, reason, ctx, &mut plan)
        {
            sold.push(order);
        }
    }
    if let Some(t) = transition {
        transition_period(
            state,
            household,
            account,
            &proj,
            &target,
            &view,
            &harvested,
            t,
            transition_held,
            ctx,
            &mut sold,
            &mut plan,
        );
    }
    if account.kind.is_taxable() {
        if let Some(left) = view.budget_left {
            keep_within_budget(household, &proj, &mut sold, left, &mut plan);
        }
        if let TaxObjective::TaxNeutral { tolerance_usd } = objective {
            let net = view.realized_net;
            let window = format!("within ±${tolerance_usd} (now ${})", net.round_dp(2));
            crate::objective::fit_window(
                &mut sold,
                -*tolerance_usd - net,
                *tolerance_usd - net,
                account,
                state.meta.settings.fractional_dp,
                &window,
                &mut plan,
            );
        }
    }
    let proceeds: Decimal = sold.iter().map(|o| o.quantity * o.ref_price).sum();
    // This plan's own loss sales open windows for its buys (a substantially
    // identical name must not be bought back in the same breath).
    if account.kind.is_taxable() {
        for o in sold.iter().filter(|o| sale_may_lose(&o.lots, o.ref_price)) {
            view.note_loss(wash_key(state, &o.security).into_owned(), ctx.trade_date);
        }
    }
    plan.orders.extend(sold);
    let reserve = proj.value * account.settings.cash_reserve_pct;
    let available = proj.cash + proceeds - reserve;
    size_buys(state, account, &target.constraints, &view, buys, available, ctx, &mut plan);
    summarize_skips(&mut plan.skipped);
    plan
}

/// The account's target weights as a decision at `ctx` would build them:
/// sleeves blended, restrictions and screens applied, wash-sale windows
/// honoured. For checks and explanations; decisions use [`plan_account`].
pub fn target_weights(
    state: &State,
    household: &Household,
    account: &Account,
    ctx: &Context,
) -> BTreeMap<SecurityId, Decimal> {
    let mut plan = Plan::default();
    let proj = Projection::of(state, account);
    let view = HouseholdView::of(state, household, ctx.trade_date);
    let mut target = account_target(state, household, account, &proj, ctx, &mut plan);
    wash_blocks(state, household, account, &proj, &view, ctx, &mut target, &mut plan);
    target.weights.into_iter().map(|(s, w)| (s.clone(), w)).collect()
}

/// Most skips listed one by one per mechanical reason; the rest are counted.
pub const SKIPS_LISTED_PER_REASON_MAX: usize = 10;

/// Mechanical skips (below the minimum, less than a share, out of cash) can
/// number in the hundreds for a small account on a 500-name index, every day.
/// The first few of each such reason are listed with their details, the rest
/// counted in one entry; restrictions, wash sales and tax budget skips are
/// always listed one by one.
fn summarize_skips(skipped: &mut Vec<Skip>) {
    let mechanical =
        |r: SkipReason| matches!(r, SkipReason::BelowMinimum | SkipReason::RoundsToZero | SkipReason::InsufficientCash);
    let mut counts: BTreeMap<SkipReason, usize> = BTreeMap::new();
    let mut more: BTreeMap<SkipReason, (usize, Side)> = BTreeMap::new();
    skipped.retain(|s| {
        if !mechanical(s.reason) {
            return true;
        }
        let n = counts.entry(s.reason).or_default();
        *n += 1;
        if *n <= SKIPS_LISTED_PER_REASON_MAX {
            return true;
        }
        more.entry(s.reason).or_insert((0, s.side)).0 += 1;
        false
    });
    for (reason, (n, side)) in more {
        skipped.push(Skip {
            security: SecurityId::new("*"),
            side,
            reason,
            detail: format!("{n} more securities skipped for the same reason"),
        });
    }
}

pub(crate) fn confirmed_price(state: &State, sec: &SecurityId) -> Result<Decimal, SkipReason> {
    match state.prices.get(sec) {
        Some(p) if p.held.is_none() => Ok(p.price),
        Some(_) => Err(SkipReason::UnconfirmedPrice),
        None => Err(SkipReason::NoPrice),
    }
}

/// The quantity of each lot (security, lot id) already promised to open sell orders.
pub(crate) fn committed_sells(account: &Account) -> BTreeMap<(&SecurityId, u64), Decimal> {
    let mut committed: BTreeMap<(&SecurityId, u64), Decimal> = BTreeMap::new();
    for p in account.pending.values().filter(|p| p.side == Side::Sell) {
        for l in &p.lots {
            *committed.entry((&p.security, l.lot_id)).or_default() += l.quantity;
        }
    }
    committed
}

/// ±abs band, narrowed to ±rel × target for small positions; zero for a
/// security the target does not hold (any holding of it is out of band).
pub(crate) fn drift_band_of(account: &Account, wanted: Decimal) -> Decimal {
    drift_band(account, wanted)
}

fn drift_band(account: &Account, wanted: Decimal) -> Decimal {
    let s = &account.settings;
    (s.drift_band_rel * wanted).min(s.drift_band_abs)
}

/// Whole shares, or fractional shares to the engine's precision; always
/// toward zero, so a trade never spends more than it was sized for.
fn round_quantity(q: Decimal, fractional: bool, state: &State) -> Decimal {
    let dp = if fractional { state.meta.settings.fractional_dp } else { 0 };
    q.round_dp_with_strategy(dp, RoundingStrategy::ToZero).normalize()
}

/// `q` to `dp` places, toward zero.
pub(crate) fn round_down(q: Decimal, dp: u32) -> Decimal {
    q.round_dp_with_strategy(dp, RoundingStrategy::ToZero).normalize()
}

fn skip(sec: &SecurityId, side: Side, reason: SkipReason, detail: impl Into<String>) -> Skip {
    Skip { security: sec.clone(), side, reason, detail: detail.into() }
}

fn pct(x: Decimal) -> String {
    format!("{}pp", (x * Decimal::ONE_HUNDRED).round_dp(2).normalize())
}

/// Sleeves blended by percent (the same security in two sleeves is netted),
/// then restrictions and screens applied.
fn account_target<'a>(
    state: &'a State,
    household: &'a Household,
    account: &'a Account,
    proj: &Projection<'a>,
    ctx: &'a Context,
    plan: &mut Plan,
) -> Target<'a> {
    let mut weights: BTreeMap<&'a SecurityId, Decimal> = BTreeMap::new();
    for sleeve in &account.sleeves {
        match ctx.model(state, &sleeve.model) {
            Some(model) => {
                plan.inputs.models.insert(sleeve.model.clone(), model.version);
                plan.rules.push(format!(
                    "target: {} v{} × {}",
                    sleeve.model,
                    model.version,
                    sleeve.percent.normalize()
                ));
                let subset;
                let model_weights = match model.kind {
                    ModelKind::DirectIndex => {
                        let n = state
                            .meta
                            .settings
                            .direct_index_size(proj.value * sleeve.percent, account.settings.fractional);
                        subset = direct_index_subset(state, &sleeve.model, &model.weights, n as usize, proj, ctx);
                        if subset.len() < model.weights.len() {
                            plan.rules.push(format!(
                                "direct index {}: {} of {} names for a ${} sleeve, sector weights kept; estimated tracking error {}/yr",
                                sleeve.model,
                                subset.len(),
                                model.weights.len(),
                                (proj.value * sleeve.percent).round_dp(0),
                                pct(ctx.tracking_error(state, &sleeve.model, &model.weights, &subset))
                                    .trim_end_matches("pp")
                                    .to_string()
                                    + "%"
                            ));
                        }
                        &subset
                    }
                    ModelKind::Standard => &model.weights.iter().map(|(s, w)| (s, *w)).collect(),
                };
                for (sec, w) in model_weights {
                    *weights.entry(sec).or_default() += *w * sleeve.percent;
                }
            }
            None => {
                plan.rules.push(format!("target: model {} not published yet; its sleeve stays in cash", sleeve.model))
            }
        }
    }
    let mut constraints = Constraints::default();
    let mut removed: Vec<(&'a SecurityId, Decimal)> = Vec::new();
    let mut substitutes: BTreeMap<&'a SecurityId, &'a SecurityId> = BTreeMap::new();
    // A retirement income's yield tilt: toward names yielding more than the
    // target's average, like an attribute tilt on dividend_yield.
    for (id, schedule) in household.income.iter().filter(|(_, s)| s.account == account.id) {
        let Some(delta) = schedule.yield_tilt else { continue };
        let tag = format!("income {id} v{}", schedule.version);
        let Some(avg) = crate::tilt::weighted_average(state, &weights, INCOME_YIELD_ATTRIBUTE) else {
            plan.rules.push(format!("{tag}: yield tilt: no name in the target carries {INCOME_YIELD_ATTRIBUTE}"));
            continue;
        };
        let in_group =
            |s: &SecurityId| crate::tilt::attribute_of(state, s, INCOME_YIELD_ATTRIBUTE).is_some_and(|v| v > avg);
        let out = crate::tilt::tilt_group(&mut weights, &in_group, delta);
        let label = format!("{INCOME_YIELD_ATTRIBUTE} above the target's average {}", avg.round_dp(6).normalize());
        plan.rules.push(tilt_rule(&tag, &label, delta, out));
    }
    let rules_in_force: Vec<(&'a RestrictionId, &'a Restriction)> =
        household.restrictions_in_force(&account.id, ctx.now).collect();
    // Positions a transition keeps count as legacy holdings.
    let kept: Vec<&'a SecurityId> = match &household.transition {
        Some(t) if t.active() && account.kind.is_taxable() => t.plan.keep.iter().collect(),
        _ => Vec::new(),
    };
    for sec in &kept {
        plan.rules.push(format!("transition v{}: keep {sec}", household.transition.as_ref().map_or(0, |t| t.version)));
        constraints.legacy.insert(sec);
    }
    if rules_in_force.is_empty() && kept.is_empty() {
        fit_to_room(&mut weights, account.settings.cash_reserve_pct, plan);
        return Target { weights, constraints };
    }
    for (id, r) in &rules_in_force {
        if let RestrictionRule::Substitute { security, substitute } = &r.rule {
            substitutes.insert(security, substitute);
            plan.rules.push(format!("restriction {id} v{}: substitute {substitute} for {security}", r.version));
        }
    }
    // Which securities each rule touches: those in the target or held.
    let mut universe: BTreeSet<&'a SecurityId> = weights.keys().copied().collect();
    universe.extend(proj.quantity.keys().copied());
    let mut caps: Vec<(&'a SecurityId, Decimal, String)> = Vec::new();
    // Names a cap limits (a max-weight restriction or an attribute cap) take
    // none of the weight redistributed (their own excess included), so the
    // cap holds.
    let mut capped: BTreeSet<&'a SecurityId> = BTreeSet::new();
    for (id, r) in &rules_in_force {
        let tag = format!("restriction {id} v{}", r.version);
        match &r.rule {
            RestrictionRule::DoNotHold { security } => plan.rules.push(format!("{tag}: do not hold {security}")),
            RestrictionRule::DoNotBuy { security } => plan.rules.push(format!("{tag}: do not buy {security}")),
            RestrictionRule::SectorExclusion { sector } => plan.rules.push(format!("{tag}: exclude sector {sector}")),
            RestrictionRule::EsgMinimum { min_score, mode } => {
                plan.rules.push(format!("{tag}: ESG score at least {min_score} ({mode:?})"))
            }
            RestrictionRule::KeepLegacy { security } => {
                plan.rules.push(format!("{tag}: keep legacy {security}"));
                constraints.legacy.insert(security);
            }
            RestrictionRule::MaxWeight { security, max_weight } => {
                capped.insert(security);
                caps.push((security, *max_weight, tag))
            }
            RestrictionRule::Substitute { .. } => {}
            RestrictionRule::Tilt { sector, sub_industry, delta } => {
                let (field, name) = match (sector, sub_industry) {
                    (Some(s), _) => ("sector", s.as_str()),
                    (None, Some(s)) => ("sub-industry", s.as_str()),
                    (None, None) => continue,
                };
                let by_sector = sector.is_some();
                let in_group = |s: &SecurityId| {
                    state.securities.get(s).is_some_and(|x| {
                        if by_sector {
                            x.sector == name
                        } else {
                            x.sub_industry == name
                        }
                    })
                };
                let out = crate::tilt::tilt_group(&mut weights, &in_group, *delta);
                plan.rules.push(tilt_rule(&tag, &format!("{field} {name}"), *delta, out));
            }
            RestrictionRule::AttributeTilt { attribute, delta } => {
                let Some(avg) = crate::tilt::weighted_average(state, &weights, attribute) else {
                    plan.rules.push(format!("{tag}: tilt toward {attribute}: no name in the target carries it"));
                    continue;
                };
                let in_group = |s: &SecurityId| crate::tilt::attribute_of(state, s, attribute).is_some_and(|v| v > avg);
                let out = crate::tilt::tilt_group(&mut weights, &in_group, *delta);
                let label = format!("{attribute} above the target's average {}", avg.round_dp(6).normalize());
                plan.rules.push(tilt_rule(&tag, &label, *delta, out));
            }
            RestrictionRule::AttributeFilter { attribute, min, max, max_weight } => {
                let bounds = match (min, max) {
                    (Some(lo), Some(hi)) => format!("outside {lo}..{hi}"),
                    (Some(lo), None) => format!("below {lo}"),
                    (None, Some(hi)) => format!("above {hi}"),
                    (None, None) => String::new(),
                };
                match max_weight {
                    None => plan.rules.push(format!("{tag}: exclude {attribute} {bounds}")),
                    Some(cap) => {
                        plan.rules.push(format!("{tag}: cap names with {attribute} {bounds} at {} each", pct(*cap)));
                        for sec in &universe {
                            let value = crate::tilt::attribute_of(state, sec, attribute);
                            if RestrictionRule::attribute_fails(*min, *max, value) {
                                caps.push((sec, *cap, tag.clone()));
                                capped.insert(sec);
                            }
                        }
                    }
                }
            }
        }
    }
    // (security, forced-sale reason or none for buy-only, rule tag)
    let exclusions: Vec<(&'a SecurityId, Option<OrderReason>, String)> = universe
        .iter()
        .filter_map(|sec| rule_check(state, ctx, &rules_in_force, sec).map(|(f, t)| (*sec, f, t)))
        .collect();
    for (sec, forced, tag) in exclusions {
        let original = weights.remove(sec).unwrap_or_default();
        // Buy-only restrictions keep what is held, up to the original target.
        let keep = if forced.is_none() { original.min(proj.weight(state, sec)) } else { Decimal::ZERO };
        if keep > Decimal::ZERO {
            weights.insert(sec, keep);
        }
        if original > keep {
            removed.push((sec, original - keep));
        }
        match forced {
            Some(reason) => {
                constraints.forced_sell.insert(sec, reason);
            }
            None => {
                constraints.no_buy.insert(sec, (SkipReason::Restricted, tag));
            }
        }
    }
    for (sec, cap, tag) in caps {
        if let Some(w) = weights.get_mut(sec) {
            if *w > cap {
                plan.rules.push(format!("{tag}: cap {sec} at {}", pct(cap)));
                removed.push((sec, *w - cap));
                *w = cap;
            }
        }
    }
    let eligible = |s: &SecurityId| {
        !constraints.legacy.contains(s) && !capped.contains(s) && rule_check(state, ctx, &rules_in_force, s).is_none()
    };
    redistribute(state, &mut weights, removed, &substitutes, &eligible, plan);

    // Legacy holdings count toward the account: the rest of the target shrinks to fit.
    let legacy_weight: Decimal = constraints.legacy.iter().map(|s| proj.weight(state, s)).sum();
    for sec in &constraints.legacy {
        weights.remove(*sec);
    }
    if legacy_weight > Decimal::ZERO {
        plan.rules.push(format!("legacy holdings take {}", pct(legacy_weight)));
    }
    fit_to_room(&mut weights, legacy_weight + account.settings.cash_reserve_pct, plan);
    Target { weights, constraints }
}

/// A transition's part of a plan: on the first clock of a period, its
/// sales (see `transition`) and the period's audit record; on other days,
/// a note of the drift sales it holds back.
#[allow(clippy::too_many_arguments)]
fn transition_period<'a>(
    state: &'a State,
    household: &'a Household,
    account: &'a Account,
    proj: &Projection<'a>,
    target: &Target<'a>,
    view: &HouseholdView,
    handled: &[&'a SecurityId],
    t: &crate::state::Transition,
    held_back: usize,
    ctx: &Context,
    sold: &mut Vec<PlannedOrder>,
    plan: &mut Plan,
) {
    let kept: Vec<SecurityId> = t.plan.keep.clone();
    let drift = crate::transition::drift(state, proj, &target.weights, &target.constraints.legacy);
    if !ctx.transition_period {
        if held_back > 0 {
            plan.rules.push(format!(
                "transition v{}: {} over target held for the next period (from {}); drift {}",
                t.version,
                securities(held_back),
                t.next_period(),
                pct(drift)
            ));
        }
        return;
    }
    let mut allowance = crate::transition::allowance(t, crate::transition::pending_gain(household), ctx.trade_date)
        - view.transition_planned;
    if let Some(left) = view.budget_left {
        allowance = allowance.min(left);
    }
    let allowance = allowance.max(Decimal::ZERO);
    let deferral = Days::new(u64::from(household.tax.short_term_deferral_days));
    let blocked = |sec: &SecurityId, lot: &Lot, price: Decimal| {
        let gain = price - lot.cost_per_share;
        target.constraints.legacy.contains(sec)
            || target.constraints.forced_sell.contains_key(sec)
            || handled.contains(&sec)
            || (view.bought.contains_key(wash_key(state, sec).as_ref()) && may_lose(gain, price))
            || (gain > Decimal::ZERO
                && !lot.is_long_term(ctx.trade_date)
                && one_year_after(lot.holding_start) + Days::new(1) <= ctx.trade_date + deferral)
    };
    let (sales, gain) = crate::transition::period_sales(
        state,
        household,
        account,
        proj,
        &target.weights,
        &blocked,
        allowance,
        ctx.trade_date,
    );
    for o in &sales {
        plan.inputs.prices.insert(o.security.clone(), o.ref_price);
    }
    let period = t.periods_done;
    let period_start = crate::state::add_months(t.started, t.plan.period.months() * period.saturating_sub(1));
    let detail = format!(
        "transition v{} period {period} of {} (from {period_start}): drift {}; allowance ${allowance} of gain ({}{}), ${} used so far; {} sale(s) planned realizing ${}",
        t.version,
        t.plan.periods,
        pct(drift),
        t.plan.budget_usd.map_or("no transition budget".to_string(), |b| format!("budget ${b}")),
        t.plan.yearly_budget_usd.map_or(String::new(), |b| format!(", ${b} a year")),
        t.used_usd.round_dp(2),
        sales.len(),
        gain.round_dp(2)
    );
    plan.rules.push(detail.clone());
    plan.extra_audit.push(crate::output::AuditBody::TransitionPeriod {
        account: account.id.clone(),
        period,
        periods: t.plan.periods,
        period_start,
        drift,
        allowance_usd: allowance,
        budget_usd: t.plan.budget_usd,
        yearly_budget_usd: t.plan.yearly_budget_usd,
        used_usd: t.used_usd,
        planned_gain_usd: gain,
        kept,
        detail,
    });
    sold.extend(sales);
}

/// The security attribute a retirement income's yield tilt leans on.
pub const INCOME_YIELD_ATTRIBUTE: &str = "dividend_yield";

/// The audit line of the tax objective in force: what it is, since when,
/// and where this year's net realized gain stands.
fn objective_rule(household: &Household, view: &HouseholdView, ctx: &Context, plan: &mut Plan) {
    let Some(o) = &household.objective else { return };
    plan.rules.push(format!(
        "tax objective v{} since {}: {}; {} net realized or pending ${}",
        o.version,
        o.since.date_naive(),
        crate::objective::describe(&o.objective),
        ctx.trade_date.year(),
        view.realized_net.round_dp(2)
    ));
}

/// The audit line of one tilt: what moved, from what to what.
fn tilt_rule(tag: &str, group: &str, delta: Decimal, out: crate::tilt::TiltOutcome) -> String {
    let sign = if delta > Decimal::ZERO { "+" } else { "" };
    if out.group_before == out.group_after {
        return format!(
            "{tag}: tilt {group} {sign}{}: nothing moved ({} at {})",
            pct(delta),
            securities(out.names),
            pct(out.group_before)
        );
    }
    format!(
        "{tag}: tilt {group} {sign}{}: {} {} -> {}, the rest pro rata",
        pct(delta),
        securities(out.names),
        pct(out.group_before),
        pct(out.group_after)
    )
}

/// A substitute the household may buy in place of `sec`: the household's
/// named substitute, else the security's own list, best first; never one
/// restricted, legacy, unpriced, or itself in a wash-sale window.
fn substitute_for<'a>(
    state: &'a State,
    household: &'a Household,
    account: &'a Account,
    view: &HouseholdView,
    sec: &SecurityId,
    ctx: &Context,
) -> Option<&'a SecurityId> {
    let rules: Vec<(&RestrictionId, &Restriction)> = household.restrictions_in_force(&account.id, ctx.now).collect();
    let named = rules.iter().filter_map(|(_, r)| match &r.rule {
        RestrictionRule::Substitute { security, substitute } if security == sec => Some(substitute),
        _ => None,
    });
    let listed = state.securities.get(sec).into_iter().flat_map(|s| s.substitutes.iter());
    let own_key = wash_key(state, sec);
    named.chain(listed).find(|s| {
        let key = wash_key(state, s);
        key != own_key
            && !view.loss_sold.contains_key(key.as_ref())
            && state.securities.contains_key(*s)
            && confirmed_price(state, s).is_ok()
            && rule_check(state, ctx, &rules, s).is_none()
            && !rules.iter().any(|(_, r)| matches!(&r.rule, RestrictionRule::KeepLegacy { security } if security == *s))
    })
}

/// Tax-loss harvesting (market close, taxable accounts): the lots of a
/// security priced at least `min_loss_pct` below their basis are sold when
/// together they lose at least `min_loss_usd`, provided a substitute can take
/// the exposure and no purchase in the window would make the sale a wash.
/// The sales are planned on the spot; the projection and the view then show
/// them, so the target sends the name's weight to its substitute.
#[allow(clippy::too_many_arguments)]
fn harvest<'a>(
    state: &'a State,
    household: &'a Household,
    account: &'a Account,
    proj: &mut Projection<'a>,
    view: &mut HouseholdView,
    ctx: &Context,
    loss_room: Option<Decimal>,
    plan: &mut Plan,
) -> Vec<&'a SecurityId> {
    let settings = &household.tax.harvest;
    let mut out = Vec::new();
    if !settings.enabled {
        return out;
    }
    // Losses the tax objective still lets this account take (None: any).
    let mut room = loss_room;
    let rules: Vec<(&RestrictionId, &Restriction)> = household.restrictions_in_force(&account.id, ctx.now).collect();
    for (sec, lots) in &account.lots {
        let Ok(price) = confirmed_price(state, sec) else { continue };
        if rules.iter().any(|(_, r)| matches!(&r.rule, RestrictionRule::KeepLegacy { security } if security == sec))
            || account.pending.values().any(|p| &p.security == sec)
        {
            continue;
        }
        let deep = |l: &Lot| {
            l.cost_per_share > Decimal::ZERO && (l.cost_per_share - price) >= settings.min_loss_pct * l.cost_per_share
        };
        let loss: Decimal = lots.iter().filter(|l| deep(l)).map(|l| (l.cost_per_share - price) * l.quantity).sum();
        if loss <= Decimal::ZERO || loss < settings.min_loss_usd {
            continue;
        }
        let key = wash_key(state, sec);
        if view.bought.contains_key(key.as_ref()) {
            plan.rules.push(format!(
                "harvest: {sec} lots lose ${} but {sec} was bought within 30 days; not harvested (it would be a wash sale)",
                loss.round_dp(2)
            ));
            continue;
        }
        let Some(sub) = substitute_for(state, household, account, view, sec, ctx) else {
            plan.rules
                .push(format!("harvest: {sec} lots lose ${}, but no substitute is eligible; kept", loss.round_dp(2)));
            continue;
        };
        let mut lots = choose_lots_where(household, account, sec, Decimal::MAX, price, ctx.trade_date, &deep);
        if let Some(left) = room {
            let dp = if account.settings.fractional { state.meta.settings.fractional_dp } else { 0 };
            let mut left = left;
            for l in lots.iter_mut() {
                let per_share = l.cost_per_share - price;
                let n = round_down(l.quantity.min((left / per_share).max(Decimal::ZERO)), dp);
                if n < l.quantity {
                    l.quantity = n;
                    l.est_gain_usd = ((price - l.cost_per_share) * n).round_dp(2);
                }
                left -= n * per_share;
            }
            lots.retain(|l| l.quantity > Decimal::ZERO);
            let taken: Decimal = lots.iter().map(|l| (l.cost_per_share - price) * l.quantity).sum();
            if lots.is_empty() || taken < settings.min_loss_usd {
                plan.rules.push(format!(
                    "harvest: {sec} lots lose ${}, but the tax objective allows ${} more of losses this year; kept",
                    loss.round_dp(2),
                    room.unwrap_or_default().max(Decimal::ZERO).round_dp(2)
                ));
                continue;
            }
        }
        let qty: Decimal = lots.iter().map(|l| l.quantity).sum();
        if qty <= Decimal::ZERO || qty * price < account.settings.min_trade_usd {
            continue;
        }
        if let Some(left) = room.as_mut() {
            *left -= lots.iter().map(|l| (l.cost_per_share - price) * l.quantity).sum::<Decimal>();
        }
        plan.rules.push(format!(
            "harvest: sell {} {sec} from {} lot(s) at least {} below basis, ${} of losses; {sub} stands in for 31 days",
            qty.normalize(),
            lots.len(),
            pct(settings.min_loss_pct),
            loss.round_dp(2)
        ));
        plan.inputs.prices.insert(sec.clone(), price);
        if let Some(q) = proj.quantity.get_mut(sec) {
            *q -= qty;
        }
        proj.cash += qty * price;
        view.note_loss(key.into_owned(), ctx.trade_date);
        plan.orders.push(PlannedOrder {
            security: sec.clone(),
            side: Side::Sell,
            quantity: qty,
            ref_price: price,
            reason: OrderReason::Harvest,
            lots,
        });
        out.push(sec);
    }
    out
}

/// Wash-sale windows on the buy side: a security sold at a loss in the last
/// 30 days (in any taxable account of the household, or planned so) is not
/// bought; the weight it would have gained goes to its substitute, else stays
/// in cash. With `swap_back` off, a substitute still held keeps standing in
/// for its original after the window.
#[allow(clippy::too_many_arguments)]
fn wash_blocks<'a>(
    state: &'a State,
    household: &'a Household,
    account: &'a Account,
    proj: &Projection<'a>,
    view: &HouseholdView,
    ctx: &Context,
    target: &mut Target<'a>,
    plan: &mut Plan,
) {
    if view.loss_sold.is_empty() && household.tax.harvest.swap_back {
        return;
    }
    let secs: Vec<&'a SecurityId> = target.weights.keys().copied().collect();
    for sec in secs {
        let blocked = view.loss_sold.get(wash_key(state, sec).as_ref()).copied();
        let wanted = target.weights[sec];
        let current = proj.weight(state, sec);
        let stand_in = if blocked.is_none() && !household.tax.harvest.swap_back && current.is_zero() {
            // A substitute held (and not targeted) keeps standing in.
            state.securities.get(sec).into_iter().flat_map(|s| s.substitutes.iter()).find(|s| {
                proj.quantity(s) > Decimal::ZERO
                    && !target.weights.contains_key(*s)
                    && state.securities.contains_key(*s)
            })
        } else {
            None
        };
        if let Some(sub) = stand_in {
            let (sub_key, _) = state.securities.get_key_value(sub).expect("checked above");
            target.weights.remove(sec);
            *target.weights.entry(sub_key).or_default() += wanted;
            plan.rules.push(format!("substitute {sub} keeps standing in for {sec} (swap back is off)"));
            continue;
        }
        let Some(sold_on) = blocked else { continue };
        let until = sold_on + Days::new(crate::state::WASH_WINDOW_DAYS + 1);
        let tag = format!("{sec} was sold at a loss on {sold_on}; buying it before {until} would be a wash sale");
        target.constraints.no_buy.insert(sec, (SkipReason::WashSaleBlock, tag.clone()));
        if wanted <= current {
            continue;
        }
        target.weights.insert(sec, current);
        let extra = wanted - current;
        match substitute_for(state, household, account, view, sec, ctx) {
            Some(sub) => {
                let (sub_key, _) = state.securities.get_key_value(sub).expect("substitutes are known");
                *target.weights.entry(sub_key).or_default() += extra;
                target.constraints.replacements.insert(sub_key);
                plan.rules.push(format!("wash-sale window: {} of {sec} to substitute {sub} until {until}", pct(extra)));
            }
            None => plan.rules.push(format!("wash-sale window: {} of {sec} kept in cash until {until}", pct(extra))),
        }
    }
}

/// The annual tax budget: when the sales of this plan would realize more net
/// gain than the budget has left, discretionary sales are dropped, those that
/// buy the least drift reduction per tax dollar first. Forced sales and sales
/// at a loss always stay.
fn keep_within_budget(
    household: &Household,
    proj: &Projection<'_>,
    sold: &mut Vec<PlannedOrder>,
    left: Decimal,
    plan: &mut Plan,
) {
    let gain = |o: &PlannedOrder| o.lots.iter().map(|l| l.est_gain_usd).sum::<Decimal>();
    let total: Decimal = sold.iter().map(gain).sum();
    if total <= left {
        return;
    }
    let discretionary =
        |o: &PlannedOrder| matches!(o.reason, OrderReason::Drift | OrderReason::ModelChange | OrderReason::Setup);
    let tax = |o: &PlannedOrder| -> Decimal {
        o.lots
            .iter()
            .map(|l| {
                l.est_gain_usd * if l.long_term { household.tax.long_term_rate } else { household.tax.short_term_rate }
            })
            .sum()
    };
    // (drift reduction per tax dollar, index), worst first.
    let mut ranked: Vec<(Decimal, usize)> = sold
        .iter()
        .enumerate()
        .filter(|(_, o)| discretionary(o) && gain(o) > Decimal::ZERO)
        .map(|(i, o)| {
            let reduction =
                if proj.value > Decimal::ZERO { o.quantity * o.ref_price / proj.value } else { Decimal::ZERO };
            let t = tax(o).max(Decimal::new(1, 2));
            (reduction / t, i)
        })
        .collect();
    ranked.sort();
    let mut over = total - left;
    let mut drop = BTreeSet::new();
    for (ratio, i) in ranked {
        if over <= Decimal::ZERO {
            break;
        }
        over -= gain(&sold[i]);
        drop.insert(i);
        let o = &sold[i];
        plan.skipped.push(skip(
            &o.security,
            Side::Sell,
            SkipReason::TaxBudget,
            format!(
                "sale would realize ${} of gain; the annual budget has ${} left (drift reduction per tax dollar {})",
                gain(o).round_dp(2),
                left.max(Decimal::ZERO).round_dp(2),
                ratio.round_dp(6)
            ),
        ));
    }
    if !drop.is_empty() {
        plan.rules.push(format!("tax budget: {} sale(s) dropped to stay within the annual gain budget", drop.len()));
        let mut i = 0;
        sold.retain(|_| {
            let keep = !drop.contains(&i);
            i += 1;
            keep
        });
    }
}

/// Scales the target down (if need be) so it leaves `taken` of the account
/// free: the cash reserve, and legacy holdings that count toward the account.
fn fit_to_room(weights: &mut BTreeMap<&SecurityId, Decimal>, taken: Decimal, plan: &mut Plan) {
    weights.retain(|_, w| *w > Decimal::ZERO);
    let total: Decimal = weights.values().sum();
    let room = (Decimal::ONE - taken).max(Decimal::ZERO);
    if total > room && total > Decimal::ZERO {
        let scale = room / total;
        for w in weights.values_mut() {
            *w = (*w * scale).round_dp_with_strategy(8, RoundingStrategy::ToZero);
        }
        plan.rules.push(format!(
            "targets scaled by {} to leave {} for cash reserve and legacy holdings",
            scale.round_dp(6),
            pct(taken)
        ));
    }
}

/// Whether the rules in force exclude `sec`: Some(forced-sale reason, or none
/// for a buy-only rule; the rule's tag). Forced rules win over buy-only ones.
fn rule_check(
    state: &State,
    ctx: &Context,
    rules: &[(&RestrictionId, &Restriction)],
    sec: &SecurityId,
) -> Option<(Option<OrderReason>, String)> {
    let mut found: Option<(Option<OrderReason>, String)> = None;
    for (id, r) in rules {
        let hit = match &r.rule {
            RestrictionRule::DoNotHold { security } => (security == sec).then_some(Some(OrderReason::Restriction)),
            RestrictionRule::DoNotBuy { security } => (security == sec).then_some(None),
            RestrictionRule::SectorExclusion { sector } => {
                state.securities.get(sec).is_some_and(|s| &s.sector == sector).then_some(Some(OrderReason::Restriction))
            }
            RestrictionRule::EsgMinimum { min_score, mode } => ctx
                .esg(state, sec)
                .is_some_and(|e| e.score < *min_score)
                .then_some(mode.sells().then_some(OrderReason::Esg)),
            RestrictionRule::AttributeFilter { attribute, min, max, max_weight: None } => {
                let value = crate::tilt::attribute_of(state, sec, attribute);
                RestrictionRule::attribute_fails(*min, *max, value).then_some(Some(OrderReason::Restriction))
            }
            RestrictionRule::KeepLegacy { .. }
            | RestrictionRule::MaxWeight { .. }
            | RestrictionRule::Substitute { .. }
            | RestrictionRule::Tilt { .. }
            | RestrictionRule::AttributeTilt { .. }
            | RestrictionRule::AttributeFilter { .. } => None,
        };
        if let Some(forced) = hit {
            let better = match &found {
                None => true,
                Some((f, _)) => f.is_none() && forced.is_some(),
            };
            if better {
                found = Some((forced, format!("restriction {id} v{}", r.version)));
            }
        }
    }
    found
}

/// A direct index held with `n` names (0 or ≥ the index: all of them): each
/// sector gets names in proportion to its index weight (largest remainder,
/// at least one per sector while names last), the largest names of the
/// sector first, except that names already held and ranked within half again
/// the sector's quota keep their place (so small weight changes do not churn
/// the subset). Within a sector, chosen names are scaled up so the sector
/// keeps its index weight.
pub fn direct_index_subset<'a>(
    state: &State,
    model: &ModelId,
    index: &'a BTreeMap<SecurityId, Decimal>,
    n: usize,
    proj: &Projection<'_>,
    ctx: &Context,
) -> BTreeMap<&'a SecurityId, Decimal> {
    if n == 0 || n >= index.len() {
        return index.iter().map(|(s, w)| (s, *w)).collect();
    }
    let plan = ctx
        .subsets
        .borrow_mut()
        .entry((model.clone(), n))
        .or_insert_with(|| Rc::new(SubsetPlan::new(ctx.index_model(state, model, index).sectors.clone(), n)))
        .clone();
    let mut out = BTreeMap::new();
    for (&quota, Sector { weight: sector_weight, names, .. }) in plan.quotas.iter().zip(&plan.index.sectors) {
        if quota == 0 {
            continue;
        }
        let keep_rank = quota + quota.div_ceil(2);
        let mut chosen: Vec<&(SecurityId, Decimal)> =
            names.iter().take(keep_rank).filter(|(s, _)| proj.quantity(s) > Decimal::ZERO).take(quota).collect();
        for name in names {
            if chosen.len() >= quota {
                break;
            }
            if !chosen.iter().any(|c| c.0 == name.0) {
                chosen.push(name);
            }
        }
        let chosen_weight: Decimal = chosen.iter().map(|(_, w)| *w).sum();
        if chosen_weight <= Decimal::ZERO {
            continue;
        }
        for (s, w) in chosen {
            let (key, _) = index.get_key_value(s).expect("the plan is drawn from this index");
            // Rounded toward zero so the subset never sums above the index.
            out.insert(key, (*w * *sector_weight / chosen_weight).round_dp_with_strategy(8, RoundingStrategy::ToZero));
        }
    }
    out
}

/// Annual residual (stock-specific) volatility assumed for one name when
/// estimating a subset's tracking error: typical of S&P 500 stocks.
pub const RESIDUAL_VOL_ASSUMED: Decimal = Decimal::from_parts(25, 0, 0, false, 2);

/// Estimated annual tracking error of holding `subset` instead of `index`:
/// with sector weights matched, what remains is stock-specific risk, so
/// TE ≈ σ · √Σ(w_subset − w_index)² with σ = [`RESIDUAL_VOL_ASSUMED`] and
/// residuals taken as uncorrelated. Exact decimal arithmetic (Newton's square
/// root), so the figure in the audit is the same on every machine.
pub fn subset_tracking_error(
    index: &BTreeMap<SecurityId, Decimal>,
    subset: &BTreeMap<&SecurityId, Decimal>,
) -> Decimal {
    IndexTerms::of(index).tracking_error(index, subset)
}

/// What every account on one index model shares within a decision.
#[derive(Debug)]
struct IndexModel {
    sectors: Rc<IndexSectors>,
    terms: IndexTerms,
}

/// The parts of the tracking-error estimate that depend on the index alone:
/// each name's normalised weight w/Σw, and its squared difference when the
/// subset leaves it out. One decision plans many accounts on one index, so
/// these are computed once per decision ([`Context`]), not once per account.
#[derive(Debug)]
pub struct IndexTerms {
    total: Decimal,
    /// Per name, in the index's order: w/Σw, and (0 − w/Σw)².
    terms: Vec<(Decimal, Decimal)>,
}

impl IndexTerms {
    pub fn of(index: &BTreeMap<SecurityId, Decimal>) -> Self {
        let total: Decimal = index.values().sum();
        if total <= Decimal::ZERO {
            return Self { total, terms: Vec::new() };
        }
        let terms = index
            .values()
            .map(|w| {
                let norm = *w / total;
                let absent = Decimal::ZERO - norm;
                (norm, absent * absent)
            })
            .collect();
        Self { total, terms }
    }

    /// The estimate for `subset` (its keys drawn from `index`, the index
    /// these terms were computed from): σ · √Σ(w_subset/Σw_subset − w/Σw)².
    pub fn tracking_error(
        &self,
        index: &BTreeMap<SecurityId, Decimal>,
        subset: &BTreeMap<&SecurityId, Decimal>,
    ) -> Decimal {
        if self.total <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        (RESIDUAL_VOL_ASSUMED * sqrt(self.sum_of_squares(index, subset))).round_dp(4)
    }

    /// Σ(w_subset/Σw_subset − w/Σw)² over the index's names, in its order.
    pub(crate) fn sum_of_squares(
        &self,
        index: &BTreeMap<SecurityId, Decimal>,
        subset: &BTreeMap<&SecurityId, Decimal>,
    ) -> Decimal {
        debug_assert_eq!(self.terms.len(), index.len(), "terms of another index");
        let sub_total: Decimal = subset.values().sum();
        let mut sum_sq = Decimal::ZERO;
        // Both maps are in security order: walk them side by side.
        let mut held = subset.iter().peekable();
        for (sec, (norm, absent_sq)) in index.keys().zip(&self.terms) {
            while held.next_if(|(s, _)| **s < sec).is_some() {}
            match held.next_if(|(s, _)| **s == sec) {
                Some((_, w)) if sub_total > Decimal::ZERO => {
                    let diff = *w / sub_total - *norm;
                    sum_sq += diff * diff;
                }
                // Left out (or an empty subset): held weight zero.
                _ => sum_sq += *absent_sq,
            }
        }
        sum_sq
    }
}

/// Square root by Newton's method, to 12 decimal places.
fn sqrt(x: Decimal) -> Decimal {
    if x <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    let mut r = if x > Decimal::ONE { x } else { Decimal::ONE };
    for _ in 0..100 {
        let next = ((r + x / r) / Decimal::TWO).round_dp(12);
        if next == r {
            break;
        }
        r = next;
    }
    r
}

/// Removed weight goes to the named substitute, else pro rata within the
/// same sector, else pro rata to the rest, else stays in cash.
fn redistribute<'a>(
    state: &'a State,
    weights: &mut BTreeMap<&'a SecurityId, Decimal>,
    removed: Vec<(&'a SecurityId, Decimal)>,
    substitutes: &BTreeMap<&'a SecurityId, &'a SecurityId>,
    eligible: &dyn Fn(&SecurityId) -> bool,
    plan: &mut Plan,
) {
    // The target's names with their sector, if eligible: looked up once, not
    // once per removed name (again whenever a substitute joins the target).
    let eligible_names = |weights: &BTreeMap<&'a SecurityId, Decimal>| -> Vec<(&'a SecurityId, Option<&'a str>)> {
        weights
            .keys()
            .filter(|s| eligible(s))
            .map(|s| (*s, state.securities.get(*s).map(|x| x.sector.as_str())))
            .collect()
    };
    let mut names = if removed.is_empty() { Vec::new() } else { eligible_names(weights) };
    for (sec, w) in removed {
        let named = substitutes
            .get(sec)
            .copied()
            .into_iter()
            .chain(state.securities.get(sec).into_iter().flat_map(|s| s.substitutes.iter()))
            .find(|s| eligible(s) && state.securities.contains_key(*s));
        if let Some(sub) = named {
            let joins = !weights.contains_key(sub);
            *weights.entry(sub).or_default() += w;
            if joins {
                names = eligible_names(weights);
            }
            plan.rules.push(format!("redistribute: {} of {sec} to substitute {sub}", pct(w)));
            continue;
        }
        let sector = state.securities.get(sec).map(|s| s.sector.as_str());
        let same_sector: Vec<&'a SecurityId> = names.iter().filter(|(_, x)| *x == sector).map(|(s, _)| *s).collect();
        let pool = if same_sector.is_empty() {
            names.iter().map(|(s, _)| *s).collect::<Vec<_>>()
        } else {
            same_sector.clone()
        };
        let base: Decimal = pool.iter().map(|s| weights[*s]).sum();
        if base <= Decimal::ZERO {
            plan.rules.push(format!("redistribute: {} of {sec} kept in cash (nothing eligible)", pct(w)));
            continue;
        }
        for s in &pool {
            let x = weights.get_mut(*s).expect("pool is drawn from weights");
            *x += w * *x / base;
        }
        let scope = if same_sector.is_empty() { "the rest" } else { "its sector" };
        plan.rules.push(format!("redistribute: {} of {sec} pro rata to {scope}", pct(w)));
    }
}

#[allow(clippy::too_many_arguments)]
fn size_sell(
    state: &State,
    household: &Household,
    account: &Account,
    proj: &Projection<'_>,
    view: &HouseholdView,
    sec: &SecurityId,
    qty: Decimal,
    price: Decimal,
    reason: OrderReason,
    ctx: &Context,
    plan: &mut Plan,
) -> Option<PlannedOrder> {
    let forced = matches!(reason, OrderReason::Restriction | OrderReason::Esg);
    let held = proj.quantity(sec);
    let qty = if forced { held } else { qty.min(held) };
    if qty <= Decimal::ZERO {
        plan.skipped.push(skip(sec, Side::Sell, SkipReason::RoundsToZero, "sell rounds to zero shares"));
        return None;
    }
    if !forced && qty * price < account.settings.min_trade_usd {
        plan.skipped.push(skip(
            sec,
            Side::Sell,
            SkipReason::BelowMinimum,
            format!("sell of ${} is below the ${} minimum", (qty * price).round_dp(2), account.settings.min_trade_usd),
        ));
        return None;
    }
    // A discretionary sale in a taxable account leaves alone the lots it would
    // wash (a loss after a purchase in the window) or whose short-term gain
    // turns long-term within the deferral window.
    let mut held_back: BTreeMap<SkipReason, Decimal> = BTreeMap::new();
    let lots = if forced || !account.kind.is_taxable() {
        choose_lots(household, account, sec, qty, price, ctx.trade_date)
    } else {
        let bought = view.bought.get(wash_key(state, sec).as_ref()).copied();
        let deferral = Days::new(u64::from(household.tax.short_term_deferral_days));
        let keep = |l: &Lot| -> Option<SkipReason> {
            let gain = price - l.cost_per_share;
            if bought.is_some() && may_lose(gain, price) {
                return Some(SkipReason::WashSaleBlock);
            }
            let long_from = one_year_after(l.holding_start) + Days::new(1);
            if gain > Decimal::ZERO && !l.is_long_term(ctx.trade_date) && long_from <= ctx.trade_date + deferral {
                return Some(SkipReason::ShortTermDeferral);
            }
            None
        };
        let lots = choose_lots_where(household, account, sec, qty, price, ctx.trade_date, &|l| keep(l).is_none());
        let relieved: Decimal = lots.iter().map(|l| l.quantity).sum();
        if relieved < qty {
            for l in account.lots.get(sec).into_iter().flatten() {
                if let Some(r) = keep(l) {
                    *held_back.entry(r).or_default() += l.quantity;
                }
            }
        }
        lots
    };
    for (reason, shares) in &held_back {
        let detail = match reason {
            SkipReason::WashSaleBlock => format!(
                "{} shares at a loss (or within 5% of one) kept: {} was bought within 30 days (selling would risk a wash sale)",
                shares.normalize(),
                sec
            ),
            _ => format!(
                "{} shares with a short-term gain kept: they turn long-term within {} days",
                shares.normalize(),
                household.tax.short_term_deferral_days
            ),
        };
        plan.skipped.push(skip(sec, Side::Sell, *reason, detail));
    }
    let relieved: Decimal = lots.iter().map(|l| l.quantity).sum();
    if relieved <= Decimal::ZERO && !held_back.is_empty() {
        return None;
    }
    if !forced && relieved > Decimal::ZERO && relieved * price < account.settings.min_trade_usd {
        plan.skipped.push(skip(
            sec,
            Side::Sell,
            SkipReason::BelowMinimum,
            format!(
                "sell of ${} is below the ${} minimum",
                (relieved * price).round_dp(2),
                account.settings.min_trade_usd
            ),
        ));
        return None;
    }
    if relieved <= Decimal::ZERO {
        plan.skipped.push(skip(
            sec,
            Side::Sell,
            SkipReason::PendingOrder,
            "no free lots: the position is still in open orders",
        ));
        return None;
    }
    plan.inputs.prices.insert(sec.clone(), price);
    Some(PlannedOrder { security: sec.clone(), side: Side::Sell, quantity: relieved, ref_price: price, reason, lots })
}

/// Lots to relieve for a sell of `qty`, by the account's policy. Lots already
/// committed to open sells are not offered again.
pub fn choose_lots(
    household: &Household,
    account: &Account,
    sec: &SecurityId,
    qty: Decimal,
    price: Decimal,
    on: NaiveDate,
) -> Vec<LotRelief> {
    choose_lots_where(household, account, sec, qty, price, on, &|_| true)
}

/// [`choose_lots`] among the lots `offer` accepts.
pub fn choose_lots_where(
    household: &Household,
    account: &Account,
    sec: &SecurityId,
    qty: Decimal,
    price: Decimal,
    on: NaiveDate,
    offer: &dyn Fn(&Lot) -> bool,
) -> Vec<LotRelief> {
    let Some(lots) = account.lots.get(sec) else { return Vec::new() };
    let mut committed: BTreeMap<u64, Decimal> = BTreeMap::new();
    for p in account.pending.values().filter(|p| &p.security == sec && p.side == Side::Sell) {
        for l in &p.lots {
            *committed.entry(l.lot_id).or_default() += l.quantity;
        }
    }
    let free: Vec<(&Lot, Decimal)> = lots
        .iter()
        .filter(|l| offer(l))
        .map(|l| (l, l.quantity - committed.get(&l.lot_id).copied().unwrap_or_default()))
        .filter(|(_, free)| *free > Decimal::ZERO)
        .collect();
    relieve_lots(household, account, free, qty, price, on)
}

/// Relieves `qty` from `free` (each lot with the shares it can still give),
/// in the account's policy order: least tax per share by default, HIFO or
/// FIFO; tax-deferred accounts relieve FIFO.
pub fn relieve_lots(
    household: &Household,
    account: &Account,
    mut free: Vec<(&Lot, Decimal)>,
    qty: Decimal,
    price: Decimal,
    on: NaiveDate,
) -> Vec<LotRelief> {
    let policy = if account.kind == AccountKind::Taxable { account.settings.lot_policy } else { LotPolicy::Fifo };
    match policy {
        LotPolicy::Fifo => free.sort_by_key(|(l, _)| (l.acquired, l.lot_id)),
        LotPolicy::Hifo => free.sort_by(|a, b| (b.0.cost_per_share, a.0.lot_id).cmp(&(a.0.cost_per_share, b.0.lot_id))),
        LotPolicy::MinTax => free.sort_by(|a, b| {
            let ta = tax_per_share(household, a.0, price, on);
            let tb = tax_per_share(household, b.0, price, on);
            (ta, a.0.lot_id).cmp(&(tb, b.0.lot_id))
        }),
    }
    let mut left = qty;
    let mut out = Vec::new();
    for (lot, free) in free {
        if left <= Decimal::ZERO {
            break;
        }
        let take = free.min(left);
        left -= take;
        out.push(LotRelief {
            lot_id: lot.lot_id,
            quantity: take,
            cost_per_share: lot.cost_per_share,
            est_gain_usd: ((price - lot.cost_per_share) * take).round_dp(2),
            long_term: lot.is_long_term(on),
        });
    }
    out
}

/// Tax owed per share sold from this lot (negative for a loss): the ordering
/// key of the least-tax policy. Losses come first (most negative), then
/// long-term gains (lower rate), then short-term gains.
fn tax_per_share(household: &Household, lot: &Lot, price: Decimal, on: NaiveDate) -> Decimal {
    let gain = price - lot.cost_per_share;
    let rate = if lot.is_long_term(on) { household.tax.long_term_rate } else { household.tax.short_term_rate };
    gain * rate
}

/// For a withdrawal: sells that raise the cash shortfall from the securities
/// whose cheapest lot costs the least tax per dollar (losses first).
fn raise_cash_sells<'a>(
    state: &State,
    account: &'a Account,
    proj: &Projection<'a>,
    constraints: &Constraints<'a>,
) -> Vec<(&'a SecurityId, Decimal, Decimal, OrderReason)> {
    let reserve = proj.value * account.settings.cash_reserve_pct;
    let mut shortfall = reserve - proj.cash;
    let mut out = Vec::new();
    if shortfall <= Decimal::ZERO {
        return out;
    }
    let mut ranked: Vec<(Decimal, &'a SecurityId, Decimal, Decimal)> = Vec::new();
    for (sec, lots) in &account.lots {
        if constraints.legacy.contains(sec) {
            continue;
        }
        let Ok(price) = confirmed_price(state, sec) else { continue };
        let qty = proj.quantity(sec);
        if qty <= Decimal::ZERO {
            continue;
        }
        let best = lots.iter().map(|l| (price - l.cost_per_share) / price).min().unwrap_or_default();
        ranked.push((best, sec, qty, price));
    }
    ranked.sort();
    for (_, sec, qty, price) in ranked {
        if shortfall <= Decimal::ZERO {
            break;
        }
        let want = (shortfall / price).round_dp_with_strategy(0, RoundingStrategy::AwayFromZero);
        let q = want.min(qty);
        shortfall -= q * price;
        out.push((sec, q, price, OrderReason::CashFlow));
    }
    out
}

/// Buys, most under-weight first, within the cash available.
#[allow(clippy::too_many_arguments)]
fn size_buys(
    state: &State,
    account: &Account,
    constraints: &Constraints<'_>,
    view: &HouseholdView,
    mut buys: Vec<(&SecurityId, Decimal, Decimal)>,
    available: Decimal,
    ctx: &Context,
    plan: &mut Plan,
) {
    if ctx.mode == Mode::RaiseCash {
        return;
    }
    buys.sort_by(|a, b| (a.2, a.0).cmp(&(b.2, b.0)));
    let mut cash = available.max(Decimal::ZERO);
    for (sec, want_usd, _) in buys {
        if let Some((reason, why)) = constraints.no_buy.get(sec) {
            let detail = match reason {
                SkipReason::Restricted => format!("{why} forbids buying"),
                _ => why.clone(),
            };
            plan.skipped.push(skip(sec, Side::Buy, *reason, detail));
            continue;
        }
        if let Some(sold_on) =
            (!view.loss_sold.is_empty()).then(|| view.loss_sold.get(wash_key(state, sec).as_ref())).flatten()
        {
            let detail = format!("{sec} or a substantially identical security was sold at a loss on {sold_on}");
            plan.skipped.push(skip(sec, Side::Buy, SkipReason::WashSaleBlock, detail));
            continue;
        }
        let price = match confirmed_price(state, sec) {
            Ok(p) => p,
            Err(r) => {
                plan.skipped.push(skip(sec, Side::Buy, r, "no confirmed price"));
                continue;
            }
        };
        let usd = want_usd.min(cash);
        if usd < want_usd && usd < account.settings.min_trade_usd {
            plan.skipped.push(skip(
                sec,
                Side::Buy,
                SkipReason::InsufficientCash,
                format!("wanted ${}, ${} available", want_usd.round_dp(2), cash.round_dp(2)),
            ));
            continue;
        }
        let qty = round_quantity(usd / price, account.settings.fractional, state);
        if qty <= Decimal::ZERO {
            plan.skipped.push(skip(
                sec,
                Side::Buy,
                SkipReason::RoundsToZero,
                format!("${} buys less than one share", usd.round_dp(2)),
            ));
            continue;
        }
        if qty * price < account.settings.min_trade_usd {
            plan.skipped.push(skip(
                sec,
                Side::Buy,
                SkipReason::BelowMinimum,
                format!(
                    "buy of ${} is below the ${} minimum",
                    (qty * price).round_dp(2),
                    account.settings.min_trade_usd
                ),
            ));
            continue;
        }
        cash -= qty * price;
        plan.inputs.prices.insert(sec.clone(), price);
        plan.orders.push(PlannedOrder {
            security: sec.clone(),
            side: Side::Buy,
            quantity: qty,
            ref_price: price,
            reason: if constraints.replacements.contains(sec) { OrderReason::Replacement } else { ctx.reason },
            lots: Vec::new(),
        });
    }
}

/// Households an event about `sec` can affect: holders, and subscribers of
/// models that target it.
pub fn households_touching(state: &State, sec: &SecurityId) -> BTreeSet<HouseholdId> {
    let mut out: BTreeSet<HouseholdId> = state.holders.get(sec).cloned().unwrap_or_default();
    for (model_id, model) in &state.models {
        if model.weights.contains_key(sec) {
            if let Some(subs) = state.subscribers.get(model_id) {
                out.extend(subs.iter().cloned());
            }
        }
    }
    out
}
