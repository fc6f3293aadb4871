//! The published audit trail is tamper-evident: `overlay replay audit-verify`
//! passes on what the engine published, and names the exact record when an
//! exported copy has a changed byte, a deleted record or two records swapped.

use overlay_tests::*;
use std::path::Path;

/// `replay audit-verify --file FILE` on `lines`, written to `file`.
fn verify_lines(dir: &Path, file: &Path, lines: &[&str]) -> Run {
    std::fs::write(file, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    overlay(dir, &["replay", "audit-verify", "--file", file.to_str().unwrap()])
}

#[test]
fn audit_verify_passes_on_the_published_trail_and_names_the_record_a_tampered_copy_breaks_at() {
    // given the example day folded and published
    let tmp = tempdir("overlay-audit-chain-");
    let dir = tmp.path().join("data");
    publish_file(&dir, &workspace_root().join("schemas/examples/day.ndjson")).ok();
    overlay(&dir, &["run"]).ok();
    let exported = audit_text(&dir);
    let lines: Vec<&str> = exported.lines().collect();
    assert!(lines.len() > 10, "{} audit records", lines.len());
    // then the trail in the log verifies, and so does an exported copy
    let log = overlay(&dir, &["replay", "audit-verify"]).ok();
    assert!(log.stdout.contains(&format!("audit verify OK: {} audit records", lines.len())), "{}", log.stdout);
    let file = tmp.path().join("audit.jsonl");
    verify_lines(&dir, &file, &lines).ok();

    // when a byte of record 6 changes (a digit of its hash)
    let mut flipped = lines[5].to_string();
    let at = flipped.rfind(|c: char| c.is_ascii_digit()).unwrap();
    let digit = flipped.as_bytes()[at];
    flipped.replace_range(at..=at, &((digit - b'0' + 1) % 10).to_string());
    let mut tampered = lines.clone();
    tampered[5] = &flipped;
    let run = verify_lines(&dir, &file, &tampered).fails();
    // then the break is at line 6, altered
    assert!(run.stderr.contains("audit.jsonl line 6: altered"), "{}", run.stderr);

    // when record 4 is deleted: the break is at line 4 (where record 5 now sits), seq 4 missing
    let mut deleted = lines.clone();
    deleted.remove(3);
    let run = verify_lines(&dir, &file, &deleted).fails();
    assert!(run.stderr.contains("audit.jsonl line 4: missing: audit record seq 5 follows seq 3"), "{}", run.stderr);

    // when records 8 and 9 are swapped: the break is at line 8
    let mut swapped = lines.clone();
    swapped.swap(7, 8);
    let run = verify_lines(&dir, &file, &swapped).fails();
    assert!(run.stderr.contains("audit.jsonl line 8: missing: audit record seq 9 follows seq 7"), "{}", run.stderr);
}

#[test]
fn export_gives_a_households_records_in_a_range_as_json_lines_and_csv_and_refuses_an_empty_selection() {
    // given the example day folded and published
    let tmp = tempdir("overlay-export-");
    let dir = tmp.path().join("data");
    publish_file(&dir, &workspace_root().join("schemas/examples/day.ndjson")).ok();
    overlay(&dir, &["run"]).ok();
    let shown = overlay(&dir, &["orders", "--household", "HH-30562"]).ok().stdout;
    assert!(!shown.is_empty());
    // when its orders of the day are exported as JSON lines: the published records, unchanged
    let day = ["--household", "HH-30562", "--from", "2025-03-14", "--to", "2025-03-14"];
    let jsonl = overlay(&dir, &[&["replay", "export", "orders"][..], &day[..]].concat()).ok();
    assert_eq!(jsonl.stdout, shown);
    // and as CSV: a header and one row per order, order ids first
    let csv = overlay(&dir, &[&["replay", "export", "orders", "--format", "csv"][..], &day[..]].concat()).ok();
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert!(rows[0].starts_with("order_id,seq,household,account"), "{}", rows[0]);
    let ids: Vec<String> = json_lines(&shown).iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect();
    let csv_ids: Vec<&str> = rows[1..].iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(csv_ids, ids);
    // and a range with nothing in it is a clear error
    let later =
        overlay(&dir, &["replay", "export", "audit", "--household", "HH-30562", "--from", "2025-03-15"]).fails();
    assert!(later.stderr.contains("no audit records for household HH-30562 from 2025-03-15"), "{}", later.stderr);
}
