//! Tax-aware transitions: a household funded with legacy positions moves to
//! its model over several periods within a tax budget.
//!
//! While a transition is active, the taxable accounts make no drift sale of
//! their own; on the first clock of each period, [`period_sales`] sells the
//! positions above their band toward their target, lot by lot in the order
//! of least tax per dollar (losses, then long-term gains, then short-term
//! gains), taking gains only while the period's allowance lasts (the losses
//! sold first widen it). The allowance is the tightest of: what is left of
//! the transition's budget spread over the periods left, what is left of its
//! yearly budget, and the household's annual gain budget. Positions the
//! client keeps are never sold and count toward the account. Buys follow
//! the ordinary drift rule with the proceeds. Pure.

use crate::event::Side;
use crate::ids::SecurityId;
use crate::output::{LotRelief, OrderReason};
use crate::rebalance::{committed_sells, confirmed_price, drift_band_of, round_down, PlannedOrder, Projection};
use crate::state::{Account, Household, Lot, State, Transition};
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

/// A sale fills after its decision, at a price that may be higher: the
/// budget counts each share's gain as if it sold this much above the
/// reference price (2%), so a fill up to that much dearer stays within it.
pub const TRANSITION_PRICE_CUSHION: Decimal = Decimal::from_parts(2, 0, 0, false, 2);

/// Exact gain of the open transition sales of a household (taxable accounts).
pub fn pending_gain(hh: &Household) -> Decimal {
    hh.accounts
        .values()
        .filter(|a| a.kind.is_taxable())
        .flat_map(|a| a.pending.values())
        .filter(|p| p.reason == OrderReason::Transition && p.side == Side::Sell)
        .map(|p| crate::objective::exact_gain(&p.lots, p.ref_price))
        .sum()
}

/// The net realized gain this period may add, before this decision's plans:
/// the transition's budget left over the periods left (all of it once the
/// planned periods are over), its yearly budget left, whichever is tighter;
/// never below zero.
pub fn allowance(t: &Transition, pending: Decimal, on: NaiveDate) -> Decimal {
    let mut a: Option<Decimal> = None;
    let mut tighten = |x: Decimal| a = Some(a.map_or(x, |y| y.min(x)));
    if let Some(budget) = t.plan.budget_usd {
        // This period is number `periods_done` (1-based): it and those after it share what is left.
        let left_periods = t.plan.periods.saturating_sub(t.periods_done.saturating_sub(1)).max(1);
        tighten((budget - t.used_usd - pending) / Decimal::from(left_periods));
    }
    if let Some(yearly) = t.plan.yearly_budget_usd {
        let used = t.used_by_year.get(&on.year()).copied().unwrap_or_default();
        tighten(yearly - used - pending);
    }
    a.unwrap_or_default().max(Decimal::ZERO).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero)
}

/// Half the sum of |actual − target| weights over the names targeted or
/// held, kept positions left out: how far the account is from its model.
pub fn drift(
    state: &State,
    proj: &Projection<'_>,
    targets: &BTreeMap<&SecurityId, Decimal>,
    kept: &BTreeSet<&SecurityId>,
) -> Decimal {
    let value = proj.value();
    if value <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    let mut names: BTreeSet<&SecurityId> = targets.keys().copied().collect();
    names.extend(proj.held());
    let mut sum = Decimal::ZERO;
    for s in names.into_iter().filter(|s| !kept.contains(s)) {
        let actual = confirmed_price(state, s).map_or(Decimal::ZERO, |p| proj.quantity(s) * p / value);
        sum += (actual - targets.get(s).copied().unwrap_or_default()).abs();
    }
    (sum / Decimal::TWO).round_dp(6)
}

