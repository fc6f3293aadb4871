//! Small hand-built histories whose right answers are derived by hand in
//! the tests (explain, what-if), folded through the engine's own folder.

use crate::tests::fills;
use overlay_core::event::Envelope;
use overlay_core::fold::Input;
use overlay_core::output::Order;
use overlay_core::state::EngineSettings;
use overlay_store::{Folder, MemStore};
use serde_json::{json, Value};

pub(crate) fn ev(id: &str, time: &str, payload: Value) -> Envelope {
    serde_json::from_value(json!({
        "event_id": id, "producer": "test", "event_time": time, "schema_version": 1, "payload": payload
    }))
    .unwrap_or_else(|e| panic!("event {id}: {e}"))
}

pub(crate) fn security(id: &str, sector: &str, n: u32) -> Envelope {
    ev(
        &format!("sec-{id}"),
        &format!("2025-06-02T11:00:0{n}Z"),
        json!({"type": "security_upserted", "security": id, "sector": sector}),
    )
}

pub(crate) fn model(version: u64, time: &str, weights: &[(&str, &str)]) -> Envelope {
    let weights: Vec<Value> = weights.iter().map(|(s, w)| json!({"security": s, "weight": w})).collect();
    ev(
        &format!("model-M-v{version}"),
        time,
        json!({"type": "model_published", "model": "M", "version": version, "weights": weights}),
    )
}

pub(crate) fn tick(sec: &str, price: &str, time: &str) -> Envelope {
    ev(
        &format!("tick-{sec}-{time}"),
        time,
        json!({"type": "price_tick", "security": sec, "price": price, "as_of": time}),
    )
}

/// Day 1 (2025-06-02), by hand:
/// - AAA and BBB (Information Technology), CCC (Health Care); model M v1 = AAA 50%, BBB 50%;
///   closes AAA $100, BBB $50, CCC $20.
/// - H1, taxable, follows M, no cash; AAA lots #1 100 @ $80 (2020-01-02, long-term gain),
///   #2 100 @ $120 (2024-12-02, short-term loss), #3 100 @ $90 (2025-01-02, short-term
///   gain); BBB #4 400 @ $50. Value $50,000: AAA 60%, BBB 40%. Rule R1: do not buy CCC.
/// - H2, the same but AAA #1 300 @ $60 (2020-01-02) and an annual gain budget of $0.
pub(crate) fn day1() -> Vec<Envelope> {
    let lot =
        |s: &str, q: &str, c: &str, d: &str| json!({"security": s, "quantity": q, "cost_per_share": c, "acquired": d});
    let account = |a: &str, lots: Vec<Value>| json!({"account": a, "kind": "taxable", "sleeves": [{"model": "M", "percent": "1"}], "opening_cash": "0", "opening_lots": lots});
    vec![
        security("AAA", "Information Technology", 1),
        security("BBB", "Information Technology", 2),
        security("CCC", "Health Care", 3),
        model(1, "2025-06-02T12:00:00Z", &[("AAA", "0.5"), ("BBB", "0.5")]),
        tick("AAA", "100", "2025-06-02T20:00:00Z"),
        tick("BBB", "50", "2025-06-02T20:00:00Z"),
        tick("CCC", "20", "2025-06-02T20:00:00Z"),
        ev(
            "crm-H1",
            "2025-06-02T20:05:00Z",
            json!({
                "type": "household_upserted", "household": "H1",
                "tax": {"short_term_rate": "0.35", "long_term_rate": "0.15"},
                "accounts": [account("H1-T", vec![
                    lot("AAA", "100", "80", "2020-01-02"), lot("AAA", "100", "120", "2024-12-02"),
                    lot("AAA", "100", "90", "2025-01-02"), lot("BBB", "400", "50", "2024-01-02")])],
                "restrictions": [{"restriction_id": "R1", "rule": {"kind": "do_not_buy", "security": "CCC"}, "effective": "2025-06-01T00:00:00Z"}]
            }),
        ),
        ev(
            "crm-H2",
            "2025-06-02T20:06:00Z",
            json!({
                "type": "household_upserted", "household": "H2",
                "tax": {"short_term_rate": "0.35", "long_term_rate": "0.15", "annual_gain_budget_usd": "0"},
                "accounts": [account("H2-T", vec![lot("AAA", "300", "60", "2020-01-02"), lot("BBB", "400", "50", "2024-01-02")])]
            }),
        ),
    ]
}

