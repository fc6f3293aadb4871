//! What the engine emits: trade orders, audit records and dead letters
//! (DESIGN §4). Their JSON bytes are the engine's output; replay compares them
//! byte for byte, so every collection here is ordered.

use crate::event::{InputErrorKind, Side};
use crate::ids::{AccountId, HouseholdId, ModelId, OrderId, RestrictionId, SecurityId};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderReason {
    ModelChange,
    Restriction,
    Esg,
    Drift,
    CashFlow,
    Harvest,
    Replacement,
    Setup,
    /// Gains realized on purpose (a tax objective), the shares bought straight back.
    GainHarvest,
    /// Cash raised ahead of a scheduled withdrawal (retirement income).
    Income,
    /// A legacy position sold in a period of a tax-aware transition.
    Transition,
}

impl OrderReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderReason::ModelChange => "model_change",
            OrderReason::Restriction => "restriction",
            OrderReason::Esg => "esg",
            OrderReason::Drift => "drift",
            OrderReason::CashFlow => "cash_flow",
            OrderReason::Harvest => "harvest",
            OrderReason::Replacement => "replacement",
            OrderReason::Setup => "setup",
            OrderReason::GainHarvest => "gain_harvest",
            OrderReason::Income => "income",
            OrderReason::Transition => "transition",
        }
    }
}

/// One lot a sell relieves, and how many of its shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotRelief {
    pub lot_id: u64,
    pub quantity: Decimal,
    pub cost_per_share: Decimal,
    /// Estimated gain (positive) or loss (negative) at the reference price.
    pub est_gain_usd: Decimal,
    pub long_term: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: OrderId,
    /// Position in the engine's order stream (1-based, gap-free).
    pub seq: u64,
    pub household: HouseholdId,
    pub account: AccountId,
    pub security: SecurityId,
    pub side: Side,
    pub quantity: Decimal,
    /// The confirmed price the decision sized the order with.
    pub ref_price: Decimal,
    pub reason: OrderReason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<LotRelief>,
    /// The input event whose decision made this order.
    pub cause_event_id: String,
    pub decided_at: DateTime<Utc>,
}

/// Why a trade the target called for was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    InsideBand,
    BelowMinimum,
    Restricted,
    NoPrice,
    UnconfirmedPrice,
    InsufficientCash,
    WashSaleBlock,
    TaxBudget,
    LegacyHolding,
    RoundsToZero,
    PendingOrder,
    ShortTermDeferral,
    /// Kept to hold the household's tax objective (tax-neutral tolerance).
    TaxObjective,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InsideBand => "inside_band",
            SkipReason::BelowMinimum => "below_minimum",
            SkipReason::Restricted => "restricted",
            SkipReason::NoPrice => "no_price",
            SkipReason::UnconfirmedPrice => "unconfirmed_price",
            SkipReason::InsufficientCash => "insufficient_cash",
            SkipReason::WashSaleBlock => "wash_sale_block",
            SkipReason::TaxBudget => "tax_budget",
            SkipReason::LegacyHolding => "legacy_holding",
            SkipReason::RoundsToZero => "rounds_to_zero",
            SkipReason::PendingOrder => "pending_order",
            SkipReason::ShortTermDeferral => "short_term_deferral",
            SkipReason::TaxObjective => "tax_objective",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    pub security: SecurityId,
    pub side: Side,
    pub reason: SkipReason,
    pub detail: String,
}

/// The inputs a decision used, so compliance can re-derive it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionInputs {
    /// Number of inputs applied before this decision (the state version).
    pub state_version: u64,
    pub account_value_usd: Decimal,
    pub cash_usd: Decimal,
    pub models: BTreeMap<ModelId, u64>,
    /// Restrictions in force, with their versions.
    pub restrictions: BTreeMap<RestrictionId, u32>,
    /// Prices of the securities traded or skipped.
    pub prices: BTreeMap<SecurityId, Decimal>,
}

