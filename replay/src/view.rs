//! One household as a state holds it, laid out for a person: accounts with
//! cash, positions, lots (basis and dates), targets and open orders;
//! restrictions with their versions and whether they are in force; realized
//! gains and the wash-sale ledger. Built the same way from the live state and
//! from a replayed one, so the two can be compared as they are.

use crate::journal::AsOf;
use chrono::{DateTime, NaiveDate, Utc};
use overlay_core::event::{AccountKind, AccountSettings, RestrictionRule, Side, Sleeve, TaxProfile};
use overlay_core::ids::{AccountId, HouseholdId, OrderId, RestrictionId, SecurityId};
use overlay_core::output::{LotRelief, OrderReason};
use overlay_core::rebalance::{self, Context, Mode};
use overlay_core::state::{RealizedYear, WashLedger};
use overlay_core::State;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HouseholdView {
    pub household: HouseholdId,
    /// The last input the state includes.
    pub as_of: AsOf,
    /// The time restrictions and targets are judged at.
    pub at: DateTime<Utc>,
    pub tax: TaxProfile,
    pub restrictions: Vec<RestrictionView>,
    pub accounts: Vec<AccountView>,
    /// Realized gains (+) and losses (−) by calendar year.
    pub realized: BTreeMap<i32, RealizedYear>,
    pub wash: WashLedger,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestrictionView {
    pub id: RestrictionId,
    pub version: u32,
    pub rule: RestrictionRule,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    pub effective: DateTime<Utc>,
    /// Effective at `at` (an edit is stored at once and enforced from its effective time).
    pub in_force: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountView {
    pub account: AccountId,
    pub kind: AccountKind,
    pub sleeves: Vec<Sleeve>,
    pub settings: AccountSettings,
    pub cash_usd: Decimal,
    pub withdrawal_due_usd: Decimal,
    /// Cash plus positions at confirmed prices (unpriced positions count zero).
    pub value_usd: Decimal,
    pub positions: Vec<PositionView>,
    pub lots: Vec<LotView>,
    /// Target weights as a decision at `at` would build them (sleeves
    /// blended, restrictions and wash-sale windows applied).
    pub targets: BTreeMap<SecurityId, Decimal>,
    pub pending_orders: Vec<PendingView>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PositionView {
    pub security: SecurityId,
    pub quantity: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    pub value_usd: Decimal,
    pub cost_usd: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LotView {
    pub security: SecurityId,
    pub lot_id: u64,
    pub quantity: Decimal,
    /// Adjusted basis per share.
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
    pub holding_start: NaiveDate,
    /// Held more than a year at `at`.
    pub long_term: bool,
    /// At the confirmed price (None when unpriced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unrealized_usd: Option<Decimal>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PendingView {
    pub order_id: OrderId,
    pub security: SecurityId,
    pub side: Side,
    pub open_quantity: Decimal,
    pub ref_price: Decimal,
    pub reason: OrderReason,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotRelief>,
}

/// The household `h` as `state` holds it, judged at `at`; None if the state
/// has no such household.
pub fn household_view(state: &State, h: &HouseholdId, as_of: AsOf, at: DateTime<Utc>) -> Option<HouseholdView> {
    let hh = state.households.get(h)?;
    let on = at.date_naive();
    let price = |sec: &SecurityId| state.prices.get(sec).map(|p| p.price);
    let restrictions = hh
        .restrictions
        .iter()
        .map(|(id, r)| RestrictionView {
            id: id.clone(),
            version: r.version,
            rule: r.rule.clone(),
            account: r.account.clone(),
            effective: r.effective,
            in_force: r.effective <= at,
        })
        .collect();
    let ctx = Context::new(at, on, OrderReason::Drift, Mode::Full);
    let accounts = hh
        .accounts
        .values()
        .map(|a| {
            let mut value = a.cash;
            let positions: Vec<PositionView> = a
                .lots
                .iter()
                .map(|(sec, lots)| {
                    let quantity: Decimal = lots.iter().map(|l| l.quantity).sum();
                    let value_usd = price(sec).map_or(Decimal::ZERO, |p| p * quantity);
                    value += value_usd;
                    PositionView {
                        security: sec.clone(),
                        quantity,
                        price: price(sec),
                        value_usd,
                        cost_usd: lots.iter().map(|l| l.quantity * l.cost_per_share).sum(),
                    }
                })
                .collect();
            let lots = a
                .lots
                .iter()
                .flat_map(|(sec, lots)| lots.iter().map(move |l| (sec, l)))
                .map(|(sec, l)| LotView {
                    security: sec.clone(),
                    lot_id: l.lot_id,
                    quantity: l.quantity,
                    cost_per_share: l.cost_per_share,
                    acquired: l.acquired,
                    holding_start: l.holding_start,
                    long_term: l.is_long_term(on),
                    unrealized_usd: price(sec).map(|p| (p - l.cost_per_share) * l.quantity),
                })
                .collect();
            let pending_orders = a
                .pending
                .iter()
                .map(|(id, p)| PendingView {
                    order_id: id.clone(),
                    security: p.security.clone(),
                    side: p.side,
                    open_quantity: p.open_quantity,
                    ref_price: p.ref_price,
                    reason: p.reason,
                    lots: p.lots.clone(),
                })
                .collect();
            AccountView {
                account: a.id.clone(),
                kind: a.kind,
                sleeves: a.sleeves.clone(),
                settings: a.settings.clone(),
                cash_usd: a.cash,
                withdrawal_due_usd: a.withdrawal_due,
                value_usd: value,
                positions,
                lots,
                targets: rebalance::target_weights(state, hh, a, &ctx),
                pending_orders,
            }
        })
        .collect();
    Some(HouseholdView {
        household: h.clone(),
        as_of,
        at,
        tax: hh.tax.clone(),
        restrictions,
        accounts,
        realized: hh.realized.clone(),
        wash: hh.wash.clone(),
    })
}
