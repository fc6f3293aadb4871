//! Given / when / then: each event type's effect on state and outputs.

use crate::event::*;
use crate::fold::{audit_hash, step, Applied, Input};
use crate::ids::*;
use crate::output::{AuditBody, OrderReason, SkipReason};
use crate::state::{State, REFERENCE_STREAM};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use std::str::FromStr;

pub(crate) fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub(crate) fn date(s: &str) -> NaiveDate {
    NaiveDate::from_str(s).unwrap()
}

/// A test world: state plus a clock that only moves when a test says so.
pub(crate) struct World {
    pub(crate) state: State,
    pub(crate) now: DateTime<Utc>,
    next_id: u64,
}

impl World {
    pub(crate) fn new() -> Self {
        Self { state: State::default(), now: Utc.with_ymd_and_hms(2025, 1, 2, 21, 0, 0).unwrap(), next_id: 0 }
    }

    pub(crate) fn env(&mut self, payload: Payload) -> Envelope {
        self.next_id += 1;
        Envelope {
            event_id: format!("e{}", self.next_id),
            producer: "test".into(),
            event_time: self.now,
            schema_version: 1,
            payload,
        }
    }

    pub(crate) fn when(&mut self, payload: Payload) -> Applied {
        let env = self.env(payload);
        env.validate().expect("test events are valid");
        step(&mut self.state, Input::Event(&env))
    }

    pub(crate) fn when_env(&mut self, env: &Envelope) -> Applied {
        step(&mut self.state, Input::Event(env))
    }

    pub(crate) fn advance(&mut self, days: i64) {
        self.now += Duration::days(days);
    }

    pub(crate) fn security(&mut self, sym: &str, sector: &str) {
        self.when(Payload::SecurityUpserted(SecurityUpserted {
            security: sym.into(),
            name: String::new(),
            sector: sector.into(),
            sub_industry: String::new(),
            identical_group: None,
            substitutes: vec![],
            attributes: Default::default(),
        }));
    }

    pub(crate) fn price(&mut self, sym: &str, p: &str) -> Applied {
        self.now += Duration::seconds(1);
        self.when(Payload::PriceTick(PriceTick { security: sym.into(), price: d(p), as_of: self.now }))
    }

    pub(crate) fn model(&mut self, id: &str, version: u64, weights: &[(&str, &str)]) -> Applied {
        self.when(Payload::ModelPublished(ModelPublished {
            model: id.into(),
            version,
            kind: ModelKind::Standard,
            weights: weights.iter().map(|(s, w)| ModelWeight { security: (*s).into(), weight: d(w) }).collect(),
        }))
    }

    /// A market of four names in two sectors, priced, and a 4-name model.
    pub(crate) fn market() -> Self {
        let mut w = World::new();
        w.security("AAPL", "Information Technology");
        w.security("MSFT", "Information Technology");
        w.security("XOM", "Energy");
        w.security("CVX", "Energy");
        w.price("AAPL", "100");
        w.price("MSFT", "200");
        w.price("XOM", "50");
        w.price("CVX", "25");
        w.model("m1", 1, &[("AAPL", "0.25"), ("MSFT", "0.25"), ("XOM", "0.25"), ("CVX", "0.24")]);
        w
    }

    pub(crate) fn household(&mut self, h: &str, cash: &str, lots: Vec<OpeningLot>) -> Applied {
        self.household_with(h, cash, lots, AccountSettings::default())
    }

    /// A household whose bands are so wide that only forced trades happen.
    pub(crate) fn quiet_household(&mut self, h: &str, cash: &str, lots: Vec<OpeningLot>) -> Applied {
        let settings =
            AccountSettings { drift_band_abs: Decimal::ONE, drift_band_rel: d("10"), ..AccountSettings::default() };
        self.household_with(h, cash, lots, settings)
    }

    pub(crate) fn household_with(
        &mut self,
        h: &str,
        cash: &str,
        lots: Vec<OpeningLot>,
        settings: AccountSettings,
    ) -> Applied {
        self.when(Payload::HouseholdUpserted(HouseholdUpserted {
            household: h.into(),
            tax: TaxProfile::default(),
            accounts: vec![AccountSpec {
                account: "A1".into(),
                kind: AccountKind::Taxable,
                sleeves: vec![Sleeve { model: "m1".into(), percent: Decimal::ONE }],
                settings,
                opening_cash: d(cash),
                opening_lots: lots,
            }],
            restrictions: vec![],
        }))
    }

    pub(crate) fn account(&self, h: &str) -> &crate::state::Account {
        &self.state.households[&HouseholdId::new(h)].accounts[&AccountId::new("A1")]
    }

    pub(crate) fn fill_all(&mut self, applied: &Applied, price_of: impl Fn(&str) -> Decimal) {
        for o in applied.orders.clone() {
            let p = price_of(o.security.as_str());
            self.when(Payload::Fill(Fill::of_order(&o, p, self.now.date_naive())));
        }
    }
}

/// One household with one taxable account following one model.
pub(crate) fn upsert(
    h: &str,
    model: &str,
    settings: AccountSettings,
    cash: &str,
    restrictions: Vec<RestrictionSpec>,
) -> Payload {
    Payload::HouseholdUpserted(HouseholdUpserted {
        household: h.into(),
        tax: TaxProfile::default(),
        accounts: vec![AccountSpec {
            account: "A1".into(),
            kind: AccountKind::Taxable,
            sleeves: vec![Sleeve { model: model.into(), percent: Decimal::ONE }],
            settings,
            opening_cash: d(cash),
            opening_lots: vec![],
        }],
        restrictions,
    })
}

pub(crate) fn lot(sec: &str, qty: &str, cost: &str, acquired: &str) -> OpeningLot {
    OpeningLot { security: sec.into(), quantity: d(qty), cost_per_share: d(cost), acquired: date(acquired) }
}

