//! Given / when / then: personalisation — tilts and attribute filters, tax
//! objectives, retirement income, tax-aware transitions. Every expected
//! figure below is worked out by hand from the rules in the comments.

use crate::event::*;
use crate::fold::Applied;
use crate::ids::*;
use crate::output::{AuditBody, OrderReason};
use crate::rebalance::{target_weights, Context, Mode};
use crate::tests::{d, date, lot, World};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Four names in two sectors with attributes:
///
/// | name | sector / sub-industry | price | dividend_yield | profitable | risk_rating | model m1 |
/// |---|---|--:|--:|--:|--:|--:|
/// | AAPL | Information Technology / Hardware | 100 | 0.005 | 1 | 2 | 0.25 |
/// | MSFT | Information Technology / Software | 200 | 0.01 | 1 | 2 | 0.25 |
/// | XOM | Energy / Oil | 50 | 0.05 | 1 | 4 | 0.25 |
/// | CVX | Energy / Oil | 25 | 0.04 | 0 | 3 | 0.24 |
pub(crate) fn market() -> World {
    let mut w = World::new();
    for (sym, sector, sub, dy, profitable, risk) in [
        ("AAPL", "Information Technology", "Hardware", "0.005", "1", "2"),
        ("MSFT", "Information Technology", "Software", "0.01", "1", "2"),
        ("XOM", "Energy", "Oil", "0.05", "1", "4"),
        ("CVX", "Energy", "Oil", "0.04", "0", "3"),
    ] {
        let attributes: BTreeMap<String, Decimal> =
            [("dividend_yield", dy), ("profitable", profitable), ("risk_rating", risk)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), d(v)))
                .collect();
        w.when(Payload::SecurityUpserted(SecurityUpserted {
            security: sym.into(),
            name: String::new(),
            sector: sector.into(),
            sub_industry: sub.into(),
            identical_group: None,
            substitutes: vec![],
            attributes,
        }));
    }
    w.price("AAPL", "100");
    w.price("MSFT", "200");
    w.price("XOM", "50");
    w.price("CVX", "25");
    w.model("m1", 1, &[("AAPL", "0.25"), ("MSFT", "0.25"), ("XOM", "0.25"), ("CVX", "0.24")]);
    w
}

pub(crate) fn spec(id: &str, rule: RestrictionRule, w: &World) -> RestrictionSpec {
    RestrictionSpec { restriction_id: id.into(), rule, account: None, effective: w.now }
}

/// A household with one taxable account on m1 and the given restrictions.
pub(crate) fn onboard(w: &mut World, cash: &str, lots: Vec<OpeningLot>, rules: Vec<RestrictionSpec>) -> Applied {
    onboard_with(w, cash, lots, rules, AccountSettings::default())
}

/// Bands so wide that only forced trades happen.
pub(crate) fn quiet() -> AccountSettings {
    AccountSettings { drift_band_abs: Decimal::ONE, drift_band_rel: d("10"), ..AccountSettings::default() }
}

pub(crate) fn onboard_with(
    w: &mut World,
    cash: &str,
    lots: Vec<OpeningLot>,
    rules: Vec<RestrictionSpec>,
    settings: AccountSettings,
) -> Applied {
    w.when(Payload::HouseholdUpserted(HouseholdUpserted {
        household: "H1".into(),
        tax: TaxProfile::default(),
        accounts: vec![AccountSpec {
            account: "A1".into(),
            kind: AccountKind::Taxable,
            sleeves: vec![Sleeve { model: "m1".into(), percent: Decimal::ONE }],
            settings,
            opening_cash: d(cash),
            opening_lots: lots,
        }],
        restrictions: rules,
    }))
}

fn targets(w: &World) -> BTreeMap<String, Decimal> {
    let hh = &w.state.households[&HouseholdId::new("H1")];
    let ctx = Context::new(w.now, w.now.date_naive(), OrderReason::Drift, Mode::Full);
    target_weights(&w.state, hh, &hh.accounts[&AccountId::new("A1")], &ctx)
        .into_iter()
        .map(|(s, x)| (s.as_str().to_string(), x))
        .collect()
}

fn weights(pairs: &[(&str, &str)]) -> BTreeMap<String, Decimal> {
    pairs.iter().map(|(s, x)| (s.to_string(), d(x))).collect()
}

pub(crate) fn rules(a: &Applied) -> Vec<String> {
    a.audit
        .iter()
        .flat_map(|r| match &r.body {
            AuditBody::Decision { rules, .. } => rules.clone(),
            _ => vec![],
        })
        .collect()
}

fn orders(a: &Applied) -> Vec<(&str, Side, Decimal, OrderReason)> {
    a.orders.iter().map(|o| (o.security.as_str(), o.side, o.quantity, o.reason)).collect()
}

// ---------------------------------------------------------------------------
// Tilts and attribute filters

