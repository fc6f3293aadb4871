//! The first rebalance (DESIGN §5, rules 1–4 and 7): sleeve targets blended
//! into one account target, restrictions and screens applied, drift compared
//! with bands, trades sized, and sells given their lots. Pure: it reads state
//! and returns a plan; the fold turns the plan into orders and changes.

use crate::event::{AccountKind, LotPolicy, RestrictionRule, Side};
use crate::ids::{HouseholdId, RestrictionId, SecurityId};
use crate::output::{DecisionInputs, LotRelief, OrderReason, Skip, SkipReason};
use crate::state::{Account, Household, Lot, State};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::{BTreeMap, BTreeSet};

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
}

/// Why a security is constrained for this account.
#[derive(Clone, Debug, Default)]
struct Constraints {
    /// Must be sold entirely, with the reason to give the sale.
    forced_sell: BTreeMap<SecurityId, OrderReason>,
    /// May not be bought (the restriction that says so).
    no_buy: BTreeMap<SecurityId, String>,
    /// Never traded; counts toward the account.
    legacy: BTreeSet<SecurityId>,
}

/// The blended account target after restrictions, plus the constraints.
struct Target {
    weights: BTreeMap<SecurityId, Decimal>,
    constraints: Constraints,
}

pub fn plan_account(state: &State, household: &Household, account: &Account, ctx: &Context) -> Plan {
    let mut plan = Plan::default();
    plan.inputs.state_version = state.meta.applied;
    let value = account_value(state, account);
    plan.inputs.account_value_usd = value.total;
    plan.inputs.cash_usd = account.cash;
    for (id, r) in household.restrictions_in_force(&account.id, ctx.now) {
        plan.inputs.restrictions.insert(id.clone(), r.version);
    }
    let target = account_target(state, household, account, ctx, &mut plan);
    if value.total <= Decimal::ZERO {
        plan.rules.push("account_value: nothing to invest".to_string());
        return plan;
    }
    let mut candidates: BTreeSet<SecurityId> = target.weights.keys().cloned().collect();
    candidates.extend(account.securities());

    let mut sells = Vec::new();
    let mut buys: Vec<(SecurityId, Decimal, Decimal)> = Vec::new(); // (security, value wanted, drift)
    let mut inside_band = 0usize;
    let mut inside_band_max = (Decimal::ZERO, None::<SecurityId>);

    for sec in &candidates {
        let price = match confirmed_price(state, sec) {
            Ok(p) => p,
            Err(reason) => {
                let held = account.projected_quantity(sec);
                let wanted = target.weights.get(sec).copied().unwrap_or_default();
                if held > Decimal::ZERO || wanted > Decimal::ZERO {
                    let side = if wanted > Decimal::ZERO { Side::Buy } else { Side::Sell };
                    plan.skipped.push(skip(sec, side, reason, "no confirmed price to size a trade"));
                }
                continue;
            }
        };
        let qty = account.projected_quantity(sec);
        let current = qty * price / value.total;
        let wanted = target.weights.get(sec).copied().unwrap_or_default();
        let drift = current - wanted;

        if target.constraints.legacy.contains(sec) {
            if drift != Decimal::ZERO {
                plan.skipped.push(skip(sec, Side::Sell, SkipReason::LegacyHolding, "legacy holding kept as is"));
            }
            continue;
        }
        if let Some(reason) = target.constraints.forced_sell.get(sec) {
            if qty > Decimal::ZERO && ctx.mode != Mode::InvestCash {
                plan.inputs.prices.insert(sec.clone(), price);
                sells.push((sec.clone(), qty, price, *reason));
            }
            continue;
        }
        let band = drift_band(account, wanted);
        let outside = drift.abs() > band;
        match ctx.mode {
            Mode::Full if !outside => {
                inside_band += 1;
                if drift.abs() > inside_band_max.0 {
                    inside_band_max = (drift.abs(), Some(sec.clone()));
                }
            }
            Mode::Full | Mode::InvestCash if drift < Decimal::ZERO => {
                buys.push((sec.clone(), -drift * value.total, drift));
            }
            Mode::Full if drift > Decimal::ZERO => {
                let q = round_quantity(drift * value.total / price, account.settings.fractional, state);
                plan.inputs.prices.insert(sec.clone(), price);
                sells.push((sec.clone(), q.min(qty), price, ctx.reason));
            }
            _ => {}
        }
    }
    if inside_band > 0 {
        let detail = match &inside_band_max.1 {
            Some(s) => format!("{inside_band} securities inside their bands; largest drift {} ({s})", pct(inside_band_max.0)),
            None => format!("{inside_band} securities on target"),
        };
        plan.skipped.push(skip(&SecurityId::new("*"), Side::Buy, SkipReason::InsideBand, detail));
    }

    if ctx.mode == Mode::RaiseCash {
        sells = raise_cash_sells(state, account, &target.constraints, value.total);
    }

    // Sells first: their proceeds fund the buys.
    let mut proceeds = Decimal::ZERO;
    for (sec, qty, price, reason) in sells {
        if let Some(order) = size_sell(state, household, account, &sec, qty, price, reason, ctx, &mut plan) {
            proceeds += order.quantity * price;
            plan.orders.push(order);
        }
    }
    let reserve = value.total * account.settings.cash_reserve_pct;
    let available = account.projected_cash() + proceeds - reserve;
    size_buys(state, account, &target.constraints, buys, available, ctx, &mut plan);
    plan
}