/// The body of one audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditBody {
    /// An input was applied to state.
    Applied { event_type: Cow<'static, str>, summary: String },
    /// An input was refused; it also went to the dead-letter stream.
    Rejected { event_type: Option<Cow<'static, str>>, error: InputErrorKind, reason: String },
    /// An input whose event id was already applied; it had no effect.
    Duplicate { event_type: Cow<'static, str>, first_seq: u64 },
    /// A rebalance decision for one account.
    Decision {
        account: AccountId,
        rules: Vec<String>,
        inputs: DecisionInputs,
        orders: Vec<OrderId>,
        skipped: Vec<Skip>,
    },
    /// A sale's realized result, lot by lot, recorded while applying its fill.
    Tax {
        account: AccountId,
        security: SecurityId,
        trade_date: NaiveDate,
        quantity: Decimal,
        price: Decimal,
        lots: Vec<RealizedLot>,
        short_term_usd: Decimal,
        long_term_usd: Decimal,
        /// Proceeds minus the adjusted basis of the lots sold (before any
        /// disallowance of this sale's own loss).
        realized_usd: Decimal,
        /// False in a tax-deferred account (IRA, Roth): nothing to report.
        reportable: bool,
        detail: String,
    },
    /// Cash raised ahead of scheduled withdrawals: the payments it is for,
    /// each sale with its lots and the tax they cost.
    IncomeRaised {
        account: AccountId,
        payments: Vec<ScheduledPayment>,
        /// Cash the account lacked (payments set aside and the reserve).
        shortfall_usd: Decimal,
        sources: Vec<IncomeSource>,
        est_tax_usd: Decimal,
        detail: String,
    },
    /// A period of a tax-aware transition began in a taxable account: the
    /// tax budget it may use and what it plans.
    TransitionPeriod {
        account: AccountId,
        /// 1-based; periods past the plan's count use what budget is left.
        period: u32,
        periods: u32,
        period_start: NaiveDate,
        /// Half the sum of |actual − target| weights before this period's trades.
        drift: Decimal,
        /// Net realized gain this period may add (the tightest budget left).
        allowance_usd: Decimal,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_usd: Option<Decimal>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        yearly_budget_usd: Option<Decimal>,
        /// Net realized gain of the transition's executed sales so far.
        used_usd: Decimal,
        /// This period's planned sales: their net gain at the reference prices.
        planned_gain_usd: Decimal,
        kept: Vec<SecurityId>,
        detail: String,
    },
    /// A scheduled withdrawal fell due and was paid (in part, if cash was short).
    IncomePaid {
        account: AccountId,
        schedule_id: String,
        payment_date: NaiveDate,
        amount_usd: Decimal,
        /// Paid now; the rest leaves as soon as cash settles.
        paid_usd: Decimal,
        detail: String,
    },
    /// A loss disallowed by the wash-sale rule, and where it went.
    WashSale {
        /// The sale whose loss is disallowed.
        sale_event_id: String,
        sale_account: AccountId,
        security: SecurityId,
        sale_date: NaiveDate,
        sold_lot_id: u64,
        /// The replacement shares: account, security, the lot that now holds
        /// them, and when they were bought.
        replacement_account: AccountId,
        replacement_security: SecurityId,
        replacement_lot_id: u64,
        replacement_date: NaiveDate,
        shares: Decimal,
        disallowed_usd: Decimal,
        /// False when the replacement is in an IRA or Roth: the loss is lost for good.
        basis_added: bool,
        /// The replacement's holding period start after the sold shares' was carried over.
        holding_start: NaiveDate,
        detail: String,
    },
}

/// A scheduled withdrawal a raise is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledPayment {
    pub schedule_id: String,
    pub payment_date: NaiveDate,
    pub amount_usd: Decimal,
}

/// One sale that raises income: the lots it relieves and the tax they cost
/// at the reference price (negative: a loss that saves tax).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomeSource {
    pub order_id: OrderId,
    pub security: SecurityId,
    pub quantity: Decimal,
    pub ref_price: Decimal,
    pub lots: Vec<LotRelief>,
    pub est_tax_usd: Decimal,
}

/// One lot a sale relieved, and what it realized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealizedLot {
    pub lot_id: u64,
    pub quantity: Decimal,
    /// Adjusted basis per share.
    pub cost_per_share: Decimal,
    pub acquired: NaiveDate,
    pub holding_start: NaiveDate,
    pub gain_usd: Decimal,
    pub long_term: bool,
}

/// An audit record. `prev_hash` and `hash` chain the records of one stream
/// (a household, or `reference` for reference data): `hash` is SHA-256 over
/// `prev_hash` and the record's canonical JSON with `hash` left empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the engine's audit stream (1-based, gap-free).
    pub seq: u64,
    pub stream: Cow<'static, str>,
    pub stream_seq: u64,
    pub event_id: Option<String>,
    #[serde(serialize_with = "crate::text::serialize_opt_time")]
    pub at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub household: Option<HouseholdId>,
    pub body: AuditBody,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// Appends the record's canonical JSON to `out`: the bytes `serde_json`
    /// writes for it (its derived `Serialize` is the definition; a test
    /// holds the two equal), written directly for the fields every record
    /// has and for the most common body, `applied`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        push_u64(out, self.seq);
        out.extend_from_slice(b",\"stream\":");
        push_json_str(out, &self.stream);
        out.extend_from_slice(b",\"stream_seq\":");
        push_u64(out, self.stream_seq);
        out.extend_from_slice(b",\"event_id\":");
        match &self.event_id {
            Some(id) => push_json_str(out, id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"at\":");
        match &self.at {
            Some(t) => {
                out.push(b'"');
                crate::text::rfc3339_utc(t, out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        if let Some(h) = &self.household {
            out.extend_from_slice(b",\"household\":");
            push_json_str(out, h.as_str());
        }
        out.extend_from_slice(b",\"body\":");
        match &self.body {
            AuditBody::Applied { event_type, summary } => {
                out.extend_from_slice(b"{\"kind\":\"applied\",\"event_type\":");
                push_json_str(out, event_type);
                out.extend_from_slice(b",\"summary\":");
                push_json_str(out, summary);
                out.push(b'}');
            }
            body => serde_json::to_writer(&mut *out, body).expect("audit bodies serialize"),
        }
        out.extend_from_slice(b",\"prev_hash\":");
        push_json_str(out, &self.prev_hash);
        out.extend_from_slice(b",\"hash\":");
        push_json_str(out, &self.hash);
        out.push(b'}');
    }
}

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `s` as a JSON string, escaped as `serde_json` escapes (only `"`, `\\`
/// and control characters): copied as it is when it needs none.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if !crate::text::needs_json_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("strings serialize");
    }
}

/// An input the engine refused, kept with its bytes and the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub seq: u64,
    pub event_id: Option<String>,
    pub error: InputErrorKind,
    pub reason: String,
    /// Where the input came from (`topic/partition/offset`), as the edge reported it.
    pub source: String,
    /// The refused bytes, hex-encoded.
    pub raw_hex: String,
}
