//! `overlay bench --only replay`: compliance replay on a recorded history of
//! about a million inputs in a sled store (as `overlay run` leaves it).
//!
//! The history: the demo scenario with its custodian's fills (households
//! onboarded, models, restrictions, cash flows, clock decisions), then price
//! ticks up to the size (a price feed is most of any real history). It is
//! folded once through the engine's folder into a fresh sled store (setup,
//! untimed). Timed:
//! - `verify`: `overlay_replay::verify` of the whole journal (read back from
//!   sled, decoded, re-folded in memory, every output compared byte for byte
//!   with the recorded one, the final state hash compared): inputs per second;
//! - `state --at`: `overlay_replay::state_at_checkpointed` of one household
//!   at the last input and in the middle of the history, one input short of
//!   a checkpoint (the longest fold a lookup does): latency. The checkpoints
//!   are built once before, untimed, and the time reported.
//!
//! Diagnostics, to say where verify's time goes: reading the journal alone
//! (sled scan + protobuf decode), and folding alone (decoded inputs, no
//! comparison), each on one thread; and verify's CPU time, all threads
//! (verify reads the journal and the recorded outputs on threads of their
//! own, overlapping the fold; on a shared machine the CPU time says more
//! than the wall time).

use crate::bench::{group, median, mixed_stream, price_ticks, Goal, Row, TempDir};
use anyhow::{ensure, Context, Result};
use chrono::Duration;
use overlay_core::event::Payload;
use overlay_core::fold::Input;
use overlay_core::state::EngineSettings;
use overlay_replay::checkpoint::CHECKPOINT_EVERY;
use overlay_replay::journal::Journal;
use overlay_replay::{Point, VerifyRange};
use overlay_scenario::demo::DemoSpec;
use overlay_store::{Folder, SledStore, Store};
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

pub const REPLAY: &str = "replay";

/// Verify's goal, inputs per second.
const VERIFY_GOAL_INPUTS_PER_S: f64 = 1_000_000.0;
/// Inputs folded per store commit while recording the history.
const RECORD_BATCH_INPUTS: u64 = 10_000;

pub struct ReplaySizes {
    pub demo: DemoSpec,
    pub inputs: usize,
    pub rounds: usize,
}

impl ReplaySizes {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self { demo: DemoSpec { households: 20, price_days: 2, ..DemoSpec::default() }, inputs: 100_000, rounds: 1 }
        } else {
            Self {
                demo: DemoSpec { households: 200, price_days: 5, ..DemoSpec::default() },
                inputs: 1_000_000,
                rounds: 3,
            }
        }
    }
}