pub(crate) fn decision_skips(a: &Applied) -> Vec<(String, SkipReason)> {
    a.audit
        .iter()
        .flat_map(|r| match &r.body {
            AuditBody::Decision { skipped, .. } => {
                skipped.iter().map(|s| (s.security.as_str().to_string(), s.reason)).collect()
            }
            _ => vec![],
        })
        .collect()
}

#[test]
fn security_upserted_is_stored_and_audited_on_the_reference_chain() {
    let mut w = World::new();
    w.security("AAPL", "Information Technology");
    assert_eq!(w.state.securities[&SecurityId::new("AAPL")].sector, "Information Technology");
    let head = &w.state.meta.chains[REFERENCE_STREAM];
    assert_eq!(head.count, 1);
    assert_eq!(w.state.meta.applied, 1);
}

#[test]
fn model_with_an_unknown_security_is_refused_and_dead_lettered() {
    let mut w = World::market();
    let before = w.state.models.clone();
    let a = w.model("m2", 1, &[("AAPL", "0.5"), ("NOPE", "0.5")]);
    assert_eq!(a.rejection.as_ref().map(|(seq, e)| (*seq, e.kind)), Some((1, InputErrorKind::UnknownReference)));
    assert!(a.rejection.unwrap().1.message.contains("NOPE"));
    assert_eq!(w.state.models, before);
    assert!(matches!(a.audit[0].body, AuditBody::Rejected { .. }));
}

#[test]
fn stale_model_version_is_refused_as_out_of_order() {
    let mut w = World::market();
    let a = w.model("m1", 1, &[("AAPL", "1")]);
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::OutOfOrder);
}

#[test]
fn model_weights_that_sum_above_one_fail_validation() {
    let mut w = World::market();
    let env = w.env(Payload::ModelPublished(ModelPublished {
        model: "m9".into(),
        version: 1,
        kind: ModelKind::Standard,
        weights: vec![
            ModelWeight { security: "AAPL".into(), weight: d("0.6") },
            ModelWeight { security: "MSFT".into(), weight: d("0.5") },
        ],
    }));
    let err = env.validate().unwrap_err();
    assert_eq!(err.kind, InputErrorKind::InvalidValue);
    assert!(err.message.contains("sum to 1.1"), "{}", err.message);
}

#[test]
fn price_jump_is_held_until_confirmed_and_decisions_keep_the_confirmed_price() {
    let mut w = World::market();
    let a = w.price("XOM", "20"); // -60%: a spin-off or a bad print
    assert!(a.rejection.is_none());
    let px = &w.state.prices[&SecurityId::new("XOM")];
    assert_eq!(px.price, d("50"));
    assert_eq!(px.held.as_ref().unwrap().price, d("20"));
    assert!(matches!(&a.audit[0].body, AuditBody::Applied { summary, .. } if summary.contains("held")));
    // A second print near the held one confirms it.
    w.price("XOM", "21");
    let px = &w.state.prices[&SecurityId::new("XOM")];
    assert_eq!((px.price, px.held.is_none()), (d("21"), true));
}

#[test]
fn a_jump_limit_above_one_does_not_overflow_on_a_price_near_decimals_limit() {
    // given a limit of 200%
    let mut w = World::market();
    w.state.meta.settings.price_jump_max = d("2");
    // when a print far past the limit is held and a second one near it arrives
    let held = w.price("AAPL", "40000000000000000000000000000");
    assert!(held.rejection.is_none());
    let a = w.price("AAPL", "40000000000000000000000000001");
    // then the second confirms it (twice 4e28 is past Decimal's range, so past any move), with no overflow
    assert!(a.rejection.is_none());
    let px = &w.state.prices[&SecurityId::new("AAPL")];
    assert_eq!((px.price, px.held.is_none()), (d("40000000000000000000000000001"), true));
}

#[test]
fn a_bad_print_that_reverts_is_discarded() {
    let mut w = World::market();
    w.price("AAPL", "160");
    w.price("AAPL", "101");
    let px = &w.state.prices[&SecurityId::new("AAPL")];
    assert_eq!((px.price, px.held.is_none()), (d("101"), true));
}

#[test]
fn price_for_unknown_security_or_older_than_the_last_is_refused() {
    let mut w = World::market();
    let a = w.price("NOPE", "1");
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::UnknownReference);
    let old = w.now - Duration::days(1);
    let a = w.when(Payload::PriceTick(PriceTick { security: "AAPL".into(), price: d("99"), as_of: old }));
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::OutOfOrder);
}

#[test]
fn new_household_in_cash_buys_its_model_in_whole_shares_within_the_reserve() {
    let mut w = World::market();
    let a = w.household("H1", "100000", vec![]);
    let buys: Vec<_> = a.orders.iter().map(|o| (o.security.as_str(), o.quantity, o.reason)).collect();
    assert_eq!(
        buys,
        vec![
            // Most under-weight first.
            ("AAPL", d("250"), OrderReason::Setup),
            ("MSFT", d("125"), OrderReason::Setup),
            ("XOM", d("500"), OrderReason::Setup),
            ("CVX", d("960"), OrderReason::Setup),
        ]
    );
    let spent: Decimal = a.orders.iter().map(|o| o.quantity * o.ref_price).sum();
    assert!(spent <= d("99000"), "1% cash reserve kept: spent {spent}");
    // Projected positions now include the pending buys: a second look trades nothing.
    w.advance(1);
    let again = w.when(Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date: w.now.date_naive() }));
    assert!(again.orders.is_empty());
    assert!(decision_skips(&again).iter().any(|(_, r)| *r == SkipReason::InsideBand));
}

#[test]
fn fractional_accounts_buy_fractions_rounded_toward_zero() {
    let mut w = World::market();
    w.when(upsert(
        "H1",
        "m1",
        AccountSettings { fractional: true, min_trade_usd: d("1"), ..AccountSettings::default() },
        "1000",
        vec![],
    ));
    let msft = w.account("H1").pending.values().find(|p| p.security.as_str() == "MSFT").unwrap().open_quantity;
    assert_eq!(msft, d("1.25"));
}

