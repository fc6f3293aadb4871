//! The deterministic simulation (`overlay simulate`, RELIABILITY.md): CI's
//! fixed budget of seeds, and a seed played twice giving the same run.

use overlay_tests::*;

/// Seeds CI plays (`OVERLAY_SIM_SEEDS` to change; `overlay simulate --seeds
/// 1000` is the long run). About 2.5 s of CPU each in a debug build.
const DEFAULT_SEEDS: u64 = 16;

/// The number just before `label` in `text` (`"… 12 restarts"` → 12).
#[track_caller]
fn count_before(text: &str, label: &str) -> u64 {
    let at = text.find(label).unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    let digits: Vec<char> = text[..at].trim_end().chars().rev().take_while(char::is_ascii_digit).collect();
    digits.iter().rev().collect::<String>().parse().unwrap_or_else(|_| panic!("no count before {label:?} in:\n{text}"))
}

/// The number just after `label` in `text` (`"disk_full 3,"` → 3).
#[track_caller]
fn count_after(text: &str, label: &str) -> u64 {
    let rest = text.split(label).nth(1).unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok()).unwrap_or(0)
}

#[test]
fn a_fixed_budget_of_seeds_passes_every_invariant() {
    let seeds: u64 = std::env::var("OVERLAY_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEEDS);
    let dir = tempfile::tempdir().expect("temp dir");
    // when the seeds are played (every invariant is checked inside, per seed)
    let run = overlay(dir.path(), &["simulate", "--seeds", &seeds.to_string()]).ok();
    // then all pass
    let out = &run.stdout;
    assert!(out.contains(&format!("{seeds} seeds passed, 0 failed")), "{out}");
    // and the budget exercised every kind of fault and of input disorder
    for fault in ["crash_before_write ", "crash_after_write ", "write_error ", "ambiguous_write ", "disk_full "] {
        assert!(count_after(out, fault) > 0, "no {fault}injected in {seeds} seeds:\n{out}");
    }
    for what in [" late", " re-sent", " swapped", " bad)", " restarts", " dead letters"] {
        assert!(count_before(out, what) > 0, "no{what} in {seeds} seeds:\n{out}");
    }
}

#[test]
fn a_seed_plays_the_same_way_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = |run: Run| {
        let run = run.ok();
        run.stdout
            .lines()
            .find(|l| l.contains("fingerprint"))
            .unwrap_or_else(|| panic!("no report:\n{}", run.stdout))
            .to_string()
    };
    // given seed 5 played once
    let first = report(overlay(dir.path(), &["simulate", "--seed", "5"]));
    // when it is played again
    let second = report(overlay(dir.path(), &["simulate", "--seed", "5"]));
    // then the same faults struck the same commits and the outputs are the same bytes
    assert_eq!(first, second);
    assert!(count_after(&first, "restarts: ") > 0, "{first}");
}
