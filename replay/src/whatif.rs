//! `what-if`: the recorded history replayed with a changed input — events
//! added (a model version not yet published), household or engine settings
//! overridden (tax budget, drift bands, harvest thresholds) — in a fresh
//! in-memory state, compared with the same history replayed unchanged.
//! Nothing is written or published.
//!
//! Fills are the custodian's answers to the engine's orders, so a changed
//! decision has no recorded fill. Both runs therefore treat fills alike: a
//! recorded fill of an order is folded when the run made that very order
//! (same id, account, security, side and quantity); an order the recorded
//! history does not have is filled in full at its reference price right
//! after the input that made it; recorded fills of orders the run did not
//! make are left out. Outside trades (fills with no order) are kept. Replayed
//! unchanged, every order is the recorded one and every fill is kept, so the
//! baseline is the recorded history itself.

use crate::journal::{Entry, Fold, Journal, Scope};
use crate::ReplayError;
use chrono::{DateTime, Utc};
use overlay_core::event::Side;
use overlay_core::event::{Envelope, Fill, Payload};
use overlay_core::ids::{AccountId, HouseholdId, OrderId, SecurityId};
use overlay_core::output::{AuditBody, Order, OrderReason};
use overlay_core::state::EngineSettings;
use overlay_store::{keys, records_after, Store};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One setting changed: `tax.<field>` (a household's tax profile, e.g.
/// `tax.annual_gain_budget_usd`, `tax.harvest.min_loss_pct`),
/// `account.<field>` (every account's settings, e.g. `account.drift_band_abs`)
/// or `engine.<field>` (the engine settings, e.g. `engine.price_jump_max`).
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// Only this household's (tax and account settings); None: every household.
    pub household: Option<HouseholdId>,
    pub path: Vec<String>,
    pub value: Value,
}

impl Override {
    /// `PATH=VALUE`; the value is JSON when it parses as such (`true`,
    /// `null`), else text (decimals are text in the events' JSON form).
    pub fn parse(text: &str, household: Option<HouseholdId>) -> Result<Self, ReplayError> {
        let (path, value) =
            text.split_once('=').ok_or_else(|| ReplayError::Invalid(format!("{text}: expected PATH=VALUE")))?;
        let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
        if path.len() < 2 || !matches!(path[0].as_str(), "tax" | "account" | "engine") {
            return Err(ReplayError::Invalid(format!(
                "{text}: the path starts with tax., account. or engine. and names a field"
            )));
        }
        let value = match value.trim() {
            v @ ("true" | "false" | "null") => serde_json::from_str(v).expect("JSON literals"),
            v => Value::String(v.to_string()),
        };
        Ok(Self { household, path, value })
    }

    fn applies_to(&self, h: &HouseholdId) -> bool {
        self.household.as_ref().is_none_or(|x| x == h)
    }
}

/// Sets `path` (below its first part) in `target`'s JSON form and reads it back.
fn set<T: Serialize + serde::de::DeserializeOwned>(target: &T, o: &Override) -> Result<T, ReplayError> {
    let mut v = serde_json::to_value(target).expect("settings serialize");
    let mut at = &mut v;
    for key in &o.path[1..] {
        let obj =
            at.as_object_mut().ok_or_else(|| ReplayError::Invalid(format!("{}: not a field", o.path.join("."))))?;
        at = obj.entry(key.clone()).or_insert(Value::Null);
    }
    *at = o.value.clone();
    serde_json::from_value(v).map_err(|e| ReplayError::Invalid(format!("{}: {e}", o.path.join("."))))
}

/// What is changed.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Events added to the history, each before the first recorded input later than it.
    pub events: Vec<Envelope>,
    pub overrides: Vec<Override>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.overrides.is_empty()
    }

    fn settings(&self, recorded: &EngineSettings) -> Result<EngineSettings, ReplayError> {
        let mut s = recorded.clone();
        for o in self.overrides.iter().filter(|o| o.path[0] == "engine") {
            s = set(&s, o)?;
        }
        Ok(s)
    }

    /// The event as the changed history has it.
    fn rewrite(&self, env: &Envelope) -> Result<Option<Envelope>, ReplayError> {
        let Payload::HouseholdUpserted(e) = &env.payload else { return Ok(None) };
        let mine: Vec<&Override> =
            self.overrides.iter().filter(|o| o.path[0] != "engine" && o.applies_to(&e.household)).collect();
        if mine.is_empty() {
            return Ok(None);
        }
        let mut e = e.clone();
        for o in mine {
            match o.path[0].as_str() {
                "tax" => e.tax = set(&e.tax, o)?,
                _ => {
                    for a in e.accounts.iter_mut() {
                        a.settings = set(&a.settings, o)?;
                    }
                }
            }
        }
        Ok(Some(Envelope { payload: Payload::HouseholdUpserted(e), ..env.clone() }))
    }
}

/// An order, as the comparison shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OrderLine {
    pub decided_at: DateTime<Utc>,
    pub order_id: OrderId,
    pub account: AccountId,
    pub security: SecurityId,
    pub side: Side,
    pub quantity: Decimal,
    pub reason: OrderReason,
}

