//! Compliance replay driven as a user would: `replay state --at` against the
//! live state captured while a run advances step by step, `replay verify`
//! over ranges, `replay explain` of an order and of a household's skipped
//! trades, and `replay what-if` with and without a model not yet published.

use overlay_scenario::data::MarketData;
use overlay_scenario::demo::{demo_events, DemoSpec};
use overlay_tests::*;
use serde_json::Value;

#[test]
fn state_at_equals_the_live_state_captured_at_several_points_of_a_run() {
    // given the demo's inputs for 12 households over 2 days, published
    let tmp = tempdir("overlay-replay-state-");
    let dir = tmp.path().join("data");
    let spec = DemoSpec { households: 12, price_days: 2, ..DemoSpec::default() };
    let events = demo_events(&spec, &MarketData::embedded().unwrap()).unwrap();
    publish(&dir, &events).ok();
    let households = ["hh-00001", "hh-00005", "hh-00012"];
    // when the engine folds them 300 inputs at a time, the live state of three households captured after each step
    let mut captured: Vec<(u64, &str, String)> = Vec::new();
    loop {
        let run = overlay(&dir, &["run", "--max-inputs", "300"]).ok();
        if run.stderr.contains("folded 0 inputs") {
            break;
        }
        for h in households {
            let live = overlay(&dir, &["replay", "state", "--household", h]);
            if live.success() {
                let seq = serde_json::from_str::<Value>(&live.stdout).unwrap()["as_of"]["seq"].as_u64().unwrap();
                captured.push((seq, h, live.stdout));
            } else {
                assert!(live.stderr.contains(&format!("household {h} does not exist")), "{}", live.stderr);
            }
        }
    }
    let points: std::collections::BTreeSet<u64> = captured.iter().map(|c| c.0).collect();
    assert!(points.len() >= 4, "captured at {points:?}");
    // then `replay state --at SEQ` shows each household exactly as it was live
    for (seq, h, live) in &captured {
        let at = overlay(&dir, &["replay", "state", "--household", h, "--at", &seq.to_string()]).ok();
        assert_eq!(&at.stdout, live, "household {h} at input {seq}");
    }
    let last: Value = serde_json::from_str(&captured.last().unwrap().2).unwrap();
    let accounts = last["accounts"].as_array().unwrap();
    assert!(accounts.iter().any(|a| a["lots"].as_array().is_some_and(|l| !l.is_empty())), "no lots");
    assert!(accounts.iter().any(|a| a["pending_orders"].as_array().is_some_and(|p| !p.is_empty())), "no open orders");
    // and the journal verifies, whole and in a range
    let n = *points.last().unwrap();
    let all = overlay(&dir, &["replay", "verify", "--quiet"]).ok();
    assert!(all.stdout.starts_with(&format!("replay verify OK: {n} inputs re-folded")), "{}", all.stdout);
    let range = overlay(&dir, &["replay", "verify", "--from", "400", "--to", "900"]).ok();
    assert!(range.stdout.starts_with("replay verify OK: inputs 400..=900 checked (900 re-folded)"), "{}", range.stdout);
    // and a point past the journal is a clear error
    let beyond = overlay(&dir, &["replay", "state", "--household", "hh-00001", "--at", &(n + 1).to_string()]).fails();
    assert!(
        beyond.stderr.contains(&format!("--at {} is beyond the journal, which holds inputs 1..={n}", n + 1)),
        "{}",
        beyond.stderr
    );
}

#[test]
fn explain_names_an_orders_trigger_and_lots_and_what_if_reports_a_new_models_trades() {
    // given the example day folded
    let tmp = tempdir("overlay-replay-explain-");
    let dir = tmp.path().join("data");
    publish_file(&dir, &workspace_root().join("schemas/examples/day.ndjson")).ok();
    overlay(&dir, &["run"]).ok();
    let orders = orders(&dir);
    let sell = orders.iter().find(|o| o["side"] == "sell" && o["security"] == "AAPL").expect("an AAPL sale");
    // when the AAPL sale is explained
    let x = overlay(&dir, &["replay", "explain", "--order", sell["order_id"].as_str().unwrap()]).ok();
    let x: Value = serde_json::from_str(&x.stdout).unwrap();
    // then it names its trigger (the household's onboarding) and the lot it sells from (the one AAPL lot, at a gain)
    assert_eq!(x["trigger"]["event"]["event_id"], "crm-HH-30562-rev1");
    assert_eq!(x["lots"][0]["lot_id"], 1);
    assert_eq!(x["lots"][0]["sold"], sell["quantity"]);
    assert_eq!(x["decision"]["inputs"]["models"]["US-QUALITY-6"], 3);
    assert!(x["tax"]["est_long_term_usd"].as_str().unwrap().parse::<f64>().unwrap() > 0.0, "{}", x["tax"]);
    // and the household's decisions at the end of the day say what was skipped and why
    let h = overlay(&dir, &["replay", "explain", "--household", "HH-30562", "--at", "2025-03-14"]).ok();
    let h: Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(h["decisions"][0]["trigger"]["event"]["event_id"], "clock-market-close-2025-03-14");

    // when what-if replays the day unchanged: nothing differs
    let same = overlay(&dir, &["replay", "what-if", "--quiet"]).ok();
    assert!(same.stdout.contains("total: 0 household(s) differ"), "{}", same.stdout);
    // and with version 4 of the model (XOM dropped for more MSFT) before the close: the household trades differently
    let v4 = r#"{"event_id":"model-desk-us-quality-6-v4","producer":"model-desk","event_time":"2025-03-14T20:10:00Z","schema_version":1,"payload":{"type":"model_published","model":"US-QUALITY-6","version":4,"weights":[{"security":"AAPL","weight":"0.22"},{"security":"MSFT","weight":"0.36"},{"security":"JNJ","weight":"0.18"},{"security":"JPM","weight":"0.12"},{"security":"PG","weight":"0.10"}]}}"#;
    let file = tmp.path().join("v4.json");
    std::fs::write(&file, v4).unwrap();
    let changed = overlay(&dir, &["replay", "what-if", "--quiet", "--model", file.to_str().unwrap()]).ok();
    assert!(changed.stdout.contains("total: 1 household(s) differ"), "{}", changed.stdout);
    assert!(
        changed
            .stdout
            .lines()
            .any(|l| l.contains("+ 2025-03-14 20:10 HH-30562-") && l.contains("buy") && l.contains("MSFT")),
        "{}",
        changed.stdout
    );
    // and nothing was published: the orders are as they were
    assert_eq!(orders_text(&dir).lines().count(), orders.len());
}
