//! Protobuf wire format (`overlay.v1`) and its conversions to the domain types
//! of `overlay_core`.
//!
//! The schemas live in `proto/overlay/v1/*.proto`; [`pb`] holds the prost code
//! generated from them. Conventions on the wire: decimals are exact decimal
//! text (`"1.50"` stays `"1.50"`), dates are `YYYY-MM-DD`, instants are `int64`
//! Unix microseconds UTC (finer precision is truncated on encode), enums start
//! with an `UNSPECIFIED` zero that a decoder refuses.
//!
//! Decoding never panics: every failure to turn bytes into an [`Envelope`] is
//! an [`InputError`] of kind [`InputErrorKind::Malformed`] naming the field,
//! and a decoded envelope then passes [`Envelope::validate`], exactly like the
//! JSON path ([`overlay_core::event::decode_json`]).

use chrono::{DateTime, NaiveDate, Utc};
use overlay_core::event::{
    AccountKind, AccountSettings, AccountSpec, CashFlow, CashFlowKind, Clock, ClockKind, CorporateAction,
    CorporateActionKind, EditOp, Envelope, EsgMode, EsgScoreChanged, Fill, FillStatus, Frequency, HarvestSettings,
    HouseholdUpserted, InputError, InputErrorKind, LotPick, LotPolicy, ModelKind, ModelPublished, ModelWeight,
    OpeningLot, Payload, PriceTick, RestrictionEdited, RestrictionRule, RestrictionSpec, SecurityUpserted, Side,
    Sleeve, TaxObjective, TaxObjectiveSet, TaxProfile, TransitionPlan, TransitionSet, WithdrawalScheduled,
};
use overlay_core::ids::{AccountId, HouseholdId, ModelId, OrderId, RestrictionId, SecurityId};
use overlay_core::output::{
    AuditBody, AuditRecord, DeadLetter, DecisionInputs, LotRelief, Order, OrderReason, Skip, SkipReason,
};
use prost::Message;
use rust_decimal::Decimal;

/// The prost types generated from `overlay/v1/*.proto` (package `overlay.v1`).
/// Topic names and record headers: the wire contract shared by the embedded
/// log and Kafka (see docs/kafka.md).
pub mod topics {
    /// Reference data (securities, models, prices, ESG, corporate actions, clock):
    /// one partition, read in full by every engine instance.
    pub const REFERENCE: &str = "overlay.reference";
    /// Household events, keyed (and so partitioned) by household.
    pub const HOUSEHOLDS: &str = "overlay.households";
    /// Trade orders for custodians.
    pub const ORDERS: &str = "overlay.orders";
    pub const AUDIT: &str = "overlay.audit";
    pub const DEAD_LETTERS: &str = "overlay.dead-letters";
    /// The consumer group the engine commits its positions under.
    pub const ENGINE_GROUP: &str = "overlay-engine";
    pub const INPUTS: [&str; 2] = [REFERENCE, HOUSEHOLDS];

    /// Header: the payload's schema version (input events).
    pub const HEADER_SCHEMA_VERSION: &str = "overlay-schema-version";
    /// Header: the payload type (`price_tick`, `fill`, …) or output kind.
    pub const HEADER_EVENT_TYPE: &str = "overlay-event-type";
    /// Header: `application/x-protobuf` (inputs) or `application/json` (outputs).
    pub const HEADER_CONTENT_TYPE: &str = "content-type";
    /// Header on outputs: the record's position in its shard's output stream.
    pub const HEADER_SEQ: &str = "overlay-seq";
}

pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/overlay.v1.rs"));
}

mod wire;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Encodes an input event in the protobuf form.
pub fn encode_envelope(env: &Envelope) -> Vec<u8> {
    pb::Envelope::from(env).encode_to_vec()
}

/// Decodes and validates the protobuf form of one event: the twin of
/// [`overlay_core::event::decode_json`].
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, InputError> {
    match wire::Tick::read(bytes) {
        Some(tick) => tick.envelope(),
        None => decode_general(bytes),
    }
}

/// [`decode_envelope`] written over `out` (what an earlier call decoded):
/// a price tick read over a price tick reuses its text buffers, for a reader
/// that decodes a long run of them.
pub fn decode_envelope_into(bytes: &[u8], out: &mut Result<Envelope, InputError>) {
    match wire::Tick::read(bytes) {
        Some(tick) => tick.envelope_into(out),
        None => *out = decode_general(bytes),
    }
}

/// [`decode_envelope`] through prost's message, for every payload.
fn decode_general(bytes: &[u8]) -> Result<Envelope, InputError> {
    let msg = pb::Envelope::decode(bytes).map_err(|e| malformed(format!("not a valid protobuf Envelope: {e}")))?;
    envelope_from_pb(msg)
}

/// Converts a decoded protobuf envelope to the domain form and validates it.
pub fn envelope_from_pb(msg: pb::Envelope) -> Result<Envelope, InputError> {
    let payload = msg.payload.ok_or_else(|| malformed("payload is missing".to_string()))?;
    let env = Envelope {
        event_id: msg.event_id,
        producer: msg.producer,
        event_time: time("event_time", msg.event_time)?,
        schema_version: msg.schema_version,
        payload: payload_from_pb(payload)?,
    };
    env.validate().map_err(|e| e.concerning(&env))?;
    Ok(env)
}