/// Day 2 (2025-06-03): model M v2 = AAA 40%, BBB 30%, CCC 30% at noon; closes unchanged.
pub(crate) fn day2() -> Vec<Envelope> {
    vec![
        model(2, "2025-06-03T12:00:00Z", &[("AAA", "0.4"), ("BBB", "0.3"), ("CCC", "0.3")]),
        tick("AAA", "100.5", "2025-06-03T20:00:00Z"),
        tick("BBB", "50", "2025-06-03T20:00:00Z"),
        tick("CCC", "20", "2025-06-03T20:00:00Z"),
    ]
}

/// Folds the days through a folder, the test custodian filling each day's
/// orders after the day's events; returns the folder and every order made.
pub(crate) fn run(days: &[(chrono::NaiveDate, Vec<Envelope>)]) -> (Folder, Vec<Order>) {
    let mut folder = Folder::open(Box::new(MemStore::new()), EngineSettings::default()).unwrap();
    let mut all = Vec::new();
    let feed = |folder: &mut Folder, env: &Envelope| -> Vec<Order> {
        let raw = overlay_proto::encode_envelope(env);
        let decoded = overlay_proto::decode_envelope(&raw).expect("test events decode");
        let n = folder.state().meta.applied;
        let applied = folder.fold(&format!("test/0/{n}"), Some(("test/0", n + 1)), &raw, Input::Event(&decoded));
        assert!(applied.rejection.is_none(), "{} refused: {:?}", env.event_id, applied.rejection);
        applied.orders
    };
    for (date, events) in days {
        let mut orders = Vec::new();
        for env in events {
            orders.extend(feed(&mut folder, env));
        }
        for env in fills(&orders, *date, 0) {
            feed(&mut folder, &env);
        }
        all.extend(orders);
    }
    folder.commit_all().unwrap();
    (folder, all)
}

pub(crate) fn date(s: &str) -> chrono::NaiveDate {
    s.parse().unwrap()
}

/// A history for what-if, by hand:
/// - day 1 (2025-06-02): AAA, BBB (Information Technology), CCC (Health Care); model M v1 =
///   AAA 50%, BBB 50%; closes $100, $50, $20; H3 (taxable, follows M) opens with $100,000 and
///   buys 49.5% each (1% cash reserve): 495 AAA and 990 BBB, filled, $1,000 left;
/// - day 2 (2025-06-03): closes AAA $80, BBB $60, CCC $20: H3 is worth 39,600 + 59,400 +
///   1,000 = $100,000, AAA 39.6%, BBB 59.4%, both outside their 3pp bands... but no
///   decision runs that day (no clock), so nothing trades.
pub(crate) fn what_if_history() -> Vec<(chrono::NaiveDate, Vec<Envelope>)> {
    let day1 = vec![
        security("AAA", "Information Technology", 1),
        security("BBB", "Information Technology", 2),
        security("CCC", "Health Care", 3),
        model(1, "2025-06-02T12:00:00Z", &[("AAA", "0.5"), ("BBB", "0.5")]),
        tick("AAA", "100", "2025-06-02T20:00:00Z"),
        tick("BBB", "50", "2025-06-02T20:00:00Z"),
        tick("CCC", "20", "2025-06-02T20:00:00Z"),
        ev(
            "crm-H3",
            "2025-06-02T20:05:00Z",
            json!({
                "type": "household_upserted", "household": "H3",
                "tax": {"short_term_rate": "0.35", "long_term_rate": "0.15"},
                "accounts": [{"account": "H3-T", "kind": "taxable", "sleeves": [{"model": "M", "percent": "1"}], "opening_cash": "100000"}]
            }),
        ),
    ];
    let day2 = vec![
        tick("AAA", "80", "2025-06-03T20:00:00Z"),
        tick("BBB", "60", "2025-06-03T20:00:00Z"),
        tick("CCC", "20", "2025-06-03T20:00:00Z"),
    ];
    vec![(date("2025-06-02"), day1), (date("2025-06-03"), day2)]
}
