//! Tax objectives (taxable accounts, household-wide, per calendar year):
//! harvest losses (the default), realize gains up to a target, or stay
//! tax-neutral within a tolerance. Pure: the pieces of an account's plan
//! that an objective changes — gains realized on purpose and bought straight
//! back, and discretionary sales trimmed so the year's net realized gain
//! stays inside a window.
//!
//! Gains are counted exactly, (price − basis) × shares, never from the
//! rounded estimates on orders, so a household filled at its reference
//! prices lands exactly where the plan said.

use crate::event::{Side, TaxObjective};
use crate::ids::SecurityId;
use crate::output::{LotRelief, OrderReason, Skip, SkipReason};
use crate::rebalance::{confirmed_price, round_down, Plan, PlannedOrder};
use crate::state::{one_year_after, Account, Household, Lot, State};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The objective in words, for the audit.
pub fn describe(o: &TaxObjective) -> String {
    match o {
        TaxObjective::HarvestLosses => "harvest losses".to_string(),
        TaxObjective::RealizeGains { target_usd } => format!("realize gains up to ${target_usd} a year"),
        TaxObjective::TaxNeutral { tolerance_usd } => {
            format!("tax-neutral: net realized gain within ±${tolerance_usd} a year")
        }
    }
}

/// The exact gain of the lots a sale relieves at `price`.
pub fn exact_gain(lots: &[LotRelief], price: Decimal) -> Decimal {
    lots.iter().map(|l| (price - l.cost_per_share) * l.quantity).sum()
}

/// The gain a household wants realized now on the daily close: for
/// realize-gains, what is left of the target; for tax-neutral, what brings a
/// net below −tolerance back to zero. Never more than the budget left.
pub fn gain_wanted(objective: &TaxObjective, net: Decimal, budget_left: Option<Decimal>) -> Decimal {
    let want = match objective {
        TaxObjective::HarvestLosses => Decimal::ZERO,
        TaxObjective::RealizeGains { target_usd } => *target_usd - net,
        TaxObjective::TaxNeutral { tolerance_usd } if net < -*tolerance_usd => -net,
        TaxObjective::TaxNeutral { .. } => Decimal::ZERO,
    };
    want.min(budget_left.unwrap_or(Decimal::MAX)).max(Decimal::ZERO)
}

/// Gains realized on purpose: lots with a gain are sold (long-term first,
/// the largest gain per share first, so the fewest shares trade) until
/// `want` is reached, and the same shares are bought straight back (a gain
/// sale opens no wash-sale window). Securities with open orders, those
/// `excluded` (restricted, legacy), and those whose buy-back would wash a
/// recent loss sale are left alone; short-term lots that turn long-term within the deferral
/// window wait. Returns the securities traded and the gain planned.
#[allow(clippy::too_many_arguments)]
pub fn gain_harvest<'a>(
    state: &'a State,
    household: &Household,
    account: &'a Account,
    loss_sold: &BTreeMap<String, NaiveDate>,
    excluded: &dyn Fn(&SecurityId) -> bool,
    on: NaiveDate,
    want: Decimal,
    fractional_dp: u32,
    plan: &mut Plan,
) -> (Vec<&'a SecurityId>, Decimal) {
    let dp = if account.settings.fractional { fractional_dp } else { 0 };
    let deferral = Days::new(u64::from(household.tax.short_term_deferral_days));
    // (short term?, −gain per share, security, lot)
    let mut ranked: Vec<(bool, Decimal, &'a SecurityId, &'a Lot, Decimal)> = Vec::new();
    for (sec, lots) in &account.lots {
        let Ok(price) = confirmed_price(state, sec) else { continue };
        if excluded(sec)
            || account.pending.values().any(|p| &p.security == sec)
            || loss_sold.contains_key(crate::tax::wash_key(state, sec).as_ref())
        {
            continue;
        }
        for l in lots {
            let gain = price - l.cost_per_share;
            if gain <= Decimal::ZERO {
                continue;
            }
            let long = l.is_long_term(on);
            if !long && one_year_after(l.holding_start) + Days::new(1) <= on + deferral {
                continue;
            }
            ranked.push((!long, -gain, sec, l, price));
        }
    }
    ranked.sort_by(|a, b| (a.0, a.1, a.2, a.3.lot_id).cmp(&(b.0, b.1, b.2, b.3.lot_id)));
    let mut left = want;
    let mut by_sec: BTreeMap<&'a SecurityId, (Decimal, Vec<LotRelief>)> = BTreeMap::new();
    for (_, neg_gain, sec, lot, price) in ranked {
        let gain = -neg_gain;
        // Whole shares (or the account's fractions) that fit what is left.
        let n = round_down(lot.quantity.min(left / gain), dp);
        if n <= Decimal::ZERO {
            continue;
        }
        left -= n * gain;
        push_relief(&mut by_sec, sec, lot, n, price, on);
    }
    let mut traded = Vec::new();
    let mut planned = Decimal::ZERO;
    for (sec, (price, lots)) in by_sec {
        let qty: Decimal = lots.iter().map(|l| l.quantity).sum();
        if qty * price < account.settings.min_trade_usd {
            plan.skipped.push(Skip {
                security: sec.clone(),
                side: Side::Sell,
                reason: SkipReason::BelowMinimum,
                detail: format!(
                    "gain realization of ${} is below the ${} minimum",
                    (qty * price).round_dp(2),
                    account.settings.min_trade_usd
                ),
            });
            continue;
        }
        let gain = exact_gain(&lots, price);
        planned += gain;
        plan.rules.push(format!(
            "tax objective: realize ${} of gain on {} {sec} from {} lot(s), bought straight back",
            gain.round_dp(2),
            qty.normalize(),
            lots.len()
        ));
        plan.inputs.prices.insert(sec.clone(), price);
        plan.orders.push(PlannedOrder {
            security: sec.clone(),
            side: Side::Sell,
            quantity: qty,
            ref_price: price,
            reason: OrderReason::GainHarvest,
            lots,
        });
        plan.orders.push(PlannedOrder {
            security: sec.clone(),
            side: Side::Buy,
            quantity: qty,
            ref_price: price,
            reason: OrderReason::GainHarvest,
            lots: Vec::new(),
        });
        traded.push(sec);
    }
    (traded, planned)
}