struct AccountValue {
    total: Decimal,
}

/// Projected cash plus projected holdings at confirmed prices. Holdings with
/// no confirmed price count at zero (and cannot be traded).
fn account_value(state: &State, account: &Account) -> AccountValue {
    let mut total = account.projected_cash();
    for sec in account.securities() {
        if let Ok(p) = confirmed_price(state, &sec) {
            total += account.projected_quantity(&sec) * p;
        }
    }
    AccountValue { total: total.max(Decimal::ZERO) }
}

fn confirmed_price(state: &State, sec: &SecurityId) -> Result<Decimal, SkipReason> {
    match state.prices.get(sec) {
        Some(p) if p.held.is_none() => Ok(p.price),
        Some(_) => Err(SkipReason::UnconfirmedPrice),
        None => Err(SkipReason::NoPrice),
    }
}

/// ±abs band, narrowed to ±rel × target for small positions; zero for a
/// security the target does not hold (any holding of it is out of band).
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

fn skip(sec: &SecurityId, side: Side, reason: SkipReason, detail: impl Into<String>) -> Skip {
    Skip { security: sec.clone(), side, reason, detail: detail.into() }
}

fn pct(x: Decimal) -> String {
    format!("{}pp", (x * Decimal::ONE_HUNDRED).round_dp(2).normalize())
}

