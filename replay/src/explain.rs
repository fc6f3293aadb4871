//! `explain`: why an order was made, or why a household's trades were not.
//!
//! Nothing here decides anything: the journal is replayed (reference data
//! and the household's own inputs) to the decision, the triggering input is
//! folded again by the engine's own code, and its decision audit record —
//! rules fired, inputs used (state version, model versions, restriction
//! versions, prices), orders made, trades skipped with their reasons — is
//! read back and checked against the recorded one. To that the state the
//! decision saw adds the lots (basis, dates, term, gain at the decision's
//! price), and the fills that followed add the realized tax effect.

use crate::journal::{fold_to, AsOf, Entry, Fold, Journal, Point, Scope};
use crate::ReplayError;
use chrono::{DateTime, NaiveDate, Utc};
use overlay_core::event::{Envelope, Payload, Side, TaxProfile};
use overlay_core::fold::Applied;
use overlay_core::ids::{AccountId, HouseholdId, OrderId, SecurityId};
use overlay_core::output::{AuditBody, AuditRecord, DecisionInputs, Order, Skip};
use overlay_core::rebalance::{self, Context, Mode};
use overlay_core::state::{Account, Lot};
use overlay_core::State;
use overlay_store::{keys, records_after, Store};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::BTreeMap;

/// The input a decision was made on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trigger {
    /// Its journal seq (the decision saw state version `seq - 1`).
    pub seq: u64,
    pub source: String,
    pub event: Envelope,
}

/// One account's decision, as its audit record has it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionView {
    pub account: AccountId,
    pub rules: Vec<String>,
    pub inputs: DecisionInputs,
    pub orders: Vec<OrderId>,
    pub skipped: Vec<Skip>,
    /// The recorded audit record (seq, hash), when the store has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_hash: Option<String>,
}

/// One lot of the security in the account when the decision was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LotChoice {
    pub lot_id: u64,
    pub held: Decimal,
    /// Shares of it the order sells (0: not chosen).
    pub sold: Decimal,
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
    pub holding_start: NaiveDate,
    pub long_term: bool,
    /// Gain (+) or loss (−) per share at the decision's price.
    pub gain_per_share_usd: Decimal,
}

/// What a sale would realize, estimated at the decision's price, and what
/// its fills realized.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TaxEffect {
    pub taxable: bool,
    pub est_short_term_usd: Decimal,
    pub est_long_term_usd: Decimal,
    /// At the household's rates (negative: tax saved); cents, half away from zero.
    pub est_tax_usd: Decimal,
    pub realized_short_term_usd: Decimal,
    pub realized_long_term_usd: Decimal,
    /// The fills' tax and wash-sale audit records.
    pub realized: Vec<AuditBody>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrderExplanation {
    pub order: Order,
    pub trigger: Trigger,
    pub decision: DecisionView,
    /// Shares of the security held when the decision was made.
    pub held: Decimal,
    /// The account's target weight of the security after the trigger.
    pub target_weight: Decimal,
    /// Every lot of the security held when the decision was made, the
    /// chosen ones first in the order they are relieved.
    pub lots: Vec<LotChoice>,
    pub tax: TaxEffect,
    /// Fills of the order seen in the journal (event ids).
    pub fills: Vec<String>,
}

/// A skipped trade, with the lots it concerns for a sale.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkipExplained {
    #[serde(flatten)]
    pub skip: Skip,
    pub held: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_weight: Option<Decimal>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotChoice>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountDecision {
    pub trigger: Trigger,
    pub decision: DecisionView,
    pub skipped: Vec<SkipExplained>,
}

/// A household's latest decision per account at or before a point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HouseholdExplanation {
    pub household: HouseholdId,
    pub as_of: AsOf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityId>,
    pub decisions: Vec<AccountDecision>,
}

/// Runs `f` on the household's scope, or on everything if an event id is
/// shared with another household's input.
fn scoped<T>(h: &HouseholdId, mut f: impl FnMut(Scope) -> Result<T, ReplayError>) -> Result<T, ReplayError> {
    match f(Scope::Household(h.clone())) {
        Err(ReplayError::ScopeCollision { .. }) => f(Scope::All),
        other => other,
    }
}