#[test]
fn trades_below_the_minimum_are_skipped_with_the_reason() {
    let mut w = World::market();
    let a = w.household("H1", "300", vec![]);
    assert!(a.orders.is_empty());
    let skips = decision_skips(&a);
    assert!(skips.iter().any(|(_, r)| *r == SkipReason::RoundsToZero || *r == SkipReason::BelowMinimum), "{skips:?}");
}

#[test]
fn fills_create_lots_move_cash_and_close_pending_orders() {
    let mut w = World::market();
    let a = w.household("H1", "100000", vec![]);
    w.advance(1);
    w.fill_all(&a, |s| {
        if s == "AAPL" {
            d("101")
        } else {
            d("1")
                * d(if s == "MSFT" {
                    "200"
                } else if s == "XOM" {
                    "50"
                } else {
                    "25"
                })
        }
    });
    let acct = w.account("H1");
    assert!(acct.pending.is_empty());
    let aapl = &acct.lots[&SecurityId::new("AAPL")];
    assert_eq!((aapl.len(), aapl[0].quantity, aapl[0].cost_per_share), (1, d("250"), d("101")));
    assert_eq!(acct.cash, d("100000") - d("25250") - d("25000") - d("25000") - d("24000"));
    assert!(w.state.holders[&SecurityId::new("AAPL")].contains(&HouseholdId::new("H1")));
}

#[test]
fn a_partial_fill_keeps_the_rest_open_and_a_rejection_releases_it() {
    let mut w = World::market();
    let a = w.household("H1", "100000", vec![]);
    let o = a.orders.iter().find(|o| o.security.as_str() == "AAPL").unwrap().clone();
    let fill = |status, qty: &str| {
        Payload::Fill(Fill {
            household: "H1".into(),
            account: "A1".into(),
            order_id: Some(o.order_id.clone()),
            security: "AAPL".into(),
            side: Side::Buy,
            status,
            quantity: d(qty),
            price: d("100"),
            trade_date: date("2025-01-03"),
            reason: None,
            lots: Vec::new(),
        })
    };
    w.when(fill(FillStatus::Partial, "100"));
    assert_eq!(w.account("H1").pending[&o.order_id].open_quantity, d("150"));
    w.when(fill(FillStatus::Rejected, "0"));
    assert!(!w.account("H1").pending.contains_key(&o.order_id));
    assert_eq!(w.account("H1").quantity(&"AAPL".into()), d("100"));
}

#[test]
fn fill_for_an_unknown_order_or_overfill_is_refused() {
    let mut w = World::market();
    let a = w.household("H1", "100000", vec![]);
    let o = a.orders[0].clone();
    let mut f = Fill {
        household: "H1".into(),
        account: "A1".into(),
        order_id: Some("o-nope".into()),
        security: o.security.clone(),
        side: o.side,
        status: FillStatus::Filled,
        quantity: o.quantity,
        price: d("1"),
        trade_date: date("2025-01-03"),
        reason: None,
        lots: Vec::new(),
    };
    let r = w.when(Payload::Fill(f.clone()));
    assert_eq!(r.rejection.unwrap().1.kind, InputErrorKind::UnknownReference);
    f.order_id = Some(o.order_id.clone());
    f.quantity = o.quantity + Decimal::ONE;
    let r = w.when(Payload::Fill(f));
    assert_eq!(r.rejection.unwrap().1.kind, InputErrorKind::InvalidValue);
    assert_eq!(w.account("H1").pending[&o.order_id].open_quantity, o.quantity);
}

#[test]
fn sells_relieve_losses_first_then_long_term_then_short_term_gains() {
    let mut w = World::market();
    // Model holds no XOM: the whole position is sold; lots chosen least-tax first.
    w.model("m1", 2, &[("AAPL", "0.5"), ("MSFT", "0.49")]);
    w.household(
        "H1",
        "0",
        vec![
            lot("XOM", "100", "30", "2024-12-01"), // short-term gain 20/share
            lot("XOM", "100", "40", "2022-01-01"), // long-term gain 10/share
            lot("XOM", "100", "60", "2024-06-01"), // loss 10/share
        ],
    );
    let sell = w.account("H1").pending.values().find(|p| p.security.as_str() == "XOM").unwrap().clone();
    let order: Vec<u64> = sell.lots.iter().map(|l| l.lot_id).collect();
    assert_eq!(order, vec![3, 2, 1]);
    assert_eq!(sell.open_quantity, d("300"));
}

#[test]
fn a_sell_fill_realizes_gains_by_term_in_the_household_ledger() {
    let mut w = World::market();
    w.model("m1", 2, &[("AAPL", "0.5"), ("MSFT", "0.49")]);
    let a = w.household("H1", "0", vec![lot("XOM", "100", "40", "2022-01-01"), lot("XOM", "100", "60", "2024-06-01")]);
    w.fill_all(&a, |_| d("50"));
    let ledger = &w.state.households[&HouseholdId::new("H1")].realized[&2025];
    assert_eq!((ledger.long_term_usd, ledger.short_term_usd), (d("1000"), d("-1000")));
    assert!(!w.account("H1").lots.contains_key(&SecurityId::new("XOM")));
}

