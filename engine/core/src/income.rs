//! Retirement income: scheduled withdrawals raised ahead of their date.
//!
//! On every clock, for each schedule of a household: a payment whose date
//! has come is paid (the cash set aside for it moves to the withdrawals
//! due, paid as cash allows) and the schedule moves on a period; a payment
//! within `lead_days` is set aside (the account's `income_reserved` grows,
//! so no buy spends it), and the account's plan then raises the cash it
//! lacks with [`raise`]: the lots that cost the least tax per dollar first
//! (losses, then long-term gains, then short-term gains), each security sold
//! only down to the bottom of its drift band while that is enough, and past
//! it (still least tax first) only when it is not. Pure, like the rest.

use crate::event::{AccountKind, Side};
use crate::fold::AuditDraft;
use crate::ids::{AccountId, SecurityId};
use crate::output::{AuditBody, LotRelief, OrderReason};
use crate::rebalance::{committed_sells, confirmed_price, drift_band_of, round_down, PlannedOrder, Projection};
use crate::state::{Account, Household, Lot, State};
use chrono::NaiveDate;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::BTreeMap;

/// Most payments of one schedule a single clock pays (a long gap between
/// clocks catches up at most this many).
pub const PAYMENTS_PER_CLOCK_MAX: usize = 24;

/// What a clock does to a household's schedules: the schedules and account
/// headers as they are after payments and reservations, and the audit of
/// each payment. None when nothing changes.
pub struct Due {
    pub income: BTreeMap<String, crate::state::IncomeSchedule>,
    pub accounts: BTreeMap<AccountId, Account>,
    pub audit: Vec<AuditDraft>,
}

/// Payments due on `on` are paid; payments within their lead are set aside.
pub fn on_clock(hh: &Household, on: NaiveDate) -> Option<Due> {
    if hh.income.is_empty() {
        return None;
    }
    let mut income = hh.income.clone();
    let mut accounts: BTreeMap<AccountId, Account> = BTreeMap::new();
    let mut audit = Vec::new();
    let mut changed = false;
    for (id, s) in income.iter_mut() {
        let Some(base) = hh.accounts.get(&s.account) else { continue };
        let account = accounts.entry(s.account.clone()).or_insert_with(|| crate::fold::header_account(base));
        for _ in 0..PAYMENTS_PER_CLOCK_MAX {
            if s.next_payment > on || !s.pays_on(s.next_payment) {
                break;
            }
            if s.raised_for == Some(s.next_payment) {
                account.income_reserved = (account.income_reserved - s.amount).max(Decimal::ZERO);
            }
            account.withdrawal_due += s.amount;
            let pay = account.withdrawal_due.min(account.cash).max(Decimal::ZERO);
            account.cash -= pay;
            account.withdrawal_due -= pay;
            let paid = pay.min(s.amount);
            audit.push(AuditDraft {
                household: Some(hh.id.clone()),
                body: AuditBody::IncomePaid {
                    account: s.account.clone(),
                    schedule_id: id.clone(),
                    payment_date: s.next_payment,
                    amount_usd: s.amount,
                    paid_usd: paid,
                    detail: if paid < s.amount {
                        format!(
                            "income {id}: ${} due on {}; ${paid} paid, the rest as soon as cash settles",
                            s.amount, s.next_payment
                        )
                    } else {
                        format!("income {id}: ${} paid on {}", s.amount, s.next_payment)
                    },
                },
            });
            s.raised_for = None;
            s.next_payment = s.after(s.next_payment);
            changed = true;
        }
        let raise_from = s.next_payment - chrono::Days::new(u64::from(s.lead_days));
        if s.pays_on(s.next_payment) && raise_from <= on && s.raised_for != Some(s.next_payment) {
            account.income_reserved += s.amount;
            s.raised_for = Some(s.next_payment);
            changed = true;
        }
    }
    changed.then_some(Due { income, accounts, audit })
}

/// The payments an account's reserved cash is for.
pub fn reserved_payments(hh: &Household, account: &AccountId) -> Vec<crate::output::ScheduledPayment> {
    hh.income
        .iter()
        .filter(|(_, s)| &s.account == account)
        .filter_map(|(id, s)| {
            s.raised_for.map(|d| crate::output::ScheduledPayment {
                schedule_id: id.clone(),
                payment_date: d,
                amount_usd: s.amount,
            })
        })
        .collect()
}

/// Tax a sale from these lots costs at the household's rates (a loss gives
/// a negative figure); nothing in a tax-deferred account.
pub fn est_tax(hh: &Household, kind: AccountKind, lots: &[LotRelief]) -> Decimal {
    if !kind.is_taxable() {
        return Decimal::ZERO;
    }
    lots.iter()
        .map(|l| l.est_gain_usd * if l.long_term { hh.tax.long_term_rate } else { hh.tax.short_term_rate })
        .sum::<Decimal>()
        .round_dp(2)
}