/// Encodes a trade order in the protobuf form.
pub fn encode_order(order: &Order) -> Vec<u8> {
    pb::Order::from(order).encode_to_vec()
}

/// Encodes an audit record in the protobuf form. Its hash chain stays defined
/// over the canonical JSON form.
pub fn encode_audit_record(record: &AuditRecord) -> Vec<u8> {
    pb::AuditRecord::from(record).encode_to_vec()
}

/// Encodes a dead letter in the protobuf form.
pub fn encode_dead_letter(letter: &DeadLetter) -> Vec<u8> {
    pb::DeadLetter::from(letter).encode_to_vec()
}

// ---------------------------------------------------------------------------
// Field helpers
// ---------------------------------------------------------------------------

pub(crate) fn malformed(message: String) -> InputError {
    InputError::new(InputErrorKind::Malformed, message)
}

/// `-?[0-9]+(\.[0-9]+)?`: the decimal text the schemas allow (no sign `+`,
/// exponent, underscore or bare point, which `Decimal` would otherwise accept).
fn is_decimal_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits)
}

pub(crate) fn dec(field: &str, s: &str) -> Result<Decimal, InputError> {
    if !is_decimal_text(s) {
        return Err(malformed(format!("{field}: {s:?} is not a decimal number")));
    }
    Decimal::from_str_exact(s).map_err(|e| malformed(format!("{field}: {s:?} is not an exact decimal ({e})")))
}

fn dec_or(field: &str, s: Option<String>, default: Decimal) -> Result<Decimal, InputError> {
    s.map_or(Ok(default), |s| dec(field, &s))
}

fn date(field: &str, s: &str) -> Result<NaiveDate, InputError> {
    let shape_ok = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    let parsed = if shape_ok { NaiveDate::parse_from_str(s, "%Y-%m-%d").ok() } else { None };
    parsed.ok_or_else(|| malformed(format!("{field}: {s:?} is not a date (YYYY-MM-DD)")))
}

pub(crate) fn time(field: &str, micros: i64) -> Result<DateTime<Utc>, InputError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| malformed(format!("{field}: {micros} microseconds is out of the supported time range")))
}

fn micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn required<T>(field: &str, v: Option<T>) -> Result<T, InputError> {
    v.ok_or_else(|| malformed(format!("{field} is missing")))
}

/// A domain enum read from its protobuf `i32`; `UNSPECIFIED` and unknown
/// values are malformed.
trait FromPbEnum: Sized {
    fn from_pb(field: &str, raw: i32) -> Result<Self, InputError>;

    fn from_pb_or(field: &str, raw: Option<i32>, default: Self) -> Result<Self, InputError> {
        raw.map_or(Ok(default), |r| Self::from_pb(field, r))
    }
}

/// Maps a domain enum to the prost enum of the same name, both ways. Variant
/// names match because prost strips the `KIND_` prefixes.
macro_rules! enum_mapping {
    ($($name:ident { $($v:ident),+ $(,)? })*) => {$(
        impl From<$name> for pb::$name {
            fn from(v: $name) -> Self {
                match v { $($name::$v => pb::$name::$v,)+ }
            }
        }
        impl FromPbEnum for $name {
            fn from_pb(field: &str, raw: i32) -> Result<Self, InputError> {
                match pb::$name::try_from(raw) {
                    $(Ok(pb::$name::$v) => Ok($name::$v),)+
                    Ok(pb::$name::Unspecified) => Err(malformed(format!("{field} is unspecified"))),
                    Err(_) => Err(malformed(format!("{field}: {raw} is not a known {} value", stringify!($name)))),
                }
            }
        }
    )*};
}