impl From<&Order> for OrderLine {
    fn from(o: &Order) -> Self {
        Self {
            decided_at: o.decided_at,
            order_id: o.order_id.clone(),
            account: o.account.clone(),
            security: o.security.clone(),
            side: o.side,
            quantity: o.quantity,
            reason: o.reason,
        }
    }
}

/// Realized results of one household in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Realized {
    /// Net realized gain (+) or loss (−) in taxable accounts, short and long term.
    pub realized_usd: Decimal,
    /// Losses realized by harvest sales (positive).
    pub harvested_loss_usd: Decimal,
}

/// One run: every order, and each household's realized results.
#[derive(Debug, Default)]
struct Run {
    orders: BTreeMap<HouseholdId, BTreeSet<OrderLine>>,
    realized: BTreeMap<HouseholdId, Realized>,
    inputs: u64,
    simulated_fills: u64,
    dropped_fills: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HouseholdDiff {
    pub household: HouseholdId,
    /// Trades the recorded history made and the changed one would not (or not so).
    pub only_baseline: Vec<OrderLine>,
    /// Trades the changed history would make that the recorded one did not.
    pub only_what_if: Vec<OrderLine>,
    pub baseline: Realized,
    pub what_if: Realized,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub households: u64,
    pub only_baseline: u64,
    pub only_what_if: u64,
    pub baseline: Realized,
    pub what_if: Realized,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WhatIfReport {
    /// Recorded inputs replayed (each run), and inputs added.
    pub inputs: u64,
    pub added: u64,
    /// Households whose trades or realized results differ.
    pub households: Vec<HouseholdDiff>,
    pub total: Totals,
    /// In the changed run: orders filled by simulation, recorded fills left out.
    pub simulated_fills: u64,
    pub dropped_fills: u64,
}

/// The fill of an order the recorded history does not have: in full, at
/// its reference price, on the day it was decided.
fn simulated_fill(o: &Order) -> Envelope {
    Envelope {
        event_id: format!("what-if-fill-{}", o.order_id),
        producer: "what-if".into(),
        event_time: o.decided_at,
        schema_version: 1,
        payload: Payload::Fill(Fill {
            reason: Some("simulated by what-if".into()),
            ..Fill::of_order(o, o.ref_price, o.decided_at.date_naive())
        }),
    }
}

/// The same order: everything but its place in the order stream.
fn same_order(a: &Order, b: &Order) -> bool {
    Order { seq: 0, ..a.clone() } == Order { seq: 0, ..b.clone() }
}

struct Runner<'a> {
    fold: Fold,
    recorded_orders: &'a BTreeMap<OrderId, Order>,
    /// Orders of this run, and which of them are the recorded ones.
    made: BTreeMap<OrderId, Order>,
    identical: BTreeSet<OrderId>,
    run: Run,
}

impl Runner<'_> {
    /// Folds one event (`raw`: its recorded bytes, or None to encode it).
    fn feed(&mut self, source: String, raw: Option<Vec<u8>>, env: Envelope) -> Result<(), ReplayError> {
        let raw = raw.unwrap_or_else(|| overlay_proto::encode_envelope(&env));
        let seq = self.fold.state.meta.applied + 1;
        let fill_of = match &env.payload {
            Payload::Fill(f) => f.order_id.clone(),
            _ => None,
        };
        let e = Entry { seq, source, raw, decoded: Box::new(Ok(env)) };
        let applied = self.fold.step(&e)?.expect("a full fold folds every entry");
        self.run.inputs += 1;
        let reason = fill_of.as_ref().and_then(|id| self.made.get(id)).map(|o| o.reason);
        for a in &applied.audit {
            let AuditBody::Tax { lots, realized_usd, reportable: true, .. } = &a.body else { continue };
            let h = a.household.clone().expect("tax records belong to a household");
            let r = self.run.realized.entry(h).or_default();
            r.realized_usd += realized_usd;
            if reason == Some(OrderReason::Harvest) {
                r.harvested_loss_usd -= lots.iter().map(|l| l.gain_usd.min(Decimal::ZERO)).sum::<Decimal>();
            }
        }
        let mut simulate = Vec::new();
        for o in &applied.orders {
            self.run.orders.entry(o.household.clone()).or_default().insert(OrderLine::from(o));
            match self.recorded_orders.get(&o.order_id) {
                Some(r) if same_order(r, o) => {
                    self.identical.insert(o.order_id.clone());
                }
                _ => simulate.push(simulated_fill(o)),
            }
            self.made.insert(o.order_id.clone(), o.clone());
        }
        for env in simulate {
            self.run.simulated_fills += 1;
            self.feed(format!("what-if/fill/{}", self.run.simulated_fills), None, env)?;
        }
        Ok(())
    }

