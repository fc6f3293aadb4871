//! Crash cycles: `overlay run` killed with SIGKILL at pseudo-random moments,
//! over and over, must end with exactly the outputs of an uninterrupted run.
//!
//! Given a demo scenario (real prices, households with legacy lots,
//! restrictions) and the simulated custodian's fills for every order,
//! when data directory A folds it with uninterrupted runs and data directory B
//! folds the same inputs while being killed at least N times mid-work
//! (N = 50, or `OVERLAY_CRASH_CYCLES`), then B's order, audit and
//! dead-letter topics are byte-for-byte A's, no order is published twice, and
//! `overlay replay verify` passes on B.
//!
//! B also runs with small batches and small reads (a config file), so kills
//! land between many commits and publishes, and so the test also checks that
//! outputs do not depend on how inputs were batched.

use overlay_app::demo::Custodian;
use overlay_core::event::Envelope;
use overlay_log::EmbeddedLog;
use overlay_scenario::{demo, DemoSpec, MarketData};
use overlay_tests::cycles::{kill_cycles, target_kills, KillTarget};
use overlay_tests::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Scenario size: about 3,000 reference and household events and, from
/// their orders, a few thousand custodian fills; a debug-build `overlay run`
/// takes a few seconds over it.
pub(crate) const HOUSEHOLDS: usize = 30;
pub(crate) const PRICE_DAYS: usize = 3;
const DEFAULT_KILLS: u64 = 50;

const B_CONFIG: &str = "[engine]\nbatch_inputs_max = 64\nread_records_max = 37\n";

/// `overlay run` on a data directory, lag by its embedded log.
struct EmbeddedRun<'a> {
    dir: &'a Path,
    args: &'a [&'a str],
    log: EmbeddedLog,
}

impl<'a> EmbeddedRun<'a> {
    fn new(dir: &'a Path, args: &'a [&'a str]) -> Self {
        Self { dir, args, log: open_log(dir) }
    }
}

impl KillTarget for EmbeddedRun<'_> {
    fn spawn(&mut self, _cycle: u64) -> std::process::Child {
        spawn(self.dir, self.args, &self.stderr_file()).detach()
    }
    fn lag(&mut self) -> u64 {
        input_lag(&self.log)
    }
    fn stderr_file(&self) -> PathBuf {
        self.dir.with_extension("stderr.txt")
    }
}

pub(crate) const GARBAGE_ARGS: [&str; 5] = ["--raw", "--topic", "overlay.households", "--key", "hh-00002"];
pub(crate) const GARBAGE: &str = "this is not an event\n";

fn fills(dir: &Path, date: chrono::NaiveDate) -> Vec<Envelope> {
    Custodian::default().fills(&open_log(dir), date).expect("the custodian reads the orders topic")
}

