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
