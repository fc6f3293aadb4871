//! Duplicate delivery: the same events delivered twice have effect once.

use overlay_tests::*;
use serde_json::Value;

fn day() -> std::path::PathBuf {
    workspace_root().join("schemas/examples/day.ndjson")
}

fn kinds(audit: &[Value]) -> Vec<String> {
    audit.iter().map(|r| r["body"]["kind"].as_str().unwrap_or("?").to_string()).collect()
}

#[test]
fn duplicate_delivery_is_audited_and_has_no_effect() {
    let tmp = tempdir("overlay-dup-");
    let (once, twice) = (tmp.path().join("once"), tmp.path().join("twice"));
    let events = json_lines(&std::fs::read_to_string(day()).unwrap());

    // Given the day delivered once, and folded.
    publish_file(&once, &day()).ok();
    overlay(&once, &["run"]).ok();
    let orders_once = orders_text(&once);
    assert!(!orders_once.is_empty());
    let audit_once = audit(&once);

    // When the same file is delivered again, before the engine runs.
    publish_file(&twice, &day()).ok();
    publish_file(&twice, &day()).ok();
    let run = overlay(&twice, &["run"]).ok();
    assert!(run.stderr.contains(&format!("folded {} inputs", 2 * events.len())), "{}", run.stderr);
    // Then the orders are exactly those of one delivery.
    if let Some(d) = first_difference(&orders_once, &orders_text(&twice)) {
        panic!("a second delivery changed the orders: {d}");
    }
    // And each second copy is audited as a duplicate of its first, and nothing else.
    let audit_twice = audit(&twice);
    let dups: Vec<&Value> = audit_twice.iter().filter(|r| r["body"]["kind"] == "duplicate").collect();
    assert_eq!(dups.len(), events.len(), "duplicates audited: {:?}", kinds(&audit_twice));
    let mut dup_ids: Vec<&str> = dups.iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    let mut ids: Vec<&str> = events.iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    dup_ids.sort();
    ids.sort();
    assert_eq!(dup_ids, ids, "every event is a duplicate exactly once");
    // first_seq names the input that first applied the event: inputs are
    // numbered by the audit record each one opens (applied, rejected or duplicate).
    let mut input = 0u64;
    let mut applied_at = std::collections::BTreeMap::new();
    for r in &audit_twice {
        let kind = r["body"]["kind"].as_str().unwrap();
        if matches!(kind, "applied" | "rejected" | "duplicate") {
            input += 1;
        }
        let id = r["event_id"].as_str().unwrap_or_default().to_string();
        match kind {
            "applied" => assert!(applied_at.insert(id, input).is_none(), "applied twice: {r}"),
            "duplicate" => {
                assert_eq!(
                    r["body"]["first_seq"].as_u64(),
                    applied_at.get(&id).copied(),
                    "first_seq should name the first delivery: {r}"
                );
                assert!(r["body"]["event_type"].is_string(), "{r}");
            }
            _ => {}
        }
    }
    assert_eq!(input, 2 * events.len() as u64);
    let not_dup: Vec<&Value> = audit_twice.iter().filter(|r| r["body"]["kind"] != "duplicate").collect();
    assert_eq!(not_dup.len(), audit_once.len(), "the second delivery produced other audit records");
    assert!(dead_letters(&twice).is_empty(), "a duplicate is not a dead letter");

    // When the day is delivered a third time, after everything was folded.
    publish_file(&once, &day()).ok();
    let again = overlay(&once, &["run"]).ok();
    assert!(
        again.stderr.contains(&format!("folded {} inputs", events.len())) && again.stderr.contains(" 0 orders"),
        "{}",
        again.stderr
    );
    // Then no order is added, and only duplicate records are.
    assert_eq!(orders_text(&once), orders_once);
    let audit_after = audit(&once);
    assert_eq!(&audit_after[..audit_once.len()], &audit_once[..], "earlier audit records changed");
    let new_kinds = kinds(&audit_after[audit_once.len()..]);
    assert_eq!(new_kinds, vec!["duplicate".to_string(); events.len()]);
    overlay(&once, &["replay", "verify"]).ok();
}
