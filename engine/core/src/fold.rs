//! The fold: `decide(&State, &Input) -> Decision` holds all business logic;
//! `apply(&mut State, Decision) -> Applied` only assigns, keeps the indexes,
//! numbers the outputs and seals the audit chain. Neither reads a clock.

use crate::event::{
    AccountSpec, CashFlow, CashFlowKind, ClockKind, CorporateAction, CorporateActionKind, EditOp, Envelope,
    EsgScoreChanged, Fill, FillStatus, HouseholdUpserted, InputError, InputErrorKind, ModelPublished, Payload,
    PriceTick, RestrictionEdited, RestrictionRule, SecurityUpserted, Side, TaxObjectiveSet, TransitionSet,
    WithdrawalScheduled,
};
use crate::ids::{AccountId, HouseholdId, ModelId, OrderId, SecurityId};
use crate::output::{AuditBody, AuditRecord, Order, OrderReason};
use crate::rebalance::{self, Context, Mode};
use crate::state::{
    Account, EsgScore, HeldPrint, Household, Lot, Model, ObjectiveInForce, PendingOrder, PriceState, Restriction,
    State, WashLedger, REFERENCE_STREAM,
};
use crate::tax;
use crate::text::hex_lower;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// One input as the edge delivers it: a decoded event, or bytes that did not decode.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Event(&'a Envelope),
    Undecodable(&'a InputError),
}

/// A state assignment. Each names the one stored record it replaces, so the
/// store writes exactly what changed.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Security(SecurityUpserted),
    Model(ModelId, Model),
    Price(SecurityId, PriceState),
    Esg(SecurityId, EsgScore),
    /// The household record (tax profile, restrictions, realized ledger); its
    /// accounts are kept. Boxed, as is an account: every change is as big as
    /// the biggest kind, and most are a price or an idempotency key.
    Household(Box<Household>),
    /// The account record (settings, cash, pending orders); its lots are kept.
    Account(HouseholdId, Box<Account>),
    /// One security's lots in one account (empty removes them).
    Lots(HouseholdId, AccountId, SecurityId, Vec<Lot>),
    /// One open order (None closes it).
    Pending(HouseholdId, AccountId, OrderId, Option<PendingOrder>),
    Seen(String),
}

/// An audit record before it is numbered and chained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    pub household: Option<HouseholdId>,
    pub body: crate::output::AuditBody,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub event_id: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub changes: Vec<Change>,
    /// Orders without `seq` (numbered by apply).
    pub orders: Vec<Order>,
    pub audit: Vec<AuditDraft>,
    pub rejection: Option<InputError>,
}

/// What applying a decision produced, for the edge to store and publish.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub orders: Vec<Order>,
    pub audit: Vec<AuditRecord>,
    /// The refusal, numbered in the dead-letter stream, if the input was refused.
    pub rejection: Option<(u64, InputError)>,
    /// Stored records that changed (may repeat; the store writes each once).
    pub touched: Vec<Touched>,
    /// The audit records' canonical JSON, as chained by [`seal`]: the bytes the
    /// engine stores and publishes.
    pub audit_json: Vec<Vec<u8>>,
}

/// A stored record that changed (derived from the changes; the store writes these).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Touched {
    Security(SecurityId),
    Model(ModelId),
    Price(SecurityId),
    Esg(SecurityId),
    Household(HouseholdId),
    Account(HouseholdId, AccountId),
    Lots(HouseholdId, AccountId, SecurityId),
    Pending(HouseholdId, AccountId, OrderId),
    Seen(String),
    Chain(Cow<'static, str>),
    Meta,
}

/// Every stored record of `state`, in order: what a store that applied all of
/// its inputs holds (each input's touched records written, deletions removed).
/// A replay that folded a whole journal takes the state hash over these.
pub fn every_record(state: &State) -> Vec<Touched> {
    let mut all = vec![Touched::Meta];
    all.extend(state.securities.keys().map(|s| Touched::Security(s.clone())));
    all.extend(state.models.keys().map(|m| Touched::Model(m.clone())));
    all.extend(state.prices.sorted().into_iter().map(|(s, _)| Touched::Price(s.clone())));
    all.extend(state.esg.keys().map(|s| Touched::Esg(s.clone())));
    for (h, hh) in &state.households {
        all.push(Touched::Household(h.clone()));
        for (a, account) in &hh.accounts {
            all.push(Touched::Account(h.clone(), a.clone()));
            all.extend(account.lots.keys().map(|s| Touched::Lots(h.clone(), a.clone(), s.clone())));
            all.extend(account.pending.keys().map(|o| Touched::Pending(h.clone(), a.clone(), o.clone())));
        }
    }
    all.extend(state.meta.seen.sorted_ids().into_iter().map(|id| Touched::Seen(id.to_string())));
    all.extend(state.meta.chains.keys().map(|c| Touched::Chain(Cow::Owned(c.to_string()))));
    all.sort_unstable();
    all
}

pub fn decide(state: &State, input: Input<'_>) -> Decision {
    let env = match input {
        Input::Undecodable(err) => return rejected(err.event_id.clone(), err.event_type, err.clone()),
        Input::Event(env) => env,
    };
    // Ticks are idempotent by their natural key (security, as-of), so the
    // event-id set does not grow with the price stream; every other event is
    // idempotent by its event id.
    let tick = matches!(env.payload, Payload::PriceTick(_));
    // A tick's security is looked up once, for both the repeat check and the decision.
    let last_price = match &env.payload {
        Payload::PriceTick(t) => state.prices.get(&t.security),
        _ => None,
    };
    let repeat = match &env.payload {
        Payload::PriceTick(t) => repeated_tick(last_price, t),
        _ => state.meta.seen.get(&env.event_id).copied(),
    };
    if let Some(first) = repeat {
        return Decision {
            event_id: Some(env.event_id.clone()),
            at: Some(env.event_time),
            audit: vec![AuditDraft {
                household: household_of(&env.payload),
                body: AuditBody::Duplicate { event_type: env.payload.type_name().into(), first_seq: first },
            }],
            ..Decision::default()
        };
    }
    let result = match &env.payload {
        Payload::SecurityUpserted(e) => Ok(decide_security(e)),
        Payload::ModelPublished(e) => decide_model(state, env, e),
        Payload::PriceTick(e) => decide_price(state, last_price, e),
        Payload::EsgScoreChanged(e) => decide_esg(state, env, e),
        Payload::HouseholdUpserted(e) => decide_household(state, env, e),
        Payload::RestrictionEdited(e) => decide_restriction(state, env, e),
        Payload::CashFlow(e) => decide_cash_flow(state, env, e),
        Payload::Fill(e) => decide_fill(state, env, e),
        Payload::Clock(e) => Ok(decide_clock(state, env, e.kind, e.trade_date)),
        Payload::CorporateAction(e) => decide_corporate_action(state, e),
        Payload::TaxObjectiveSet(e) => decide_objective(state, env, e),
        Payload::WithdrawalScheduled(e) => decide_withdrawal_schedule(state, env, e),
        Payload::TransitionSet(e) => decide_transition(state, env, e),
    };
    match result {
        Ok(mut d) => {
            d.event_id = Some(env.event_id.clone());
            d.at = Some(env.event_time);
            if !tick {
                d.changes.push(Change::Seen(env.event_id.clone()));
            }
            // The applied-input record comes first, decisions after it.
            if !matches!(d.audit.first(), Some(AuditDraft { body: AuditBody::Applied { .. }, .. })) {
                // Room for this one record only when it is the only one (a
                // tick's): a first insert would make room for four.
                d.audit.reserve_exact(1);
                d.audit.insert(
                    0,
                    AuditDraft {
                        household: household_of(&env.payload),
                        body: AuditBody::Applied {
                            event_type: env.payload.type_name().into(),
                            summary: summarize(&env.payload),
                        },
                    },
                );
            }
            d
        }
        Err(err) => {
            let mut d = rejected(Some(env.event_id.clone()), Some(env.payload.type_name()), err);
            d.at = Some(env.event_time);
            d.audit[0].household = household_of(&env.payload).filter(|h| state.households.contains_key(h));
            d
        }
    }
}

