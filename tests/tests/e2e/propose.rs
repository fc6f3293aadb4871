//! `overlay propose`: a household snapshot in, the engine's orders and skipped
//! trades out, and nothing stored or sent.

use overlay_tests::*;
use serde_json::Value;

fn example() -> std::path::PathBuf {
    workspace_root().join("schemas/examples/household_snapshot.json")
}

#[test]
fn propose_prints_the_orders_and_skips_for_a_snapshot_and_touches_no_state() {
    // given the example snapshot and a data directory that does not exist
    let tmp = tempdir("propose");
    let data = tmp.path().join("never-created");
    let file = example();
    // when proposed as JSON
    let run = overlay(&data, &["propose", "--household", file.to_str().unwrap(), "--json"]).ok();
    let doc: Value = serde_json::from_str(&run.stdout).expect("one JSON document");
    // then the orders are those the rules call for: MSFT stands in for AAPL (sold at a
    // loss 9 days ago), JNJ is bought up to its 20% cap; nothing else
    let orders: Vec<(String, String, String, String)> = doc["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let s = |k: &str| o[k].as_str().unwrap().to_string();
            (s("security"), s("side"), s("quantity"), s("reason"))
        })
        .collect();
    let want = [("MSFT", "buy", "64", "replacement"), ("JNJ", "buy", "18", "drift")]
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()));
    assert_eq!(orders, want);
    assert!(doc["orders"][0].get("seq").is_none(), "a proposal's orders have no stream position");
    // and the skipped trades carry their reasons
    let skipped = doc["decisions"][0]["skipped"].as_array().unwrap();
    assert!(skipped.iter().any(|s| s["security"] == "XOM" && s["reason"] == "short_term_deferral"));
    // and nothing was created: no store, no log
    assert!(!data.exists(), "propose created {}", data.display());

    // when proposed as text, from standard input
    let text = overlay_with_stdin(&data, &["propose", "--household", "-"], Some(std::fs::read(&file).unwrap())).ok();
    // then people read the same decision
    for needle in [
        "Proposal for household HH-20417",
        "wash-sale window: 25pp of AAPL to substitute MSFT until 2026-07-11",
        "BUY          64 MSFT",
        "short_term_deferral",
        "restrictions in force: R-ESG-MIN v1, R-JNJ-CAP v2",
        "2 orders;",
        "Nothing was sent.",
    ] {
        assert!(text.stdout.contains(needle), "missing {needle:?} in:\n{}", text.stdout);
    }
}

#[test]
fn propose_refuses_a_bad_snapshot_with_the_culprit_named() {
    // given the example with a lot in a security the snapshot does not list
    let tmp = tempdir("propose-bad");
    let bad = std::fs::read_to_string(example()).unwrap().replacen(
        "\"security\": \"XOM\", \"quantity\"",
        "\"security\": \"TSLA\", \"quantity\"",
        1,
    );
    assert!(bad.contains("TSLA"));
    // when proposed
    let run = overlay_with_stdin(tmp.path(), &["propose", "--household", "-"], Some(bad.into_bytes())).fails();
    // then it fails with a message naming the account and the security
    assert!(run.stderr.contains("unknown_reference"), "{}", run.stderr);
    assert!(run.stderr.contains("account HH-20417-TAXABLE lot of TSLA"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}