#[test]
fn do_not_hold_forces_a_sale_and_do_not_buy_only_stops_buys() {
    let mut w = World::market();
    w.household("H1", "50000", vec![lot("XOM", "500", "40", "2020-01-01")]);
    let no_buy = w.when(Payload::RestrictionEdited(RestrictionEdited {
        household: "H1".into(),
        restriction_id: "r1".into(),
        op: EditOp::Add,
        rule: Some(RestrictionRule::DoNotBuy { security: "AAPL".into() }),
        account: None,
        effective: w.now,
    }));
    assert!(no_buy.orders.iter().all(|o| o.security.as_str() != "AAPL" || o.side == Side::Sell));
    let hold = w.when(Payload::RestrictionEdited(RestrictionEdited {
        household: "H1".into(),
        restriction_id: "r2".into(),
        op: EditOp::Add,
        rule: Some(RestrictionRule::DoNotHold { security: "XOM".into() }),
        account: None,
        effective: w.now,
    }));
    let xom = hold.orders.iter().find(|o| o.security.as_str() == "XOM").expect("forced sale");
    assert_eq!((xom.side, xom.reason), (Side::Sell, OrderReason::Restriction));
    // Together with the drift sell already open, every share is on its way out.
    assert_eq!(w.account("H1").projected_quantity(&"XOM".into()), d("0"));
    assert!(w.state.households[&HouseholdId::new("H1")].restrictions[&RestrictionId::new("r2")].version == 1);
}

#[test]
fn do_not_buy_skips_a_buy_with_the_restricted_reason() {
    let mut w = World::market();
    w.when(upsert("H1", "m1", AccountSettings::default(), "0", vec![]));
    w.when(Payload::RestrictionEdited(RestrictionEdited {
        household: "H1".into(),
        restriction_id: "r1".into(),
        op: EditOp::Add,
        rule: Some(RestrictionRule::DoNotBuy { security: "AAPL".into() }),
        account: None,
        effective: w.now,
    }));
    let a = w.when(Payload::CashFlow(CashFlow {
        household: "H1".into(),
        account: "A1".into(),
        kind: CashFlowKind::Deposit,
        amount: d("100000"),
    }));
    assert!(a.orders.iter().all(|o| o.security.as_str() != "AAPL"));
    // AAPL's weight went to its sector (MSFT), not to cash.
    let msft = a.orders.iter().find(|o| o.security.as_str() == "MSFT").unwrap();
    assert_eq!(msft.quantity, d("250"));
    assert_eq!(msft.reason, OrderReason::CashFlow);
}

#[test]
fn an_esg_downgrade_divests_only_screened_households() {
    let mut w = World::market();
    w.quiet_household("H1", "0", vec![lot("CVX", "1000", "20", "2020-01-01")]);
    w.quiet_household("H2", "0", vec![lot("CVX", "1000", "20", "2020-01-01")]);
    w.when(Payload::RestrictionEdited(RestrictionEdited {
        household: "H1".into(),
        restriction_id: "esg".into(),
        op: EditOp::Add,
        rule: Some(RestrictionRule::EsgMinimum { min_score: d("30"), mode: EsgMode::Divest }),
        account: None,
        effective: w.now,
    }));
    let a = w.when(Payload::EsgScoreChanged(EsgScoreChanged {
        security: "CVX".into(),
        provider: "p".into(),
        score: d("12"),
        as_of: w.now,
    }));
    let sells: Vec<_> = a.orders.iter().map(|o| (o.household.0.as_str(), o.security.as_str(), o.reason)).collect();
    assert_eq!(sells, vec![("H1", "CVX", OrderReason::Esg)]);
}

#[test]
fn a_withdrawal_raises_cash_from_losses_first_and_pays_out_when_settled() {
    let mut w = World::market();
    w.quiet_household("H1", "0", vec![lot("AAPL", "100", "50", "2020-01-01"), lot("XOM", "400", "80", "2024-06-01")]);
    let a = w.when(Payload::CashFlow(CashFlow {
        household: "H1".into(),
        account: "A1".into(),
        kind: CashFlowKind::Withdrawal,
        amount: d("5000"),
    }));
    let o = &a.orders[0];
    assert_eq!((o.security.as_str(), o.side, o.reason), ("XOM", Side::Sell, OrderReason::CashFlow));
    assert!(o.quantity * o.ref_price >= d("5000"));
    assert_eq!(w.account("H1").withdrawal_due, d("5000"));
    w.fill_all(&a, |_| d("50"));
    assert_eq!(w.account("H1").withdrawal_due, d("0"));
}

#[test]
fn clock_trades_only_outside_the_band() {
    let mut w = World::market();
    let a = w.household("H1", "100000", vec![]);
    w.fill_all(&a, |s| match s {
        "AAPL" => d("100"),
        "MSFT" => d("200"),
        "XOM" => d("50"),
        _ => d("25"),
    });
    w.advance(1);
    w.price("AAPL", "110"); // AAPL weight 25% → ~26.8%: inside ±3pp
    let a = w.when(Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date: w.now.date_naive() }));
    assert!(a.orders.is_empty(), "{:?}", a.orders);
    w.advance(1);
    w.price("AAPL", "135"); // ~30.9%: outside
    let a = w.when(Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date: w.now.date_naive() }));
    let o = &a.orders[0];
    assert_eq!((o.security.as_str(), o.side, o.reason), ("AAPL", Side::Sell, OrderReason::Drift));
}

#[test]
fn a_split_multiplies_lots_and_divides_basis_and_price() {
    let mut w = World::market();
    w.household("H1", "0", vec![lot("AAPL", "10", "700", "2014-01-02")]);
    let a = w.when(Payload::CorporateAction(CorporateAction {
        security: "AAPL".into(),
        ex_date: date("2025-01-03"),
        kind: CorporateActionKind::Split { numerator: 7, denominator: 1 },
    }));
    assert!(a.rejection.is_none());
    let lots = &w.account("H1").lots[&SecurityId::new("AAPL")];
    assert_eq!((lots[0].quantity, lots[0].cost_per_share), (d("70"), d("100")));
    assert_eq!(w.state.prices[&SecurityId::new("AAPL")].price.normalize(), d("100") / d("7"));
}