/// The IT sector holds 0.50 of the model; a −0.10 tilt leaves it 0.40
/// (AAPL and MSFT × 0.8 = 0.20 each) and gives 0.10 to Energy pro rata to
/// 0.25 and 0.24: XOM 0.25 + 0.10 × 0.25 / 0.49 = 0.30102040 (8 places,
/// toward zero), CVX 0.24 + 0.10 × 0.24 / 0.49 = 0.28897959. The sum 0.99
/// leaves the 1% reserve, so nothing is scaled. On $100,000 the buys are
/// 602 XOM ($30,102.04 / $50, whole shares down), 1,155 CVX, 200 AAPL and
/// 100 MSFT, most under-weight first.
#[test]
fn a_sector_tilt_down_moves_its_weight_to_the_rest_pro_rata() {
    let mut w = market();
    let tilt =
        RestrictionRule::Tilt { sector: Some("Information Technology".into()), sub_industry: None, delta: d("-0.10") };
    let rule = spec("t1", tilt, &w);
    let a = onboard(&mut w, "100000", vec![], vec![rule]);
    assert_eq!(
        targets(&w),
        weights(&[("AAPL", "0.20"), ("MSFT", "0.20"), ("XOM", "0.30102040"), ("CVX", "0.28897959")])
    );
    assert_eq!(
        orders(&a),
        vec![
            ("XOM", Side::Buy, d("602"), OrderReason::Setup),
            ("CVX", Side::Buy, d("1155"), OrderReason::Setup),
            ("AAPL", Side::Buy, d("200"), OrderReason::Setup),
            ("MSFT", Side::Buy, d("100"), OrderReason::Setup),
        ]
    );
    let r = rules(&a);
    assert!(
        r.iter().any(|l| l == "restriction t1 v1: tilt sector Information Technology -10pp: 2 securities 50pp -> 40pp, the rest pro rata"),
        "{r:#?}"
    );
}

/// A +0.05 tilt of the Software sub-industry (MSFT alone, 0.25) takes 0.05
/// from the other 0.74 pro rata: each × 0.69 / 0.74. AAPL and XOM
/// 0.25 × 0.69 / 0.74 = 0.23310810 (toward zero), CVX 0.24 × 0.69 / 0.74 =
/// 0.22378378; MSFT gets all of the 0.05: 0.30.
#[test]
fn a_sub_industry_tilt_up_takes_its_weight_from_the_rest_pro_rata() {
    let mut w = market();
    let tilt = RestrictionRule::Tilt { sector: None, sub_industry: Some("Software".into()), delta: d("0.05") };
    let rule = spec("t1", tilt, &w);
    onboard(&mut w, "100000", vec![], vec![rule]);
    assert_eq!(
        targets(&w),
        weights(&[("AAPL", "0.23310810"), ("MSFT", "0.30"), ("XOM", "0.23310810"), ("CVX", "0.22378378")])
    );
}

/// A tilt larger than the sector empties it and no more: −0.80 on IT moves
/// its 0.50, never below zero. A tilt up of a sector the model does not
/// hold moves nothing (no name to hold the weight).
#[test]
fn a_tilt_never_goes_below_zero_nor_invents_a_holding() {
    let mut w = market();
    let down =
        RestrictionRule::Tilt { sector: Some("Information Technology".into()), sub_industry: None, delta: d("-0.80") };
    let up = RestrictionRule::Tilt { sector: Some("Utilities".into()), sub_industry: None, delta: d("0.30") };
    let rules_ = vec![spec("t1", down, &w), spec("t2", up, &w)];
    let a = onboard(&mut w, "100000", vec![], rules_);
    // Energy takes IT's 0.50 pro rata: XOM 0.25 + 0.50 × 0.25 / 0.49 = 0.50510204, CVX 0.24 + 0.50 × 0.24 / 0.49 = 0.48489795.
    assert_eq!(targets(&w), weights(&[("XOM", "0.50510204"), ("CVX", "0.48489795")]));
    assert!(rules(&a).iter().any(|l| l.contains("tilt sector Utilities +30pp: nothing moved (0 securities at 0pp)")));
}

/// The weighted average yield of the model is (0.25 × 0.005 + 0.25 × 0.01 +
/// 0.25 × 0.05 + 0.24 × 0.04) / 0.99 = 0.026111; XOM and CVX are above it.
/// A +0.10 yield tilt moves 0.10 from AAPL and MSFT (× 0.8 = 0.20 each) to
/// them pro rata: the same weights as the IT tilt down.
#[test]
fn a_yield_tilt_moves_weight_toward_the_names_above_the_average_yield() {
    let mut w = market();
    let tilt = RestrictionRule::AttributeTilt { attribute: "dividend_yield".into(), delta: d("0.10") };
    let rule = spec("y1", tilt, &w);
    let a = onboard(&mut w, "100000", vec![], vec![rule]);
    assert_eq!(
        targets(&w),
        weights(&[("AAPL", "0.20"), ("MSFT", "0.20"), ("XOM", "0.30102040"), ("CVX", "0.28897959")])
    );
    assert!(rules(&a)
        .iter()
        .any(|l| l.starts_with("restriction y1 v1: tilt dividend_yield above the target's average 0.026111")));
}