fn push_relief<'a>(
    by_sec: &mut BTreeMap<&'a SecurityId, (Decimal, Vec<LotRelief>)>,
    sec: &'a SecurityId,
    lot: &Lot,
    n: Decimal,
    price: Decimal,
    on: NaiveDate,
) {
    let entry = by_sec.entry(sec).or_insert((price, Vec::new()));
    entry.1.push(LotRelief {
        lot_id: lot.lot_id,
        quantity: n,
        cost_per_share: lot.cost_per_share,
        est_gain_usd: ((price - lot.cost_per_share) * n).round_dp(2),
        long_term: lot.is_long_term(on),
    });
}

/// Trims the discretionary sales of a plan so the gain they realize, added
/// to `net` (this year's realized and pending), stays within
/// [`lo`, `hi`]: losses are taken first (down to `lo`), then gains (up to
/// `hi`), lot by lot, in whole shares (or the account's fractions). A sale
/// trimmed below the minimum trade is dropped and the rest fitted again.
/// Forced sales are never trimmed. Returns the gain the sales now realize.
pub fn fit_window(
    sold: &mut Vec<PlannedOrder>,
    lo: Decimal,
    hi: Decimal,
    account: &Account,
    fractional_dp: u32,
    window: &str,
    plan: &mut Plan,
) -> Decimal {
    let dp = if account.settings.fractional { fractional_dp } else { 0 };
    let trimmable =
        |o: &PlannedOrder| matches!(o.reason, OrderReason::Drift | OrderReason::ModelChange | OrderReason::Setup);
    let fixed: Decimal = sold.iter().filter(|o| !trimmable(o)).map(|o| exact_gain(&o.lots, o.ref_price)).sum();
    // Bounded: each pass drops a sale or ends.
    for _ in 0..=sold.len() {
        let mut running = fixed;
        // (gain per share, order, lot): losses first, then gains, smallest first.
        let mut ranked: Vec<(Decimal, usize, usize)> = Vec::new();
        for (i, o) in sold.iter().enumerate().filter(|(_, o)| trimmable(o)) {
            for (j, l) in o.lots.iter().enumerate() {
                ranked.push((o.ref_price - l.cost_per_share, i, j));
            }
        }
        ranked.sort();
        let mut take: BTreeMap<(usize, usize), Decimal> = BTreeMap::new();
        for (g, i, j) in ranked {
            let q = sold[i].lots[j].quantity;
            let n = if g > Decimal::ZERO {
                round_down(((hi - running) / g).min(q), dp)
            } else if g < Decimal::ZERO {
                round_down(((running - lo) / -g).min(q), dp)
            } else {
                q
            }
            .max(Decimal::ZERO);
            running += n * g;
            take.insert((i, j), n);
        }
        let mut below: Option<usize> = None;
        for (i, o) in sold.iter().enumerate().filter(|(_, o)| trimmable(o)) {
            let qty: Decimal = (0..o.lots.len()).map(|j| take[&(i, j)]).sum();
            if qty < o.quantity && (qty.is_zero() || qty * o.ref_price < account.settings.min_trade_usd) {
                below = Some(i);
                break;
            }
        }
        if let Some(i) = below {
            let o = sold.remove(i);
            plan.skipped.push(Skip {
                security: o.security.clone(),
                side: Side::Sell,
                reason: SkipReason::TaxObjective,
                detail: format!(
                    "sale of {} realizing ${} kept: the year's net realized gain must stay {window}",
                    o.quantity.normalize(),
                    exact_gain(&o.lots, o.ref_price).round_dp(2)
                ),
            });
            continue;
        }
        for (i, o) in sold.iter_mut().enumerate() {
            if !trimmable(o) {
                continue;
            }
            let before = o.quantity;
            for (j, l) in o.lots.iter_mut().enumerate() {
                let n = take[&(i, j)];
                if n < l.quantity {
                    l.quantity = n;
                    l.est_gain_usd = ((o.ref_price - l.cost_per_share) * n).round_dp(2);
                }
            }
            o.lots.retain(|l| l.quantity > Decimal::ZERO);
            o.quantity = o.lots.iter().map(|l| l.quantity).sum();
            if o.quantity < before {
                plan.skipped.push(Skip {
                    security: o.security.clone(),
                    side: Side::Sell,
                    reason: SkipReason::TaxObjective,
                    detail: format!(
                        "{} of {} shares kept: the year's net realized gain must stay {window}",
                        (before - o.quantity).normalize(),
                        before.normalize()
                    ),
                });
            }
        }
        return running;
    }
    fixed
}