    /// Folds a recorded input, unless it fills an order this run did not make as recorded.
    fn recorded(&mut self, e: Entry) -> Result<(), ReplayError> {
        let Ok(env) = *e.decoded else {
            // Undecodable bytes: folded as recorded (refused, counted).
            let applied = self.fold.step(&Entry { seq: self.fold.state.meta.applied + 1, ..e })?;
            debug_assert!(applied.is_some());
            self.run.inputs += 1;
            return Ok(());
        };
        if let Payload::Fill(Fill { order_id: Some(id), .. }) = &env.payload {
            if !self.identical.contains(id) {
                self.run.dropped_fills += 1;
                return Ok(());
            }
        }
        self.feed(e.source, Some(e.raw), env)
    }
}

fn recorded_orders(recorded: &dyn Store) -> Result<BTreeMap<OrderId, Order>, ReplayError> {
    let mut out = BTreeMap::new();
    for r in records_after(recorded, keys::ORDERS, 0) {
        let (seq, v) = r?;
        let o: Order =
            serde_json::from_slice(&v).map_err(|e| ReplayError::Invalid(format!("recorded order {seq}: {e}")))?;
        out.insert(o.order_id.clone(), o);
    }
    Ok(out)
}

fn run(
    journal: &Journal<'_>,
    recorded: &BTreeMap<OrderId, Order>,
    change: &Change,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Run, ReplayError> {
    let mut r = Runner {
        fold: Fold::new(change.settings(&journal.settings)?, Scope::All),
        recorded_orders: recorded,
        made: BTreeMap::new(),
        identical: BTreeSet::new(),
        run: Run::default(),
    };
    let mut added: Vec<&Envelope> = change.events.iter().collect();
    added.sort_by_key(|e| e.event_time);
    let mut added = added.into_iter().enumerate().peekable();
    for e in journal.entries(0) {
        let e = e?;
        while let Some((i, a)) = added.next_if(|(_, a)| e.time().is_some_and(|t| t > a.event_time)) {
            r.feed(format!("what-if/added/{i}"), None, a.clone())?;
        }
        let e = match (*e.decoded).as_ref().ok().map(|env| change.rewrite(env)).transpose()?.flatten() {
            Some(env) => Entry { raw: overlay_proto::encode_envelope(&env), decoded: Box::new(Ok(env)), ..e },
            None => e,
        };
        let seq = e.seq;
        r.recorded(e)?;
        if seq.is_multiple_of(crate::journal::PROGRESS_EVERY) {
            progress(seq, journal.len);
        }
    }
    for (i, a) in added {
        r.feed(format!("what-if/added/{i}"), None, a.clone())?;
    }
    progress(journal.len, journal.len);
    Ok(r.run)
}

/// Replays the recorded history unchanged and with `change`, and reports
/// the trades and realized results that differ, per household and in total.
pub fn what_if(
    recorded: &dyn Store,
    change: &Change,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WhatIfReport, ReplayError> {
    let journal = Journal::open(recorded)?;
    let orders = recorded_orders(recorded)?;
    let baseline = run(&journal, &orders, &Change::default(), progress)?;
    // Unchanged, the replay must make exactly the recorded orders.
    let made: usize = baseline.orders.values().map(BTreeSet::len).sum();
    if made != orders.len() || baseline.simulated_fills > 0 {
        return Err(ReplayError::Invalid(format!(
            "replaying the journal unchanged makes {made} orders, {} of them not as recorded; the recorded history has {} (run `overlay replay verify`)",
            baseline.simulated_fills,
            orders.len()
        )));
    }
    let changed = run(&journal, &orders, change, progress)?;
    let mut report = WhatIfReport {
        inputs: journal.len,
        added: change.events.len() as u64,
        households: Vec::new(),
        total: Totals::default(),
        simulated_fills: changed.simulated_fills,
        dropped_fills: changed.dropped_fills,
    };
    let households: BTreeSet<&HouseholdId> = baseline
        .orders
        .keys()
        .chain(changed.orders.keys())
        .chain(baseline.realized.keys())
        .chain(changed.realized.keys())
        .collect();
    let empty = BTreeSet::new();
    for h in households {
        let (b, w) = (baseline.orders.get(h).unwrap_or(&empty), changed.orders.get(h).unwrap_or(&empty));
        let diff = HouseholdDiff {
            household: h.clone(),
            only_baseline: b.difference(w).cloned().collect(),
            only_what_if: w.difference(b).cloned().collect(),
            baseline: baseline.realized.get(h).cloned().unwrap_or_default(),
            what_if: changed.realized.get(h).cloned().unwrap_or_default(),
        };
        let t = &mut report.total;
        t.baseline.realized_usd += diff.baseline.realized_usd;
        t.baseline.harvested_loss_usd += diff.baseline.harvested_loss_usd;
        t.what_if.realized_usd += diff.what_if.realized_usd;
        t.what_if.harvested_loss_usd += diff.what_if.harvested_loss_usd;
        if diff.only_baseline.is_empty() && diff.only_what_if.is_empty() && diff.baseline == diff.what_if {
            continue;
        }
        t.households += 1;
        t.only_baseline += diff.only_baseline.len() as u64;
        t.only_what_if += diff.only_what_if.len() as u64;
        report.households.push(diff);
    }
    Ok(report)
}