/// Sleeves blended by percent (the same security in two sleeves is netted),
/// then restrictions and screens applied.
fn account_target(state: &State, household: &Household, account: &Account, ctx: &Context, plan: &mut Plan) -> Target {
    let mut weights: BTreeMap<SecurityId, Decimal> = BTreeMap::new();
    for sleeve in &account.sleeves {
        match state.models.get(&sleeve.model) {
            Some(model) => {
                plan.inputs.models.insert(sleeve.model.clone(), model.version);
                plan.rules.push(format!("target: {} v{} × {}", sleeve.model, model.version, sleeve.percent.normalize()));
                for (sec, w) in &model.weights {
                    *weights.entry(sec.clone()).or_default() += *w * sleeve.percent;
                }
            }
            None => plan.rules.push(format!("target: model {} not published yet; its sleeve stays in cash", sleeve.model)),
        }
    }
    let mut constraints = Constraints::default();
    let value = account_value(state, account).total;
    let current_weight = |sec: &SecurityId| -> Decimal {
        match (confirmed_price(state, sec), value > Decimal::ZERO) {
            (Ok(p), true) => account.projected_quantity(sec) * p / value,
            _ => Decimal::ZERO,
        }
    };
    let mut removed: Vec<(SecurityId, Decimal)> = Vec::new();
    let mut substitutes: BTreeMap<SecurityId, SecurityId> = BTreeMap::new();
    let rules_in_force: Vec<(&RestrictionId, &crate::state::Restriction)> =
        household.restrictions_in_force(&account.id, ctx.now).collect();

    for (id, r) in &rules_in_force {
        if let RestrictionRule::Substitute { security, substitute } = &r.rule {
            substitutes.insert(security.clone(), substitute.clone());
            plan.rules.push(format!("restriction {id} v{}: substitute {substitute} for {security}", r.version));
        }
    }
    // Which securities each rule touches: those in the target or held.
    let mut universe: BTreeSet<SecurityId> = weights.keys().cloned().collect();
    universe.extend(account.securities());
    // (security, forced-sale reason or none for buy-only, rule tag)
    let mut exclusions: Vec<(SecurityId, Option<OrderReason>, String)> = Vec::new();
    let mut caps: Vec<(SecurityId, Decimal, String)> = Vec::new();
    for (id, r) in &rules_in_force {
        let tag = format!("restriction {id} v{}", r.version);
        match &r.rule {
            RestrictionRule::DoNotHold { security } => {
                plan.rules.push(format!("{tag}: do not hold {security}"));
                exclusions.push((security.clone(), Some(OrderReason::Restriction), tag));
            }
            RestrictionRule::DoNotBuy { security } => {
                plan.rules.push(format!("{tag}: do not buy {security}"));
                exclusions.push((security.clone(), None, tag));
            }
            RestrictionRule::SectorExclusion { sector } => {
                plan.rules.push(format!("{tag}: exclude sector {sector}"));
                for sec in universe.iter().filter(|s| state.securities.get(*s).is_some_and(|x| &x.sector == sector)) {
                    exclusions.push((sec.clone(), Some(OrderReason::Restriction), tag.clone()));
                }
            }
            RestrictionRule::EsgMinimum { min_score, mode } => {
                plan.rules.push(format!("{tag}: ESG score at least {min_score} ({mode:?})"));
                for sec in universe.iter().filter(|s| state.esg.get(*s).is_some_and(|e| e.score < *min_score)) {
                    let forced = mode.sells().then_some(OrderReason::Esg);
                    exclusions.push((sec.clone(), forced, tag.clone()));
                }
            }
            RestrictionRule::KeepLegacy { security } => {
                plan.rules.push(format!("{tag}: keep legacy {security}"));
                constraints.legacy.insert(security.clone());
            }
            RestrictionRule::MaxWeight { security, max_weight } => caps.push((security.clone(), *max_weight, tag)),
            RestrictionRule::Substitute { .. } => {}
        }
    }
    for (sec, forced, tag) in exclusions {
        let original = weights.remove(&sec).unwrap_or_default();
        // Buy-only restrictions keep what is held, up to the original target.
        let keep = if forced.is_none() { original.min(current_weight(&sec)) } else { Decimal::ZERO };
        if keep > Decimal::ZERO {
            weights.insert(sec.clone(), keep);
        }
        if original > keep {
            removed.push((sec.clone(), original - keep));
        }
        match forced {
            Some(reason) => {
                constraints.forced_sell.insert(sec, reason);
            }
            None => {
                constraints.no_buy.insert(sec, tag);
            }
        }
    }
    for (sec, cap, tag) in caps {
        if let Some(w) = weights.get_mut(&sec) {
            if *w > cap {
                plan.rules.push(format!("{tag}: cap {sec} at {}", pct(cap)));
                removed.push((sec.clone(), *w - cap));
                *w = cap;
            }
        }
    }
    redistribute(state, &mut weights, removed, &substitutes, &constraints, plan);

    // Legacy holdings count toward the account: the rest of the target shrinks to fit.
    let legacy_weight: Decimal = constraints.legacy.iter().map(current_weight).sum();
    for sec in &constraints.legacy {
        weights.remove(sec);
    }
    let total: Decimal = weights.values().sum();
    let room = (Decimal::ONE - legacy_weight).max(Decimal::ZERO);
    if total > room && total > Decimal::ZERO {
        let scale = room / total;
        for w in weights.values_mut() {
            *w *= scale;
        }
        plan.rules.push(format!("legacy holdings take {}; targets scaled by {}", pct(legacy_weight), scale.round_dp(6)));
    }
    weights.retain(|_, w| *w > Decimal::ZERO);
    Target { weights, constraints }
}