/// CVX is flagged unprofitable (profitable = 0). Excluding names with
/// `profitable` below 1 sells the 100 CVX held (a forced sale) and gives
/// its 0.24 to its sector: XOM 0.49.
#[test]
fn an_attribute_filter_excludes_and_sells_like_a_sector_exclusion() {
    let mut w = market();
    onboard_with(&mut w, "0", vec![lot("CVX", "100", "20", "2024-01-02")], vec![], quiet());
    w.advance(1);
    let filter = RestrictionRule::AttributeFilter {
        attribute: "profitable".into(),
        min: Some(d("1")),
        max: None,
        max_weight: None,
    };
    let a = w.when(Payload::RestrictionEdited(RestrictionEdited {
        household: "H1".into(),
        restriction_id: "f1".into(),
        op: EditOp::Add,
        rule: Some(filter),
        account: None,
        effective: w.now,
    }));
    assert_eq!(orders(&a), vec![("CVX", Side::Sell, d("100"), OrderReason::Restriction)]);
    assert_eq!(targets(&w), weights(&[("AAPL", "0.25"), ("MSFT", "0.25"), ("XOM", "0.49")]));
    assert!(rules(&a).iter().any(|l| l == "restriction f1 v1: exclude profitable below 1"), "{:#?}", rules(&a));
}

/// Names rated above 3 for risk (XOM, 4) are capped at 10% each: XOM's
/// 0.15 over the cap goes to its sector, CVX 0.24 + 0.15 = 0.39.
#[test]
fn an_attribute_cap_limits_each_failing_name_and_redistributes_the_rest() {
    let mut w = market();
    let cap = RestrictionRule::AttributeFilter {
        attribute: "risk_rating".into(),
        min: None,
        max: Some(d("3")),
        max_weight: Some(d("0.10")),
    };
    let rule = spec("c1", cap, &w);
    onboard(&mut w, "100000", vec![], vec![rule]);
    assert_eq!(targets(&w), weights(&[("AAPL", "0.25"), ("MSFT", "0.25"), ("XOM", "0.10"), ("CVX", "0.39")]));
}

/// A max-weight restriction holds like an attribute cap: XOM capped at 10%
/// gives its 0.15 to its sector, and takes none of it back (CVX 0.24 + 0.15
/// = 0.39). Redistributing pro rata over a sector that still held XOM would
/// have handed XOM 0.15 × 0.10 / 0.34 ≈ 0.044 of its own excess, past its cap.
#[test]
fn a_max_weight_cap_holds_and_its_excess_goes_to_the_rest_of_the_sector() {
    let mut w = market();
    let cap = RestrictionRule::MaxWeight { security: "XOM".into(), max_weight: d("0.10") };
    let rule = spec("m1cap", cap, &w);
    onboard(&mut w, "100000", vec![], vec![rule]);
    assert_eq!(targets(&w), weights(&[("AAPL", "0.25"), ("MSFT", "0.25"), ("XOM", "0.10"), ("CVX", "0.39")]));
}

#[test]
fn bad_tilts_and_filters_are_refused_at_decode_time() {
    let mut w = market();
    let bad = [
        RestrictionRule::Tilt { sector: Some("Energy".into()), sub_industry: Some("Oil".into()), delta: d("0.1") },
        RestrictionRule::Tilt { sector: None, sub_industry: None, delta: d("0.1") },
        RestrictionRule::Tilt { sector: Some("Energy".into()), sub_industry: None, delta: d("0") },
        RestrictionRule::Tilt { sector: Some("Energy".into()), sub_industry: None, delta: d("1.5") },
        RestrictionRule::AttributeTilt { attribute: "Dividend Yield".into(), delta: d("0.1") },
        RestrictionRule::AttributeFilter { attribute: "risk".into(), min: None, max: None, max_weight: None },
        RestrictionRule::AttributeFilter {
            attribute: "risk".into(),
            min: Some(d("3")),
            max: Some(d("2")),
            max_weight: None,
        },
        RestrictionRule::AttributeFilter {
            attribute: "risk".into(),
            min: Some(d("3")),
            max: None,
            max_weight: Some(d("2")),
        },
    ];
    for rule in bad {
        let env = w.env(Payload::RestrictionEdited(RestrictionEdited {
            household: "H1".into(),
            restriction_id: "r".into(),
            op: EditOp::Add,
            rule: Some(rule.clone()),
            account: None,
            effective: w.now,
        }));
        let err = env.validate().expect_err("refused");
        assert_eq!(err.kind, InputErrorKind::InvalidValue, "{rule:?}: {err}");
    }
    let mut attributes = BTreeMap::new();
    attributes.insert("Yield".to_string(), d("1"));
    let env = w.env(Payload::SecurityUpserted(SecurityUpserted {
        security: "IBM".into(),
        name: String::new(),
        sector: "Information Technology".into(),
        sub_industry: String::new(),
        identical_group: None,
        substitutes: vec![],
        attributes,
    }));
    assert_eq!(env.validate().unwrap_err().kind, InputErrorKind::InvalidValue);
    let _ = date("2025-01-02");
}