/// Whether every managed taxable account of the household is within
/// `threshold` of its target (kept positions left out).
pub fn complete(state: &State, hh: &Household, ctx: &crate::rebalance::Context, threshold: Decimal) -> bool {
    let kept: BTreeSet<&SecurityId> = hh.transition.as_ref().map(|t| t.plan.keep.iter().collect()).unwrap_or_default();
    hh.accounts.values().filter(|a| a.kind.is_taxable() && !a.sleeves.is_empty()).all(|a| {
        let proj = Projection::of(state, a);
        let owned = crate::rebalance::target_weights(state, hh, a, ctx);
        let targets: BTreeMap<&SecurityId, Decimal> = owned.iter().map(|(s, w)| (s, *w)).collect();
        drift(state, &proj, &targets, &kept) <= threshold
    })
}

/// One lot on offer.
struct Offer<'a> {
    sec: &'a SecurityId,
    lot: &'a Lot,
    free: Decimal,
    price: Decimal,
    gain: Decimal,
    /// The gain the budget counts: at the cushioned price.
    budget_gain: Decimal,
    tax_per_usd: Decimal,
    over: Decimal,
}

/// A period's sales (see the module): positions above their band sold
/// toward their target, least tax per dollar first, gains only within
/// `allowance` (counted at the cushioned price, [`TRANSITION_PRICE_CUSHION`]).
/// A security whose sale would fall below the minimum trade is left out and
/// the rest planned again. Returns the sales and their net gain at the
/// reference prices.
#[allow(clippy::too_many_arguments)]
pub fn period_sales<'a>(
    state: &'a State,
    hh: &Household,
    account: &'a Account,
    proj: &Projection<'a>,
    targets: &BTreeMap<&'a SecurityId, Decimal>,
    blocked: &dyn Fn(&SecurityId, &Lot, Decimal) -> bool,
    allowance: Decimal,
    on: NaiveDate,
) -> (Vec<PlannedOrder>, Decimal) {
    let dp = if account.settings.fractional { state.meta.settings.fractional_dp } else { 0 };
    let value = proj.value();
    let committed = committed_sells(account);
    let mut offers: Vec<Offer<'a>> = Vec::new();
    let mut excess: BTreeMap<&'a SecurityId, Decimal> = BTreeMap::new();
    for (sec, lots) in &account.lots {
        let Ok(price) = confirmed_price(state, sec) else { continue };
        let qty = proj.quantity(sec);
        if qty <= Decimal::ZERO || value <= Decimal::ZERO {
            continue;
        }
        let current = qty * price / value;
        let wanted = targets.get(sec).copied().unwrap_or_default();
        let over = current - wanted;
        if over <= drift_band_of(account, wanted) {
            continue;
        }
        excess.insert(sec, over * value);
        for lot in lots {
            let free = lot.quantity - committed.get(&(sec, lot.lot_id)).copied().unwrap_or_default();
            if free <= Decimal::ZERO || blocked(sec, lot, price) {
                continue;
            }
            let gain = price - lot.cost_per_share;
            let rate = if lot.is_long_term(on) { hh.tax.long_term_rate } else { hh.tax.short_term_rate };
            let budget_gain = price * (Decimal::ONE + TRANSITION_PRICE_CUSHION) - lot.cost_per_share;
            offers.push(Offer { sec, lot, free, price, gain, budget_gain, tax_per_usd: gain * rate / price, over });
        }
    }
    offers.sort_by(|a, b| {
        (a.tax_per_usd, std::cmp::Reverse(a.over), a.sec, a.lot.acquired, a.lot.lot_id).cmp(&(
            b.tax_per_usd,
            std::cmp::Reverse(b.over),
            b.sec,
            b.lot.acquired,
            b.lot.lot_id,
        ))
    });
    let mut left_out: BTreeSet<&'a SecurityId> = BTreeSet::new();
    // Bounded: each pass leaves a security out or ends.
    for _ in 0..=excess.len() {
        let (mut running, mut counted) = (Decimal::ZERO, Decimal::ZERO);
        let mut room = excess.clone();
        let mut taken: Vec<(&Offer<'a>, Decimal)> = Vec::new();
        for o in offers.iter().filter(|o| !left_out.contains(o.sec)) {
            let r = room.get(o.sec).copied().unwrap_or_default();
            let mut n = o.free.min(round_down(r / o.price, dp));
            if o.budget_gain > Decimal::ZERO {
                n = n.min(round_down((allowance - counted) / o.budget_gain, dp));
            }
            if n <= Decimal::ZERO {
                continue;
            }
            running += n * o.gain;
            counted += n * o.budget_gain;
            if let Some(r) = room.get_mut(o.sec) {
                *r -= n * o.price;
            }
            taken.push((o, n));
        }
        let mut by_sec: BTreeMap<&'a SecurityId, (Decimal, Vec<LotRelief>)> = BTreeMap::new();
        for (o, n) in taken {
            by_sec.entry(o.sec).or_insert((o.price, Vec::new())).1.push(LotRelief {
                lot_id: o.lot.lot_id,
                quantity: n,
                cost_per_share: o.lot.cost_per_share,
                est_gain_usd: (o.gain * n).round_dp(2),
                long_term: o.lot.is_long_term(on),
            });
        }
        let small = by_sec.iter().find(|(_, (price, lots))| {
            lots.iter().map(|l| l.quantity).sum::<Decimal>() * *price < account.settings.min_trade_usd
        });
        if let Some((sec, _)) = small {
            left_out.insert(sec);
            continue;
        }
        let orders = by_sec
            .into_iter()
            .map(|(sec, (price, lots))| PlannedOrder {
                security: sec.clone(),
                side: Side::Sell,
                quantity: lots.iter().map(|l| l.quantity).sum(),
                ref_price: price,
                reason: OrderReason::Transition,
                lots,
            })
            .collect();
        return (orders, running);
    }
    (Vec::new(), Decimal::ZERO)
}

/// One period of a projected transition path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PeriodProjection {
    /// 1-based.
    pub period: u32,
    pub date: NaiveDate,
    /// The tightest drift of the taxable accounts (half the sum of |actual −
    /// target|), before and after the period's trades.
    pub drift_before: Decimal,
    pub drift_after: Decimal,
    pub allowance_usd: Decimal,
    pub sold_usd: Decimal,
    pub bought_usd: Decimal,
    pub realized_short_usd: Decimal,
    pub realized_long_usd: Decimal,
    /// At the household's rates.
    pub tax_usd: Decimal,
    /// Net realized gain of the transition's sales to date.
    pub used_usd: Decimal,
    pub complete: bool,
}