#[test]
fn a_duplicate_event_id_has_no_effect_and_is_audited() {
    let mut w = World::market();
    let env = w.env(Payload::CashFlow(CashFlow {
        household: "H9".into(),
        account: "A1".into(),
        kind: CashFlowKind::Deposit,
        amount: d("1"),
    }));
    w.household("H1", "0", vec![]);
    let env = Envelope {
        payload: Payload::CashFlow(CashFlow {
            household: "H1".into(),
            account: "A1".into(),
            kind: CashFlowKind::Deposit,
            amount: d("1000"),
        }),
        ..env
    };
    w.when_env(&env);
    let cash = w.account("H1").cash;
    let again = w.when_env(&env);
    assert_eq!(w.account("H1").cash, cash);
    assert!(matches!(again.audit[0].body, AuditBody::Duplicate { .. }));
    assert!(again.orders.is_empty());
}

#[test]
fn audit_records_chain_per_stream() {
    let mut w = World::market();
    w.household("H1", "100000", vec![]);
    w.household("H2", "100000", vec![]);
    let mut all = vec![];
    let mut w2 = World::market();
    for h in ["H1", "H2"] {
        all.extend(w2.household(h, "100000", vec![]).audit);
    }
    let h1: Vec<_> = all.iter().filter(|r| r.stream == "household/H1").collect();
    assert!(h1.len() >= 2);
    for pair in h1.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].stream_seq, pair[0].stream_seq + 1);
    }
    for r in &all {
        assert_eq!(audit_hash(r), r.hash);
    }
    // The sealed bytes the store keeps are exactly the record's JSON.
    let applied = w.household("H3", "100000", vec![]);
    for (r, bytes) in applied.audit.iter().zip(&applied.audit_json) {
        assert_eq!(bytes, &serde_json::to_vec(r).unwrap());
    }
    assert_eq!(applied.audit.len(), applied.audit_json.len());
}

#[test]
fn the_fold_is_deterministic() {
    let run = || {
        let mut w = World::market();
        let a = w.household("H1", "100000", vec![lot("XOM", "10", "80", "2024-01-01")]);
        serde_json::to_string(&(a.orders, a.audit)).unwrap()
    };
    assert_eq!(run(), run());
}

#[test]
fn more_than_one_year_means_the_day_after_the_anniversary() {
    let l = crate::state::Lot {
        lot_id: 1,
        quantity: d("1"),
        cost_per_share: d("1"),
        acquired: date("2024-03-15"),
        holding_start: date("2024-03-15"),
    };
    assert!(!l.is_long_term(date("2025-03-15")));
    assert!(l.is_long_term(date("2025-03-16")));
}

#[test]
fn a_small_account_holds_a_sector_balanced_subset_of_a_direct_index() {
    let mut w = World::new();
    let mut weights = vec![];
    // 40 names: 30 in Tech (60% of the index), 10 in Energy (40%).
    for i in 0..40 {
        let (sym, sector) = if i < 30 { (format!("T{i:02}"), "Tech") } else { (format!("E{i:02}"), "Energy") };
        w.security(&sym, sector);
        w.price(&sym, "10");
        let weight = if i < 30 { d("0.02") } else { d("0.04") };
        weights.push((sym, weight));
    }
    let state = &w.state;
    let index: std::collections::BTreeMap<SecurityId, Decimal> =
        weights.iter().map(|(s, w)| (SecurityId::new(s.as_str()), *w)).collect();
    let empty = crate::state::Account {
        id: "A".into(),
        kind: AccountKind::Taxable,
        sleeves: vec![],
        settings: AccountSettings::default(),
        cash: d("0"),
        withdrawal_due: d("0"),
        income_reserved: d("0"),
        lots: Default::default(),
        pending: Default::default(),
        next_lot_id: 1,
    };
    let ctx =
        crate::rebalance::Context::new(w.now, w.now.date_naive(), OrderReason::Drift, crate::rebalance::Mode::Full);
    let proj = crate::rebalance::Projection::of(state, &empty);
    let subset = crate::rebalance::direct_index_subset(state, &"ix".into(), &index, 10, &proj, &ctx);
    assert_eq!(subset.len(), 10);
    let tech: Decimal = subset.iter().filter(|(s, _)| s.as_str().starts_with('T')).map(|(_, w)| *w).sum();
    let energy: Decimal = subset.iter().filter(|(s, _)| s.as_str().starts_with('E')).map(|(_, w)| *w).sum();
    assert_eq!((subset.keys().filter(|s| s.as_str().starts_with('T')).count(), tech.round_dp(6)), (6, d("0.6")));
    assert_eq!((subset.keys().filter(|s| s.as_str().starts_with('E')).count(), energy.round_dp(6)), (4, d("0.4")));
    assert!(subset.values().sum::<Decimal>() <= Decimal::ONE);
    // A held name ranked just outside the quota keeps its place.
    let mut holder = empty.clone();
    holder.lots.insert(
        "T08".into(),
        vec![crate::state::Lot {
            lot_id: 1,
            quantity: d("1"),
            cost_per_share: d("1"),
            acquired: date("2020-01-01"),
            holding_start: date("2020-01-01"),
        }],
    );
    let ctx =
        crate::rebalance::Context::new(w.now, w.now.date_naive(), OrderReason::Drift, crate::rebalance::Mode::Full);
    let proj = crate::rebalance::Projection::of(state, &holder);
    let subset = crate::rebalance::direct_index_subset(state, &"ix".into(), &index, 10, &proj, &ctx);
    assert!(subset.contains_key(&SecurityId::new("T08")), "{subset:?}");
    assert_eq!(subset.len(), 10);
}

#[test]
fn restrictions_that_arrive_with_a_new_household_shape_its_first_trades() {
    let mut w = World::market();
    let a = w.when(upsert(
        "H1",
        "m1",
        AccountSettings::default(),
        "100000",
        vec![RestrictionSpec {
            restriction_id: "no-energy".into(),
            rule: RestrictionRule::SectorExclusion { sector: "Energy".into() },
            account: None,
            effective: w.now,
        }],
    ));
    assert!(a.orders.iter().all(|o| o.security.as_str() != "XOM" && o.security.as_str() != "CVX"), "{:?}", a.orders);
    assert!(!a.orders.is_empty());
    let r = &w.state.households[&HouseholdId::new("H1")].restrictions[&RestrictionId::new("no-energy")];
    assert_eq!(r.version, 1);
}