// ---------------------------------------------------------------------------
// Tax objectives

/// Re-lists a security with substitutes (harvesting needs one).
fn with_substitutes(w: &mut World, sym: &str, sector: &str, subs: &[&str]) {
    w.when(Payload::SecurityUpserted(SecurityUpserted {
        security: sym.into(),
        name: String::new(),
        sector: sector.into(),
        sub_industry: String::new(),
        identical_group: None,
        substitutes: subs.iter().map(|s| (*s).into()).collect(),
        attributes: BTreeMap::new(),
    }));
}

fn set_objective(w: &mut World, objective: TaxObjective) -> Applied {
    w.when(Payload::TaxObjectiveSet(TaxObjectiveSet { household: "H1".into(), objective }))
}

pub(crate) fn close(w: &mut World) -> Applied {
    let trade_date = w.now.date_naive();
    w.when(Payload::Clock(Clock { kind: ClockKind::MarketClose, trade_date }))
}

/// Fills every order of `a` at its reference price on today's date.
pub(crate) fn fill_at_ref(w: &mut World, a: &Applied) {
    let mut orders = a.orders.clone();
    orders.sort_by_key(|o| (o.side == Side::Buy, o.seq));
    for o in orders {
        let trade_date = w.now.date_naive();
        let f = w.when(Payload::Fill(Fill::of_order(&o, o.ref_price, trade_date)));
        assert!(f.rejection.is_none(), "{:?}", f.rejection);
    }
}

fn realized_2025(w: &World) -> (Decimal, Decimal) {
    let r = &w.state.households[&HouseholdId::new("H1")].realized[&2025];
    (r.short_term_usd, r.long_term_usd)
}

/// Given a household that harvests losses (the default): on 2025-01-03 its
/// 100 XOM bought at 60 (now 50, 16.7% below basis, $1,000 in all) are
/// harvested: −$1,000 long term.
///
/// When on 2025-06-02 its objective becomes "realize gains up to $3,000",
/// then at the next close the target is $3,000 − (−$1,000) = $4,000 of
/// gain: its 100 AAPL bought at 60 in 2022 (now 100, $40 a share, long
/// term) are sold and bought straight back — 100 × $40 = $4,000 exactly —
/// and CVX, 23% under water by then, is not harvested. The close after that
/// realizes nothing (the target is met).
///
/// When on 2025-06-05 it becomes "tax-neutral within ±$600", the net of
/// $3,000 is above the tolerance, so harvesting resumes with room for
/// $3,000 + $600 = $3,600 of losses: all 200 CVX (basis 26, price 20, $1,200
/// of loss) are harvested. The year ends the run at −1,000 + 4,000 − 1,200 =
/// $1,800 long term, nothing short term.
#[test]
fn a_change_of_tax_objective_mid_year_changes_what_the_next_closes_do() {
    let mut w = market();
    with_substitutes(&mut w, "XOM", "Energy", &["CVX"]);
    with_substitutes(&mut w, "CVX", "Energy", &["XOM"]);
    let lots = vec![
        lot("XOM", "100", "60", "2023-01-03"),
        lot("AAPL", "100", "60", "2022-06-01"),
        lot("CVX", "200", "26", "2024-01-02"),
    ];
    onboard_with(&mut w, "0", lots, vec![], quiet());
    w.advance(1);
    let a = close(&mut w);
    assert_eq!(orders(&a), vec![("XOM", Side::Sell, d("100"), OrderReason::Harvest)]);
    fill_at_ref(&mut w, &a);
    assert_eq!(realized_2025(&w), (d("0"), d("-1000")));

    w.now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 6, 2, 15, 0, 0).unwrap();
    let set = set_objective(&mut w, TaxObjective::RealizeGains { target_usd: d("3000") });
    assert!(set.rejection.is_none());
    assert!(
        matches!(&set.audit[0].body, AuditBody::Applied { summary, .. } if summary == "H1: realize gains up to $3000 a year")
    );
    w.price("CVX", "20");
    w.advance(1);
    let a = close(&mut w);
    assert_eq!(
        orders(&a),
        vec![
            ("AAPL", Side::Sell, d("100"), OrderReason::GainHarvest),
            ("AAPL", Side::Buy, d("100"), OrderReason::GainHarvest),
        ]
    );
    let r = rules(&a);
    assert!(
        r.contains(
            &"tax objective v1 since 2025-06-02: realize gains up to $3000 a year; 2025 net realized or pending $-1000"
                .to_string()
        ),
        "{r:#?}"
    );
    assert!(r.contains(&"harvest: off while the tax objective is to realize gains".to_string()), "{r:#?}");
    fill_at_ref(&mut w, &a);
    assert_eq!(realized_2025(&w), (d("0"), d("3000")));
    w.advance(1);
    assert!(close(&mut w).orders.is_empty(), "the target is met");

    w.advance(1);
    set_objective(&mut w, TaxObjective::TaxNeutral { tolerance_usd: d("600") });
    w.advance(1);
    let a = close(&mut w);
    assert_eq!(orders(&a), vec![("CVX", Side::Sell, d("200"), OrderReason::Harvest)]);
    assert!(rules(&a).iter().any(
        |l| l.starts_with("tax objective v2 since 2025-06-05: tax-neutral: net realized gain within ±$600 a year")
    ));
    fill_at_ref(&mut w, &a);
    assert_eq!(realized_2025(&w), (d("0"), d("1800")));
}

