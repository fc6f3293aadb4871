//! Given / when / then for proposals from a household snapshot: the snapshot
//! decides exactly as the live engine does for the household the same events
//! built, and bad snapshots are refused with a message naming the culprit.

use crate::event::{decode_json, ClockKind, InputErrorKind, Side};
use crate::fold::{decide, step, Input};
use crate::output::{AuditBody, Order, OrderReason, SkipReason};
use crate::snapshot::{HouseholdSnapshot, Proposal, PROPOSAL_EVENT_ID};
use crate::state::State;
use rust_decimal::Decimal;
use std::str::FromStr;

const SNAPSHOT: &str = include_str!("../../../schemas/examples/household_snapshot.json");

/// The history that leaves household HH-20417 as the snapshot describes it:
/// set up before any price is known (so nothing is traded), an AAPL lot sold
/// at a loss from outside on 2026-06-10, JNJ bought from outside on
/// 2026-06-15, the JNJ cap tightened (version 2), then the day's closes.
const HISTORY: &str = r#"
{"event_id":"s1","producer":"t","event_time":"2026-01-02T11:00:00Z","schema_version":1,"payload":{"type":"security_upserted","security":"AAPL","name":"Apple Inc.","sector":"Information Technology","sub_industry":"Technology Hardware, Storage & Peripherals","substitutes":["MSFT"]}}
{"event_id":"s2","producer":"t","event_time":"2026-01-02T11:00:00Z","schema_version":1,"payload":{"type":"security_upserted","security":"MSFT","name":"Microsoft Corporation","sector":"Information Technology","sub_industry":"Systems Software"}}
{"event_id":"s3","producer":"t","event_time":"2026-01-02T11:00:00Z","schema_version":1,"payload":{"type":"security_upserted","security":"XOM","name":"Exxon Mobil Corporation","sector":"Energy","sub_industry":"Integrated Oil & Gas","substitutes":["CVX"]}}
{"event_id":"s4","producer":"t","event_time":"2026-01-02T11:00:00Z","schema_version":1,"payload":{"type":"security_upserted","security":"CVX","name":"Chevron Corporation","sector":"Energy","sub_industry":"Integrated Oil & Gas"}}
{"event_id":"s5","producer":"t","event_time":"2026-01-02T11:00:00Z","schema_version":1,"payload":{"type":"security_upserted","security":"JNJ","name":"Johnson & Johnson","sector":"Health Care","sub_industry":"Pharmaceuticals","substitutes":["PFE"]}}
{"event_id":"s6","producer":"t","event_time":"2026-01-02T11:00:00Z","schema_version":1,"payload":{"type":"security_upserted","security":"PFE","name":"Pfizer Inc.","sector":"Health Care","sub_industry":"Pharmaceuticals"}}
{"event_id":"m1","producer":"t","event_time":"2026-01-02T12:00:00Z","schema_version":1,"payload":{"type":"model_published","model":"US-CORE-5","version":3,"weights":[{"security":"AAPL","weight":"0.25"},{"security":"MSFT","weight":"0.20"},{"security":"XOM","weight":"0.15"},{"security":"CVX","weight":"0.15"},{"security":"JNJ","weight":"0.23"}]}}
{"event_id":"e1","producer":"t","event_time":"2026-01-02T12:00:00Z","schema_version":1,"payload":{"type":"esg_score_changed","security":"CVX","provider":"msci","score":"25","as_of":"2026-01-01T22:00:00Z"}}
{"event_id":"h1","producer":"t","event_time":"2026-01-02T13:00:00Z","schema_version":1,"payload":{"type":"household_upserted","household":"HH-20417","tax":{"short_term_rate":"0.37","long_term_rate":"0.20","annual_gain_budget_usd":"25000","short_term_deferral_days":30,"harvest":{"enabled":true,"min_loss_pct":"0.10","min_loss_usd":"500","swap_back":true}},"accounts":[{"account":"HH-20417-TAXABLE","kind":"taxable","sleeves":[{"model":"US-CORE-5","percent":"1"}],"opening_cash":"15000","opening_lots":[{"security":"AAPL","quantity":"100","cost_per_share":"230","acquired":"2024-03-01"},{"security":"XOM","quantity":"300","cost_per_share":"80","acquired":"2025-07-05"},{"security":"JNJ","quantity":"60","cost_per_share":"180","acquired":"2023-02-01"},{"security":"MSFT","quantity":"30","cost_per_share":"300","acquired":"2022-05-01"}]}],"restrictions":[{"restriction_id":"R-ESG-MIN","rule":{"kind":"esg_minimum","min_score":"30","mode":"no_new_buys"},"effective":"2026-01-02T14:30:00Z"},{"restriction_id":"R-JNJ-CAP","rule":{"kind":"max_weight","security":"JNJ","max_weight":"0.25"},"effective":"2026-01-02T14:30:00Z"}]}}
{"event_id":"r1","producer":"t","event_time":"2026-03-01T13:00:00Z","schema_version":1,"payload":{"type":"restriction_edited","household":"HH-20417","restriction_id":"R-JNJ-CAP","op":"change","rule":{"kind":"max_weight","security":"JNJ","max_weight":"0.20"},"effective":"2026-03-02T14:30:00Z"}}
{"event_id":"f1","producer":"t","event_time":"2026-06-10T20:00:00Z","schema_version":1,"payload":{"type":"fill","household":"HH-20417","account":"HH-20417-TAXABLE","security":"AAPL","side":"sell","status":"filled","quantity":"100","price":"185","trade_date":"2026-06-10"}}
{"event_id":"f2","producer":"t","event_time":"2026-06-15T20:00:00Z","schema_version":1,"payload":{"type":"fill","household":"HH-20417","account":"HH-20417-TAXABLE","security":"JNJ","side":"buy","status":"filled","quantity":"20","price":"150","trade_date":"2026-06-15"}}
{"event_id":"p1","producer":"t","event_time":"2026-06-19T20:00:00Z","schema_version":1,"payload":{"type":"price_tick","security":"AAPL","price":"190","as_of":"2026-06-19T20:00:00Z"}}
{"event_id":"p2","producer":"t","event_time":"2026-06-19T20:00:00Z","schema_version":1,"payload":{"type":"price_tick","security":"MSFT","price":"420","as_of":"2026-06-19T20:00:00Z"}}
{"event_id":"p3","producer":"t","event_time":"2026-06-19T20:00:00Z","schema_version":1,"payload":{"type":"price_tick","security":"XOM","price":"110","as_of":"2026-06-19T20:00:00Z"}}
{"event_id":"p4","producer":"t","event_time":"2026-06-19T20:00:00Z","schema_version":1,"payload":{"type":"price_tick","security":"CVX","price":"150","as_of":"2026-06-19T20:00:00Z"}}
{"event_id":"p5","producer":"t","event_time":"2026-06-19T20:00:00Z","schema_version":1,"payload":{"type":"price_tick","security":"JNJ","price":"150","as_of":"2026-06-19T20:00:00Z"}}
{"event_id":"p6","producer":"t","event_time":"2026-06-19T20:00:00Z","schema_version":1,"payload":{"type":"price_tick","security":"PFE","price":"28","as_of":"2026-06-19T20:00:00Z"}}
"#;

