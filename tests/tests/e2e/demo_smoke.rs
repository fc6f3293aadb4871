//! `overlay demo`: the whole flow in one command, then the tools on its data.

use overlay_tests::*;

#[test]
fn demo_runs_and_its_data_verifies() {
    let tmp = tempdir("overlay-demo-");
    let dir = tmp.path().join("demo");
    // When the demo runs.
    let demo = overlay(&dir, &["demo", "--households", "20", "--days", "2", "--quiet"]).ok();
    // Then it prints a summary.
    for word in ["20 households", "orders", "dead letters", "trading days"] {
        assert!(demo.stdout.contains(word), "the summary lacks {word:?}:\n{}", demo.stdout);
    }
    let summary_orders: u64 = demo
        .stdout
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("orders"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no order count in the summary:\n{}", demo.stdout));
    // And `overlay orders` prints them as JSON lines.
    let orders = orders(&dir);
    assert!(!orders.is_empty());
    assert_eq!(orders.len() as u64, summary_orders, "the summary's order count");
    assert!(duplicates(&orders, "order_id").is_empty(), "an order id repeats");
    // And replay verifies the demo's data.
    let verify = overlay(&dir, &["replay", "verify"]).ok();
    assert!(verify.stdout.contains("replay verify OK"), "{}", verify.stdout);
    eprintln!("[demo] demo {:.1} s, replay verify {:.1} s", demo.elapsed.as_secs_f64(), verify.elapsed.as_secs_f64());
}

#[test]
fn demo_refuses_a_directory_it_did_not_make() {
    let tmp = tempdir("overlay-demo-refuse-");
    let dir = tmp.path().join("precious");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    // When the demo is pointed at a directory holding something else.
    let run = overlay(&dir, &["demo", "--households", "2", "--days", "1", "--quiet"]).fails();
    // Then it says why and touches nothing.
    assert!(run.stderr.contains("did not make") && run.stderr.contains("precious"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("notes.txt")).unwrap(), "keep me");
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["notes.txt"], "the demo wrote into a directory it refused");
}