/// Given a tax-neutral household (±$600, nothing realized yet) holding only
/// 100 AAPL bought at 60 (now 100), when its bands tighten and the drift
/// check wants to sell 75 AAPL (0.75 of a $10,000 account), then the sale
/// is trimmed to 600 / 40 = 15 shares, and its $1,500 (less the $100
/// reserve) buys 7 MSFT, the most under-weight name first (by id on a tie).
#[test]
fn a_tax_neutral_household_trims_a_sale_to_its_tolerance() {
    let mut w = market();
    onboard_with(&mut w, "0", vec![lot("AAPL", "100", "60", "2022-06-01")], vec![], quiet());
    set_objective(&mut w, TaxObjective::TaxNeutral { tolerance_usd: d("600") });
    let a = onboard(&mut w, "0", vec![], vec![]);
    assert_eq!(
        orders(&a),
        vec![("AAPL", Side::Sell, d("15"), OrderReason::Setup), ("MSFT", Side::Buy, d("7"), OrderReason::Setup)]
    );
    assert!(crate::tests::decision_skips(&a).contains(&("AAPL".to_string(), crate::output::SkipReason::TaxObjective)));
    fill_at_ref(&mut w, &a);
    assert_eq!(realized_2025(&w), (d("0"), d("600")));
}

#[test]
fn an_objective_for_an_unknown_household_is_refused_and_a_bad_one_fails_validation() {
    let mut w = market();
    let a = set_objective(&mut w, TaxObjective::HarvestLosses);
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::UnknownReference);
    let env = w.env(Payload::TaxObjectiveSet(TaxObjectiveSet {
        household: "H1".into(),
        objective: TaxObjective::RealizeGains { target_usd: d("-5") },
    }));
    assert_eq!(env.validate().unwrap_err().kind, InputErrorKind::InvalidValue);
}

// ---------------------------------------------------------------------------
// Retirement income

fn schedule(w: &mut World, h: &str, first: &str, amount: &str, yield_tilt: Option<Decimal>) -> Applied {
    w.when(Payload::WithdrawalScheduled(WithdrawalScheduled {
        household: h.into(),
        account: "A1".into(),
        schedule_id: "s1".into(),
        amount: d(amount),
        frequency: Frequency::Monthly,
        first_payment: date(first),
        lead_days: 5,
        until: None,
        yield_tilt,
    }))
}

/// A retiree's account, all of it inside its bands: AAPL bought in
/// September 2024 (a short-term gain of $20 a share), MSFT, XOM and CVX
/// bought in 2020 (long-term gains). Every lot is 20% above its basis.
fn retiree_lots() -> Vec<OpeningLot> {
    vec![
        lot("AAPL", "110", "80", "2024-09-03"),
        lot("MSFT", "50", "160", "2020-01-02"),
        lot("XOM", "200", "40", "2020-01-02"),
        lot("CVX", "384", "20", "2020-01-02"),
    ]
}