/// One lot on offer for an income sale.
struct Offer<'a> {
    sec: &'a SecurityId,
    lot: &'a Lot,
    free: Decimal,
    price: Decimal,
    /// Tax per dollar sold (0 in a tax-deferred account).
    tax_per_usd: Decimal,
    /// current − target weight: the more over-weight, the better to sell.
    drift: Decimal,
}

/// Sales that raise `shortfall`, least tax per dollar first while drift
/// stays small (see the module). `blocked` names securities that must not
/// be sold now (legacy, wash-sale risk, already traded by this plan); lots
/// already committed to open sells are not offered. Shares are whole (or the
/// account's fractions), rounded up only as far as the lot allows.
#[allow(clippy::too_many_arguments)]
pub fn raise<'a>(
    state: &'a State,
    hh: &Household,
    account: &'a Account,
    proj: &Projection<'a>,
    targets: &BTreeMap<&'a SecurityId, Decimal>,
    blocked: &dyn Fn(&SecurityId, &Lot, Decimal) -> bool,
    shortfall: Decimal,
    on: NaiveDate,
) -> Vec<PlannedOrder> {
    let dp = if account.settings.fractional { state.meta.settings.fractional_dp } else { 0 };
    let value = proj.value();
    let committed = committed_sells(account);
    let mut offers: Vec<Offer<'a>> = Vec::new();
    // Dollars each security may give before it drops below its band.
    let mut room: BTreeMap<&'a SecurityId, Decimal> = BTreeMap::new();
    for (sec, lots) in &account.lots {
        let Ok(price) = confirmed_price(state, sec) else { continue };
        let qty = proj.quantity(sec);
        if qty <= Decimal::ZERO || value <= Decimal::ZERO {
            continue;
        }
        let current = qty * price / value;
        let wanted = targets.get(sec).copied().unwrap_or_default();
        let floor = if wanted > Decimal::ZERO { wanted - drift_band_of(account, wanted) } else { Decimal::ZERO };
        room.insert(sec, ((current - floor) * value).max(Decimal::ZERO));
        for lot in lots {
            let free = lot.quantity - committed.get(&(sec, lot.lot_id)).copied().unwrap_or_default();
            if free <= Decimal::ZERO || blocked(sec, lot, price) {
                continue;
            }
            let rate = if lot.is_long_term(on) { hh.tax.long_term_rate } else { hh.tax.short_term_rate };
            let tax_per_usd =
                if account.kind.is_taxable() { (price - lot.cost_per_share) * rate / price } else { Decimal::ZERO };
            offers.push(Offer { sec, lot, free, price, tax_per_usd, drift: current - wanted });
        }
    }
    // Least tax per dollar; on a tie the most over-weight name, then the oldest lot.
    offers.sort_by(|a, b| {
        (a.tax_per_usd, std::cmp::Reverse(a.drift), a.sec, a.lot.acquired, a.lot.lot_id).cmp(&(
            b.tax_per_usd,
            std::cmp::Reverse(b.drift),
            b.sec,
            b.lot.acquired,
            b.lot.lot_id,
        ))
    });
    let mut left = shortfall;
    let mut taken: BTreeMap<(&'a SecurityId, u64), Decimal> = BTreeMap::new();
    // Pass 1 inside the bands, pass 2 past them.
    for inside in [true, false] {
        for o in &offers {
            if left <= Decimal::ZERO {
                break;
            }
            let already = taken.get(&(o.sec, o.lot.lot_id)).copied().unwrap_or_default();
            let mut n = o.free - already;
            if inside {
                let r = room.get(o.sec).copied().unwrap_or_default();
                n = n.min(round_down(r / o.price, dp));
            }
            let need = (left / o.price).round_dp_with_strategy(dp, RoundingStrategy::AwayFromZero);
            n = n.min(need);
            if n <= Decimal::ZERO {
                continue;
            }
            left -= n * o.price;
            if let Some(r) = room.get_mut(o.sec) {
                *r -= n * o.price;
            }
            *taken.entry((o.sec, o.lot.lot_id)).or_default() += n;
        }
    }
    let mut by_sec: BTreeMap<&'a SecurityId, Vec<LotRelief>> = BTreeMap::new();
    for o in &offers {
        if let Some(n) = taken.remove(&(o.sec, o.lot.lot_id)) {
            by_sec.entry(o.sec).or_default().push(LotRelief {
                lot_id: o.lot.lot_id,
                quantity: n,
                cost_per_share: o.lot.cost_per_share,
                est_gain_usd: ((o.price - o.lot.cost_per_share) * n).round_dp(2),
                long_term: o.lot.is_long_term(on),
            });
        }
    }
    by_sec
        .into_iter()
        .map(|(sec, lots)| {
            let price = confirmed_price(state, sec).expect("offered securities are priced");
            PlannedOrder {
                security: sec.clone(),
                side: Side::Sell,
                quantity: lots.iter().map(|l| l.quantity).sum(),
                ref_price: price,
                reason: OrderReason::Income,
                lots,
            }
        })
        .collect()
}
