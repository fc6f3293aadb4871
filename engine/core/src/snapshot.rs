//! A household snapshot and the proposal the engine would make for it
//! (`overlay propose`): an advisor's or integrator's view of one household —
//! accounts, lots, cash, sleeves or direct targets, restrictions, settings,
//! prices and the recent trades that keep wash-sale windows open — turned
//! into engine state and put through the same decision code as a live
//! review clock. Nothing is stored or published.
//!
//! The JSON form is `schemas/household_snapshot.schema.json`.

use crate::event::{
    check_non_negative, check_positive, AccountKind, AccountSettings, Clock, ClockKind, Envelope, InputError,
    InputErrorKind, ModelKind, ModelPublished, ModelWeight, Payload, RestrictionRule, SecurityUpserted, Side, Sleeve,
    TaxProfile, TransitionPlan, SCHEMA_VERSION_CURRENT,
};
use crate::fold::{decide, rebuild_indexes, rule_securities, Decision, Input};
use crate::ids::{AccountId, HouseholdId, ModelId, OrderId, RestrictionId, SecurityId};
use crate::output::{AuditBody, LotRelief, Order, OrderReason};
use crate::state::{
    Account, EngineSettings, EsgScore, Household, LossSale, Lot, Model, PendingOrder, PriceState, RealizedYear,
    RecentBuy, Restriction, State, WashLedger,
};
use crate::tax::wash_key;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The event id the proposal's orders name as their cause.
pub const PROPOSAL_EVENT_ID: &str = "proposal";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdSnapshot {
    pub household: HouseholdId,
    /// When the proposal is decided: restrictions effective by then are in force.
    pub as_of: DateTime<Utc>,
    /// The trade date (default: the date of `as_of`): wash-sale windows, holding
    /// periods and the tax year count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_date: Option<NaiveDate>,
    /// `review` (default) rebalances drift; `market_close` also scans for losses to harvest.
    #[serde(default = "review")]
    pub clock: ClockKind,
    #[serde(default)]
    pub tax: TaxProfile,
    /// Gains and losses already realized this tax year (they count against the budget).
    #[serde(default)]
    pub realized_this_year: RealizedThisYear,
    /// Every security the snapshot names, with its sector and substitutes.
    pub securities: Vec<SecurityUpserted>,
    /// Last confirmed price of each security.
    pub prices: BTreeMap<SecurityId, Decimal>,
    /// ESG scores (0–100) where the household screens on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub esg_scores: BTreeMap<SecurityId, Decimal>,
    /// Models the accounts' sleeves follow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelPublished>,
    pub accounts: Vec<SnapshotAccount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restrictions: Vec<SnapshotRestriction>,
    /// Trades of the last 30 days: loss sales and purchases open wash-sale windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_trades: Vec<RecentTrade>,
    /// Engine settings (price validation, direct-index subset sizes); default the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<EngineSettings>,
    /// A transition to plan (`overlay transition plan`): its first period
    /// starts on the trade date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionPlan>,
}