pub fn replay(sizes: &ReplaySizes, settings: &EngineSettings, out: &mut dyn Write) -> Result<Vec<Row>> {
    let spec = &sizes.demo;
    writeln!(
        out,
        "\n[{REPLAY}] a recorded history of {} inputs in sled: the demo ({} households, {} price days, seed {}) with its fills, then price ticks; {} round(s)",
        group(sizes.inputs as f64),
        spec.households,
        spec.price_days,
        spec.seed,
        sizes.rounds
    )?;
    out.flush()?;
    let t = Instant::now();
    let mixed = mixed_stream(spec, 1000, settings)?;
    let demo_inputs = mixed.raws.len();
    ensure!(demo_inputs < sizes.inputs, "the demo alone has {demo_inputs} inputs");
    let decoded: Vec<_> = mixed.raws.iter().map(|r| overlay_proto::decode_envelope(r)).collect();
    let last = decoded.iter().filter_map(|d| d.as_ref().ok()).map(|e| e.event_time).max().context("no inputs")?;
    let closes: Vec<_> = decoded
        .iter()
        .filter_map(|d| match d.as_ref().ok().map(|e| &e.payload) {
            Some(Payload::PriceTick(p)) => Some((p.security.clone(), p.price)),
            _ => None,
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let ticks = price_ticks(&closes, sizes.inputs - demo_inputs, last + Duration::days(1));
    let dir = TempDir::new("replay")?;
    let store = SledStore::open(dir.path()).context("opening the bench store")?;
    let mut folder = Folder::open(Box::new(store.handle()), settings.clone())?;
    let feed = |folder: &mut Folder, raw: &[u8]| -> Result<()> {
        let n = folder.state().meta.applied;
        let d = overlay_proto::decode_envelope(raw);
        let input = match &d {
            Ok(e) => Input::Event(e),
            Err(e) => Input::Undecodable(e),
        };
        folder.fold(&format!("bench/0/{n}"), Some(("bench/0", n + 1)), raw, input);
        if folder.uncommitted() >= RECORD_BATCH_INPUTS {
            folder.commit()?;
        }
        Ok(())
    };
    for raw in &mixed.raws {
        feed(&mut folder, raw)?;
    }
    for env in &ticks {
        feed(&mut folder, &overlay_proto::encode_envelope(env))?;
    }
    folder.commit_all()?;
    let n = folder.state().meta.applied;
    let households = folder.state().households.len();
    let h = folder.state().households.keys().nth(households / 2).context("no household")?.clone();
    let m = &folder.state().meta;
    writeln!(
        out,
        "  setup ({:.1} s, untimed): {} inputs recorded ({demo_inputs} of the demo, {} ticks); {} orders, {} audit records; household {h} for state --at",
        t.elapsed().as_secs_f64(),
        group(n as f64),
        group(ticks.len() as f64),
        group(m.order_seq as f64),
        group(m.audit_seq as f64)
    )?;
    drop(folder);
    out.flush()?;
    let checkpoints = store.tree(overlay_replay::checkpoint::TREE)?;
    let t = Instant::now();
    let built =
        overlay_replay::checkpoint::ensure(&Journal::open(&store)?, &checkpoints, CHECKPOINT_EVERY, &mut |_, _| {})?;
    writeln!(
        out,
        "  checkpoints for state --at ({:.1} s, once, untimed): {} every {} inputs, in a tree of their own ({:.1} MB)",
        t.elapsed().as_secs_f64(),
        built.len(),
        group(CHECKPOINT_EVERY as f64),
        overlay_replay::checkpoint::bytes(&checkpoints)? as f64 / 1e6
    )?;
    out.flush()?;
    // The middle of the history, one input short of a checkpoint: the
    // longest fold a lookup does (CHECKPOINT_EVERY - 1 inputs).
    let mid_at = n / 2 - 1;
    let sync_store: &(dyn Store + Sync) = &store;
    let sync_checkpoints: &(dyn Store + Sync) = &checkpoints;
    let checkpoints: &dyn Store = &checkpoints;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());

    let (mut verify_s, mut plain_s, mut at_end_s, mut at_mid_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=sizes.rounds {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let report = overlay_replay::verify_checkpointed(sync_store, sync_checkpoints, &mut |_, _| {})
            .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
        let v = t.elapsed().as_secs_f64();
        let v_cpu = cpu_seconds().zip(cpu).map(|(b, a)| b - a);
        ensure!(report.inputs == n && report.state_hash.is_some(), "verify covered {} of {n} inputs", report.inputs);
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let plain = overlay_replay::verify_range_threaded(sync_store, VerifyRange::default(), &mut |_, _| {})
            .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
        let p = t.elapsed().as_secs_f64();
        let p_cpu = cpu_seconds().zip(cpu).map(|(b, a)| b - a);
        ensure!(plain == report, "verify with and without checkpoints differ: {plain:?} and {report:?}");
        let t = Instant::now();
        let end = overlay_replay::state_at_checkpointed(sync_store, checkpoints, &h, Point::Seq(n), &mut |_, _| {})?;
        let e = t.elapsed().as_secs_f64();
        ensure!(end.as_of.seq == n, "state --at ended at {}", end.as_of.seq);
        let t = Instant::now();
        black_box(overlay_replay::state_at_checkpointed(
            sync_store,
            checkpoints,
            &h,
            Point::Seq(mid_at),
            &mut |_, _| {},
        )?);
        let mid = t.elapsed().as_secs_f64();
        let cpu_text = |c: Option<f64>| c.map_or("unknown".into(), |c| format!("{c:.2} s, all threads"));
        writeln!(
            out,
            "  round {round}: verify {v:.2} s = {} inputs/s (CPU {}) | without the checkpoints {p:.2} s = {} inputs/s (CPU {}) | state --at input {n}: {:.0} ms, at input {}: {:.0} ms",
            group(n as f64 / v),
            cpu_text(v_cpu),
            group(n as f64 / p),
            cpu_text(p_cpu),
            e * 1e3,
            mid_at,
            mid * 1e3
        )?;
        out.flush()?;
        verify_s.push(v);
        plain_s.push(p);
        at_end_s.push(e);
        at_mid_s.push(mid);
    }
    let (v, p, e, mid) = (median(verify_s), median(plain_s), median(at_end_s), median(at_mid_s));
    writeln!(
        out,
        "  median: verify {} inputs/s ({v:.2} s: segments between the checkpoints, on {workers} threads, each read, folded and compared inline); without the checkpoints {} inputs/s ({p:.2} s: one fold, reading and sealing on threads of their own); state --at: {:.0} ms at input {n}, {:.0} ms at input {}",
        group(n as f64 / v),
        group(n as f64 / p),
        e * 1e3,
        mid * 1e3,
        mid_at
    )?;
    Ok(vec![
        Row {
            benchmark: format!("{REPLAY} verify"),
            figure: n as f64 / v,
            unit: "inputs/s",
            baseline: None,
            goal: Some(Goal::AtLeast(VERIFY_GOAL_INPUTS_PER_S)),
        },
        Row {
            benchmark: format!("{REPLAY} verify (no checkpoints)"),
            figure: n as f64 / p,
            unit: "inputs/s",
            baseline: None,
            goal: Some(Goal::AtLeast(VERIFY_GOAL_INPUTS_PER_S)),
        },
        Row {
            benchmark: format!("{REPLAY} state --at (end of {})", group(n as f64)),
            figure: e * 1e3,
            unit: "ms",
            baseline: None,
            goal: None,
        },
        Row {
            benchmark: format!("{REPLAY} state --at (middle)"),
            figure: mid * 1e3,
            unit: "ms",
            baseline: None,
            goal: None,
        },
    ])
}

/// CPU time of this process so far, all threads (user + system), from
/// `/proc/self/stat` (in USER_HZ = 100 ticks per second); None elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