/// The recorded order with this id.
pub fn find_order(recorded: &dyn Store, id: &OrderId) -> Result<Order, ReplayError> {
    let needle = format!("\"order_id\":\"{id}\"");
    for r in records_after(recorded, keys::ORDERS, 0) {
        let (_, v) = r?;
        if contains(&v, needle.as_bytes()) {
            return serde_json::from_slice(&v).map_err(|e| ReplayError::Invalid(format!("order {id}: {e}")));
        }
    }
    Err(ReplayError::NotFound(format!("no order {id} was recorded")))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The recorded decision audit record that made `order`.
fn find_decision(recorded: &dyn Store, order: &Order) -> Result<AuditRecord, ReplayError> {
    let needle = format!("\"{}\"", order.order_id);
    for r in records_after(recorded, keys::AUDIT, 0) {
        let (_, v) = r?;
        if !contains(&v, needle.as_bytes()) || !contains(&v, b"\"kind\":\"decision\"") {
            continue;
        }
        let rec: AuditRecord = serde_json::from_slice(&v).map_err(|e| ReplayError::Invalid(e.to_string()))?;
        if matches!(&rec.body, AuditBody::Decision { orders, .. } if orders.contains(&order.order_id)) {
            return Ok(rec);
        }
    }
    Err(ReplayError::NotFound(format!("no recorded decision names order {}", order.order_id)))
}

fn decision_view(body: &AuditBody, recorded: Option<&AuditRecord>) -> Option<DecisionView> {
    match body {
        AuditBody::Decision { account, rules, inputs, orders, skipped } => Some(DecisionView {
            account: account.clone(),
            rules: rules.clone(),
            inputs: inputs.clone(),
            orders: orders.clone(),
            skipped: skipped.clone(),
            audit_seq: recorded.map(|r| r.seq),
            audit_hash: recorded.map(|r| r.hash.clone()),
        }),
        _ => None,
    }
}

fn trigger(e: &Entry) -> Result<Trigger, ReplayError> {
    let event = (*e.decoded)
        .as_ref()
        .map_err(|err| ReplayError::Invalid(format!("input {} did not decode: {}", e.seq, err.message)))?;
    Ok(Trigger { seq: e.seq, source: e.source.clone(), event: event.clone() })
}

/// The lots of `security` in `account`, the chosen ones (`relief`: lot id,
/// shares) first in relief order, then the others in acquisition order.
fn lot_choices(
    account: Option<&Account>,
    security: &SecurityId,
    relief: &[(u64, Decimal)],
    price: Decimal,
    on: NaiveDate,
) -> Vec<LotChoice> {
    let lots: &[Lot] = account.and_then(|a| a.lots.get(security)).map(Vec::as_slice).unwrap_or_default();
    let choice = |l: &Lot, sold: Decimal| LotChoice {
        lot_id: l.lot_id,
        held: l.quantity,
        sold,
        cost_per_share: l.cost_per_share,
        acquired: l.acquired,
        holding_start: l.holding_start,
        long_term: l.is_long_term(on),
        gain_per_share_usd: price - l.cost_per_share,
    };
    let mut out: Vec<LotChoice> =
        relief.iter().filter_map(|(id, q)| lots.iter().find(|l| l.lot_id == *id).map(|l| choice(l, *q))).collect();
    out.extend(lots.iter().filter(|l| !relief.iter().any(|(id, _)| *id == l.lot_id)).map(|l| choice(l, Decimal::ZERO)));
    out
}

fn target_weight(
    state: &State,
    h: &HouseholdId,
    a: &AccountId,
    sec: &SecurityId,
    now: DateTime<Utc>,
) -> Option<Decimal> {
    let hh = state.households.get(h)?;
    let account = hh.accounts.get(a)?;
    let ctx = Context::new(now, now.date_naive(), overlay_core::output::OrderReason::Drift, Mode::Full);
    Some(rebalance::target_weights(state, hh, account, &ctx).get(sec).copied().unwrap_or_default())
}

fn estimate(tax: &TaxProfile, taxable: bool, order: &Order) -> TaxEffect {
    let (mut st, mut lt) = (Decimal::ZERO, Decimal::ZERO);
    for l in &order.lots {
        if l.long_term {
            lt += l.est_gain_usd;
        } else {
            st += l.est_gain_usd;
        }
    }
    let est_tax = if taxable {
        (st * tax.short_term_rate + lt * tax.long_term_rate)
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    } else {
        Decimal::ZERO
    };
    TaxEffect { taxable, est_short_term_usd: st, est_long_term_usd: lt, est_tax_usd: est_tax, ..TaxEffect::default() }
}

/// Explains a recorded order. The triggering input is folded again and must
/// decide exactly as the recorded audit record says (else an error).
pub fn explain_order(
    recorded: &dyn Store,
    id: &OrderId,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<OrderExplanation, ReplayError> {
    let order = find_order(recorded, id)?;
    let record = find_decision(recorded, &order)?;
    let AuditBody::Decision { inputs, .. } = &record.body else { unreachable!("find_decision returns decisions") };
    let journal = Journal::open(recorded)?;
    let seq = inputs.state_version + 1;
    let entry = journal.entry(seq)?;
    if (*entry.decoded).as_ref().map(|e| e.event_id.as_str()).ok() != Some(order.cause_event_id.as_str()) {
        return Err(ReplayError::Invalid(format!(
            "order {id} names cause {}, but journal input {seq} (the decision's state version + 1) is another input",
            order.cause_event_id
        )));
    }
    scoped(&order.household, |scope| {
        let mut fold = Fold::new(journal.settings.clone(), scope);
        fold_to(&journal, &mut fold, Some(Point::Seq(seq - 1)), progress, &mut |_, _, _| Ok(()))?;
        let applied: Applied = fold.step(&entry)?.expect("the order's household is in scope");
        // A decision changes no lots (only open orders), and the input that
        // triggers it (an onboarding, a deposit) is applied first: the lots
        // after it are the ones the decision saw.
        let account = fold.state.households.get(&order.household).and_then(|h| h.accounts.get(&order.account));
        let held = account.map_or(Decimal::ZERO, |a| a.quantity(&order.security));
        let relief: Vec<(u64, Decimal)> = order.lots.iter().map(|l| (l.lot_id, l.quantity)).collect();
        let lots = lot_choices(account, &order.security, &relief, order.ref_price, order.decided_at.date_naive());
        let replayed = applied
            .audit
            .iter()
            .find(|a| matches!(&a.body, AuditBody::Decision { orders, .. } if orders.contains(id)))
            .ok_or_else(|| ReplayError::Invalid(format!("replaying input {seq} does not make order {id}")))?;
        if replayed.body != record.body {
            return Err(ReplayError::Invalid(format!(
                "replaying input {seq} decides differently from the recorded audit record {}",
                record.seq
            )));
        }
        let target = target_weight(&fold.state, &order.household, &order.account, &order.security, order.decided_at)
            .unwrap_or_default();
        let hh = fold.state.households.get(&order.household).expect("the household exists after its decision");
        let taxable = hh.accounts.get(&order.account).is_some_and(|a| a.kind.is_taxable());
        let mut tax = estimate(&hh.tax, taxable, &order);
        let mut fills = Vec::new();
        // The fills that follow: what the sale realized.
        fold_to(&journal, &mut fold, None, progress, &mut |e, applied, _| {
            let Some(applied) = applied else { return Ok(()) };
            let Ok(Envelope { payload: Payload::Fill(f), event_id, .. }) = &*e.decoded else { return Ok(()) };
            if f.order_id.as_ref() != Some(id) {
                return Ok(());
            }
            fills.push(event_id.clone());
            for a in &applied.audit {
                match &a.body {
                    AuditBody::Tax { short_term_usd, long_term_usd, reportable, .. } => {
                        if *reportable {
                            tax.realized_short_term_usd += short_term_usd;
                            tax.realized_long_term_usd += long_term_usd;
                        }
                        tax.realized.push(a.body.clone());
                    }
                    AuditBody::WashSale { .. } => tax.realized.push(a.body.clone()),
                    _ => {}
                }
            }
            Ok(())
        })?;
        Ok(OrderExplanation {
            order: order.clone(),
            trigger: trigger(&entry)?,
            decision: decision_view(&record.body, Some(&record)).expect("a decision"),
            held,
            target_weight: target,
            lots: lots.clone(),
            tax,
            fills,
        })
    })
}

/// Explains a household's latest decision in each account at or before
/// `at`: what it traded, what it skipped and why (for `security` only, if given).
pub fn explain_household(
    recorded: &dyn Store,
    h: &HouseholdId,
    at: Point,
    security: Option<&SecurityId>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HouseholdExplanation, ReplayError> {
    let journal = Journal::open(recorded)?;
    crate::journal::check_point(&journal, at, "--at")?;
    let (as_of, latest) = scoped(h, |scope| {
        let mut fold = Fold::new(journal.settings.clone(), scope);
        let mut latest: BTreeMap<AccountId, AccountDecision> = BTreeMap::new();
        fold_to(&journal, &mut fold, Some(at), progress, &mut |e, applied, state| {
            let Some(applied) = applied else { return Ok(()) };
            for a in applied.audit.iter().filter(|a| a.household.as_ref() == Some(h)) {
                let Some(view) = decision_view(&a.body, None) else { continue };
                if security
                    .is_some_and(|s| !view.skipped.iter().any(|k| &k.security == s) && !touches(applied, &view, s))
                {
                    continue;
                }
                let account = state.households.get(h).and_then(|hh| hh.accounts.get(&view.account));
                let now = e.time().unwrap_or(DateTime::<Utc>::MIN_UTC);
                let skipped = view
                    .skipped
                    .iter()
                    .filter(|k| security.is_none_or(|s| &k.security == s))
                    .map(|k| {
                        let price = state.prices.get(&k.security).map(|p| p.price);
                        let lots = match (k.side, price) {
                            (Side::Sell, Some(p)) => lot_choices(account, &k.security, &[], p, now.date_naive()),
                            _ => Vec::new(),
                        };
                        SkipExplained {
                            skip: k.clone(),
                            held: account.map_or(Decimal::ZERO, |a| a.quantity(&k.security)),
                            target_weight: target_weight(state, h, &view.account, &k.security, now),
                            lots,
                        }
                    })
                    .collect();
                latest.insert(view.account.clone(), AccountDecision { trigger: trigger(e)?, decision: view, skipped });
            }
            Ok(())
        })?;
        Ok((fold.as_of.clone(), latest))
    })?;
    if latest.is_empty() {
        return Err(ReplayError::NotFound(format!(
            "no decision for household {h}{} at or before {at}",
            security.map_or(String::new(), |s| format!(" concerning {s}"))
        )));
    }
    let mut decisions: Vec<AccountDecision> = latest.into_values().collect();
    // Name the recorded audit records of the decisions.
    attach_recorded(recorded, h, &mut decisions)?;
    Ok(HouseholdExplanation { household: h.clone(), as_of, security: security.cloned(), decisions })
}

/// Whether the decision made an order in `sec`.
fn touches(applied: &Applied, view: &DecisionView, sec: &SecurityId) -> bool {
    applied.orders.iter().any(|o| &o.security == sec && view.orders.contains(&o.order_id))
}

/// Fills in each decision's recorded audit record (seq, hash), matched by
/// triggering event, household and account, and checks that it is the same.
fn attach_recorded(
    recorded: &dyn Store,
    h: &HouseholdId,
    decisions: &mut [AccountDecision],
) -> Result<(), ReplayError> {
    let stream = format!("\"stream\":\"household/{h}\"");
    for r in records_after(recorded, keys::AUDIT, 0) {
        let (_, v) = r?;
        if !contains(&v, stream.as_bytes()) || !contains(&v, b"\"kind\":\"decision\"") {
            continue;
        }
        let rec: AuditRecord = serde_json::from_slice(&v).map_err(|e| ReplayError::Invalid(e.to_string()))?;
        for d in decisions.iter_mut() {
            let AuditBody::Decision { account, inputs, .. } = &rec.body else { continue };
            if account == &d.decision.account && inputs.state_version + 1 == d.trigger.seq {
                let replayed = decision_view(&rec.body, None).expect("a decision");
                let mine = DecisionView { audit_seq: None, audit_hash: None, ..d.decision.clone() };
                if replayed != mine {
                    return Err(ReplayError::Invalid(format!(
                        "the replayed decision for {account} at input {} differs from the recorded audit record {}",
                        d.trigger.seq, rec.seq
                    )));
                }
                d.decision.audit_seq = Some(rec.seq);
                d.decision.audit_hash = Some(rec.hash.clone());
            }
        }
    }
    Ok(())
}
