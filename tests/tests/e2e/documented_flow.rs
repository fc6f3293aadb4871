//! The documented flow: publish `schemas/examples/day.ndjson`, run, read the
//! orders and the audit trail, verify by replay, restart without effect.

use overlay_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;

const HOUSEHOLD: &str = "HH-30562";

/// Checks the hash chains of `records`: within each stream, stream_seq counts
/// up from 1 and each record's prev_hash is the previous record's hash.
/// Returns the number of records per stream.
#[track_caller]
fn check_chains(records: &[Value]) -> BTreeMap<String, u64> {
    let mut heads: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut all_hashes = std::collections::BTreeSet::new();
    for r in records {
        let stream = r["stream"].as_str().expect("stream").to_string();
        let hash = r["hash"].as_str().expect("hash").to_string();
        let prev = r["prev_hash"].as_str().expect("prev_hash").to_string();
        assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "hash is not SHA-256 hex: {r}");
        assert!(all_hashes.insert(hash.clone()), "hash repeated: {r}");
        let seq = r["stream_seq"].as_u64().expect("stream_seq");
        match heads.get(&stream) {
            None => {
                assert_eq!(seq, 1, "stream {stream} does not start at 1: {r}");
                assert!(!all_hashes.contains(&prev), "the first record of {stream} links to another record: {r}");
            }
            Some((last_seq, last_hash)) => {
                assert_eq!(seq, last_seq + 1, "stream {stream} skips: {r}");
                assert_eq!(&prev, last_hash, "stream {stream} is broken at stream_seq {seq}");
            }
        }
        heads.insert(stream, (seq, hash));
    }
    heads.into_iter().map(|(s, (n, _))| (s, n)).collect()
}

#[test]
fn documented_flow_day_ndjson() {
    let tmp = tempdir("overlay-flow-");
    let dir = tmp.path().join("data");
    let day = workspace_root().join("schemas/examples/day.ndjson");
    // Given the example day, and the same household under a second id, so that filters have something to leave out.
    let pub1 = publish_file(&dir, &day).ok();
    assert!(pub1.stderr.contains("published 15 events"), "{}", pub1.stderr);
    let text = std::fs::read_to_string(&day).unwrap();
    let twin = text.lines().find(|l| l.contains("\"household_upserted\"")).unwrap().replace(HOUSEHOLD, "HH-TWIN");
    publish_text(&dir, &[], &twin).ok();

    // When the engine runs.
    let run = overlay(&dir, &["run"]).ok();
    assert!(run.stderr.contains("folded 16 inputs"), "{}", run.stderr);

    // Then the household has orders, and the filter prints only its own.
    let all = orders(&dir);
    let mine = overlay(&dir, &["orders", "--household", HOUSEHOLD]).ok().json_lines();
    assert!(!mine.is_empty(), "no orders for {HOUSEHOLD}");
    assert!(mine.iter().all(|o| o["household"] == HOUSEHOLD), "the filter let other households through");
    assert!(all.iter().any(|o| o["household"] == "HH-TWIN"), "the twin household got no orders");
    assert_eq!(
        mine.len(),
        all.iter().filter(|o| o["household"] == HOUSEHOLD).count(),
        "the filter dropped some of its orders"
    );
    assert!(overlay(&dir, &["orders", "--household", "HH-NOBODY"]).ok().stdout.is_empty());
    for o in &mine {
        for field in [
            "order_id",
            "seq",
            "account",
            "security",
            "side",
            "quantity",
            "ref_price",
            "reason",
            "cause_event_id",
            "decided_at",
        ] {
            assert!(!o[field].is_null(), "order without {field}: {o}");
        }
        assert!(o["account"].as_str().unwrap().starts_with(HOUSEHOLD), "{o}");
    }
    // The taxable account holds AAPL bought in 2022 at 148.90: a sell says which lots it relieves.
    assert!(
        mine.iter().any(|o| o["side"] == "sell" && o["lots"].as_array().is_some_and(|l| !l.is_empty())),
        "no sell with lots: {mine:#?}"
    );

    // And the household's audit trail is one linked hash chain.
    let trail = overlay(&dir, &["audit", "--household", HOUSEHOLD]).ok().json_lines();
    assert!(!trail.is_empty());
    assert!(trail.iter().all(|r| r["household"] == HOUSEHOLD), "the audit filter let other households through");
    let streams = check_chains(&trail);
    assert_eq!(streams.keys().collect::<Vec<_>>(), [&format!("household/{HOUSEHOLD}")], "{streams:?}");
    assert!(trail.iter().any(|r| r["body"]["kind"] == "decision"), "no decision audited");
    // As is every stream of the whole trail.
    let everything = audit(&dir);
    let streams = check_chains(&everything);
    assert!(streams.contains_key("reference") && streams.len() == 3, "{streams:?}");
    let seqs: Vec<u64> = everything.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=everything.len() as u64).collect::<Vec<_>>(), "audit seq is not gap-free");

    // And replay verifies.
    let verify = overlay(&dir, &["replay", "verify"]).ok();
    assert!(verify.stdout.contains("replay verify OK: 16 inputs"), "{}", verify.stdout);

    // When the engine runs again on the same data, then nothing new comes out.
    let outputs = (orders_text(&dir), audit_text(&dir), dead_letters_text(&dir));
    let offsets = end_offsets(&dir);
    let again = overlay(&dir, &["run"]).ok();
    assert!(again.stderr.contains("folded 0 inputs"), "{}", again.stderr);
    assert_eq!(end_offsets(&dir), offsets, "a restart changed the log");
    assert_eq!((orders_text(&dir), audit_text(&dir), dead_letters_text(&dir)), outputs);
    let status = overlay(&dir, &["status"]).ok().stdout;
    assert!(status.contains("applied 16 inputs"), "{status}");
    for line in status.lines().filter(|l| l.starts_with("overlay.")) {
        assert!(line.trim_end().ends_with(" 0"), "lag left after a full run: {line}");
    }
}