#[test]
fn crash_cycles_give_the_outputs_of_an_uninterrupted_run() {
    let _one_at_a_time = timing_sensitive();
    let started = Instant::now();
    let target = target_kills(DEFAULT_KILLS);
    let spec = DemoSpec { households: HOUSEHOLDS, price_days: PRICE_DAYS, ..DemoSpec::default() };
    let scenario = demo(&spec, &MarketData::embedded().expect("shipped market data")).expect("demo scenario");
    let last_day = scenario.days.last().expect("at least one day").date;
    let mut events: Vec<Envelope> = scenario.events().cloned().collect();
    events.extend(bad_inputs(&scenario, "crash-test"));
    let root = tempdir("overlay-crash-");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let cfg = root.path().join("b.toml");
    std::fs::write(&cfg, B_CONFIG).unwrap();
    let cfg = cfg.to_str().unwrap();
    let b_run = ["--config", cfg, "run"];
    let bin = overlay_bin();
    eprintln!("[crash] scenario: {} events, {} households; binary {}", events.len(), HOUSEHOLDS, bin.display());

    // Given the reference: A folds everything without interruption.
    publish(&a, &events).ok();
    publish_text(&a, &GARBAGE_ARGS, GARBAGE).ok();
    let main_a = overlay(&a, &["run"]).ok();
    assert_folded(&main_a, events.len() + 1);
    let fills_a = fills(&a, last_day);
    assert!(!fills_a.is_empty(), "the scenario made no orders to fill");
    publish(&a, &fills_a).ok();
    let fills_run_a = overlay(&a, &["run"]).ok();
    assert_folded(&fills_run_a, fills_a.len());
    // A run with nothing to do: what a start costs, for scaling the delays.
    // The quickest of three, as other work on the machine only ever slows a run down.
    let startup_s = (0..3)
        .map(|_| {
            let idle = overlay(&a, &["run"]).ok();
            assert_folded(&idle, 0);
            idle.elapsed.as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let rate = |n: usize, run: &Run| n as f64 / (run.elapsed.as_secs_f64() - startup_s).max(0.05);
    let (main_rate, fills_rate) = (rate(events.len(), &main_a), rate(fills_a.len(), &fills_run_a));
    eprintln!(
        "[crash] reference: main run {:.2} s, fills run ({} fills) {:.2} s, idle start {:.3} s",
        main_a.elapsed.as_secs_f64(),
        fills_a.len(),
        fills_run_a.elapsed.as_secs_f64(),
        startup_s
    );

    // When B folds the same inputs while being killed over and over.
    let (t_main, t_fills) = (main_a.elapsed.as_secs_f64(), fills_run_a.elapsed.as_secs_f64());
    let main_kills = ((target as f64 * t_main / (t_main + t_fills)).round() as u64).clamp(1.min(target), target);
    let fills_kills = target - main_kills;
    let b_started = Instant::now();
    publish(&b, &events).ok();
    publish_text(&b, &GARBAGE_ARGS, GARBAGE).ok();
    let main_b = kill_cycles(&mut EmbeddedRun::new(&b, &b_run), main_kills, 0x5EED_0001, startup_s, main_rate, 0.7);
    overlay(&b, &b_run).ok();
    let fills_b = fills(&b, last_day);
    assert!(
        fills_b == fills_a,
        "the custodian answered B's orders differently from A's ({} vs {} fills)",
        fills_b.len(),
        fills_a.len()
    );
    publish(&b, &fills_b).ok();
    let fills_cycles =
        kill_cycles(&mut EmbeddedRun::new(&b, &b_run), fills_kills, 0x5EED_0002, startup_s, fills_rate, main_b.pace);
    overlay(&b, &b_run).ok();
    let last = overlay(&b, &b_run).ok();
    assert_folded(&last, 0);
    let landed = main_b.landed + fills_cycles.landed;
    let mid_work = main_b.landed_mid_work + fills_cycles.landed_mid_work;
    println!(
        "[crash] kills landed: {landed} ({mid_work} mid-work, leaving inputs unfolded) in {:.1} s; main phase {main_b:?}; fills phase {fills_cycles:?}",
        b_started.elapsed().as_secs_f64()
    );
    eprintln!("[crash] kills landed: {landed} ({mid_work} mid-work, leaving inputs unfolded)");

    // Then every output is A's, byte for byte.
    let (orders_a, orders_b) = (orders_text(&a), orders_text(&b));
    assert!(!orders_a.is_empty(), "the reference made no orders");
    let dups = duplicates(&json_lines(&orders_b), "order_id");
    assert!(
        dups.is_empty(),
        "B published {} order ids more than once, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    if let Some(d) = first_difference(&orders_a, &orders_b) {
        panic!("orders differ after crash cycles: {d}");
    }
    let (audit_a, audit_b) = (audit_text(&a), audit_text(&b));
    if let Some(d) = first_difference(&audit_a, &audit_b) {
        panic!("audit records differ after crash cycles: {d}");
    }
    let audit_kinds: Vec<String> =
        json_lines(&audit_b).iter().map(|r| r["body"]["kind"].as_str().unwrap_or("?").to_string()).collect();
    assert_eq!(
        audit_kinds.iter().filter(|k| *k == "duplicate").count(),
        1,
        "the re-delivered household event is audited once as duplicate"
    );
    let (dl_a, dl_b) = (dead_letters_text(&a), dead_letters_text(&b));
    if let Some(d) = first_difference(&dl_a, &dl_b) {
        panic!("dead letters differ after crash cycles: {d}");
    }
    let mut kinds: Vec<String> =
        json_lines(&dl_b).iter().map(|d| d["error"].as_str().unwrap_or("?").to_string()).collect();
    kinds.sort();
    assert_eq!(kinds, ["malformed", "unknown_reference"], "dead letters of the bad inputs");
    // Sequence numbers are gap-free from 1: nothing lost, nothing doubled.
    for (i, o) in json_lines(&orders_b).iter().enumerate() {
        assert_eq!(o["seq"].as_u64(), Some(i as u64 + 1), "order {} is out of sequence", i + 1);
    }
    let (status_a, status_b) = (overlay(&a, &["status"]).ok().stdout, overlay(&b, &["status"]).ok().stdout);
    assert_eq!(status_a, status_b, "positions and counters differ");
    let verify = overlay(&b, &["replay", "verify"]).ok();
    assert!(verify.stdout.contains("replay verify OK"), "{}", verify.stdout);
    // And the kills did land in the middle of the work (checked last: a
    // difference in the outputs is the more useful failure).
    assert!(landed >= target, "only {landed} of {target} kills landed");
    assert!(mid_work * 3 >= landed * 2, "too few kills landed mid-work: {mid_work} of {landed}");
    assert!(
        main_kills == 0 || main_b.lag_after < main_b.lag_before,
        "no batch was committed during the main phase's kill cycles: {main_b:?}"
    );
    eprintln!(
        "[crash] {} orders, {} dead letters identical; replay verify {:.1} s; test {:.1} s",
        json_lines(&orders_b).len(),
        json_lines(&dl_b).len(),
        verify.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