fn rejected(event_id: Option<String>, event_type: Option<&'static str>, err: InputError) -> Decision {
    Decision {
        event_id,
        audit: vec![AuditDraft {
            household: None,
            body: AuditBody::Rejected {
                event_type: event_type.map(Into::into),
                error: err.kind,
                reason: err.message.clone(),
            },
        }],
        rejection: Some(err),
        ..Decision::default()
    }
}

fn household_of(p: &Payload) -> Option<HouseholdId> {
    match p.key() {
        crate::event::EventKey::Household(h) => Some(h.clone()),
        crate::event::EventKey::Reference(_) => None,
    }
}

fn summarize(p: &Payload) -> String {
    if let Payload::PriceTick(e) = p {
        // The hottest input: written straight into one right-sized string.
        let mut s = String::with_capacity(e.security.as_str().len() + 24);
        s.push_str(e.security.as_str());
        s.push(' ');
        crate::text::push_decimal(&mut s, e.price);
        return s;
    }
    match p {
        Payload::SecurityUpserted(e) => format!("{} in {}", e.security, e.sector),
        Payload::ModelPublished(e) => format!("{} v{} with {} securities", e.model, e.version, e.weights.len()),
        Payload::PriceTick(e) => format!("{} {}", e.security, e.price),
        Payload::EsgScoreChanged(e) => format!("{} {} by {}", e.security, e.score, e.provider),
        Payload::HouseholdUpserted(e) => format!("{} with {} accounts", e.household, e.accounts.len()),
        Payload::RestrictionEdited(e) => format!("{:?} {}", e.op, e.restriction_id),
        Payload::CashFlow(e) => format!("{:?} {} to {}", e.kind, e.amount, e.account),
        Payload::Fill(e) => format!(
            "{:?} {} {} {} @ {} ({})",
            e.status,
            e.side.as_str(),
            e.quantity,
            e.security,
            e.price,
            e.order_id.as_ref().map_or("outside trade", |o| o.as_str())
        ),
        Payload::Clock(e) => format!("{:?} {}", e.kind, e.trade_date),
        Payload::CorporateAction(e) => format!("{} {:?} ex {}", e.security, e.kind, e.ex_date),
        Payload::TaxObjectiveSet(e) => format!("{}: {}", e.household, crate::objective::describe(&e.objective)),
        Payload::TransitionSet(e) => format!(
            "{}: transition over {} {:?} period(s){}{}{}",
            e.household,
            e.plan.periods,
            e.plan.period,
            e.plan.budget_usd.map_or(String::new(), |b| format!(", budget ${b}")),
            e.plan.yearly_budget_usd.map_or(String::new(), |b| format!(", ${b} a year")),
            if e.plan.keep.is_empty() {
                String::new()
            } else {
                format!(", keeping {}", e.plan.keep.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
            }
        ),
        Payload::WithdrawalScheduled(e) => format!(
            "{}: ${} {:?} from {} from {}{}, raised {} days ahead{}",
            e.schedule_id,
            e.amount,
            e.frequency,
            e.account,
            e.first_payment,
            e.until.map_or(String::new(), |u| format!(" until {u}")),
            e.lead_days,
            e.yield_tilt.map_or(String::new(), |t| format!(", yield tilt {t}"))
        ),
    }
}

fn unknown(what: impl Into<String>) -> InputError {
    InputError::new(InputErrorKind::UnknownReference, what)
}

fn out_of_order(what: impl Into<String>) -> InputError {
    InputError::new(InputErrorKind::OutOfOrder, what)
}

fn decide_security(e: &SecurityUpserted) -> Decision {
    Decision { changes: vec![Change::Security(e.clone())], ..Decision::default() }
}

fn decide_model(state: &State, env: &Envelope, e: &ModelPublished) -> Result<Decision, InputError> {
    if let Some(current) = state.models.get(&e.model) {
        if e.version <= current.version {
            return Err(out_of_order(format!(
                "model {} version {} is not newer than the current version {}",
                e.model, e.version, current.version
            )));
        }
    }
    if let Some(w) = e.weights.iter().find(|w| !state.securities.contains_key(&w.security)) {
        return Err(unknown(format!("model {} names unknown security {}", e.model, w.security)));
    }
    let model = Model {
        version: e.version,
        kind: e.kind,
        weights: e.weights.iter().map(|w| (w.security.clone(), w.weight)).collect(),
    };
    let mut d = Decision { changes: vec![Change::Model(e.model.clone(), model.clone())], ..Decision::default() };
    // Decide the subscribers against reference data as it will be with the new model.
    let mut ctx = Context::new(env.event_time, env.event_time.date_naive(), OrderReason::ModelChange, Mode::Full);
    ctx.pending_model = Some((e.model.clone(), model));
    for h in state.subscribers.get(&e.model).into_iter().flatten() {
        let hh = &state.households[h];
        let accounts: Vec<AccountId> = hh
            .accounts
            .values()
            .filter(|a| a.sleeves.iter().any(|s| s.model == e.model))
            .map(|a| a.id.clone())
            .collect();
        rebalance_household(state, hh, env, &accounts, &ctx, &mut d);
    }
    Ok(d)
}

/// The state version that applied this very tick (same security, time and
/// price), if it was applied: a redelivery.
fn repeated_tick(last: Option<&PriceState>, t: &PriceTick) -> Option<u64> {
    let p = last?;
    let same = |price: Decimal, as_of: DateTime<Utc>| as_of == t.as_of && price == t.price;
    (same(p.price, p.as_of) || p.held.as_ref().is_some_and(|h| same(h.price, h.as_of))).then_some(p.version)
}

/// `last` is the security's entry in the price table; a priced security is
/// known (a price is only ever stored for a known one).
fn decide_price(state: &State, last: Option<&PriceState>, e: &PriceTick) -> Result<Decision, InputError> {
    if last.is_none() && !state.securities.contains_key(&e.security) {
        return Err(unknown(format!("price for unknown security {}", e.security)));
    }
    let version = state.meta.applied + 1;
    let next = match last {
        None => PriceState { price: e.price, as_of: e.as_of, held: None, version },
        Some(last) => {
            let latest = last.held.as_ref().map_or(last.as_of, |h| h.as_of.max(last.as_of));
            if e.as_of <= latest {
                return Err(out_of_order(format!(
                    "price of {} as of {} is not newer than {}",
                    e.security, e.as_of, latest
                )));
            }
            let jump_max = state.meta.settings.price_jump_max;
            // |move| / reference <= max, multiplied out (prices are positive): no division.
            // A product past Decimal's range is past any move (a limit above 1 on a huge price).
            let near = |reference: Decimal| {
                jump_max.checked_mul(reference).is_none_or(|limit| (e.price - reference).abs() <= limit)
            };
            match &last.held {
                _ if near(last.price) => PriceState { price: e.price, as_of: e.as_of, held: None, version },
                // A second print near the held one confirms it.
                Some(h) if near(h.price) => PriceState { price: e.price, as_of: e.as_of, held: None, version },
                _ => PriceState {
                    price: last.price,
                    as_of: last.as_of,
                    held: Some(HeldPrint { price: e.price, as_of: e.as_of }),
                    version,
                },
            }
        }
    };
    let mut d = Decision::default();
    if let Some(h) = &next.held {
        d.audit.push(AuditDraft {
            household: None,
            body: AuditBody::Applied {
                event_type: "price_tick".into(),
                summary: format!(
                    "{} {} held: moves more than {}% from the confirmed {}; decisions keep using {} until a later tick confirms it",
                    e.security,
                    h.price,
                    (state.meta.settings.price_jump_max * Decimal::ONE_HUNDRED).normalize(),
                    next.price,
                    next.price
                ),
            },
        });
    }
    // Exactly one change: a pushed first element would make room for four.
    d.changes = vec![Change::Price(e.security.clone(), next)];
    Ok(d)
}

fn decide_esg(state: &State, env: &Envelope, e: &EsgScoreChanged) -> Result<Decision, InputError> {
    if !state.securities.contains_key(&e.security) {
        return Err(unknown(format!("ESG score for unknown security {}", e.security)));
    }
    if let Some(last) = state.esg.get(&e.security) {
        if e.as_of < last.as_of {
            return Err(out_of_order(format!(
                "ESG score of {} as of {} is older than {}",
                e.security, e.as_of, last.as_of
            )));
        }
    }
    let score = EsgScore { provider: e.provider.clone(), score: e.score, as_of: e.as_of };
    let mut d = Decision { changes: vec![Change::Esg(e.security.clone(), score.clone())], ..Decision::default() };
    let screened: Vec<&Household> = rebalance::households_touching(state, &e.security)
        .into_iter()
        .map(|h| &state.households[&h])
        .filter(|hh| hh.has_esg_screen())
        .collect();
    if screened.is_empty() {
        // Nothing to re-decide: no copy of the reference data to decide against.
        return Ok(d);
    }
    let mut ctx = Context::new(env.event_time, env.event_time.date_naive(), OrderReason::Esg, Mode::Full);
    ctx.pending_esg = Some((e.security.clone(), score));
    for hh in screened {
        let accounts: Vec<AccountId> = hh.accounts.keys().cloned().collect();
        rebalance_household(state, hh, env, &accounts, &ctx, &mut d);
    }
    Ok(d)
}

fn decide_household(state: &State, env: &Envelope, e: &HouseholdUpserted) -> Result<Decision, InputError> {
    for a in &e.accounts {
        if let Some(l) = a.opening_lots.iter().find(|l| !state.securities.contains_key(&l.security)) {
            return Err(unknown(format!("account {} opens with unknown security {}", a.account, l.security)));
        }
    }
    for r in &e.restrictions {
        if let Some(sec) = rule_securities(&r.rule).into_iter().find(|s| !state.securities.contains_key(*s)) {
            return Err(unknown(format!("restriction {} names unknown security {sec}", r.restriction_id)));
        }
    }
    let existing = state.households.get(&e.household);
    let mut hh = existing.map(header_of).unwrap_or_else(|| Household {
        id: e.household.clone(),
        tax: e.tax.clone(),
        accounts: BTreeMap::new(),
        restrictions: BTreeMap::new(),
        realized: BTreeMap::new(),
        wash: WashLedger::default(),
        objective: None,
        income: BTreeMap::new(),
        transition: None,
    });
    hh.tax = e.tax.clone();
    for spec in &e.restrictions {
        let next = Restriction {
            rule: spec.rule.clone(),
            account: spec.account.clone(),
            effective: spec.effective,
            version: 1,
        };
        match hh.restrictions.get(&spec.restriction_id) {
            Some(cur) if (&cur.rule, &cur.account, cur.effective) == (&next.rule, &next.account, next.effective) => {}
            cur => {
                let version = cur.map_or(1, |c| c.version + 1);
                hh.restrictions.insert(spec.restriction_id.clone(), Restriction { version, ..next });
            }
        }
    }
    let mut d = Decision { changes: vec![Change::Household(Box::new(hh.clone()))], ..Decision::default() };
    let mut next_hh = existing.cloned().unwrap_or_else(|| hh.clone());
    next_hh.tax = e.tax.clone();
    next_hh.restrictions = hh.restrictions.clone();
    for spec in &e.accounts {
        let (account, lots) = upsert_account(existing.and_then(|h| h.accounts.get(&spec.account)), spec);
        d.changes.push(Change::Account(e.household.clone(), Box::new(header_account(&account))));
        for (sec, l) in &lots {
            d.changes.push(Change::Lots(e.household.clone(), spec.account.clone(), sec.clone(), l.clone()));
        }
        let mut full = account.clone();
        if !lots.is_empty() {
            full.lots = lots;
        }
        next_hh.accounts.insert(spec.account.clone(), full);
    }
    let accounts: Vec<AccountId> = e.accounts.iter().map(|a| a.account.clone()).collect();
    let ctx = Context::new(env.event_time, env.event_time.date_naive(), OrderReason::Setup, Mode::Full);
    rebalance_household(state, &next_hh, env, &accounts, &ctx, &mut d);
    Ok(d)
}

/// An account as the upsert leaves it, and its opening lots if it is new.
fn upsert_account(existing: Option<&Account>, spec: &AccountSpec) -> (Account, BTreeMap<SecurityId, Vec<Lot>>) {
    if let Some(a) = existing {
        let mut a = a.clone();
        a.kind = spec.kind;
        a.sleeves = spec.sleeves.clone();
        a.settings = spec.settings.clone();
        return (a, BTreeMap::new());
    }
    let mut lots: BTreeMap<SecurityId, Vec<Lot>> = BTreeMap::new();
    let mut next_lot_id = 1;
    for l in &spec.opening_lots {
        lots.entry(l.security.clone()).or_default().push(Lot {
            lot_id: next_lot_id,
            quantity: l.quantity,
            cost_per_share: l.cost_per_share,
            acquired: l.acquired,
            holding_start: l.acquired,
        });
        next_lot_id += 1;
    }
    let account = Account {
        id: spec.account.clone(),
        kind: spec.kind,
        sleeves: spec.sleeves.clone(),
        settings: spec.settings.clone(),
        cash: spec.opening_cash,
        withdrawal_due: Decimal::ZERO,
        income_reserved: Decimal::ZERO,
        lots: BTreeMap::new(),
        pending: BTreeMap::new(),
        next_lot_id,
    };
    (account, lots)
}

/// The household record without its accounts (never clones lots).
fn header_of(h: &Household) -> Household {
    Household {
        id: h.id.clone(),
        tax: h.tax.clone(),
        accounts: BTreeMap::new(),
        restrictions: h.restrictions.clone(),
        realized: h.realized.clone(),
        wash: h.wash.clone(),
        objective: h.objective.clone(),
        income: h.income.clone(),
        transition: h.transition.clone(),
    }
}

/// Whether `header` (a [`header_of`] copy, perhaps changed) is still the
/// household's header: compared field by field, without copying anything.
fn header_unchanged(header: &Household, h: &Household) -> bool {
    // Destructured so that a new field cannot be left out of the comparison.
    let Household { id, tax, accounts, restrictions, realized, wash, objective, income, transition } = header;
    accounts.is_empty()
        && *id == h.id
        && *tax == h.tax
        && *restrictions == h.restrictions
        && *realized == h.realized
        && *wash == h.wash
        && *objective == h.objective
        && *income == h.income
        && *transition == h.transition
}

/// The account record without its lots (never clones lots).
pub(crate) fn header_account(a: &Account) -> Account {
    Account {
        id: a.id.clone(),
        kind: a.kind,
        sleeves: a.sleeves.clone(),
        settings: a.settings.clone(),
        cash: a.cash,
        withdrawal_due: a.withdrawal_due,
        income_reserved: a.income_reserved,
        lots: BTreeMap::new(),
        pending: BTreeMap::new(),
        next_lot_id: a.next_lot_id,
    }
}

fn decide_restriction(state: &State, env: &Envelope, e: &RestrictionEdited) -> Result<Decision, InputError> {
    let Some(existing) = state.households.get(&e.household) else {
        return Err(unknown(format!("restriction for unknown household {}", e.household)));
    };
    if let Some(a) = &e.account {
        if !existing.accounts.contains_key(a) {
            return Err(unknown(format!("restriction for unknown account {a} of household {}", e.household)));
        }
    }
    if let Some(rule) = &e.rule {
        for sec in rule_securities(rule) {
            if !state.securities.contains_key(sec) {
                return Err(unknown(format!("restriction names unknown security {sec}")));
            }
        }
    }
    let mut hh = header_of(existing);
    let current = hh.restrictions.get(&e.restriction_id);
    match (e.op, current) {
        (EditOp::Add, Some(_)) => {
            return Err(InputError::invalid(format!("restriction {} already exists; use change", e.restriction_id)))
        }
        (EditOp::Change | EditOp::Remove, None) => {
            return Err(unknown(format!("no restriction {} in household {}", e.restriction_id, e.household)))
        }
        (EditOp::Remove, Some(_)) => {
            hh.restrictions.remove(&e.restriction_id);
        }
        (EditOp::Add | EditOp::Change, cur) => {
            let version = cur.map_or(1, |r| r.version + 1);
            let rule = e.rule.clone().expect("validated: add and change carry a rule");
            hh.restrictions.insert(
                e.restriction_id.clone(),
                Restriction { rule, account: e.account.clone(), effective: e.effective, version },
            );
        }
    }
    let mut d = Decision { changes: vec![Change::Household(Box::new(hh.clone()))], ..Decision::default() };
    let mut next_hh = existing.clone();
    next_hh.restrictions = hh.restrictions;
    let accounts: Vec<AccountId> = match &e.account {
        Some(a) => vec![a.clone()],
        None => existing.accounts.keys().cloned().collect(),
    };
    let ctx = Context::new(env.event_time, env.event_time.date_naive(), OrderReason::Restriction, Mode::Full);
    rebalance_household(state, &next_hh, env, &accounts, &ctx, &mut d);
    Ok(d)
}

/// The securities a restriction names.
pub(crate) fn rule_securities(rule: &RestrictionRule) -> Vec<&SecurityId> {
    match rule {
        RestrictionRule::DoNotBuy { security }
        | RestrictionRule::DoNotHold { security }
        | RestrictionRule::KeepLegacy { security }
        | RestrictionRule::MaxWeight { security, .. } => vec![security],
        RestrictionRule::Substitute { security, substitute } => vec![security, substitute],
        RestrictionRule::SectorExclusion { .. }
        | RestrictionRule::EsgMinimum { .. }
        | RestrictionRule::Tilt { .. }
        | RestrictionRule::AttributeTilt { .. }
        | RestrictionRule::AttributeFilter { .. } => vec![],
    }
}

/// A new tax objective: stored with its time and version; the household's
/// next decisions follow it.
fn decide_objective(state: &State, env: &Envelope, e: &TaxObjectiveSet) -> Result<Decision, InputError> {
    let Some(existing) = state.households.get(&e.household) else {
        return Err(unknown(format!("tax objective for unknown household {}", e.household)));
    };
    let mut hh = header_of(existing);
    let version = existing.objective.as_ref().map_or(1, |o| o.version + 1);
    hh.objective = Some(ObjectiveInForce { objective: e.objective.clone(), since: env.event_time, version });
    Ok(Decision { changes: vec![Change::Household(Box::new(hh))], ..Decision::default() })
}

/// A scheduled withdrawal added or replaced. Cash set aside under the
/// schedule it replaces is released; the next clocks raise and pay.
fn decide_withdrawal_schedule(state: &State, env: &Envelope, e: &WithdrawalScheduled) -> Result<Decision, InputError> {
    let Some(existing) = state.households.get(&e.household) else {
        return Err(unknown(format!("withdrawal schedule for unknown household {}", e.household)));
    };
    if !existing.accounts.contains_key(&e.account) {
        return Err(unknown(format!(
            "withdrawal schedule for unknown account {} of household {}",
            e.account, e.household
        )));
    }
    if e.first_payment < env.event_time.date_naive() {
        return Err(InputError::invalid(format!(
            "first_payment {} is before the event's date {}",
            e.first_payment,
            env.event_time.date_naive()
        )));
    }
    if existing.income.len() >= crate::event::HOUSEHOLD_SCHEDULES_MAX && !existing.income.contains_key(&e.schedule_id) {
        return Err(InputError::invalid(format!(
            "household {} already has {} withdrawal schedules",
            e.household,
            crate::event::HOUSEHOLD_SCHEDULES_MAX
        )));
    }
    let mut hh = header_of(existing);
    let old = hh.income.get(&e.schedule_id).cloned();
    let mut d = Decision::default();
    if let Some(old) = &old {
        if old.raised_for.is_some() {
            let mut a = header_account(&existing.accounts[&old.account]);
            a.income_reserved = (a.income_reserved - old.amount).max(Decimal::ZERO);
            d.changes.push(Change::Account(e.household.clone(), Box::new(a)));
        }
    }
    hh.income.insert(
        e.schedule_id.clone(),
        crate::state::IncomeSchedule {
            account: e.account.clone(),
            amount: e.amount,
            frequency: e.frequency,
            next_payment: e.first_payment,
            lead_days: e.lead_days,
            until: e.until,
            yield_tilt: e.yield_tilt,
            raised_for: None,
            version: old.map_or(1, |o| o.version + 1),
        },
    );
    d.changes.insert(0, Change::Household(Box::new(hh)));
    Ok(d)
}

/// A transition starts (or replaces the one in force, its budget used
/// starting afresh): its first period begins on the event's date.
fn decide_transition(state: &State, env: &Envelope, e: &TransitionSet) -> Result<Decision, InputError> {
    let Some(existing) = state.households.get(&e.household) else {
        return Err(unknown(format!("transition for unknown household {}", e.household)));
    };
    if let Some(s) = e.plan.keep.iter().find(|s| !state.securities.contains_key(*s)) {
        return Err(unknown(format!("transition keeps unknown security {s}")));
    }
    let mut hh = header_of(existing);
    let version = existing.transition.as_ref().map_or(1, |t| t.version + 1);
    hh.transition = Some(crate::state::Transition {
        plan: e.plan.clone(),
        started: env.event_time.date_naive(),
        periods_done: 0,
        used_usd: Decimal::ZERO,
        used_by_year: BTreeMap::new(),
        completed: None,
        version,
    });
    Ok(Decision { changes: vec![Change::Household(Box::new(hh))], ..Decision::default() })
}

fn decide_cash_flow(state: &State, env: &Envelope, e: &CashFlow) -> Result<Decision, InputError> {
    let hh = state
        .households
        .get(&e.household)
        .ok_or_else(|| unknown(format!("cash flow for unknown household {}", e.household)))?;
    let account = hh
        .accounts
        .get(&e.account)
        .ok_or_else(|| unknown(format!("cash flow for unknown account {} of household {}", e.account, e.household)))?;
    let mut next = account.clone();
    let mode = match e.kind {
        CashFlowKind::Deposit => {
            next.cash = next.cash.checked_add(e.amount).ok_or_else(|| InputError::invalid("cash overflows"))?;
            Mode::InvestCash
        }
        CashFlowKind::Withdrawal => {
            next.withdrawal_due += e.amount;
            pay_withdrawals(&mut next);
            Mode::RaiseCash
        }
    };
    let mut d = Decision {
        changes: vec![Change::Account(e.household.clone(), Box::new(header_account(&next)))],
        ..Decision::default()
    };
    let mut next_hh = hh.clone();
    next_hh.accounts.insert(e.account.clone(), next);
    let ctx = Context::new(env.event_time, env.event_time.date_naive(), OrderReason::CashFlow, mode);
    rebalance_household(state, &next_hh, env, std::slice::from_ref(&e.account), &ctx, &mut d);
    Ok(d)
}

/// Due withdrawals leave as soon as settled cash covers them (in part if need be).
fn pay_withdrawals(a: &mut Account) {
    let pay = a.withdrawal_due.min(a.cash).max(Decimal::ZERO);
    a.cash -= pay;
    a.withdrawal_due -= pay;
}

fn decide_fill(state: &State, env: &Envelope, e: &Fill) -> Result<Decision, InputError> {
    let hh = state
        .households
        .get(&e.household)
        .ok_or_else(|| unknown(format!("fill for unknown household {}", e.household)))?;
    let account = hh
        .accounts
        .get(&e.account)
        .ok_or_else(|| unknown(format!("fill for unknown account {} of household {}", e.account, e.household)))?;
    if !state.securities.contains_key(&e.security) {
        return Err(unknown(format!("fill in unknown security {}", e.security)));
    }
    let mut d = Decision::default();

    // Which lots a sell relieves: the lots the fill names, else the order's
    // own, else the account's policy.
    let mut relief: Vec<(u64, Decimal)> = e.lots.iter().map(|l| (l.lot_id, l.quantity)).collect();
    if !e.lots.is_empty() {
        let held = account.lots.get(&e.security);
        for (id, q) in &relief {
            let lot = held.and_then(|lots| lots.iter().find(|l| l.lot_id == *id));
            if lot.is_none_or(|l| l.quantity < *q) {
                return Err(InputError::invalid(format!(
                    "the fill names {q} shares of lot {id}, which account {} does not hold in {}",
                    e.account, e.security
                )));
            }
        }
    }
    let mut order_reason = None;
    if let Some(order_id) = &e.order_id {
        let pending = account
            .pending
            .get(order_id)
            .ok_or_else(|| unknown(format!("no open order {order_id} in account {}", e.account)))?
            .clone();
        if pending.security != e.security || pending.side != e.side {
            return Err(InputError::invalid(format!(
                "fill for order {order_id} is {} {} but the order is {} {}",
                e.side.as_str(),
                e.security,
                pending.side.as_str(),
                pending.security
            )));
        }
        if e.quantity > pending.open_quantity {
            return Err(InputError::invalid(format!(
                "fill of {} exceeds the {} open on order {order_id}",
                e.quantity, pending.open_quantity
            )));
        }
        order_reason = Some(pending.reason);
        let mut rest = pending.clone();
        rest.open_quantity -= e.quantity;
        if e.side == Side::Sell {
            let mut left = e.quantity;
            let named = !relief.is_empty();
            for l in rest.lots.iter_mut() {
                let take = l.quantity.min(left);
                if take > Decimal::ZERO {
                    if !named {
                        relief.push((l.lot_id, take));
                    }
                    l.quantity -= take;
                    left -= take;
                }
            }
            rest.lots.retain(|l| l.quantity > Decimal::ZERO);
        }
        let closes = matches!(e.status, FillStatus::Filled | FillStatus::Rejected | FillStatus::Cancelled)
            || rest.open_quantity <= Decimal::ZERO;
        let rest = if closes { None } else { Some(rest) };
        d.changes.push(Change::Pending(e.household.clone(), e.account.clone(), order_id.clone(), rest));
    }
    let executed = matches!(e.status, FillStatus::Partial | FillStatus::Filled) && e.quantity > Decimal::ZERO;
    let mut book = tax::Book::new(hh, header_of(hh));
    book.account(&e.account);
    if executed {
        book.header.wash.prune(e.trade_date);
        let value = e.quantity * e.price;
        match e.side {
            Side::Buy => {
                tax::buy(state, &mut book, e);
                book.account(&e.account).cash -= value;
            }
            Side::Sell => {
                let held: Decimal =
                    account.lots.get(&e.security).map_or(Decimal::ZERO, |l| l.iter().map(|l| l.quantity).sum());
                if e.quantity > held {
                    return Err(InputError::invalid(format!(
                        "sell of {} {} exceeds the {held} held",
                        e.quantity, e.security
                    )));
                }
                let lots = account.lots.get(&e.security).map(Vec::as_slice).unwrap_or_default();
                relief = complete_relief(hh, account, lots, relief, e.quantity, e.price, e.trade_date);
                let realized = tax::sell(state, &mut book, &env.event_id, e, &relief);
                // A transition's budget counts what its sales realized.
                if order_reason == Some(OrderReason::Transition) && account.kind.is_taxable() {
                    if let Some(t) = book.header.transition.as_mut() {
                        let gain: Decimal = realized.iter().map(|r| r.gain_usd).sum();
                        t.used_usd += gain;
                        *t.used_by_year.entry(chrono::Datelike::year(&e.trade_date)).or_default() += gain;
                    }
                }
                book.account(&e.account).cash += value;
                let (short, long) = realized.iter().fold((Decimal::ZERO, Decimal::ZERO), |(s, l), r| {
                    if r.long_term {
                        (s, l + r.gain_usd)
                    } else {
                        (s + r.gain_usd, l)
                    }
                });
                let reportable = account.kind.is_taxable();
                let detail = format!(
                    "sold {} {} at {} from lots {}: short-term {}, long-term {}{}",
                    e.quantity,
                    e.security,
                    e.price,
                    realized.iter().map(|r| format!("#{}×{}", r.lot_id, r.quantity)).collect::<Vec<_>>().join(", "),
                    short,
                    long,
                    if reportable { "" } else { " (tax-deferred account: not reportable)" }
                );
                // The sale's own record comes before any wash-sale records it caused.
                book.audit.insert(
                    0,
                    AuditBody::Tax {
                        account: e.account.clone(),
                        security: e.security.clone(),
                        trade_date: e.trade_date,
                        quantity: e.quantity,
                        price: e.price,
                        lots: realized,
                        short_term_usd: short,
                        long_term_usd: long,
                        realized_usd: short + long,
                        reportable,
                        detail,
                    },
                );
            }
        }
        pay_withdrawals(book.account(&e.account));
    }
    let tax::Book { header, accounts, lots, audit, .. } = book;
    if !header_unchanged(&header, hh) {
        d.changes.push(Change::Household(Box::new(header)));
    }
    for acc in accounts.into_values() {
        d.changes.push(Change::Account(e.household.clone(), Box::new(acc)));
    }
    for ((a, sec), l) in lots {
        d.changes.push(Change::Lots(e.household.clone(), a, sec, l));
    }
    d.audit.extend(audit.into_iter().map(|body| AuditDraft { household: Some(e.household.clone()), body }));
    Ok(d)
}

/// Fills the relief list up to `qty` with lots chosen by the account's policy
/// (for outside sells, or an order whose lots were sold meanwhile).
fn complete_relief(
    hh: &Household,
    account: &Account,
    lots: &[Lot],
    mut relief: Vec<(u64, Decimal)>,
    qty: Decimal,
    price: Decimal,
    on: NaiveDate,
) -> Vec<(u64, Decimal)> {
    // Keep only what the lots can still give.
    relief.retain(|(id, q)| lots.iter().any(|l| l.lot_id == *id && l.quantity >= *q));
    let left = qty - relief.iter().map(|(_, q)| *q).sum::<Decimal>();
    if left <= Decimal::ZERO {
        return relief;
    }
    // Each lot less what the relief already takes from it.
    let free: Vec<(&Lot, Decimal)> = lots
        .iter()
        .map(|l| (l, l.quantity - relief.iter().filter(|(id, _)| *id == l.lot_id).map(|(_, q)| *q).sum::<Decimal>()))
        .filter(|(_, free)| *free > Decimal::ZERO)
        .collect();
    for r in rebalance::relieve_lots(hh, account, free, left, price, on) {
        match relief.iter_mut().find(|(id, _)| *id == r.lot_id) {
            Some((_, q)) => *q += r.quantity,
            None => relief.push((r.lot_id, r.quantity)),
        }
    }
    relief
}

fn decide_clock(state: &State, env: &Envelope, kind: ClockKind, trade_date: NaiveDate) -> Decision {
    let mut d = Decision::default();
    let reason = match kind {
        ClockKind::MarketClose | ClockKind::Review => OrderReason::Drift,
    };
    let mut ctx = Context::new(env.event_time, trade_date, reason, Mode::Full);
    // Harvest scans run on the daily close.
    ctx.harvest = kind == ClockKind::MarketClose;
    for hh in state.households.values() {
        let accounts: Vec<AccountId> = hh.accounts.keys().cloned().collect();
        // Scheduled withdrawals first: payments due are paid, those within
        // their lead set aside, and the plans below raise the cash.
        let due = crate::income::on_clock(hh, trade_date);
        // A transition's period begins with the first clock on or after its date.
        let period = hh.transition.as_ref().filter(|t| t.active() && t.next_period() <= trade_date).cloned();
        if due.is_none() && period.is_none() {
            rebalance_household(state, hh, env, &accounts, &ctx, &mut d);
            continue;
        }
        let mut header = header_of(hh);
        let mut next = hh.clone();
        if let Some(due) = due {
            header.income = due.income;
            next.income = header.income.clone();
            for (id, acc) in due.accounts {
                d.changes.push(Change::Account(hh.id.clone(), Box::new(acc.clone())));
                let full = next.accounts.get_mut(&id).expect("schedules name held accounts");
                *full =
                    Account { lots: std::mem::take(&mut full.lots), pending: std::mem::take(&mut full.pending), ..acc };
            }
            d.audit.extend(due.audit);
        }
        let mut hh_ctx = ctx.clone();
        if let Some(mut t) = period {
            if crate::transition::complete(state, &next, &ctx, t.plan.complete_below) {
                t.completed = Some(trade_date);
            } else {
                t.periods_done += 1;
                hh_ctx.transition_period = true;
            }
            header.transition = Some(t.clone());
            next.transition = Some(t);
        }
        d.changes.push(Change::Household(Box::new(header)));
        rebalance_household(state, &next, env, &accounts, &hh_ctx, &mut d);
    }
    d
}

fn decide_corporate_action(state: &State, e: &CorporateAction) -> Result<Decision, InputError> {
    if !state.securities.contains_key(&e.security) {
        return Err(unknown(format!("corporate action for unknown security {}", e.security)));
    }
    let CorporateActionKind::Split { numerator, denominator } = e.kind;
    let (n, dn) = (Decimal::from(numerator), Decimal::from(denominator));
    let mut d = Decision::default();
    if let Some(p) = state.prices.get(&e.security) {
        let mut p = p.clone();
        p.price = p.price * dn / n;
        d.changes.push(Change::Price(e.security.clone(), p));
    }
    // Wash-sale windows open on the security count post-split shares.
    for hh in state.households.values() {
        if hh.wash.loss_sales.iter().any(|s| s.security == e.security)
            || hh.wash.buys.iter().any(|b| b.security == e.security)
        {
            let mut header = header_of(hh);
            for s in header.wash.loss_sales.iter_mut().filter(|s| s.security == e.security) {
                s.open_shares = s.open_shares * n / dn;
                s.loss_per_share = s.loss_per_share * dn / n;
            }
            for b in header.wash.buys.iter_mut().filter(|b| b.security == e.security) {
                b.open_shares = b.open_shares * n / dn;
            }
            d.changes.push(Change::Household(Box::new(header)));
        }
    }
    for h in state.holders.get(&e.security).into_iter().flatten() {
        for (a, account) in &state.households[h].accounts {
            if let Some(lots) = account.lots.get(&e.security) {
                let split: Vec<Lot> = lots
                    .iter()
                    .map(|l| Lot {
                        quantity: l.quantity * n / dn,
                        cost_per_share: l.cost_per_share * dn / n,
                        ..l.clone()
                    })
                    .collect();
                d.changes.push(Change::Lots(h.clone(), a.clone(), e.security.clone(), split));
            }
            for (id, p) in account.pending.iter().filter(|(_, p)| p.security == e.security) {
                let mut p = p.clone();
                p.open_quantity = p.open_quantity * n / dn;
                p.ref_price = p.ref_price * dn / n;
                for l in p.lots.iter_mut() {
                    l.quantity = l.quantity * n / dn;
                    l.cost_per_share = l.cost_per_share * dn / n;
                }
                d.changes.push(Change::Pending(h.clone(), a.clone(), id.clone(), Some(p)));
            }
        }
    }
    Ok(d)
}

fn rebalance_household(
    state: &State,
    hh: &Household,
    env: &Envelope,
    accounts: &[AccountId],
    ctx: &Context,
    d: &mut Decision,
) {
    // Wash-sale windows and the tax budget are household-wide: each account's
    // plan sees what the accounts planned before it.
    let mut view = rebalance::HouseholdView::of(state, hh, ctx.trade_date);
    for a in accounts {
        let Some(account) = hh.accounts.get(a) else { continue };
        let plan = rebalance::plan_account(state, hh, account, ctx, &view);
        view.record(state, account, &plan, ctx.trade_date);
        emit_plan(env, hh, account, plan, ctx, d);
    }
}

/// Turns a plan into orders, pending entries and the decision's audit record.
fn emit_plan(
    env: &Envelope,
    hh: &Household,
    account: &Account,
    plan: rebalance::Plan,
    ctx: &Context,
    d: &mut Decision,
) {
    let mut ids = Vec::new();
    let mut sources = Vec::new();
    for o in plan.orders {
        let order_id = order_id(&env.event_id, &hh.id, &account.id, &o.security, o.side);
        if o.reason == OrderReason::Income {
            sources.push(crate::output::IncomeSource {
                order_id: order_id.clone(),
                security: o.security.clone(),
                quantity: o.quantity,
                ref_price: o.ref_price,
                lots: o.lots.clone(),
                est_tax_usd: crate::income::est_tax(hh, account.kind, &o.lots),
            });
        }
        d.changes.push(Change::Pending(
            hh.id.clone(),
            account.id.clone(),
            order_id.clone(),
            Some(PendingOrder {
                security: o.security.clone(),
                side: o.side,
                open_quantity: o.quantity,
                ref_price: o.ref_price,
                reason: o.reason,
                lots: o.lots.clone(),
            }),
        ));
        ids.push(order_id.clone());
        d.orders.push(Order {
            order_id,
            seq: 0,
            household: hh.id.clone(),
            account: account.id.clone(),
            security: o.security,
            side: o.side,
            quantity: o.quantity,
            ref_price: o.ref_price,
            reason: o.reason,
            lots: o.lots,
            cause_event_id: env.event_id.clone(),
            decided_at: ctx.now,
        });
    }
    d.audit.push(AuditDraft {
        household: Some(hh.id.clone()),
        body: AuditBody::Decision {
            account: account.id.clone(),
            rules: plan.rules,
            inputs: plan.inputs,
            orders: ids,
            skipped: plan.skipped,
        },
    });
    d.audit.extend(plan.extra_audit.into_iter().map(|body| AuditDraft { household: Some(hh.id.clone()), body }));
    if let Some(shortfall) = plan.income_shortfall {
        let payments = crate::income::reserved_payments(hh, &account.id);
        let est_tax: Decimal = sources.iter().map(|s| s.est_tax_usd).sum();
        let detail = format!(
            "raised ${} for {}: {}; estimated tax ${est_tax}",
            shortfall.round_dp(2),
            payments.iter().map(|p| format!("{} on {}", p.schedule_id, p.payment_date)).collect::<Vec<_>>().join(", "),
            if sources.is_empty() {
                "no sale possible".to_string()
            } else {
                sources
                    .iter()
                    .map(|s| {
                        let lots: Vec<String> = s
                            .lots
                            .iter()
                            .map(|l| format!("#{}×{} {}", l.lot_id, l.quantity, if l.long_term { "LT" } else { "ST" }))
                            .collect();
                        format!("{} {} from lots {} (tax ${})", s.quantity, s.security, lots.join(", "), s.est_tax_usd)
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        );
        d.audit.push(AuditDraft {
            household: Some(hh.id.clone()),
            body: AuditBody::IncomeRaised {
                account: account.id.clone(),
                payments,
                shortfall_usd: shortfall.round_dp(2),
                sources,
                est_tax_usd: est_tax,
                detail,
            },
        });
    }
}

/// Deterministic order id: the same decision always names its order the same,
/// so a redelivered or replayed decision is recognisably the same order.
pub fn order_id(event_id: &str, h: &HouseholdId, a: &AccountId, sec: &SecurityId, side: Side) -> OrderId {
    let mut hasher = Sha256::new();
    for part in [event_id, h.as_str(), a.as_str(), sec.as_str(), side.as_str()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    OrderId(format!("o-{}", hex_lower(&hasher.finalize()[..12])))
}

/// Applies a decision. Infallible: every check happened in `decide`. Orders
/// and audit records are numbered here; the audit chain is sealed by [`seal`].
pub fn apply(state: &mut State, d: Decision) -> Applied {
    let mut out = Applied::default();
    apply_into(state, d, &mut out);
    out
}

/// [`apply`] into `out`, the outputs of an earlier input that are used and
/// done with: its lists and the text of its audit records are overwritten
/// (a replay folds a million inputs; most make one record).
pub fn apply_into(state: &mut State, d: Decision, out: &mut Applied) {
    let touched = &mut out.touched;
    touched.clear();
    touched.reserve(d.changes.len() + 2);
    state.meta.applied += 1;
    touched.push(Touched::Meta);
    for change in d.changes {
        apply_change(state, change, touched);
    }
    out.orders = d.orders;
    for o in out.orders.iter_mut() {
        state.meta.order_seq += 1;
        o.seq = state.meta.order_seq;
    }
    out.rejection = d.rejection.map(|err| {
        state.meta.dead_letter_seq += 1;
        (state.meta.dead_letter_seq, err)
    });
    let audit = &mut out.audit;
    let drafts = d.audit.len();
    audit.truncate(drafts);
    let mut event_id = d.event_id;
    for (i, draft) in d.audit.into_iter().enumerate() {
        let stream: Cow<'static, str> =
            draft.household.as_ref().map_or(Cow::Borrowed(REFERENCE_STREAM), |h| Cow::Owned(format!("household/{h}")));
        let head = state.meta.chains.head_mut(&stream);
        head.count += 1;
        state.meta.audit_seq += 1;
        let (seq, stream_seq) = (state.meta.audit_seq, head.count);
        // The last record takes the id; the others copy it.
        let event_id = if i + 1 == drafts { event_id.take() } else { event_id.clone() };
        match audit.get_mut(i) {
            // Field by field, so that its hash texts keep their room.
            Some(r) => {
                r.seq = seq;
                r.stream_seq = stream_seq;
                r.stream = stream;
                r.event_id = event_id;
                r.at = d.at;
                r.household = draft.household;
                r.body = draft.body;
                r.prev_hash.clear();
                r.hash.clear();
            }
            None => audit.push(AuditRecord {
                seq,
                stream_seq,
                stream,
                event_id,
                at: d.at,
                household: draft.household,
                body: draft.body,
                prev_hash: String::new(),
                hash: String::new(),
            }),
        }
    }
    for r in audit.iter() {
        touched.push(Touched::Chain(r.stream.clone()));
    }
}

/// The tail every unsealed record's canonical JSON ends with (`hash` is the
/// record's last field and is empty until sealed).
const UNSEALED_TAIL: &[u8] = br#","hash":""}"#;

/// Chains the audit records of an applied decision: each record takes its
/// stream's head as `prev_hash`, and its `hash` is SHA-256 over its canonical
/// JSON with an empty `hash`. Serializes each record once; the sealed bytes
/// are kept in `audit_json` for the store, written over the buffers already
/// there (those of an earlier input, for [`apply_into`]'s caller).
pub fn seal(state: &mut State, applied: &mut Applied) {
    let json = &mut applied.audit_json;
    json.truncate(applied.audit.len());
    for (i, r) in applied.audit.iter_mut().enumerate() {
        let head = state.meta.chains.get_mut(r.stream.as_ref()).expect("apply opened the stream");
        // The head's text goes to the record, and the head is written into
        // the record's empty one (which may have room).
        std::mem::swap(&mut r.prev_hash, &mut head.hash);
        if json.len() == i {
            json.push(Vec::with_capacity(SEALED_CAPACITY));
        }
        seal_chained(&mut head.hash, r, &mut json[i]);
    }
}

/// Bytes first set aside for a sealed audit record (most are 300–500 bytes).
const SEALED_CAPACITY: usize = 640;

/// Seals one record onto the chain whose head hash is `head` (the record's
/// `prev_hash`; it becomes the record's own hash) and returns the record's
/// sealed JSON. [`seal`] does this for every record of a decision; a replay
/// may do it apart from the fold (on another thread), keeping the heads itself.
pub fn seal_record(head: &mut String, r: &mut AuditRecord) -> Vec<u8> {
    // Room for a typical record and its hash, so the buffer is not grown step by step.
    let mut bytes = Vec::with_capacity(SEALED_CAPACITY);
    seal_record_into(head, r, &mut bytes);
    bytes
}

/// [`seal_record`] writing the sealed JSON into `bytes` (emptied first), for
/// a caller that reuses one buffer.
pub fn seal_record_into(head: &mut String, r: &mut AuditRecord, bytes: &mut Vec<u8>) {
    r.prev_hash = std::mem::take(head);
    seal_chained(head, r, bytes);
}

/// Seals `r`, whose `prev_hash` is already its chain's head, writing its
/// hash into `r.hash` and `head` (both emptied first) and its sealed JSON
/// into `bytes`.
fn seal_chained(head: &mut String, r: &mut AuditRecord, bytes: &mut Vec<u8>) {
    bytes.clear();
    r.hash.clear();
    r.write_json(bytes);
    assert!(bytes.ends_with(UNSEALED_TAIL), "hash is the last field of an audit record");
    let digest = Sha256::digest(&bytes);
    bytes.truncate(bytes.len() - 2);
    let at = bytes.len();
    crate::text::push_hex_bytes(bytes, &digest);
    let hash = std::str::from_utf8(&bytes[at..]).expect("hex digits are ASCII");
    r.hash.push_str(hash);
    head.clear();
    head.push_str(hash);
    bytes.extend_from_slice(b"\"}");
}

/// The hash a sealed record must carry: SHA-256 over its canonical JSON with
/// an empty `hash` (which includes `prev_hash`), so any change to a record or
/// its place in the chain breaks it.
pub fn audit_hash(record: &AuditRecord) -> String {
    let mut unsealed = record.clone();
    unsealed.hash.clear();
    let bytes = serde_json::to_vec(&unsealed).expect("audit records serialize");
    hex_lower(&Sha256::digest(&bytes))
}

fn apply_change(state: &mut State, change: Change, touched: &mut Vec<Touched>) {
    match change {
        Change::Security(s) => {
            touched.push(Touched::Security(s.security.clone()));
            state.securities.insert(s.security.clone(), s);
        }
        Change::Model(id, m) => {
            touched.push(Touched::Model(id.clone()));
            state.models.insert(id, m);
        }
        Change::Price(id, p) => {
            // Update in place when the security is priced: the change's id then
            // names the touched record without another copy.
            match state.prices.get_mut(&id) {
                Some(cur) => *cur = p,
                None => {
                    state.prices.insert(id.clone(), p);
                }
            }
            touched.push(Touched::Price(id));
        }
        Change::Esg(id, e) => {
            touched.push(Touched::Esg(id.clone()));
            state.esg.insert(id, e);
        }
        Change::Household(h) => {
            touched.push(Touched::Household(h.id.clone()));
            match state.households.get_mut(&h.id) {
                Some(cur) => {
                    cur.tax = h.tax;
                    cur.restrictions = h.restrictions;
                    cur.realized = h.realized;
                    cur.wash = h.wash;
                    cur.objective = h.objective;
                    cur.income = h.income;
                    cur.transition = h.transition;
                }
                None => {
                    state.households.insert(h.id.clone(), *h);
                }
            }
        }
        Change::Account(h, a) => {
            touched.push(Touched::Account(h.clone(), a.id.clone()));
            let hh = state.households.get_mut(&h).expect("accounts change only in known households");
            let old_models: BTreeSet<ModelId> = hh.models();
            match hh.accounts.get_mut(&a.id) {
                Some(cur) => {
                    let lots = std::mem::take(&mut cur.lots);
                    let pending = std::mem::take(&mut cur.pending);
                    *cur = Account { lots, pending, ..*a };
                }
                None => {
                    hh.accounts.insert(a.id.clone(), *a);
                }
            }
            let new_models = hh.models();
            if old_models != new_models {
                reindex_subscriptions(state, &h, &old_models, &new_models);
            }
        }
        Change::Lots(h, a, sec, lots) => {
            touched.push(Touched::Lots(h.clone(), a.clone(), sec.clone()));
            let hh = state.households.get_mut(&h).expect("lots change only in known households");
            let account = hh.accounts.get_mut(&a).expect("lots change only in known accounts");
            if lots.is_empty() {
                account.lots.remove(&sec);
            } else {
                account.lots.insert(sec.clone(), lots);
            }
            let holds = hh.accounts.values().any(|acc| acc.lots.contains_key(&sec));
            if holds {
                state.holders.entry(sec).or_default().insert(h);
            } else if let Some(set) = state.holders.get_mut(&sec) {
                set.remove(&h);
                if set.is_empty() {
                    state.holders.remove(&sec);
                }
            }
        }
        Change::Pending(h, a, id, p) => {
            touched.push(Touched::Pending(h.clone(), a.clone(), id.clone()));
            let account = state
                .households
                .get_mut(&h)
                .and_then(|hh| hh.accounts.get_mut(&a))
                .expect("orders change only in known accounts");
            match p {
                Some(p) => account.pending.insert(id, p),
                None => account.pending.remove(&id),
            };
        }
        Change::Seen(id) => {
            touched.push(Touched::Seen(id.clone()));
            state.meta.seen.insert(id, state.meta.applied);
        }
    }
}

fn reindex_subscriptions(state: &mut State, h: &HouseholdId, old: &BTreeSet<ModelId>, new: &BTreeSet<ModelId>) {
    for m in old.difference(new) {
        if let Some(set) = state.subscribers.get_mut(m) {
            set.remove(h);
            if set.is_empty() {
                state.subscribers.remove(m);
            }
        }
    }
    for m in new.difference(old) {
        state.subscribers.entry(m.clone()).or_default().insert(h.clone());
    }
}

/// Rebuilds the indexes from households (after loading state from a store).
pub fn rebuild_indexes(state: &mut State) {
    state.subscribers.clear();
    state.holders.clear();
    for (h, hh) in &state.households {
        for m in hh.models() {
            state.subscribers.entry(m).or_default().insert(h.clone());
        }
        for a in hh.accounts.values() {
            for sec in a.lots.keys() {
                state.holders.entry(sec.clone()).or_default().insert(h.clone());
            }
        }
    }
}

/// Decide, apply and seal: one input folded.
pub fn step(state: &mut State, input: Input<'_>) -> Applied {
    let d = decide(state, input);
    let mut applied = apply(state, d);
    seal(state, &mut applied);
    applied
}