/// Given the retiree's $40,600 account (AAPL 11,000, MSFT 10,000, XOM
/// 10,000, CVX 9,600, no cash) and a $1,000 monthly income from 2025-01-10,
/// raised 5 days ahead: when the close of 2025-01-05 sets the payment
/// aside, the account lacks $1,000 plus its 1% reserve of the $39,600
/// left, $1,396. Every long-term lot costs 20% × 20% = $0.04 of tax a
/// dollar, the short-term AAPL 20% × 37% = $0.074, so long-term lots go
/// first, the least under-weight name first (MSFT and XOM are 0.2525 of
/// the account, CVX 0.2424 against 0.24): MSFT may give 10,000 − 0.22 ×
/// 39,600 = $1,288 before it leaves its band, 6 shares ($1,200); XOM gives
/// the $196 left, 4 shares. Tax: (6 × 40 + 4 × 10) × 20% = $56. The same
/// $1,000 as a plain withdrawal (the cash-flow rule, which ranks names by
/// their gain per dollar, here all 20%, then by name) sells 14 AAPL: a
/// short-term gain taxed $103.60.
#[test]
fn a_scheduled_withdrawal_is_raised_from_long_term_lots_where_a_plain_one_sells_a_short_term_gain() {
    let mut w = market();
    onboard(&mut w, "0", retiree_lots(), vec![]);
    let s = schedule(&mut w, "H1", "2025-01-10", "1000", None);
    assert!(s.rejection.is_none(), "{:?}", s.rejection);
    w.advance(2);
    assert!(close(&mut w).orders.is_empty(), "2025-01-04 is before the lead (from 2025-01-10 − 5 days)");
    w.advance(1);
    let a = close(&mut w);
    assert_eq!(
        orders(&a),
        vec![("MSFT", Side::Sell, d("6"), OrderReason::Income), ("XOM", Side::Sell, d("4"), OrderReason::Income)]
    );
    let raised = a.audit.iter().find_map(|r| match &r.body {
        AuditBody::IncomeRaised { payments, shortfall_usd, sources, est_tax_usd, .. } => {
            Some((payments.clone(), *shortfall_usd, sources.clone(), *est_tax_usd))
        }
        _ => None,
    });
    let (payments, shortfall, sources, tax) = raised.expect("an income record");
    assert_eq!(payments.len(), 1);
    assert_eq!(
        (payments[0].schedule_id.as_str(), payments[0].payment_date, payments[0].amount_usd),
        ("s1", date("2025-01-10"), d("1000"))
    );
    assert_eq!((shortfall, tax), (d("1396"), d("56")));
    let by_source: Vec<(&str, Decimal, bool, Decimal)> = sources
        .iter()
        .map(|s| (s.security.as_str(), s.lots[0].est_gain_usd, s.lots[0].long_term, s.est_tax_usd))
        .collect();
    assert_eq!(by_source, vec![("MSFT", d("240"), true, d("48")), ("XOM", d("40"), true, d("8"))]);
    assert_eq!(w.account("H1").income_reserved, d("1000"));

    // The payment date: the $1,400 raised pays the $1,000; the schedule moves on a month.
    fill_at_ref(&mut w, &a);
    w.advance(5);
    let paid = close(&mut w);
    let record = paid.audit.iter().find_map(|r| match &r.body {
        AuditBody::IncomePaid { schedule_id, payment_date, amount_usd, paid_usd, .. } => {
            Some((schedule_id.clone(), *payment_date, *amount_usd, *paid_usd))
        }
        _ => None,
    });
    assert_eq!(record, Some(("s1".to_string(), date("2025-01-10"), d("1000"), d("1000"))));
    assert!(paid.orders.is_empty());
    let acct = w.account("H1");
    assert_eq!((acct.cash, acct.income_reserved, acct.withdrawal_due), (d("400"), d("0"), d("0")));
    let s1 = &w.state.households[&HouseholdId::new("H1")].income["s1"];
    assert_eq!((s1.next_payment, s1.raised_for), (date("2025-02-10"), None));

    // The same amount as a plain withdrawal, in a household just like it.
    let mut twin = market();
    onboard(&mut twin, "0", retiree_lots(), vec![]);
    let plain = twin.when(Payload::CashFlow(CashFlow {
        household: "H1".into(),
        account: "A1".into(),
        kind: CashFlowKind::Withdrawal,
        amount: d("1000"),
    }));
    assert_eq!(orders(&plain), vec![("AAPL", Side::Sell, d("14"), OrderReason::CashFlow)]);
    assert!(plain.orders[0].lots.iter().all(|l| !l.long_term));
}

/// A schedule's yield tilt of +0.10 tilts the account like an attribute
/// tilt on dividend_yield: the same weights as that test.
#[test]
fn a_schedule_with_a_yield_tilt_tilts_its_account_toward_yield() {
    let mut w = market();
    onboard_with(&mut w, "100000", vec![], vec![], quiet());
    schedule(&mut w, "H1", "2025-02-03", "500", Some(d("0.10")));
    assert_eq!(
        targets(&w),
        weights(&[("AAPL", "0.20"), ("MSFT", "0.20"), ("XOM", "0.30102040"), ("CVX", "0.28897959")])
    );
    w.advance(1);
    assert!(rules(&close(&mut w))
        .iter()
        .any(|l| l.starts_with("income s1 v1: tilt dividend_yield above the target's average 0.026111 +10pp")));
}