/// Most periods a projection runs past the plan's count while there is
/// still something to sell.
pub const PROJECTION_EXTRA_PERIODS_MAX: u32 = 8;

/// The path a household's transition would take at today's prices: each
/// period's first clock decided by the real fold on a copy of the state,
/// every order filled at its reference price on the period's date. Runs the
/// plan's periods, then on (up to [`PROJECTION_EXTRA_PERIODS_MAX`] more)
/// while there is budget to sell with, and stops once the transition is
/// complete.
pub fn project(
    state: &State,
    household: &crate::ids::HouseholdId,
) -> Result<Vec<PeriodProjection>, crate::event::InputError> {
    use crate::event::{Clock, ClockKind, Envelope, Fill, InputError, Payload, SCHEMA_VERSION_CURRENT};
    use crate::fold::{step, Input};
    use crate::output::AuditBody;
    let mut state = state.clone();
    let hh = state.households.get(household).ok_or_else(|| InputError::invalid(format!("no household {household}")))?;
    let plan = hh
        .transition
        .as_ref()
        .ok_or_else(|| InputError::invalid(format!("household {household} has no transition")))?
        .plan
        .clone();
    let mut out = Vec::new();
    let mut n = 0u64;
    let max = plan.periods + PROJECTION_EXTRA_PERIODS_MAX;
    for k in 1..=max {
        let t = state.households[household].transition.clone().expect("kept by the fold");
        if !t.active() {
            break;
        }
        let date = t.next_period();
        let at = date.and_hms_opt(21, 0, 0).expect("a valid time").and_utc();
        let mut feed = |state: &mut State, payload: Payload| {
            n += 1;
            let env = Envelope {
                event_id: format!("projection-{n}"),
                producer: "transition-plan".into(),
                event_time: at,
                schema_version: SCHEMA_VERSION_CURRENT,
                payload,
            };
            step(state, Input::Event(&env))
        };
        let decided = feed(&mut state, Payload::Clock(Clock { kind: ClockKind::Review, trade_date: date }));
        if let Some((_, e)) = decided.rejection {
            return Err(e);
        }
        let mut row = PeriodProjection {
            period: k,
            date,
            drift_before: Decimal::ZERO,
            drift_after: Decimal::ZERO,
            allowance_usd: Decimal::ZERO,
            sold_usd: Decimal::ZERO,
            bought_usd: Decimal::ZERO,
            realized_short_usd: Decimal::ZERO,
            realized_long_usd: Decimal::ZERO,
            tax_usd: Decimal::ZERO,
            used_usd: Decimal::ZERO,
            complete: false,
        };
        for r in decided.audit.iter().filter(|r| r.household.as_ref() == Some(household)) {
            if let AuditBody::TransitionPeriod { drift, allowance_usd, .. } = &r.body {
                row.drift_before = row.drift_before.max(*drift);
                row.allowance_usd += *allowance_usd;
            }
        }
        let mut orders: Vec<_> = decided.orders.iter().filter(|o| &o.household == household).cloned().collect();
        orders.sort_by_key(|o| (o.side == Side::Buy, o.seq));
        for o in orders {
            match o.side {
                Side::Sell => row.sold_usd += o.quantity * o.ref_price,
                Side::Buy => row.bought_usd += o.quantity * o.ref_price,
            }
            let filled = feed(&mut state, Payload::Fill(Fill::of_order(&o, o.ref_price, date)));
            for r in &filled.audit {
                if let AuditBody::Tax { short_term_usd, long_term_usd, reportable: true, .. } = &r.body {
                    row.realized_short_usd += *short_term_usd;
                    row.realized_long_usd += *long_term_usd;
                }
            }
        }
        let hh = &state.households[household];
        row.tax_usd = (row.realized_short_usd * hh.tax.short_term_rate + row.realized_long_usd * hh.tax.long_term_rate)
            .round_dp(2);
        let t = hh.transition.as_ref().expect("kept by the fold");
        row.used_usd = t.used_usd;
        row.complete = !t.active();
        let kept: BTreeSet<&SecurityId> = t.plan.keep.iter().collect();
        let ctx = crate::rebalance::Context::new(at, date, OrderReason::Drift, crate::rebalance::Mode::Full);
        for a in hh.accounts.values().filter(|a| a.kind.is_taxable() && !a.sleeves.is_empty()) {
            let proj = Projection::of(&state, a);
            let owned = crate::rebalance::target_weights(&state, hh, a, &ctx);
            let targets: BTreeMap<&SecurityId, Decimal> = owned.iter().map(|(s, w)| (s, *w)).collect();
            row.drift_after = row.drift_after.max(drift(&state, &proj, &targets, &kept));
        }
        // Past the plan's periods, a period that sells nothing ends the
        // path, unless a yearly budget may be what holds it back and this
        // is not yet the first period of a new year (which frees it again).
        let first_of_year = out.last().is_none_or(|p: &PeriodProjection| p.date.year() < date.year());
        let stalled = row.sold_usd.is_zero() && (plan.yearly_budget_usd.is_none() || first_of_year);
        let done = row.complete;
        out.push(row);
        if done || (k >= plan.periods && stalled) {
            break;
        }
    }
    Ok(out)
}
