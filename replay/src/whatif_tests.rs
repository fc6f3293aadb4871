//! What-if, given / when / then: unchanged it reports nothing; a model not
//! yet published reports exactly the trades derived by hand.

use crate::golden::{model, run, what_if_history};
use crate::tests::live_run;
use crate::whatif::{what_if, Change, Override, Realized};
use overlay_core::event::Side;
use overlay_core::ids::HouseholdId;
use overlay_core::output::OrderReason;
use rust_decimal::Decimal;

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn an_unchanged_history_differs_in_nothing() {
    // given a live run of the demo (its custodian rejects every 7th order; one input is garbage)
    let run = live_run(6, 2);
    // when it is replayed unchanged
    let report = what_if(run.folder.store(), &Change::default(), &mut |_, _| {}).unwrap();
    // then no household differs, every recorded fill is used and none simulated
    assert_eq!(report.households, vec![]);
    assert_eq!((report.total.households, report.total.only_baseline, report.total.only_what_if), (0, 0, 0));
    assert_eq!((report.simulated_fills, report.dropped_fills), (0, 0));
    assert_eq!(report.total.baseline, report.total.what_if);
    assert!(report.total.baseline.realized_usd != Decimal::ZERO, "the demo realizes gains or losses");
}

#[test]
fn a_model_not_yet_published_makes_exactly_the_trades_derived_by_hand() {
    // given the what-if history (H3 holds 495 AAA at $80, 990 BBB at $60 and $1,000: $100,000)
    let (folder, _) = run(&what_if_history());
    // when model M v2 = AAA 50%, CCC 50% is added at 20:10 on day 2, after the closes
    let v2 = model(2, "2025-06-03T20:10:00Z", &[("AAA", "0.5"), ("CCC", "0.5")]);
    let change = Change { events: vec![v2], overrides: vec![] };
    let report = what_if(folder.store(), &change, &mut |_, _| {}).unwrap();
    // then H3 alone differs, by three trades the recorded history did not make:
    // BBB leaves the model: its 59.4% (59,400 / 60) is sold, 990 shares, gaining $10 each;
    // CCC is bought to 49.5%: $49,500 / $20 = 2,475; AAA from 39.6% to 49.5%: $9,900 wanted,
    // and the cash left (1,000 + 59,400 − 1,000 reserve − 49,500 = $9,900) buys 9,900 / 80 = 123.75 → 123
    assert_eq!(report.households.len(), 1);
    let h = &report.households[0];
    assert_eq!(h.household, HouseholdId::new("H3"));
    assert_eq!(h.only_baseline, vec![]);
    let trades: Vec<(&str, Side, Decimal, OrderReason)> =
        h.only_what_if.iter().map(|o| (o.security.as_str(), o.side, o.quantity, o.reason)).collect();
    let mut expected = vec![
        ("BBB", Side::Sell, d("990"), OrderReason::ModelChange),
        ("CCC", Side::Buy, d("2475"), OrderReason::ModelChange),
        ("AAA", Side::Buy, d("123"), OrderReason::ModelChange),
    ];
    let mut got = trades.clone();
    got.sort_by_key(|t| t.0);
    expected.sort_by_key(|t| t.0);
    assert_eq!(got, expected);
    // the sale realizes 990 × $10 = $9,900 (short term); the recorded history realized nothing
    assert_eq!(h.baseline, Realized::default());
    assert_eq!(h.what_if, Realized { realized_usd: d("9900"), harvested_loss_usd: d("0") });
    assert_eq!((report.total.households, report.total.only_what_if, report.simulated_fills), (1, 3, 3));
    assert_eq!(report.added, 1);
}

#[test]
fn a_tax_budget_of_zero_keeps_the_gain_and_so_the_cash_for_the_buys() {
    // given the same history and model, and a $0 annual gain budget for H3
    let (folder, _) = run(&what_if_history());
    let v2 = model(2, "2025-06-03T20:10:00Z", &[("AAA", "0.5"), ("CCC", "0.5")]);
    let budget = Override::parse("tax.annual_gain_budget_usd=0", Some(HouseholdId::new("H3"))).unwrap();
    let change = Change { events: vec![v2], overrides: vec![budget] };
    let report = what_if(folder.store(), &change, &mut |_, _| {}).unwrap();
    // then the BBB sale (a $9,900 gain) is dropped, and with $1,000 cash less the $1,000 reserve
    // nothing can be bought: no trade differs, and nothing is realized
    assert_eq!(report.households, vec![]);
    // and a setting that does not exist is refused
    let bad = Override::parse("tax.no_such_field=1", None).unwrap();
    let err = what_if(folder.store(), &Change { events: vec![], overrides: vec![bad] }, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("tax.no_such_field: unknown field"), "{err}");
}