#[test]
fn bad_schedules_are_refused() {
    let mut w = market();
    onboard(&mut w, "1000", vec![], vec![]);
    let a = schedule(&mut w, "H1", "2024-12-31", "100", None);
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::InvalidValue, "a first payment in the past");
    let a = schedule(&mut w, "H9", "2025-02-01", "100", None);
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::UnknownReference);
    for bad in [
        WithdrawalScheduled {
            household: "H1".into(),
            account: "A1".into(),
            schedule_id: "s".into(),
            amount: d("0"),
            frequency: Frequency::Monthly,
            first_payment: date("2025-02-01"),
            lead_days: 5,
            until: None,
            yield_tilt: None,
        },
        WithdrawalScheduled {
            household: "H1".into(),
            account: "A1".into(),
            schedule_id: "s".into(),
            amount: d("10"),
            frequency: Frequency::Quarterly,
            first_payment: date("2025-02-01"),
            lead_days: 61,
            until: Some(date("2025-01-01")),
            yield_tilt: None,
        },
    ] {
        let env = w.env(Payload::WithdrawalScheduled(bad));
        assert_eq!(env.validate().unwrap_err().kind, InputErrorKind::InvalidValue);
    }
}

// ---------------------------------------------------------------------------
// Tax-aware transitions

fn list(w: &mut World, sym: &str, sector: &str, price: &str) {
    with_substitutes(w, sym, sector, &[]);
    w.price(sym, price);
}

/// H1's taxable account: with `managed` false it has no sleeves yet (the
/// engine keeps its books and trades nothing), then m1.
fn upsert_h1(w: &mut World, managed: bool, lots: Vec<OpeningLot>) -> Applied {
    w.when(Payload::HouseholdUpserted(HouseholdUpserted {
        household: "H1".into(),
        tax: TaxProfile::default(),
        accounts: vec![AccountSpec {
            account: "A1".into(),
            kind: AccountKind::Taxable,
            sleeves: if managed { vec![Sleeve { model: "m1".into(), percent: Decimal::ONE }] } else { vec![] },
            settings: AccountSettings::default(),
            opening_cash: d("0"),
            opening_lots: lots,
        }],
        restrictions: vec![],
    }))
}

fn period_record(a: &Applied) -> Option<(u32, Decimal, Decimal, Vec<SecurityId>)> {
    a.audit.iter().find_map(|r| match &r.body {
        AuditBody::TransitionPeriod { period, allowance_usd, planned_gain_usd, kept, .. } => {
            Some((*period, *allowance_usd, *planned_gain_usd, kept.clone()))
        }
        _ => None,
    })
}

fn sells(a: &Applied) -> Vec<(&str, Decimal, OrderReason)> {
    a.orders.iter().filter(|o| o.side == Side::Sell).map(|o| (o.security.as_str(), o.quantity, o.reason)).collect()
}

fn transition_used(w: &World) -> Decimal {
    w.state.households[&HouseholdId::new("H1")].transition.as_ref().unwrap().used_usd
}