/// Removed weight goes to the named substitute, else pro rata within the
/// same sector, else pro rata to the rest, else stays in cash.
fn redistribute(
    state: &State,
    weights: &mut BTreeMap<SecurityId, Decimal>,
    removed: Vec<(SecurityId, Decimal)>,
    substitutes: &BTreeMap<SecurityId, SecurityId>,
    constraints: &Constraints,
    plan: &mut Plan,
) {
    let eligible = |s: &SecurityId| {
        !constraints.forced_sell.contains_key(s) && !constraints.no_buy.contains_key(s) && !constraints.legacy.contains(s)
    };
    for (sec, w) in removed {
        let named = substitutes
            .get(&sec)
            .into_iter()
            .chain(state.securities.get(&sec).into_iter().flat_map(|s| s.substitutes.iter()))
            .find(|s| eligible(s) && state.securities.contains_key(*s));
        if let Some(sub) = named {
            *weights.entry(sub.clone()).or_default() += w;
            plan.rules.push(format!("redistribute: {} of {sec} to substitute {sub}", pct(w)));
            continue;
        }
        let sector = state.securities.get(&sec).map(|s| s.sector.as_str());
        let same_sector: Vec<SecurityId> = weights
            .keys()
            .filter(|s| eligible(s) && state.securities.get(*s).map(|x| x.sector.as_str()) == sector)
            .cloned()
            .collect();
        let pool = if same_sector.is_empty() {
            weights.keys().filter(|s| eligible(s)).cloned().collect::<Vec<_>>()
        } else {
            same_sector.clone()
        };
        let base: Decimal = pool.iter().map(|s| weights[s]).sum();
        if base <= Decimal::ZERO {
            plan.rules.push(format!("redistribute: {} of {sec} kept in cash (nothing eligible)", pct(w)));
            continue;
        }
        for s in &pool {
            let x = weights.get_mut(s).expect("pool is drawn from weights");
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
    sec: &SecurityId,
    qty: Decimal,
    price: Decimal,
    reason: OrderReason,
    ctx: &Context,
    plan: &mut Plan,
) -> Option<PlannedOrder> {
    let forced = matches!(reason, OrderReason::Restriction | OrderReason::Esg);
    let held = account.projected_quantity(sec);
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
    let lots = choose_lots(state, household, account, sec, qty, price, ctx.trade_date);
    let relieved: Decimal = lots.iter().map(|l| l.quantity).sum();
    if relieved <= Decimal::ZERO {
        plan.skipped.push(skip(sec, Side::Sell, SkipReason::PendingOrder, "every lot is already committed to an open sell"));
        return None;
    }
    plan.inputs.prices.insert(sec.clone(), price);
    Some(PlannedOrder { security: sec.clone(), side: Side::Sell, quantity: relieved, ref_price: price, reason, lots })
}

/// Lots to relieve for a sell of `qty`, by the account's policy. Lots already
/// committed to open sells are not offered again.
pub fn choose_lots(
    state: &State,
    household: &Household,
    account: &Account,
    sec: &SecurityId,
    qty: Decimal,
    price: Decimal,
    on: NaiveDate,
) -> Vec<LotRelief> {
    let _ = state;
    let Some(lots) = account.lots.get(sec) else { return Vec::new() };
    let mut committed: BTreeMap<u64, Decimal> = BTreeMap::new();
    for p in account.pending.values().filter(|p| &p.security == sec && p.side == Side::Sell) {
        for l in &p.lots {
            *committed.entry(l.lot_id).or_default() += l.quantity;
        }
    }
    let mut ranked: Vec<(&Lot, Decimal)> = lots
        .iter()
        .map(|l| (l, l.quantity - committed.get(&l.lot_id).copied().unwrap_or_default()))
        .filter(|(_, free)| *free > Decimal::ZERO)
        .collect();
    let policy = if account.kind == AccountKind::Taxable { account.settings.lot_policy } else { LotPolicy::Fifo };
    match policy {
        LotPolicy::Fifo => ranked.sort_by(|a, b| (a.0.acquired, a.0.lot_id).cmp(&(b.0.acquired, b.0.lot_id))),
        LotPolicy::Hifo => ranked.sort_by(|a, b| (b.0.cost_per_share, a.0.lot_id).cmp(&(a.0.cost_per_share, b.0.lot_id))),
        LotPolicy::MinTax => ranked.sort_by(|a, b| {
            let ta = tax_per_share(household, a.0, price, on);
            let tb = tax_per_share(household, b.0, price, on);
            (ta, a.0.lot_id).cmp(&(tb, b.0.lot_id))
        }),
    }
    let mut left = qty;
    let mut out = Vec::new();
    for (lot, free) in ranked {
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

/// For a withdrawal: sells that raise the cash shortfall from the lots that
/// cost the least tax, across all tradable securities.
fn raise_cash_sells(
    state: &State,
    account: &Account,
    constraints: &Constraints,
    value: Decimal,
) -> Vec<(SecurityId, Decimal, Decimal, OrderReason)> {
    let reserve = value * account.settings.cash_reserve_pct;
    let mut shortfall = reserve - account.projected_cash();
    let mut out = Vec::new();
    if shortfall <= Decimal::ZERO {
        return out;
    }
    // Rank securities by their cheapest lot's gain per dollar (losses first).
    let mut ranked: Vec<(Decimal, SecurityId, Decimal, Decimal)> = Vec::new();
    for (sec, lots) in &account.lots {
        if constraints.legacy.contains(sec) {
            continue;
        }
        let Ok(price) = confirmed_price(state, sec) else { continue };
        let qty = account.projected_quantity(sec);
        if qty <= Decimal::ZERO {
            continue;
        }
        let best = lots.iter().map(|l| (price - l.cost_per_share) / price).min().unwrap_or_default();
        ranked.push((best, sec.clone(), qty, price));
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
fn size_buys(
    state: &State,
    account: &Account,
    constraints: &Constraints,
    mut buys: Vec<(SecurityId, Decimal, Decimal)>,
    available: Decimal,
    ctx: &Context,
    plan: &mut Plan,
) {
    if ctx.mode == Mode::RaiseCash {
        return;
    }
    buys.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    let mut cash = available.max(Decimal::ZERO);
    for (sec, want_usd, _) in buys {
        if let Some(why) = constraints.no_buy.get(&sec) {
            plan.skipped.push(skip(&sec, Side::Buy, SkipReason::Restricted, format!("{why} forbids buying")));
            continue;
        }
        let price = match confirmed_price(state, &sec) {
            Ok(p) => p,
            Err(r) => {
                plan.skipped.push(skip(&sec, Side::Buy, r, "no confirmed price"));
                continue;
            }
        };
        let usd = want_usd.min(cash);
        if usd < want_usd && usd < account.settings.min_trade_usd {
            plan.skipped.push(skip(
                &sec,
                Side::Buy,
                SkipReason::InsufficientCash,
                format!("wanted ${}, ${} available", want_usd.round_dp(2), cash.round_dp(2)),
            ));
            continue;
        }
        let qty = round_quantity(usd / price, account.settings.fractional, state);
        if qty <= Decimal::ZERO {
            plan.skipped.push(skip(&sec, Side::Buy, SkipReason::RoundsToZero, format!("${} buys less than one share", usd.round_dp(2))));
            continue;
        }
        if qty * price < account.settings.min_trade_usd {
            plan.skipped.push(skip(
                &sec,
                Side::Buy,
                SkipReason::BelowMinimum,
                format!("buy of ${} is below the ${} minimum", (qty * price).round_dp(2), account.settings.min_trade_usd),
            ));
            continue;
        }
        cash -= qty * price;
        plan.inputs.prices.insert(sec.clone(), price);
        plan.orders.push(PlannedOrder { security: sec, side: Side::Buy, quantity: qty, ref_price: price, reason: ctx.reason, lots: Vec::new() });
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