enum_mapping! {
    ModelKind { Standard, DirectIndex }
    AccountKind { Taxable, Ira, Roth }
    LotPolicy { MinTax, Fifo, Hifo }
    EsgMode { Divest, NoNewBuys }
    EditOp { Add, Change, Remove }
    CashFlowKind { Deposit, Withdrawal }
    Side { Buy, Sell }
    FillStatus { Partial, Filled, Rejected, Cancelled }
    ClockKind { MarketClose, Review }
    Frequency { Monthly, Quarterly, Annually }
    OrderReason { ModelChange, Restriction, Esg, Drift, CashFlow, Harvest, Replacement, Setup, GainHarvest, Income, Transition }
    SkipReason {
        InsideBand, BelowMinimum, Restricted, NoPrice, UnconfirmedPrice, InsufficientCash,
        WashSaleBlock, TaxBudget, LegacyHolding, RoundsToZero, PendingOrder, ShortTermDeferral, TaxObjective,
    }
    InputErrorKind { Malformed, UnsupportedSchemaVersion, InvalidValue, UnknownReference, OutOfOrder }
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

// ---------------------------------------------------------------------------
// Domain -> protobuf
// ---------------------------------------------------------------------------

impl From<&Envelope> for pb::Envelope {
    fn from(env: &Envelope) -> Self {
        pb::Envelope {
            event_id: env.event_id.clone(),
            producer: env.producer.clone(),
            event_time: micros(&env.event_time),
            schema_version: env.schema_version,
            payload: Some(pb::envelope::Payload::from(&env.payload)),
        }
    }
}

impl From<&Payload> for pb::envelope::Payload {
    fn from(p: &Payload) -> Self {
        use pb::envelope::Payload as P;
        match p {
            Payload::SecurityUpserted(m) => P::SecurityUpserted(pb::SecurityUpserted {
                security: m.security.to_string(),
                name: m.name.clone(),
                sector: m.sector.clone(),
                sub_industry: m.sub_industry.clone(),
                identical_group: m.identical_group.clone(),
                substitutes: strings(&m.substitutes),
                attributes: m.attributes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
            }),
            Payload::ModelPublished(m) => P::ModelPublished(pb::ModelPublished {
                model: m.model.to_string(),
                version: m.version,
                kind: Some(pb::ModelKind::from(m.kind) as i32),
                weights: m
                    .weights
                    .iter()
                    .map(|w| pb::ModelWeight { security: w.security.to_string(), weight: w.weight.to_string() })
                    .collect(),
            }),
            Payload::PriceTick(m) => P::PriceTick(pb::PriceTick {
                security: m.security.to_string(),
                price: m.price.to_string(),
                as_of: micros(&m.as_of),
            }),
            Payload::EsgScoreChanged(m) => P::EsgScoreChanged(pb::EsgScoreChanged {
                security: m.security.to_string(),
                provider: m.provider.clone(),
                score: m.score.to_string(),
                as_of: micros(&m.as_of),
            }),
            Payload::HouseholdUpserted(m) => P::HouseholdUpserted(pb::HouseholdUpserted {
                household: m.household.to_string(),
                tax: Some(pb::TaxProfile {
                    short_term_rate: Some(m.tax.short_term_rate.to_string()),
                    long_term_rate: Some(m.tax.long_term_rate.to_string()),
                    annual_gain_budget_usd: m.tax.annual_gain_budget_usd.map(|d| d.to_string()),
                    short_term_deferral_days: Some(m.tax.short_term_deferral_days),
                    harvest: Some(pb::HarvestSettings {
                        enabled: Some(m.tax.harvest.enabled),
                        min_loss_pct: Some(m.tax.harvest.min_loss_pct.to_string()),
                        min_loss_usd: Some(m.tax.harvest.min_loss_usd.to_string()),
                        swap_back: Some(m.tax.harvest.swap_back),
                    }),
                }),
                accounts: m.accounts.iter().map(pb::AccountSpec::from).collect(),
                restrictions: m
                    .restrictions
                    .iter()
                    .map(|r| pb::RestrictionSpec {
                        restriction_id: r.restriction_id.to_string(),
                        rule: Some(pb::RestrictionRule::from(&r.rule)),
                        account: r.account.as_ref().map(ToString::to_string),
                        effective: micros(&r.effective),
                    })
                    .collect(),
            }),
            Payload::RestrictionEdited(m) => P::RestrictionEdited(pb::RestrictionEdited {
                household: m.household.to_string(),
                restriction_id: m.restriction_id.to_string(),
                op: pb::EditOp::from(m.op) as i32,
                rule: m.rule.as_ref().map(pb::RestrictionRule::from),
                account: m.account.as_ref().map(ToString::to_string),
                effective: micros(&m.effective),
            }),
            Payload::CashFlow(m) => P::CashFlow(pb::CashFlow {
                household: m.household.to_string(),
                account: m.account.to_string(),
                kind: pb::CashFlowKind::from(m.kind) as i32,
                amount: m.amount.to_string(),
            }),
            Payload::Fill(m) => P::Fill(pb::Fill {
                household: m.household.to_string(),
                account: m.account.to_string(),
                order_id: m.order_id.as_ref().map(ToString::to_string),
                security: m.security.to_string(),
                side: pb::Side::from(m.side) as i32,
                status: pb::FillStatus::from(m.status) as i32,
                quantity: m.quantity.to_string(),
                price: m.price.to_string(),
                trade_date: m.trade_date.to_string(),
                reason: m.reason.clone(),
                lots: m
                    .lots
                    .iter()
                    .map(|l| pb::LotPick { lot_id: l.lot_id, quantity: l.quantity.to_string() })
                    .collect(),
            }),
            Payload::Clock(m) => {
                P::Clock(pb::Clock { kind: pb::ClockKind::from(m.kind) as i32, trade_date: m.trade_date.to_string() })
            }
            Payload::CorporateAction(m) => P::CorporateAction(pb::CorporateAction {
                security: m.security.to_string(),
                ex_date: m.ex_date.to_string(),
                action: Some(match m.kind {
                    CorporateActionKind::Split { numerator, denominator } => {
                        pb::corporate_action::Action::Split(pb::corporate_action::Split { numerator, denominator })
                    }
                }),
            }),
            Payload::TaxObjectiveSet(m) => P::TaxObjectiveSet(pb::TaxObjectiveSet {
                household: m.household.to_string(),
                objective: Some(pb::TaxObjective::from(&m.objective)),
            }),
            Payload::TransitionSet(m) => P::TransitionSet(pb::TransitionSet {
                household: m.household.to_string(),
                plan: Some(pb::TransitionPlan {
                    period: pb::Frequency::from(m.plan.period) as i32,
                    periods: m.plan.periods,
                    budget_usd: m.plan.budget_usd.map(|d| d.to_string()),
                    yearly_budget_usd: m.plan.yearly_budget_usd.map(|d| d.to_string()),
                    keep: strings(&m.plan.keep),
                    complete_below: Some(m.plan.complete_below.to_string()),
                }),
            }),
            Payload::WithdrawalScheduled(m) => P::WithdrawalScheduled(pb::WithdrawalScheduled {
                household: m.household.to_string(),
                account: m.account.to_string(),
                schedule_id: m.schedule_id.clone(),
                amount: m.amount.to_string(),
                frequency: pb::Frequency::from(m.frequency) as i32,
                first_payment: m.first_payment.to_string(),
                lead_days: Some(m.lead_days),
                until: m.until.map(|d| d.to_string()),
                yield_tilt: m.yield_tilt.map(|d| d.to_string()),
            }),
        }
    }
}

impl From<&TaxObjective> for pb::TaxObjective {
    fn from(o: &TaxObjective) -> Self {
        use pb::tax_objective::{self as t, Kind};
        let kind = match o {
            TaxObjective::HarvestLosses => Kind::HarvestLosses(t::HarvestLosses {}),
            TaxObjective::RealizeGains { target_usd } => {
                Kind::RealizeGains(t::RealizeGains { target_usd: target_usd.to_string() })
            }
            TaxObjective::TaxNeutral { tolerance_usd } => {
                Kind::TaxNeutral(t::TaxNeutral { tolerance_usd: tolerance_usd.to_string() })
            }
        };
        pb::TaxObjective { kind: Some(kind) }
    }
}

fn objective_from_pb(o: pb::TaxObjective) -> Result<TaxObjective, InputError> {
    use pb::tax_objective::Kind;
    Ok(match required("tax_objective_set.objective.kind", o.kind)? {
        Kind::HarvestLosses(_) => TaxObjective::HarvestLosses,
        Kind::RealizeGains(k) => TaxObjective::RealizeGains {
            target_usd: dec("tax_objective_set.objective.realize_gains.target_usd", &k.target_usd)?,
        },
        Kind::TaxNeutral(k) => TaxObjective::TaxNeutral {
            tolerance_usd: dec("tax_objective_set.objective.tax_neutral.tolerance_usd", &k.tolerance_usd)?,
        },
    })
}

impl From<&AccountSpec> for pb::AccountSpec {
    fn from(a: &AccountSpec) -> Self {
        let s = &a.settings;
        pb::AccountSpec {
            account: a.account.to_string(),
            kind: Some(pb::AccountKind::from(a.kind) as i32),
            sleeves: a
                .sleeves
                .iter()
                .map(|s| pb::Sleeve { model: s.model.to_string(), percent: s.percent.to_string() })
                .collect(),
            settings: Some(pb::AccountSettings {
                fractional: Some(s.fractional),
                min_trade_usd: Some(s.min_trade_usd.to_string()),
                cash_reserve_pct: Some(s.cash_reserve_pct.to_string()),
                drift_band_abs: Some(s.drift_band_abs.to_string()),
                drift_band_rel: Some(s.drift_band_rel.to_string()),
                lot_policy: Some(pb::LotPolicy::from(s.lot_policy) as i32),
            }),
            opening_cash: Some(a.opening_cash.to_string()),
            opening_lots: a
                .opening_lots
                .iter()
                .map(|l| pb::OpeningLot {
                    security: l.security.to_string(),
                    quantity: l.quantity.to_string(),
                    cost_per_share: l.cost_per_share.to_string(),
                    acquired: l.acquired.to_string(),
                })
                .collect(),
        }
    }
}

impl From<&RestrictionRule> for pb::RestrictionRule {
    fn from(r: &RestrictionRule) -> Self {
        use pb::restriction_rule as r_pb;
        use r_pb::Kind as K;
        let kind = match r {
            RestrictionRule::DoNotBuy { security } => K::DoNotBuy(r_pb::DoNotBuy { security: security.to_string() }),
            RestrictionRule::DoNotHold { security } => K::DoNotHold(r_pb::DoNotHold { security: security.to_string() }),
            RestrictionRule::SectorExclusion { sector } => {
                K::SectorExclusion(r_pb::SectorExclusion { sector: sector.clone() })
            }
            RestrictionRule::EsgMinimum { min_score, mode } => K::EsgMinimum(r_pb::EsgMinimum {
                min_score: min_score.to_string(),
                mode: pb::EsgMode::from(*mode) as i32,
            }),
            RestrictionRule::KeepLegacy { security } => {
                K::KeepLegacy(r_pb::KeepLegacy { security: security.to_string() })
            }
            RestrictionRule::MaxWeight { security, max_weight } => {
                K::MaxWeight(r_pb::MaxWeight { security: security.to_string(), max_weight: max_weight.to_string() })
            }
            RestrictionRule::Substitute { security, substitute } => {
                K::Substitute(r_pb::Substitute { security: security.to_string(), substitute: substitute.to_string() })
            }
            RestrictionRule::Tilt { sector, sub_industry, delta } => K::Tilt(r_pb::Tilt {
                sector: sector.clone(),
                sub_industry: sub_industry.clone(),
                delta: delta.to_string(),
            }),
            RestrictionRule::AttributeTilt { attribute, delta } => {
                K::AttributeTilt(r_pb::AttributeTilt { attribute: attribute.clone(), delta: delta.to_string() })
            }
            RestrictionRule::AttributeFilter { attribute, min, max, max_weight } => {
                K::AttributeFilter(r_pb::AttributeFilter {
                    attribute: attribute.clone(),
                    min: min.map(|d| d.to_string()),
                    max: max.map(|d| d.to_string()),
                    max_weight: max_weight.map(|d| d.to_string()),
                })
            }
        };
        pb::RestrictionRule { kind: Some(kind) }
    }
}

impl From<&Order> for pb::Order {
    fn from(o: &Order) -> Self {
        pb::Order {
            order_id: o.order_id.to_string(),
            seq: o.seq,
            household: o.household.to_string(),
            account: o.account.to_string(),
            security: o.security.to_string(),
            side: pb::Side::from(o.side) as i32,
            quantity: o.quantity.to_string(),
            ref_price: o.ref_price.to_string(),
            reason: pb::OrderReason::from(o.reason) as i32,
            lots: o.lots.iter().map(pb::LotRelief::from).collect(),
            cause_event_id: o.cause_event_id.clone(),
            decided_at: micros(&o.decided_at),
        }
    }
}

impl From<&LotRelief> for pb::LotRelief {
    fn from(l: &LotRelief) -> Self {
        pb::LotRelief {
            lot_id: l.lot_id,
            quantity: l.quantity.to_string(),
            cost_per_share: l.cost_per_share.to_string(),
            est_gain_usd: l.est_gain_usd.to_string(),
            long_term: l.long_term,
        }
    }
}

impl From<&AuditRecord> for pb::AuditRecord {
    fn from(r: &AuditRecord) -> Self {
        use pb::audit_record::{self as a, Body};
        let body = match &r.body {
            AuditBody::Applied { event_type, summary } => {
                Body::Applied(a::Applied { event_type: event_type.to_string(), summary: summary.clone() })
            }
            AuditBody::Rejected { event_type, error, reason } => Body::Rejected(a::Rejected {
                event_type: event_type.as_ref().map(ToString::to_string),
                error: pb::InputErrorKind::from(*error) as i32,
                reason: reason.clone(),
            }),
            AuditBody::Duplicate { event_type, first_seq } => {
                Body::Duplicate(a::Duplicate { event_type: event_type.to_string(), first_seq: *first_seq })
            }
            AuditBody::Decision { account, rules, inputs, orders, skipped } => Body::Decision(a::Decision {
                account: account.to_string(),
                rules: rules.clone(),
                inputs: Some(pb::DecisionInputs::from(inputs)),
                orders: strings(orders),
                skipped: skipped.iter().map(pb::Skip::from).collect(),
            }),
            AuditBody::Tax {
                account,
                security,
                trade_date,
                quantity,
                price,
                lots,
                short_term_usd,
                long_term_usd,
                realized_usd,
                reportable,
                detail,
            } => Body::Tax(a::Tax {
                account: account.to_string(),
                detail: detail.clone(),
                realized_usd: realized_usd.to_string(),
                security: security.to_string(),
                trade_date: trade_date.to_string(),
                quantity: quantity.to_string(),
                price: price.to_string(),
                lots: lots
                    .iter()
                    .map(|l| pb::RealizedLot {
                        lot_id: l.lot_id,
                        quantity: l.quantity.to_string(),
                        cost_per_share: l.cost_per_share.to_string(),
                        acquired: l.acquired.to_string(),
                        holding_start: l.holding_start.to_string(),
                        gain_usd: l.gain_usd.to_string(),
                        long_term: l.long_term,
                    })
                    .collect(),
                short_term_usd: short_term_usd.to_string(),
                long_term_usd: long_term_usd.to_string(),
                reportable: *reportable,
            }),
            AuditBody::WashSale {
                sale_event_id,
                sale_account,
                security,
                sale_date,
                sold_lot_id,
                replacement_account,
                replacement_security,
                replacement_lot_id,
                replacement_date,
                shares,
                disallowed_usd,
                basis_added,
                holding_start,
                detail,
            } => Body::WashSale(a::WashSale {
                sale_event_id: sale_event_id.clone(),
                sale_account: sale_account.to_string(),
                security: security.to_string(),
                sale_date: sale_date.to_string(),
                sold_lot_id: *sold_lot_id,
                replacement_account: replacement_account.to_string(),
                replacement_security: replacement_security.to_string(),
                replacement_lot_id: *replacement_lot_id,
                replacement_date: replacement_date.to_string(),
                shares: shares.to_string(),
                disallowed_usd: disallowed_usd.to_string(),
                basis_added: *basis_added,
                holding_start: holding_start.to_string(),
                detail: detail.clone(),
            }),
            AuditBody::IncomeRaised { account, payments, shortfall_usd, sources, est_tax_usd, detail } => {
                Body::IncomeRaised(a::IncomeRaised {
                    account: account.to_string(),
                    payments: payments
                        .iter()
                        .map(|p| a::ScheduledPayment {
                            schedule_id: p.schedule_id.clone(),
                            payment_date: p.payment_date.to_string(),
                            amount_usd: p.amount_usd.to_string(),
                        })
                        .collect(),
                    shortfall_usd: shortfall_usd.to_string(),
                    sources: sources
                        .iter()
                        .map(|s| a::IncomeSource {
                            order_id: s.order_id.to_string(),
                            security: s.security.to_string(),
                            quantity: s.quantity.to_string(),
                            ref_price: s.ref_price.to_string(),
                            lots: s.lots.iter().map(pb::LotRelief::from).collect(),
                            est_tax_usd: s.est_tax_usd.to_string(),
                        })
                        .collect(),
                    est_tax_usd: est_tax_usd.to_string(),
                    detail: detail.clone(),
                })
            }
            AuditBody::TransitionPeriod {
                account,
                period,
                periods,
                period_start,
                drift,
                allowance_usd,
                budget_usd,
                yearly_budget_usd,
                used_usd,
                planned_gain_usd,
                kept,
                detail,
            } => Body::TransitionPeriod(a::TransitionPeriod {
                account: account.to_string(),
                period: *period,
                periods: *periods,
                period_start: period_start.to_string(),
                drift: drift.to_string(),
                allowance_usd: allowance_usd.to_string(),
                budget_usd: budget_usd.map(|d| d.to_string()),
                yearly_budget_usd: yearly_budget_usd.map(|d| d.to_string()),
                used_usd: used_usd.to_string(),
                planned_gain_usd: planned_gain_usd.to_string(),
                kept: strings(kept),
                detail: detail.clone(),
            }),
            AuditBody::IncomePaid { account, schedule_id, payment_date, amount_usd, paid_usd, detail } => {
                Body::IncomePaid(a::IncomePaid {
                    account: account.to_string(),
                    schedule_id: schedule_id.clone(),
                    payment_date: payment_date.to_string(),
                    amount_usd: amount_usd.to_string(),
                    paid_usd: paid_usd.to_string(),
                    detail: detail.clone(),
                })
            }
        };
        pb::AuditRecord {
            seq: r.seq,
            stream: r.stream.to_string(),
            stream_seq: r.stream_seq,
            event_id: r.event_id.clone(),
            at: r.at.as_ref().map(micros),
            household: r.household.as_ref().map(ToString::to_string),
            body: Some(body),
            prev_hash: r.prev_hash.clone(),
            hash: r.hash.clone(),
        }
    }
}

impl From<&DecisionInputs> for pb::DecisionInputs {
    fn from(d: &DecisionInputs) -> Self {
        pb::DecisionInputs {
            state_version: d.state_version,
            account_value_usd: d.account_value_usd.to_string(),
            cash_usd: d.cash_usd.to_string(),
            models: d.models.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            restrictions: d.restrictions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            prices: d.prices.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }
}

impl From<&Skip> for pb::Skip {
    fn from(s: &Skip) -> Self {
        pb::Skip {
            security: s.security.to_string(),
            side: pb::Side::from(s.side) as i32,
            reason: pb::SkipReason::from(s.reason) as i32,
            detail: s.detail.clone(),
        }
    }
}

impl From<&DeadLetter> for pb::DeadLetter {
    fn from(d: &DeadLetter) -> Self {
        pb::DeadLetter {
            seq: d.seq,
            event_id: d.event_id.clone(),
            error: pb::InputErrorKind::from(d.error) as i32,
            reason: d.reason.clone(),
            source: d.source.clone(),
            raw_hex: d.raw_hex.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Protobuf -> domain (no validation here; `Envelope::validate` follows)
// ---------------------------------------------------------------------------

fn payload_from_pb(p: pb::envelope::Payload) -> Result<Payload, InputError> {
    use pb::envelope::Payload as P;
    Ok(match p {
        P::SecurityUpserted(m) => Payload::SecurityUpserted(SecurityUpserted {
            security: SecurityId::new(m.security),
            name: m.name,
            sector: m.sector,
            sub_industry: m.sub_industry,
            identical_group: m.identical_group,
            substitutes: m.substitutes.into_iter().map(SecurityId::new).collect(),
            attributes: m
                .attributes
                .into_iter()
                .map(|(k, v)| Ok((k.clone(), dec(&format!("security_upserted.attributes.{k}"), &v)?)))
                .collect::<Result<_, InputError>>()?,
        }),
        P::ModelPublished(m) => Payload::ModelPublished(ModelPublished {
            model: ModelId(m.model),
            version: m.version,
            kind: ModelKind::from_pb_or("model_published.kind", m.kind, ModelKind::default())?,
            weights: m
                .weights
                .into_iter()
                .enumerate()
                .map(|(i, w)| {
                    Ok(ModelWeight {
                        weight: dec(&format!("model_published.weights[{i}].weight"), &w.weight)?,
                        security: SecurityId::new(w.security),
                    })
                })
                .collect::<Result<_, InputError>>()?,
        }),
        P::PriceTick(m) => Payload::PriceTick(PriceTick {
            security: SecurityId::new(m.security),
            price: dec("price_tick.price", &m.price)?,
            as_of: time("price_tick.as_of", m.as_of)?,
        }),
        P::EsgScoreChanged(m) => Payload::EsgScoreChanged(EsgScoreChanged {
            security: SecurityId::new(m.security),
            provider: m.provider,
            score: dec("esg_score_changed.score", &m.score)?,
            as_of: time("esg_score_changed.as_of", m.as_of)?,
        }),
        P::HouseholdUpserted(m) => Payload::HouseholdUpserted(household_from_pb(m)?),
        P::RestrictionEdited(m) => Payload::RestrictionEdited(RestrictionEdited {
            household: HouseholdId(m.household),
            restriction_id: RestrictionId(m.restriction_id),
            op: EditOp::from_pb("restriction_edited.op", m.op)?,
            rule: m.rule.map(rule_from_pb).transpose()?,
            account: m.account.map(AccountId),
            effective: time("restriction_edited.effective", m.effective)?,
        }),
        P::CashFlow(m) => Payload::CashFlow(CashFlow {
            household: HouseholdId(m.household),
            account: AccountId(m.account),
            kind: CashFlowKind::from_pb("cash_flow.kind", m.kind)?,
            amount: dec("cash_flow.amount", &m.amount)?,
        }),
        P::Fill(m) => Payload::Fill(Fill {
            household: HouseholdId(m.household),
            account: AccountId(m.account),
            order_id: m.order_id.map(OrderId),
            security: SecurityId::new(m.security),
            side: Side::from_pb("fill.side", m.side)?,
            status: FillStatus::from_pb("fill.status", m.status)?,
            quantity: dec("fill.quantity", &m.quantity)?,
            price: dec("fill.price", &m.price)?,
            trade_date: date("fill.trade_date", &m.trade_date)?,
            reason: m.reason,
            lots: m
                .lots
                .into_iter()
                .map(|l| Ok(LotPick { lot_id: l.lot_id, quantity: dec("fill.lots.quantity", &l.quantity)? }))
                .collect::<Result<_, InputError>>()?,
        }),
        P::Clock(m) => Payload::Clock(Clock {
            kind: ClockKind::from_pb("clock.kind", m.kind)?,
            trade_date: date("clock.trade_date", &m.trade_date)?,
        }),
        P::CorporateAction(m) => Payload::CorporateAction(CorporateAction {
            ex_date: date("corporate_action.ex_date", &m.ex_date)?,
            kind: match required("corporate_action.action", m.action)? {
                pb::corporate_action::Action::Split(s) => {
                    CorporateActionKind::Split { numerator: s.numerator, denominator: s.denominator }
                }
            },
            security: SecurityId::new(m.security),
        }),
        P::TransitionSet(m) => {
            let p = required("transition_set.plan", m.plan)?;
            let opt =
                |name: &str, v: Option<String>| v.map(|s| dec(&format!("transition_set.plan.{name}"), &s)).transpose();
            Payload::TransitionSet(TransitionSet {
                household: HouseholdId(m.household),
                plan: TransitionPlan {
                    period: Frequency::from_pb("transition_set.plan.period", p.period)?,
                    periods: p.periods,
                    budget_usd: opt("budget_usd", p.budget_usd)?,
                    yearly_budget_usd: opt("yearly_budget_usd", p.yearly_budget_usd)?,
                    keep: p.keep.into_iter().map(SecurityId::new).collect(),
                    complete_below: opt("complete_below", p.complete_below)?.unwrap_or(Decimal::new(2, 2)),
                },
            })
        }
        P::WithdrawalScheduled(m) => Payload::WithdrawalScheduled(WithdrawalScheduled {
            amount: dec("withdrawal_scheduled.amount", &m.amount)?,
            frequency: Frequency::from_pb("withdrawal_scheduled.frequency", m.frequency)?,
            first_payment: date("withdrawal_scheduled.first_payment", &m.first_payment)?,
            lead_days: m.lead_days.unwrap_or(5),
            until: m.until.map(|s| date("withdrawal_scheduled.until", &s)).transpose()?,
            yield_tilt: m.yield_tilt.map(|s| dec("withdrawal_scheduled.yield_tilt", &s)).transpose()?,
            household: HouseholdId(m.household),
            account: AccountId(m.account),
            schedule_id: m.schedule_id,
        }),
        P::TaxObjectiveSet(m) => Payload::TaxObjectiveSet(TaxObjectiveSet {
            household: HouseholdId(m.household),
            objective: objective_from_pb(required("tax_objective_set.objective", m.objective)?)?,
        }),
    })
}

fn household_from_pb(m: pb::HouseholdUpserted) -> Result<HouseholdUpserted, InputError> {
    let tax = match m.tax {
        None => TaxProfile::default(),
        Some(t) => {
            let d = TaxProfile::default();
            TaxProfile {
                short_term_rate: dec_or(
                    "household_upserted.tax.short_term_rate",
                    t.short_term_rate,
                    d.short_term_rate,
                )?,
                long_term_rate: dec_or("household_upserted.tax.long_term_rate", t.long_term_rate, d.long_term_rate)?,
                annual_gain_budget_usd: t
                    .annual_gain_budget_usd
                    .map(|s| dec("household_upserted.tax.annual_gain_budget_usd", &s))
                    .transpose()?,
                short_term_deferral_days: t.short_term_deferral_days.unwrap_or(d.short_term_deferral_days),
                harvest: match t.harvest {
                    None => d.harvest,
                    Some(h) => HarvestSettings {
                        enabled: h.enabled.unwrap_or(d.harvest.enabled),
                        min_loss_pct: dec_or(
                            "household_upserted.tax.harvest.min_loss_pct",
                            h.min_loss_pct,
                            d.harvest.min_loss_pct,
                        )?,
                        min_loss_usd: dec_or(
                            "household_upserted.tax.harvest.min_loss_usd",
                            h.min_loss_usd,
                            d.harvest.min_loss_usd,
                        )?,
                        swap_back: h.swap_back.unwrap_or(d.harvest.swap_back),
                    },
                },
            }
        }
    };
    let accounts = m
        .accounts
        .into_iter()
        .enumerate()
        .map(|(i, a)| account_from_pb(&format!("household_upserted.accounts[{i}]"), a))
        .collect::<Result<_, _>>()?;
    let restrictions = m
        .restrictions
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("household_upserted.restrictions[{i}]");
            Ok(RestrictionSpec {
                restriction_id: RestrictionId(r.restriction_id),
                rule: rule_from_pb(required(&format!("{path}.rule"), r.rule)?)?,
                account: r.account.map(AccountId),
                effective: time(&format!("{path}.effective"), r.effective)?,
            })
        })
        .collect::<Result<_, InputError>>()?;
    Ok(HouseholdUpserted { household: HouseholdId(m.household), tax, accounts, restrictions })
}

fn account_from_pb(path: &str, a: pb::AccountSpec) -> Result<AccountSpec, InputError> {
    let settings = match a.settings {
        None => AccountSettings::default(),
        Some(s) => {
            let d = AccountSettings::default();
            let f = |name: &str| format!("{path}.settings.{name}");
            AccountSettings {
                fractional: s.fractional.unwrap_or(d.fractional),
                min_trade_usd: dec_or(&f("min_trade_usd"), s.min_trade_usd, d.min_trade_usd)?,
                cash_reserve_pct: dec_or(&f("cash_reserve_pct"), s.cash_reserve_pct, d.cash_reserve_pct)?,
                drift_band_abs: dec_or(&f("drift_band_abs"), s.drift_band_abs, d.drift_band_abs)?,
                drift_band_rel: dec_or(&f("drift_band_rel"), s.drift_band_rel, d.drift_band_rel)?,
                lot_policy: LotPolicy::from_pb_or(&f("lot_policy"), s.lot_policy, d.lot_policy)?,
            }
        }
    };
    let sleeves = a
        .sleeves
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Sleeve { percent: dec(&format!("{path}.sleeves[{i}].percent"), &s.percent)?, model: ModelId(s.model) })
        })
        .collect::<Result<_, InputError>>()?;
    let opening_lots = a
        .opening_lots
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let f = |name: &str| format!("{path}.opening_lots[{i}].{name}");
            Ok(OpeningLot {
                quantity: dec(&f("quantity"), &l.quantity)?,
                cost_per_share: dec(&f("cost_per_share"), &l.cost_per_share)?,
                acquired: date(&f("acquired"), &l.acquired)?,
                security: SecurityId::new(l.security),
            })
        })
        .collect::<Result<_, InputError>>()?;
    Ok(AccountSpec {
        kind: AccountKind::from_pb_or(&format!("{path}.kind"), a.kind, AccountKind::default())?,
        opening_cash: dec_or(&format!("{path}.opening_cash"), a.opening_cash, Decimal::ZERO)?,
        account: AccountId(a.account),
        sleeves,
        settings,
        opening_lots,
    })
}