#[test]
fn excluded_weight_never_goes_to_a_substitute_that_is_itself_excluded() {
    let mut w = World::market();
    // XOM names CVX as its substitute; both fail the household's ESG minimum.
    w.when(Payload::SecurityUpserted(SecurityUpserted {
        security: "XOM".into(),
        name: String::new(),
        sector: "Energy".into(),
        sub_industry: String::new(),
        identical_group: None,
        substitutes: vec!["CVX".into()],
        attributes: Default::default(),
    }));
    for (sym, score) in [("XOM", "10"), ("CVX", "12"), ("AAPL", "80"), ("MSFT", "75")] {
        w.when(Payload::EsgScoreChanged(EsgScoreChanged {
            security: sym.into(),
            provider: "p".into(),
            score: d(score),
            as_of: w.now,
        }));
    }
    let a = w.when(upsert(
        "H1",
        "m1",
        AccountSettings::default(),
        "100000",
        vec![RestrictionSpec {
            restriction_id: "esg".into(),
            rule: RestrictionRule::EsgMinimum { min_score: d("30"), mode: EsgMode::Divest },
            account: None,
            effective: w.now,
        }],
    ));
    let bought: Vec<&str> = a.orders.iter().map(|o| o.security.as_str()).collect();
    assert_eq!(bought, vec!["AAPL", "MSFT"], "energy excluded, its weight spread over the rest");
    let rules = a
        .audit
        .iter()
        .find_map(|r| match &r.body {
            AuditBody::Decision { rules, .. } => Some(rules.clone()),
            _ => None,
        })
        .unwrap();
    assert!(rules.iter().any(|r| r.contains("of XOM pro rata to the rest")), "{rules:?}");
}