fn review() -> ClockKind {
    ClockKind::Review
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealizedThisYear {
    pub short_term_usd: Decimal,
    pub long_term_usd: Decimal,
    /// Losses disallowed by wash sales this year (positive).
    pub disallowed_usd: Decimal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotAccount {
    pub account: AccountId,
    #[serde(default)]
    pub kind: AccountKind,
    /// Models the account follows (percents sum to 1)…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sleeves: Vec<Sleeve>,
    /// …or its target weights directly (not both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<ModelWeight>,
    #[serde(default)]
    pub settings: AccountSettings,
    #[serde(default)]
    pub cash: Decimal,
    /// A withdrawal requested and not yet paid.
    #[serde(default)]
    pub withdrawal_due: Decimal,
    #[serde(default)]
    pub lots: Vec<SnapshotLot>,
    /// Orders sent and not yet (fully) executed: they count in projected positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<SnapshotOrder>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLot {
    /// Default: numbered 1, 2, … in the order given (after the highest id given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot_id: Option<u64>,
    pub security: SecurityId,
    pub quantity: Decimal,
    /// Adjusted basis per share.
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
    /// Start of the holding period when a wash sale carried one over (default `acquired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_start: Option<NaiveDate>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotOrder {
    pub order_id: OrderId,
    pub security: SecurityId,
    pub side: Side,
    /// Shares not yet executed.
    pub quantity: Decimal,
    pub ref_price: Decimal,
    #[serde(default = "drift")]
    pub reason: OrderReason,
    /// For a sell: the lots it relieves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotRelief>,
}

fn drift() -> OrderReason {
    OrderReason::Drift
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRestriction {
    pub restriction_id: RestrictionId,
    pub rule: RestrictionRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    pub effective: DateTime<Utc>,
    /// The restriction's version, as the audit names it (default 1).
    #[serde(default = "first_version")]
    pub version: u32,
}

fn first_version() -> u32 {
    1
}

/// A trade of the last 30 days. A sell below its basis in a taxable account
/// is a loss sale (a purchase of the same security, or one substantially
/// identical, within 30 days after would be a wash sale); a buy in any
/// account blocks loss sales of the same security for 30 days.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentTrade {
    pub account: AccountId,
    pub security: SecurityId,
    pub side: Side,
    pub trade_date: NaiveDate,
    pub quantity: Decimal,
    pub price: Decimal,
    /// A sell: adjusted basis per share of the shares sold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_share: Option<Decimal>,
    /// A sell: when the sold shares' holding period began (default the trade
    /// date); a replacement bought within the window carries it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_start: Option<NaiveDate>,
    /// A buy: the lot holding the shares (default: the account's latest lot
    /// of the security acquired on the trade date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot_id: Option<u64>,
    /// Shares already matched in a wash sale (a sale's replaced shares, a
    /// buy's shares already used as a replacement). Default 0.
    #[serde(default)]
    pub matched: Decimal,
}

/// What the engine would do: orders (not numbered, never sent) and one
/// decision record per account with its rules, inputs and skipped trades.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub household: HouseholdId,
    pub trade_date: NaiveDate,
    pub orders: Vec<Order>,
    pub decisions: Vec<AuditBody>,
}

fn invalid(at: impl std::fmt::Display, message: impl std::fmt::Display) -> InputError {
    InputError::invalid(format!("{at}: {message}"))
}

fn unknown(at: impl std::fmt::Display, message: impl std::fmt::Display) -> InputError {
    InputError::new(InputErrorKind::UnknownReference, format!("{at}: {message}"))
}

fn positive(at: impl std::fmt::Display, field: &str, v: Decimal) -> Result<(), InputError> {
    check_positive(field, v).map_err(|e| invalid(at, e.message))
}

fn non_negative(at: impl std::fmt::Display, field: &str, v: Decimal) -> Result<(), InputError> {
    check_non_negative(field, v).map_err(|e| invalid(at, e.message))
}

/// The model a list of direct targets becomes.
pub fn targets_model(account: &AccountId) -> ModelId {
    ModelId::new(format!("targets:{account}"))
}

impl HouseholdSnapshot {
    /// Decodes a snapshot from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, InputError> {
        serde_json::from_slice(bytes)
            .map_err(|e| InputError::new(InputErrorKind::Malformed, format!("not a valid household snapshot: {e}")))
    }

    pub fn trade_date(&self) -> NaiveDate {
        self.trade_date.unwrap_or_else(|| self.as_of.date_naive())
    }

    /// The proposal: the snapshot as engine state, decided on as a clock event
    /// of its kind at `as_of` would be.
    pub fn propose(&self) -> Result<Proposal, InputError> {
        let state = self.to_state()?;
        let clock = Envelope {
            event_id: PROPOSAL_EVENT_ID.into(),
            producer: "propose".into(),
            event_time: self.as_of,
            schema_version: SCHEMA_VERSION_CURRENT,
            payload: Payload::Clock(Clock { kind: self.clock, trade_date: self.trade_date() }),
        };
        clock.validate()?;
        let mut d = decide(&state, Input::Event(&clock));
        if let Some(err) = d.rejection.take() {
            return Err(err);
        }
        Ok(self.proposal(d))
    }

    /// A decision on this snapshot's household as a proposal: its orders and
    /// its per-account decision records.
    pub fn proposal(&self, d: Decision) -> Proposal {
        Proposal {
            household: self.household.clone(),
            trade_date: self.trade_date(),
            orders: d.orders,
            decisions: d
                .audit
                .into_iter()
                .map(|a| a.body)
                .filter(|b| matches!(b, AuditBody::Decision { .. }))
                .collect(),
        }
    }

    /// The engine state this snapshot describes, checked as strictly as the
    /// events that would have built it.
    pub fn to_state(&self) -> Result<State, InputError> {
        let on = self.trade_date();
        let mut state = State::default();
        if let Some(s) = &self.settings {
            state.meta.settings = s.clone();
        }
        for s in &self.securities {
            Payload::SecurityUpserted(s.clone()).validate().map_err(|e| invalid(&s.security, e.message))?;
            if state.securities.insert(s.security.clone(), s.clone()).is_some() {
                return Err(invalid(&s.security, "listed twice in securities"));
            }
        }
        let known = |at: &dyn std::fmt::Display, sec: &SecurityId| -> Result<(), InputError> {
            match state.securities.contains_key(sec) {
                true => Ok(()),
                false => Err(unknown(at, format!("security {sec} is not listed in securities"))),
            }
        };
        for (sec, price) in &self.prices {
            known(&"prices", sec)?;
            positive(format!("prices.{sec}"), "price", *price)?;
        }
        for (sec, score) in &self.esg_scores {
            known(&"esg_scores", sec)?;
            if *score < Decimal::ZERO || *score > Decimal::ONE_HUNDRED {
                return Err(invalid(format!("esg_scores.{sec}"), format!("must be between 0 and 100, got {score}")));
            }
        }
        let mut models = BTreeMap::new();
        for m in &self.models {
            Payload::ModelPublished(m.clone())
                .validate()
                .map_err(|e| invalid(format!("model {}", m.model), e.message))?;
            for w in &m.weights {
                known(&format_args!("model {}", m.model), &w.security)?;
            }
            let model = Model { version: m.version, kind: m.kind, weights: weights(&m.weights) };
            if models.insert(m.model.clone(), model).is_some() {
                return Err(invalid(format!("model {}", m.model), "listed twice"));
            }
        }
        let household = self.household_event();
        household.validate().map_err(|e| invalid(format!("household {}", self.household), e.message))?;
        let mut accounts = BTreeMap::new();
        for a in &self.accounts {
            let at = format!("account {}", a.account);
            let sleeves = match (a.sleeves.is_empty(), a.targets.is_empty()) {
                (false, false) => return Err(invalid(&at, "give sleeves or targets, not both")),
                (true, false) => {
                    let model = targets_model(&a.account);
                    let published = ModelPublished {
                        model: model.clone(),
                        version: 1,
                        kind: ModelKind::Standard,
                        weights: a.targets.clone(),
                    };
                    Payload::ModelPublished(published)
                        .validate()
                        .map_err(|e| invalid(format!("{at} targets"), e.message))?;
                    for w in &a.targets {
                        known(&format_args!("{at} targets"), &w.security)?;
                    }
                    let m = Model { version: 1, kind: ModelKind::Standard, weights: weights(&a.targets) };
                    if models.insert(model.clone(), m).is_some() {
                        return Err(invalid(&at, format!("a model is named {model}, the name its targets take")));
                    }
                    vec![Sleeve { model, percent: Decimal::ONE }]
                }
                _ => {
                    for s in &a.sleeves {
                        if !models.contains_key(&s.model) {
                            return Err(unknown(
                                &at,
                                format!("sleeve follows model {}, which models does not list", s.model),
                            ));
                        }
                    }
                    a.sleeves.clone()
                }
            };
            non_negative(&at, "cash", a.cash)?;
            non_negative(&at, "withdrawal_due", a.withdrawal_due)?;
            let (lots, next_lot_id) = lots_of(a, &known)?;
            let mut pending = BTreeMap::new();
            for p in &a.pending {
                let at = format!("{at} order {}", p.order_id);
                known(&at, &p.security)?;
                positive(&at, "quantity", p.quantity)?;
                positive(&at, "ref_price", p.ref_price)?;
                let order = PendingOrder {
                    security: p.security.clone(),
                    side: p.side,
                    open_quantity: p.quantity,
                    ref_price: p.ref_price,
                    reason: p.reason,
                    lots: p.lots.clone(),
                };
                if pending.insert(p.order_id.clone(), order).is_some() {
                    return Err(invalid(&at, "listed twice"));
                }
            }
            let account = Account {
                id: a.account.clone(),
                kind: a.kind,
                sleeves,
                settings: a.settings.clone(),
                cash: a.cash,
                withdrawal_due: a.withdrawal_due,
                income_reserved: Decimal::ZERO,
                lots,
                pending,
                next_lot_id,
            };
            accounts.insert(a.account.clone(), account);
        }
        let mut restrictions = BTreeMap::new();
        for r in &self.restrictions {
            if r.version == 0 {
                return Err(invalid(format!("restriction {}", r.restriction_id), "version must be at least 1"));
            }
            for sec in rule_securities(&r.rule) {
                known(&format_args!("restriction {}", r.restriction_id), sec)?;
            }
            let restriction = Restriction {
                rule: r.rule.clone(),
                account: r.account.clone(),
                effective: r.effective,
                version: r.version,
            };
            restrictions.insert(r.restriction_id.clone(), restriction);
        }
        state.models = models;
        for (sec, price) in &self.prices {
            let p = PriceState { price: *price, as_of: self.as_of, held: None, version: 0 };
            state.prices.insert(sec.clone(), p);
        }
        for (sec, score) in &self.esg_scores {
            let s = EsgScore { provider: "snapshot".into(), score: *score, as_of: self.as_of };
            state.esg.insert(sec.clone(), s);
        }
        let mut hh = Household {
            id: self.household.clone(),
            tax: self.tax.clone(),
            accounts,
            restrictions,
            realized: BTreeMap::new(),
            wash: WashLedger::default(),
            objective: None,
            income: BTreeMap::new(),
            transition: None,
        };
        if let Some(plan) = &self.transition {
            crate::event::validate_transition(plan).map_err(|e| invalid("transition", e.message))?;
            if let Some(s) = plan.keep.iter().find(|s| !state.securities.contains_key(*s)) {
                return Err(unknown("transition.keep", format!("security {s} is not listed in securities")));
            }
            hh.transition = Some(crate::state::Transition {
                plan: plan.clone(),
                started: on,
                periods_done: 0,
                used_usd: Decimal::ZERO,
                used_by_year: BTreeMap::new(),
                completed: None,
                version: 1,
            });
        }
        let r = &self.realized_this_year;
        hh.realized.insert(
            on.year(),
            RealizedYear {
                short_term_usd: r.short_term_usd,
                long_term_usd: r.long_term_usd,
                disallowed_usd: r.disallowed_usd,
            },
        );
        hh.wash = self.wash_ledger(&state, &hh, on)?;
        state.households.insert(self.household.clone(), hh);
        rebuild_indexes(&mut state);
        Ok(state)
    }

    /// The household as a `household_upserted` event, for its checks (tax
    /// profile, accounts, sleeves, settings, restrictions).
    fn household_event(&self) -> Payload {
        Payload::HouseholdUpserted(crate::event::HouseholdUpserted {
            household: self.household.clone(),
            tax: self.tax.clone(),
            accounts: self
                .accounts
                .iter()
                .map(|a| crate::event::AccountSpec {
                    account: a.account.clone(),
                    kind: a.kind,
                    sleeves: a.sleeves.clone(),
                    settings: a.settings.clone(),
                    opening_cash: a.cash,
                    opening_lots: Vec::new(),
                })
                .collect(),
            restrictions: self
                .restrictions
                .iter()
                .map(|r| crate::event::RestrictionSpec {
                    restriction_id: r.restriction_id.clone(),
                    rule: r.rule.clone(),
                    account: r.account.clone(),
                    effective: r.effective,
                })
                .collect(),
        })
    }

    /// The wash-sale ledger the recent trades leave open on `on`.
    fn wash_ledger(&self, state: &State, hh: &Household, on: NaiveDate) -> Result<WashLedger, InputError> {
        let mut ledger = WashLedger::default();
        for (i, t) in self.recent_trades.iter().enumerate() {
            let at = format!("recent_trades[{i}]");
            let Some(account) = hh.accounts.get(&t.account) else {
                return Err(unknown(&at, format!("account {} is not in the snapshot", t.account)));
            };
            if !state.securities.contains_key(&t.security) {
                return Err(unknown(&at, format!("security {} is not listed in securities", t.security)));
            }
            positive(&at, "quantity", t.quantity)?;
            positive(&at, "price", t.price)?;
            if t.matched < Decimal::ZERO || t.matched > t.quantity {
                return Err(invalid(&at, format!("matched must be between 0 and the quantity, got {}", t.matched)));
            }
            if t.trade_date > on {
                return Err(invalid(
                    &at,
                    format!("trade date {} is after the proposal's trade date {on}", t.trade_date),
                ));
            }
            let open = t.quantity - t.matched;
            let key = wash_key(state, &t.security).into_owned();
            match t.side {
                Side::Sell => {
                    if t.lot_id.is_some() {
                        return Err(invalid(&at, "lot_id names the lot a buy created; a sell has none"));
                    }
                    let Some(cost) = t.cost_per_share else {
                        return Err(invalid(&at, "a sell needs cost_per_share (its basis) to tell a loss"));
                    };
                    non_negative(&at, "cost_per_share", cost)?;
                    let start = t.holding_start.unwrap_or(t.trade_date);
                    if start > t.trade_date {
                        return Err(invalid(&at, "holding_start is after the trade date"));
                    }
                    // Only losses in taxable accounts open a window.
                    if t.price < cost && account.kind.is_taxable() && open > Decimal::ZERO {
                        ledger.loss_sales.push(LossSale {
                            sale_event_id: format!("{PROPOSAL_EVENT_ID}:{at}"),
                            account: t.account.clone(),
                            security: t.security.clone(),
                            key,
                            date: t.trade_date,
                            lot_id: 0,
                            open_shares: open,
                            loss_per_share: cost - t.price,
                            held_days: (t.trade_date - start).num_days(),
                        });
                    }
                }
                Side::Buy => {
                    if t.cost_per_share.is_some() || t.holding_start.is_some() {
                        return Err(invalid(&at, "cost_per_share and holding_start describe a sell, not a buy"));
                    }
                    let lots = account.lots.get(&t.security).map(Vec::as_slice).unwrap_or_default();
                    let lot_id = match t.lot_id {
                        Some(id) if lots.iter().any(|l| l.lot_id == id) => id,
                        Some(id) => return Err(unknown(&at, format!("lot {id} of {} is not held", t.security))),
                        // Shares sold since leave nothing to match, but the buy still blocks loss sales.
                        None => lots.iter().rev().find(|l| l.acquired == t.trade_date).map_or(0, |l| l.lot_id),
                    };
                    if open > Decimal::ZERO {
                        ledger.buys.push(RecentBuy {
                            account: t.account.clone(),
                            security: t.security.clone(),
                            key,
                            date: t.trade_date,
                            lot_id,
                            open_shares: open,
                        });
                    }
                }
            }
        }
        ledger.prune(on);
        Ok(ledger)
    }
}