fn snapshot() -> HouseholdSnapshot {
    HouseholdSnapshot::from_json(SNAPSHOT.as_bytes()).expect("the example snapshot decodes")
}

fn live_state() -> State {
    let mut state = State::default();
    for line in HISTORY.lines().filter(|l| !l.trim().is_empty()) {
        let env = decode_json(line.as_bytes()).expect("history events are valid");
        let applied = step(&mut state, Input::Event(&env));
        assert!(applied.rejection.is_none(), "{} refused: {:?}", env.event_id, applied.rejection);
        assert!(applied.orders.is_empty(), "{} traded before the day's prices", env.event_id);
    }
    state
}

/// What the live engine decides on the snapshot's clock event.
fn live_proposal(state: &State, s: &HouseholdSnapshot) -> Proposal {
    let clock = decode_json(
        serde_json::json!({
            "event_id": PROPOSAL_EVENT_ID, "producer": "propose", "event_time": s.as_of, "schema_version": 1,
            "payload": {"type": "clock", "kind": s.clock, "trade_date": s.trade_date()}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    s.proposal(decide(state, Input::Event(&clock)))
}

/// The decision records without the state version (the live state has
/// applied its history; a snapshot's state has applied nothing).
fn without_state_version(mut p: Proposal) -> Proposal {
    for b in &mut p.decisions {
        if let AuditBody::Decision { inputs, .. } = b {
            inputs.state_version = 0;
        }
    }
    p
}

fn order<'a>(p: &'a Proposal, sec: &str, side: Side) -> Option<&'a Order> {
    p.orders.iter().find(|o| o.security.as_str() == sec && o.side == side)
}

fn rules(p: &Proposal) -> Vec<String> {
    p.decisions
        .iter()
        .flat_map(|b| match b {
            AuditBody::Decision { rules, .. } => rules.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn skip_reasons(p: &Proposal, sec: &str, side: Side) -> Vec<SkipReason> {
    p.decisions
        .iter()
        .flat_map(|b| match b {
            AuditBody::Decision { skipped, .. } => skipped.clone(),
            _ => Vec::new(),
        })
        .filter(|s| s.security.as_str() == sec && s.side == side)
        .map(|s| s.reason)
        .collect()
}

#[test]
fn a_snapshot_proposes_exactly_what_the_live_engine_decides_for_the_same_household() {
    // given the household built by events, and the snapshot an advisor's system holds of it
    let state = live_state();
    let s = snapshot();
    // when both decide the market close
    let live = without_state_version(live_proposal(&state, &s));
    let proposed = without_state_version(s.propose().expect("the example snapshot is valid"));
    // then the orders and the decision records are the same, byte for byte
    assert!(!proposed.orders.is_empty(), "the example calls for trades");
    assert_eq!(serde_json::to_string(&proposed).unwrap(), serde_json::to_string(&live).unwrap());
}

#[test]
fn a_proposal_honours_wash_windows_deferral_screens_and_restriction_versions() {
    // given the example: AAPL sold at a loss 9 days ago, JNJ bought 4 days ago,
    // an XOM lot turning long-term in 16 days, CVX below the ESG minimum, JNJ capped (version 2)
    let p = snapshot().propose().unwrap();
    // then AAPL is not bought back inside its wash window: its substitute stands in
    assert!(order(&p, "AAPL", Side::Buy).is_none());
    assert!(rules(&p).iter().any(|r| r == "wash-sale window: 25pp of AAPL to substitute MSFT until 2026-07-11"));
    let msft = order(&p, "MSFT", Side::Buy).expect("MSFT bought for AAPL");
    assert_eq!(msft.reason, OrderReason::Replacement);
    // and the JNJ loss lot is not harvested four days after a JNJ purchase
    assert!(order(&p, "JNJ", Side::Sell).is_none());
    assert!(order(&p, "PFE", Side::Buy).is_none());
    assert!(rules(&p).iter().any(|r| r.starts_with("harvest: JNJ lots lose $1800 but JNJ was bought within 30 days")));
    // and the overweight XOM lot waits the 16 days to long-term
    assert!(order(&p, "XOM", Side::Sell).is_none());
    assert!(skip_reasons(&p, "XOM", Side::Sell).contains(&SkipReason::ShortTermDeferral));
    // and CVX (ESG 25 < 30) is not bought: its weight goes to its sector (XOM)
    assert!(order(&p, "CVX", Side::Buy).is_none());
    assert!(rules(&p).iter().any(|r| r == "redistribute: 15pp of CVX pro rata to its sector"));
    // and the decision names the restriction versions in force
    let AuditBody::Decision { inputs, .. } = &p.decisions[0] else { panic!("a decision record") };
    assert_eq!(inputs.restrictions.get(&"R-JNJ-CAP".into()), Some(&2));
    assert_eq!(inputs.models.get(&"US-CORE-5".into()), Some(&3));
    // and every order is decided at the snapshot's time, caused by the proposal
    assert!(p.orders.iter().all(|o| o.cause_event_id == PROPOSAL_EVENT_ID && o.decided_at == snapshot().as_of));
}

#[test]
fn a_review_proposal_does_not_harvest_and_targets_work_without_a_model() {
    // given the example as a review (not a market close), its sleeve replaced by direct targets
    let mut s = snapshot();
    s.clock = ClockKind::Review;
    let model = s.models.remove(0);
    s.accounts[0].sleeves.clear();
    s.accounts[0].targets = model.weights;
    // when proposed
    let p = s.propose().unwrap();
    // then no harvest is considered
    assert!(!rules(&p).iter().any(|r| r.starts_with("harvest")));
    // and the targets steer the account as the model did
    assert!(order(&p, "MSFT", Side::Buy).is_some());
    let AuditBody::Decision { inputs, .. } = &p.decisions[0] else { panic!("a decision record") };
    assert_eq!(inputs.models.keys().map(|m| m.as_str()).collect::<Vec<_>>(), ["targets:HH-20417-TAXABLE"]);
}

#[test]
fn once_the_wash_window_has_passed_the_security_is_bought_again() {
    // given the example 30 days after the AAPL loss sale: still inside the window
    let mut s = snapshot();
    s.as_of = "2026-07-10T21:00:00Z".parse().unwrap();
    assert!(order(&s.propose().unwrap(), "AAPL", Side::Buy).is_none());
    // given the example 31 days after the AAPL loss sale
    s.trade_date = Some(chrono::NaiveDate::from_ymd_opt(2026, 7, 11).unwrap());
    s.as_of = "2026-07-11T21:00:00Z".parse().unwrap();
    // when proposed
    let p = s.propose().unwrap();
    // then AAPL is bought, not its substitute
    assert!(order(&p, "AAPL", Side::Buy).is_some());
    assert!(!rules(&p).iter().any(|r| r.starts_with("wash-sale window")));
}

/// A defect: its name, the edit that makes it, the error kind, a word the message must hold.
type Defect = (&'static str, Box<dyn Fn(&mut serde_json::Value)>, InputErrorKind, &'static str);

#[test]
fn bad_snapshots_are_refused_with_the_culprit_named() {
    let cases: Vec<Defect> = vec![
        ("unknown field", Box::new(|v| v["accounts"][0]["colour"] = "red".into()), InputErrorKind::Malformed, "colour"),
        (
            "unlisted security in a lot",
            Box::new(|v| v["accounts"][0]["lots"][0]["security"] = "TSLA".into()),
            InputErrorKind::UnknownReference,
            "TSLA",
        ),
        ("negative price", Box::new(|v| v["prices"]["XOM"] = "-1".into()), InputErrorKind::InvalidValue, "prices.XOM"),
        (
            "sleeve on an unknown model",
            Box::new(|v| v["accounts"][0]["sleeves"][0]["model"] = "NOPE".into()),
            InputErrorKind::UnknownReference,
            "NOPE",
        ),
        (
            "sleeves and targets both",
            Box::new(|v| v["accounts"][0]["targets"] = serde_json::json!([{"security": "XOM", "weight": "1"}])),
            InputErrorKind::InvalidValue,
            "not both",
        ),
        (
            "a lot id twice",
            Box::new(|v| v["accounts"][0]["lots"][1]["lot_id"] = 2.into()),
            InputErrorKind::InvalidValue,
            "lot id 2",
        ),
        (
            "a sell without its basis",
            Box::new(|v| {
                v["recent_trades"][0].as_object_mut().unwrap().remove("cost_per_share");
            }),
            InputErrorKind::InvalidValue,
            "recent_trades[0]",
        ),
        (
            "a trade after the proposal",
            Box::new(|v| v["recent_trades"][1]["trade_date"] = "2026-06-22".into()),
            InputErrorKind::InvalidValue,
            "after the proposal",
        ),
        (
            "a buy naming a lot not held",
            Box::new(|v| v["recent_trades"][1]["lot_id"] = 9.into()),
            InputErrorKind::UnknownReference,
            "lot 9",
        ),
        (
            "model weights over 1",
            Box::new(|v| v["models"][0]["weights"][0]["weight"] = "0.9".into()),
            InputErrorKind::InvalidValue,
            "US-CORE-5",
        ),
        (
            "a tax rate over 1",
            Box::new(|v| v["tax"]["short_term_rate"] = "1.5".into()),
            InputErrorKind::InvalidValue,
            "short_term_rate",
        ),
    ];
    for (name, edit, kind, needle) in cases {
        // given the example with one defect
        let mut v: serde_json::Value = serde_json::from_str(SNAPSHOT).unwrap();
        edit(&mut v);
        // when proposed
        let err = HouseholdSnapshot::from_json(v.to_string().as_bytes()).and_then(|s| s.propose()).unwrap_err();
        // then it is refused with the right kind and a message naming the culprit
        assert_eq!(err.kind, kind, "{name}: {err}");
        assert!(err.message.contains(needle), "{name}: {err}");
    }
}

#[test]
fn realized_gains_this_year_count_against_the_budget() {
    // given the example with the year's budget already used up by realized gains
    let mut s = snapshot();
    s.clock = ClockKind::Review;
    s.tax.short_term_deferral_days = 0;
    let base = s.propose().unwrap();
    assert!(order(&base, "XOM", Side::Sell).is_some(), "without deferral the overweight XOM is trimmed");
    s.realized_this_year.long_term_usd = Decimal::from_str("25000").unwrap();
    // when proposed
    let p = s.propose().unwrap();
    // then the discretionary XOM gain is not realized
    assert!(order(&p, "XOM", Side::Sell).is_none());
    assert!(skip_reasons(&p, "XOM", Side::Sell).contains(&SkipReason::TaxBudget));
}