/// Given a $40,000 account of legacy stock — 500 GE bought at 10 (now 40,
/// $20,000), 100 IBM bought at 120 (now 100, a $2,000 loss), 200 KO bought
/// at 5 (now 50) that the client keeps — moving to m1 over two quarterly
/// periods within $6,000 of net gain. The budget counts each share as sold
/// 2% above its price (the fill may come dearer): IBM −18 a share, GE
/// +30.80.
///
/// Period 1 (the close of 2025-01-03) may use 6,000 / 2 = $3,000. KO takes
/// 0.25 of the account, so the model is scaled into the 0.74 left (AAPL,
/// MSFT, XOM 0.18686868, CVX 0.17939393). The loss comes first (IBM, −$0.04
/// of tax a dollar): all 100 IBM, counted −$1,800, which leaves room for
/// $4,800 of counted gain: 155 GE (155 × 30.80 = 4,774; 156 would pass it).
/// At the reference prices: 155 × 30 − 2,000 = $2,650. The $16,200 raised
/// less the $400 reserve buys 74 AAPL and 37 MSFT ($7,474.75 wanted each)
/// and 20 XOM with the $1,000 left; CVX gets nothing.
///
/// No gain is taken between periods. Period 2 (2025-04-02) may use all that
/// is left, 6,000 − 2,650 = $3,350: 108 GE (3,350 / 30.80 = 108.8), $3,240.
/// Period 3 has $110: 3 GE ($90). Period 4 has $20: not one share. KO is
/// never sold.
#[test]
fn a_transition_sells_losses_first_and_spreads_its_budget_over_the_periods() {
    let mut w = market();
    list(&mut w, "GE", "Industrials", "40");
    list(&mut w, "IBM", "Information Technology", "100");
    list(&mut w, "KO", "Consumer Staples", "50");
    let legacy = vec![
        lot("GE", "500", "10", "2010-03-01"),
        lot("IBM", "100", "120", "2020-03-02"),
        lot("KO", "200", "5", "2005-06-01"),
    ];
    assert!(upsert_h1(&mut w, false, legacy).orders.is_empty());
    let set = w.when(Payload::TransitionSet(TransitionSet {
        household: "H1".into(),
        plan: TransitionPlan {
            period: Frequency::Quarterly,
            periods: 2,
            budget_usd: Some(d("6000")),
            yearly_budget_usd: None,
            keep: vec!["KO".into()],
            complete_below: d("0.02"),
        },
    }));
    assert!(set.rejection.is_none(), "{:?}", set.rejection);
    assert!(upsert_h1(&mut w, true, vec![]).orders.is_empty(), "onboarding sells nothing: the periods do");

    // The projected path at today's prices is the path below: periods 1 and
    // 2, then a third that sells nothing and ends it.
    let path = crate::transition::project(&w.state, &HouseholdId::new("H1")).unwrap();
    let rows: Vec<(u32, Decimal, Decimal, Decimal, Decimal)> =
        path.iter().map(|r| (r.period, r.sold_usd, r.realized_long_usd, r.tax_usd, r.used_usd)).collect();
    // Tax at the 20% long-term rate: 2,650 × 0.2 = 530, 3,240 × 0.2 = 648, 90 × 0.2 = 18.
    assert_eq!(
        rows,
        vec![
            (1, d("16200"), d("2650"), d("530.00"), d("2650")),
            (2, d("4320"), d("3240"), d("648.00"), d("5890")),
            (3, d("120"), d("90"), d("18.00"), d("5980")),
            (4, d("0"), d("0"), d("0.00"), d("5980")),
        ]
    );
    assert_eq!(
        path.iter().map(|r| r.date).collect::<Vec<_>>(),
        vec![date("2025-01-02"), date("2025-04-02"), date("2025-07-02"), date("2025-10-02")]
    );
    assert!(path[0].drift_before > path[0].drift_after && path[1].drift_after < path[0].drift_after);

    w.advance(1);
    let p1 = close(&mut w);
    assert_eq!(
        orders(&p1),
        vec![
            ("GE", Side::Sell, d("155"), OrderReason::Transition),
            ("IBM", Side::Sell, d("100"), OrderReason::Transition),
            ("AAPL", Side::Buy, d("74"), OrderReason::Drift),
            ("MSFT", Side::Buy, d("37"), OrderReason::Drift),
            ("XOM", Side::Buy, d("20"), OrderReason::Drift),
        ]
    );
    assert_eq!(period_record(&p1), Some((1, d("3000"), d("2650"), vec!["KO".into()])));
    fill_at_ref(&mut w, &p1);
    assert_eq!(transition_used(&w), d("2650"));
    assert_eq!(realized_2025(&w), (d("0"), d("2650")));

    w.now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 2, 3, 21, 0, 0).unwrap();
    assert!(sells(&close(&mut w)).is_empty(), "between periods nothing is sold");

    w.now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 4, 2, 21, 0, 0).unwrap();
    let p2 = close(&mut w);
    assert_eq!(sells(&p2), vec![("GE", d("108"), OrderReason::Transition)]);
    assert_eq!(period_record(&p2).map(|r| (r.0, r.1, r.2)), Some((2, d("3350"), d("3240"))));
    fill_at_ref(&mut w, &p2);
    assert_eq!(transition_used(&w), d("5890"));

    w.now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 7, 2, 21, 0, 0).unwrap();
    let p3 = close(&mut w);
    assert_eq!(sells(&p3), vec![("GE", d("3"), OrderReason::Transition)]);
    assert_eq!(period_record(&p3).map(|r| (r.0, r.1, r.2)), Some((3, d("110"), d("90"))));
    fill_at_ref(&mut w, &p3);

    w.now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2025, 10, 2, 21, 0, 0).unwrap();
    let p4 = close(&mut w);
    assert!(sells(&p4).is_empty(), "{:?}", sells(&p4));
    assert_eq!(period_record(&p4).map(|r| (r.0, r.1, r.2)), Some((4, d("20"), d("0"))));
    let ko: Decimal = w.account("H1").lots[&SecurityId::new("KO")].iter().map(|l| l.quantity).sum();
    assert_eq!(ko, d("200"));
}

#[test]
fn a_transition_without_a_budget_or_for_an_unknown_name_is_refused() {
    let mut w = market();
    upsert_h1(&mut w, true, vec![]);
    let plan = TransitionPlan {
        period: Frequency::Monthly,
        periods: 3,
        budget_usd: None,
        yearly_budget_usd: None,
        keep: vec![],
        complete_below: d("0.02"),
    };
    let env = w.env(Payload::TransitionSet(TransitionSet { household: "H1".into(), plan: plan.clone() }));
    assert_eq!(env.validate().unwrap_err().kind, InputErrorKind::InvalidValue);
    let a = w.when(Payload::TransitionSet(TransitionSet {
        household: "H1".into(),
        plan: TransitionPlan { budget_usd: Some(d("100")), keep: vec!["NOPE".into()], ..plan },
    }));
    assert_eq!(a.rejection.unwrap().1.kind, InputErrorKind::UnknownReference);
}