fn weights(ws: &[ModelWeight]) -> BTreeMap<SecurityId, Decimal> {
    ws.iter().map(|w| (w.security.clone(), w.weight)).collect()
}

type Known<'a> = dyn Fn(&dyn std::fmt::Display, &SecurityId) -> Result<(), InputError> + 'a;

/// An account's lots by security in acquisition order, and the next free lot id.
fn lots_of(a: &SnapshotAccount, known: &Known<'_>) -> Result<(BTreeMap<SecurityId, Vec<Lot>>, u64), InputError> {
    let mut next = a.lots.iter().filter_map(|l| l.lot_id).max().unwrap_or(0) + 1;
    let mut ids = BTreeSet::new();
    let mut lots: BTreeMap<SecurityId, Vec<Lot>> = BTreeMap::new();
    for l in &a.lots {
        let at = format!("account {} lot of {}", a.account, l.security);
        known(&at, &l.security)?;
        positive(&at, "quantity", l.quantity)?;
        non_negative(&at, "cost_per_share", l.cost_per_share)?;
        let lot_id = l.lot_id.unwrap_or_else(|| {
            next += 1;
            next - 1
        });
        if !ids.insert(lot_id) {
            return Err(invalid(&at, format!("lot id {lot_id} is used twice")));
        }
        let holding_start = l.holding_start.unwrap_or(l.acquired);
        if holding_start > l.acquired {
            return Err(invalid(&at, "holding_start is after acquired"));
        }
        lots.entry(l.security.clone()).or_default().push(Lot {
            lot_id,
            quantity: l.quantity,
            cost_per_share: l.cost_per_share,
            acquired: l.acquired,
            holding_start,
        });
    }
    for v in lots.values_mut() {
        v.sort_by_key(|l| (l.acquired, l.lot_id));
    }
    Ok((lots, next))
}