#[test]
fn a_model_update_rebalances_only_its_subscribers() {
    let mut w = World::market();
    w.model("m2", 1, &[("AAPL", "0.5"), ("XOM", "0.49")]);
    let a1 = w.household("H1", "100000", vec![]);
    w.fill_all(&a1, |_| d("1"));
    w.when(upsert("H2", "m2", AccountSettings::default(), "100000", vec![]));
    w.advance(1);
    let a = w.model("m1", 2, &[("AAPL", "0.10"), ("MSFT", "0.40"), ("XOM", "0.25"), ("CVX", "0.24")]);
    assert!(!a.orders.is_empty());
    assert!(a.orders.iter().all(|o| o.household.0 == "H1" && o.reason == OrderReason::ModelChange), "{:?}", a.orders);
    let decided: Vec<_> = a
        .audit
        .iter()
        .filter_map(|r| match r.body {
            AuditBody::Decision { .. } => r.household.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(decided, vec![HouseholdId::new("H1")]);
    let inputs = a
        .audit
        .iter()
        .find_map(|r| match &r.body {
            AuditBody::Decision { inputs, .. } => Some(inputs.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(inputs.models[&ModelId::new("m1")], 2, "the decision names the model version it used");
}

#[test]
fn a_price_tick_changes_only_the_price_table() {
    let mut w = World::market();
    w.household("H1", "100000", vec![]);
    let before = w.state.households.clone();
    let a = w.price("AAPL", "180"); // held as a jump, but even a plain tick decides nothing
    let b = w.price("MSFT", "201");
    for x in [&a, &b] {
        assert!(x.orders.is_empty());
        assert_eq!(x.audit.len(), 1);
        assert_eq!(x.audit[0].stream, REFERENCE_STREAM);
    }
    assert_eq!(w.state.households, before);
    assert!(b.touched.iter().all(|t| matches!(
        t,
        crate::fold::Touched::Price(_)
            | crate::fold::Touched::Seen(_)
            | crate::fold::Touched::Chain(_)
            | crate::fold::Touched::Meta
    )));
}

#[test]
fn a_redelivered_tick_is_a_duplicate_and_a_conflicting_one_is_refused() {
    let mut w = World::market();
    let at = w.now + Duration::seconds(30);
    let tick = |p: &str| Payload::PriceTick(PriceTick { security: "AAPL".into(), price: d(p), as_of: at });
    let first = w.when(tick("101"));
    let applied_at = w.state.meta.applied;
    // The same tick again, even under another event id: a duplicate, no dead letter.
    let again = w.when(tick("101"));
    assert!(again.rejection.is_none());
    assert!(matches!(again.audit[0].body, AuditBody::Duplicate { first_seq, .. } if first_seq == applied_at));
    assert!(first.rejection.is_none());
    // Another price for the same instant: refused as out of order.
    let conflict = w.when(tick("102"));
    assert_eq!(conflict.rejection.unwrap().1.kind, InputErrorKind::OutOfOrder);
    assert_eq!(w.state.prices[&SecurityId::new("AAPL")].price, d("101"));
    // Ticks leave no trace in the event-id set.
    assert!(w.state.meta.seen.get("e_unused").is_none());
    let ids_before = w.state.meta.seen.len();
    w.price("MSFT", "201");
    assert_eq!(w.state.meta.seen.len(), ids_before);
}

// ---------------------------------------------------------------------------
// Taxes and wash sales in the engine's own decisions
// ---------------------------------------------------------------------------

fn taxed(h: &str, tax: TaxProfile, cash: &str, lots: Vec<OpeningLot>) -> Payload {
    let Payload::HouseholdUpserted(mut e) = upsert(h, "m1", AccountSettings::default(), cash, vec![]) else {
        unreachable!("upsert builds a household_upserted")
    };
    e.tax = tax;
    e.accounts[0].opening_lots = lots;
    Payload::HouseholdUpserted(e)
}

fn clock(w: &mut World) -> Applied {
    let trade_date = w.now.date_naive();
    w.when(Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date }))
}

fn orders_of(a: &Applied) -> Vec<(String, Side, OrderReason)> {
    a.orders.iter().map(|o| (o.security.as_str().to_string(), o.side, o.reason)).collect()
}

fn no_wash_sales(all: &[Applied]) {
    for a in all {
        for r in &a.audit {
            assert!(!matches!(r.body, AuditBody::WashSale { .. }), "the engine's own trades made a wash sale: {r:?}");
        }
    }
}

#[test]
fn harvesting_sells_deep_losses_buys_the_substitute_and_swaps_back_after_the_window() {
    let mut w = World::market();
    w.when(Payload::SecurityUpserted(SecurityUpserted {
        security: "XOM".into(),
        name: String::new(),
        sector: "Energy".into(),
        sub_industry: String::new(),
        identical_group: None,
        substitutes: vec!["CVX".into()],
        attributes: Default::default(),
    }));
    let mut all =
        vec![w.when(taxed("H1", TaxProfile::default(), "15000", vec![lot("XOM", "100", "80", "2024-06-03")]))];
    let setup = all[0].clone();
    w.fill_all(&setup, w_price);
    // given a market close with XOM 37.5% below its basis ($3,000 of losses)
    w.advance(1);
    let close = clock(&mut w);
    let orders = orders_of(&close);
    assert!(orders.contains(&("XOM".into(), Side::Sell, OrderReason::Harvest)), "{orders:?}");
    assert!(orders.contains(&("CVX".into(), Side::Buy, OrderReason::Replacement)), "{orders:?}");
    let harvest = close.orders.iter().find(|o| o.reason == OrderReason::Harvest).unwrap();
    assert_eq!(harvest.quantity, d("100"));
    assert_eq!(harvest.lots.iter().map(|l| l.est_gain_usd).sum::<Decimal>(), d("-3000"));
    w.fill_all(&close, w_price);
    all.push(close);
    // then for 30 days XOM is not bought back, even though it is under target
    for _ in 0..3 {
        w.advance(10);
        let a = clock(&mut w);
        assert!(
            !a.orders.iter().any(|o| o.security.as_str() == "XOM" && o.side == Side::Buy),
            "XOM bought in the window"
        );
        w.fill_all(&a, w_price);
        all.push(a);
    }
    // and after the window it is bought back and the substitute sold
    w.advance(2);
    let after = clock(&mut w);
    let orders = orders_of(&after);
    assert!(orders.iter().any(|(s, side, _)| s == "XOM" && *side == Side::Buy), "swap back: {orders:?}");
    assert!(orders.iter().any(|(s, side, _)| s == "CVX" && *side == Side::Sell), "swap back: {orders:?}");
    w.fill_all(&after, w_price);
    all.push(after);
    no_wash_sales(&all);
    let hh = &w.state.households[&HouseholdId::new("H1")];
    assert_eq!(hh.realized[&2025].short_term_usd + hh.realized[&2025].long_term_usd, d("-3000"));
}

/// The market's prices (World::market), for fills.
fn w_price(s: &str) -> Decimal {
    match s {
        "AAPL" => d("100"),
        "MSFT" => d("200"),
        "XOM" => d("50"),
        _ => d("25"),
    }
}

#[test]
fn a_loss_lot_bought_within_thirty_days_is_not_sold_by_a_rebalance() {
    let mut w = World::market();
    let setup = w.when(taxed("H1", TaxProfile::default(), "20000", vec![]));
    w.fill_all(&setup, w_price);
    assert!(w.account("H1").quantity(&"AAPL".into()) > Decimal::ZERO);
    // given AAPL down 20% ten days later and a model that drops it
    w.advance(10);
    w.price("AAPL", "80");
    let a = w.model("m1", 2, &[("MSFT", "0.33"), ("XOM", "0.33"), ("CVX", "0.33")]);
    // then the loss sale waits: it would be a wash sale against the purchase
    assert!(!a.orders.iter().any(|o| o.security.as_str() == "AAPL"), "{:?}", orders_of(&a));
    assert!(decision_skips(&a).contains(&("AAPL".into(), SkipReason::WashSaleBlock)));
    // and once 30 days have passed since the purchase it is sold
    w.fill_all(&a, |s| if s == "AAPL" { d("80") } else { w_price(s) });
    w.advance(21);
    let later = clock(&mut w);
    assert!(
        later.orders.iter().any(|o| o.security.as_str() == "AAPL" && o.side == Side::Sell),
        "{:?}",
        orders_of(&later)
    );
}

#[test]
fn a_sale_that_would_exceed_the_tax_budget_is_dropped_with_the_reason() {
    let mut w = World::market();
    let tax = TaxProfile { annual_gain_budget_usd: Some(d("1000")), ..TaxProfile::default() };
    // MSFT bought at 50, now 200: selling 30 shares realizes $4,500 of long-term gain.
    let setup = w.when(taxed("H1", tax, "15000", vec![lot("MSFT", "25", "50", "2020-01-02")]));
    w.fill_all(&setup, w_price);
    let a = w.model("m1", 2, &[("AAPL", "0.30"), ("MSFT", "0.05"), ("XOM", "0.30"), ("CVX", "0.30")]);
    assert!(!a.orders.iter().any(|o| o.security.as_str() == "MSFT" && o.side == Side::Sell), "{:?}", orders_of(&a));
    assert!(decision_skips(&a).contains(&("MSFT".into(), SkipReason::TaxBudget)));

    // without a budget the same sale is made
    let mut w = World::market();
    let setup = w.when(taxed("H1", TaxProfile::default(), "15000", vec![lot("MSFT", "25", "50", "2020-01-02")]));
    w.fill_all(&setup, w_price);
    let a = w.model("m1", 2, &[("AAPL", "0.30"), ("MSFT", "0.05"), ("XOM", "0.30"), ("CVX", "0.30")]);
    assert!(a.orders.iter().any(|o| o.security.as_str() == "MSFT" && o.side == Side::Sell));
}

#[test]
fn a_short_term_gain_that_turns_long_term_within_the_window_is_deferred_unless_forced() {
    // Now is 2025-01-02; a lot bought 2024-01-20 is long-term from 2025-01-21, 19 days away.
    let lots = || vec![lot("MSFT", "25", "150", "2024-01-20")];
    let mut w = World::market();
    let setup = w.when(taxed("H1", TaxProfile::default(), "15000", lots()));
    w.fill_all(&setup, w_price);
    let a = w.model("m1", 2, &[("AAPL", "0.30"), ("MSFT", "0.05"), ("XOM", "0.30"), ("CVX", "0.30")]);
    assert!(!a.orders.iter().any(|o| o.security.as_str() == "MSFT" && o.side == Side::Sell), "{:?}", orders_of(&a));
    assert!(decision_skips(&a).contains(&("MSFT".into(), SkipReason::ShortTermDeferral)));

    // a do-not-hold does not wait
    let mut w = World::market();
    let setup = w.when(taxed("H1", TaxProfile::default(), "15000", lots()));
    w.fill_all(&setup, w_price);
    let a = w.when(Payload::RestrictionEdited(RestrictionEdited {
        household: "H1".into(),
        restriction_id: "r1".into(),
        op: EditOp::Add,
        rule: Some(RestrictionRule::DoNotHold { security: "MSFT".into() }),
        account: None,
        effective: w.now,
    }));
    assert!(a
        .orders
        .iter()
        .any(|o| o.security.as_str() == "MSFT" && o.side == Side::Sell && o.reason == OrderReason::Restriction));
}

#[test]
fn a_subsets_tracking_error_estimate_grows_as_it_leaves_names_out() {
    use crate::rebalance::subset_tracking_error;
    use std::collections::BTreeMap;
    let index: BTreeMap<SecurityId, Decimal> =
        ["A", "B", "C", "D"].iter().map(|s| (SecurityId::new(*s), d("0.25"))).collect();
    let all: BTreeMap<&SecurityId, Decimal> = index.iter().map(|(s, w)| (s, *w)).collect();
    assert_eq!(subset_tracking_error(&index, &all), Decimal::ZERO);
    let half: BTreeMap<&SecurityId, Decimal> = index.iter().take(2).map(|(s, _)| (s, d("0.5"))).collect();
    // Differences ±0.25 on four names: √0.25 = 0.5, times the assumed 25% residual volatility.
    assert_eq!(subset_tracking_error(&index, &half), d("0.125"));
    let three: BTreeMap<&SecurityId, Decimal> = index.iter().take(3).map(|(s, _)| (s, d("0.3333"))).collect();
    assert!(subset_tracking_error(&index, &three) < d("0.125"));
}

#[test]
fn an_audit_records_json_is_what_serde_writes_for_it() {
    use crate::output::AuditRecord;
    use std::borrow::Cow;
    let at = Utc.with_ymd_and_hms(2015, 1, 2, 21, 0, 0).unwrap() + Duration::microseconds(7);
    let tricky = "a \"quoted\" back\\slash, a tab\t, a bell\u{7}, a line\nbreak, é and ✓, del\u{7f}";
    let bodies = [
        AuditBody::Applied { event_type: "price_tick".into(), summary: "A 40.5600".into() },
        AuditBody::Applied { event_type: Cow::Owned(tricky.into()), summary: tricky.into() },
        AuditBody::Duplicate { event_type: "fill".into(), first_seq: 42 },
        AuditBody::Rejected { event_type: None, error: InputErrorKind::Malformed, reason: tricky.into() },
    ];
    for body in bodies {
        for (event_id, at, household) in
            [(None, None, None), (Some(tricky.to_string()), Some(at), Some(HouseholdId::new("hh-\"1\"")))]
        {
            for seq in [0, 7, u64::MAX] {
                let r = AuditRecord {
                    seq,
                    stream: Cow::Owned(format!("household/{tricky}")),
                    stream_seq: seq / 3,
                    event_id: event_id.clone(),
                    at,
                    household: household.clone(),
                    body: body.clone(),
                    prev_hash: "ab".repeat(32),
                    hash: String::new(),
                };
                let mut mine = Vec::new();
                r.write_json(&mut mine);
                assert_eq!(String::from_utf8(mine).unwrap(), serde_json::to_string(&r).unwrap());
            }
        }
    }
}

#[test]
fn chain_heads_are_kept_and_listed_as_one_map_by_name_would_keep_them() {
    use crate::state::{ChainHead, Chains};
    use std::collections::BTreeMap;
    // given streams named before, at and after the reference stream's name
    let names = ["household/hh-2", REFERENCE_STREAM, "ref", "referencez", "household/hh-1", "zeta", "a"];
    let mut chains = Chains::default();
    let mut map = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let head = ChainHead { count: i as u64 + 1, hash: format!("h{i}") };
        if i % 2 == 0 {
            chains.insert(name.to_string(), head.clone());
        } else {
            *chains.head_mut(name) = head.clone();
        }
        map.insert(name.to_string(), head);
    }
    // then each is found by name, listed in name order, and serialized as the map is
    let listed: Vec<_> = chains.iter().map(|(k, h)| (k.to_string(), h.clone())).collect();
    assert_eq!(listed, map.clone().into_iter().collect::<Vec<_>>());
    assert_eq!(chains.len(), map.len());
    for (name, head) in &map {
        assert_eq!(chains.get(name), Some(head));
    }
    assert_eq!(chains.get("nope"), None);
    assert_eq!(serde_json::to_string(&chains).unwrap(), serde_json::to_string(&map).unwrap());
    let back: Chains = serde_json::from_str(&serde_json::to_string(&map).unwrap()).unwrap();
    assert_eq!(back, chains);
}