fn rule_from_pb(r: pb::RestrictionRule) -> Result<RestrictionRule, InputError> {
    use pb::restriction_rule::Kind as K;
    Ok(match required("restriction_edited.rule.kind", r.kind)? {
        K::DoNotBuy(k) => RestrictionRule::DoNotBuy { security: SecurityId::new(k.security) },
        K::DoNotHold(k) => RestrictionRule::DoNotHold { security: SecurityId::new(k.security) },
        K::SectorExclusion(k) => RestrictionRule::SectorExclusion { sector: k.sector },
        K::EsgMinimum(k) => RestrictionRule::EsgMinimum {
            min_score: dec("restriction_edited.rule.esg_minimum.min_score", &k.min_score)?,
            mode: EsgMode::from_pb("restriction_edited.rule.esg_minimum.mode", k.mode)?,
        },
        K::KeepLegacy(k) => RestrictionRule::KeepLegacy { security: SecurityId::new(k.security) },
        K::MaxWeight(k) => RestrictionRule::MaxWeight {
            max_weight: dec("restriction_edited.rule.max_weight.max_weight", &k.max_weight)?,
            security: SecurityId::new(k.security),
        },
        K::Substitute(k) => RestrictionRule::Substitute {
            security: SecurityId::new(k.security),
            substitute: SecurityId::new(k.substitute),
        },
        K::Tilt(k) => RestrictionRule::Tilt {
            sector: k.sector,
            sub_industry: k.sub_industry,
            delta: dec("restriction_edited.rule.tilt.delta", &k.delta)?,
        },
        K::AttributeTilt(k) => RestrictionRule::AttributeTilt {
            delta: dec("restriction_edited.rule.attribute_tilt.delta", &k.delta)?,
            attribute: k.attribute,
        },
        K::AttributeFilter(k) => {
            let opt = |name: &str, v: Option<String>| {
                v.map(|s| dec(&format!("restriction_edited.rule.attribute_filter.{name}"), &s)).transpose()
            };
            RestrictionRule::AttributeFilter {
                min: opt("min", k.min)?,
                max: opt("max", k.max)?,
                max_weight: opt("max_weight", k.max_weight)?,
                attribute: k.attribute,
            }
        }
    })
}

#[cfg(test)]
mod tests;
