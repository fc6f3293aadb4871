//! `overlay bench`: the engine's benchmarks, as plain timing loops (see
//! BENCHMARKS.md for what each measures and the latest figures).
//!
//! - `durable-fold`: a mixed input stream from the demo scenario (securities,
//!   ESG, prices, models, households, restrictions, cash flows, clock events
//!   and custodian fills), as protobuf bytes, decoded and folded through the
//!   [`Folder`] into a fresh sled store, one atomic flushed batch per 1,000
//!   inputs. Its baseline, measured in the same run: the very same write
//!   batches (captured with [`Folder::take_batch`] during an in-memory dry
//!   run) applied with raw `sled::Db::apply_batch` + `flush`, one flush per
//!   batch, to another fresh sled directory.
//! - `tick-fold`: price ticks folded with [`overlay_core::fold::step`] on one
//!   thread into a state holding the scenario's securities; pre-decoded, and
//!   again including protobuf decoding.
//!
//! Setup (scenario generation, encoding, the dry run, building the baseline's
//! batches) is outside every timed region.

use crate::config::Config;
use crate::demo::fills_for;
use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Duration, Utc};
use overlay_core::event::{Envelope, Payload, PriceTick};
use overlay_core::fold::{apply, decide, step, Input};
use overlay_core::output::Order;
use overlay_core::state::EngineSettings;
use overlay_core::State;
use overlay_scenario::data::MarketData;
use overlay_scenario::demo::{close_time_utc, demo, DemoSpec};
use overlay_store::{Committer, Folder, MemStore, SledStore, Store, WriteBatch};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Benchmark names, for `--only`.
pub const DURABLE_FOLD: &str = "durable-fold";
pub const TICK_FOLD: &str = "tick-fold";
pub const NAMES: [&str; 2] = [DURABLE_FOLD, TICK_FOLD];

/// The durable fold must reach this share of raw sled's throughput.
const DURABLE_GOAL_RATIO: f64 = 0.5;
/// In-memory price-tick fold goal, events per second on one core.
const TICK_GOAL_EVENTS_PER_S: f64 = 2_000_000.0;

/// The source name the benchmark's inputs are recorded under.
const SOURCE: &str = "bench/0";

#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Smaller inputs: a quick check that everything runs, not figures to quote.
    pub quick: bool,
    /// Run only the benchmark of this name.
    pub only: Option<String>,
}

/// Sizes of one run.
#[derive(Clone, Debug)]
struct Sizes {
    durable: DemoSpec,
    ticks: usize,
    /// Timed repetitions of each measurement (the median is reported).
    rounds: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let base = DemoSpec::default();
        if quick {
            Self { durable: DemoSpec { households: 20, price_days: 3, ..base }, ticks: 200_000, rounds: 1 }
        } else {
            Self { durable: base, ticks: 2_000_000, rounds: 3 }
        }
    }
}

/// One row of the result table.
#[derive(Clone, Debug)]
pub struct Row {
    pub benchmark: String,
    pub figure: f64,
    pub unit: &'static str,
    /// The same figure for the baseline, measured in the same run.
    pub baseline: Option<f64>,
    /// What the figure must reach, with its description.
    pub goal: Option<Goal>,
}

#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// At least this fraction of the baseline.
    RatioAtLeast(f64),
    /// At least this figure.
    AtLeast(f64),
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.figure / b)
    }

    pub fn met(&self) -> Option<bool> {
        match self.goal? {
            Goal::RatioAtLeast(r) => self.ratio().map(|x| x >= r),
            Goal::AtLeast(v) => Some(self.figure >= v),
        }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            None => "-".to_string(),
            Some(Goal::RatioAtLeast(r)) => format!(">= {:.0}% of baseline", r * 100.0),
            Some(Goal::AtLeast(v)) => format!(">= {}", group(v)),
        }
    }
}

/// Runs the selected benchmarks, writing progress and details to `out`, then the table.
pub fn run(opts: &BenchOptions, out: &mut dyn Write) -> Result<Vec<Row>> {
    if let Some(name) = &opts.only {
        if !NAMES.contains(&name.as_str()) {
            bail!("no benchmark named {name:?} (there are: {})", NAMES.join(", "));
        }
    }
    let selected = |name: &str| opts.only.as_deref().is_none_or(|o| o == name);
    let sizes = Sizes::new(opts.quick);
    let cfg = Config::default();
    writeln!(
        out,
        "overlay bench{}: {}; load average {}",
        if opts.quick { " --quick" } else { "" },
        machine(),
        load_average()
    )?;
    if cfg!(debug_assertions) {
        writeln!(out, "WARNING: a debug build; build with --release for figures worth quoting")?;
    }
    let mut rows = Vec::new();
    if selected(DURABLE_FOLD) {
        rows.extend(durable_fold(
            &sizes.durable,
            sizes.rounds,
            cfg.engine.batch_inputs_max,
            &cfg.engine.settings,
            out,
        )?);
    }
    if selected(TICK_FOLD) {
        rows.extend(tick_fold(sizes.ticks, sizes.rounds, &cfg.engine.settings, out)?);
    }
    writeln!(out, "\nload average at the end: {}", load_average())?;
    print_table(&rows, out)?;
    Ok(rows)
}

/// `nproc` and the CPU model, as BENCHMARKS.md quotes them.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    format!("{cpus} CPUs, {model}")
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews the figures).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

// ---------------------------------------------------------------------------
// durable-fold
// ---------------------------------------------------------------------------

/// The mixed input stream and what the engine writes for it.
struct Mixed {
    /// Protobuf inputs, in fold order.
    raws: Vec<Vec<u8>>,
    /// Inputs by event type.
    by_type: BTreeMap<&'static str, u64>,
    /// The write batches the engine commits for these inputs, in order.
    batches: Vec<WriteBatch>,
    /// Time spent in `Folder::fold` and `Folder::take_batch` during the dry run.
    fold_s: f64,
    orders: u64,
    audit: u64,
}

/// Generates the scenario with the custodian's fills and dry-runs the engine
/// on it in memory. Fills answer each day's orders after that day's events,
/// as `overlay demo` does; to know the orders, the stream is folded while it
/// is generated, through a folder over a `MemStore` whose batches are taken
/// (not written) every `batch_max` inputs: exactly the batches the durable
/// engine commits for the same inputs.
fn mixed_stream(spec: &DemoSpec, batch_max: usize, settings: &EngineSettings) -> Result<Mixed> {
    let data = MarketData::embedded().context("loading the shipped market data")?;
    let scenario = demo(spec, &data).context("building the demo scenario")?;
    let mut folder = Folder::open(Box::new(MemStore::new()), settings.clone())?;
    let mut m =
        Mixed { raws: Vec::new(), by_type: BTreeMap::new(), batches: Vec::new(), fold_s: 0.0, orders: 0, audit: 0 };
    let mut orders: Vec<Order> = Vec::new();
    let feed = |folder: &mut Folder, m: &mut Mixed, orders: &mut Vec<Order>, env: &Envelope| {
        let raw = overlay_proto::encode_envelope(env);
        let decoded = overlay_proto::decode_envelope(&raw);
        let input = match &decoded {
            Ok(e) => Input::Event(e),
            Err(e) => Input::Undecodable(e),
        };
        let i = m.raws.len() as u64;
        let source = format!("{SOURCE}/{i}");
        let t = Instant::now();
        let applied = folder.fold(&source, Some((SOURCE, i + 1)), &raw, input);
        if folder.uncommitted() >= batch_max as u64 {
            m.batches.push(folder.take_batch());
        }
        m.fold_s += t.elapsed().as_secs_f64();
        m.orders += applied.orders.len() as u64;
        m.audit += applied.audit.len() as u64;
        orders.extend(applied.orders);
        *m.by_type.entry(env.payload.type_name()).or_default() += 1;
        m.raws.push(raw);
    };
    for day in &scenario.days {
        for env in &day.events {
            feed(&mut folder, &mut m, &mut orders, env);
        }
        let at = close_time_utc(day.date) + Duration::minutes(30);
        let fills: Vec<Envelope> = orders.drain(..).flat_map(|o| fills_for(&o, day.date, at)).collect();
        for env in &fills {
            feed(&mut folder, &mut m, &mut orders, env);
        }
    }
    if folder.uncommitted() > 0 {
        let t = Instant::now();
        m.batches.push(folder.take_batch());
        m.fold_s += t.elapsed().as_secs_f64();
    }
    Ok(m)
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("overlay-bench-{}-{name}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Converts the engine's batches to sled batches, the same ops in the same
/// order (as `SledStore::commit` does). `sled` is not a direct dependency of
/// this crate, so its batch type is inferred from `Db::apply_batch`'s
/// parameter instead of named.
fn sled_batches<B: Default>(
    batches: &[WriteBatch],
    _batch_type_of: impl FnOnce(B) -> Result<(), anyhow::Error>,
    put: impl Fn(&mut B, &[u8], &[u8]),
    delete: impl Fn(&mut B, &[u8]),
) -> Vec<B> {
    batches
        .iter()
        .map(|wb| {
            let mut b = B::default();
            for (k, v) in &wb.ops {
                match v {
                    Some(v) => put(&mut b, k, v),
                    None => delete(&mut b, k),
                }
            }
            b
        })
        .collect()
}

/// One durable run: seconds, batches written, bytes written, the state hash.
struct DurableRun {
    secs: f64,
    /// Of `secs`, the time the fold spent committing (preparing batches, waiting for the writer); engine only.
    commit_secs: f64,
    batches: u64,
    bytes: u64,
    state_hash: String,
}

/// The baseline: `batches` applied to a fresh sled directory with raw
/// `apply_batch` + `flush`, one flush per batch. Only the loop is timed.
fn run_baseline(batches: &[WriteBatch]) -> Result<DurableRun> {
    let dir = TempDir::new("baseline")?;
    let store = SledStore::open(dir.path())?;
    let db = store.raw();
    let prepared = sled_batches(
        batches,
        |b| db.apply_batch(b).map_err(anyhow::Error::from),
        |b, k, v| b.insert(k, v),
        |b, k| b.remove(k),
    );
    let t = Instant::now();
    for b in prepared {
        db.apply_batch(b)?;
        db.flush()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let state_hash = overlay_store::state_hash(&store)?;
    Ok(DurableRun {
        secs,
        commit_secs: secs,
        batches: batches.len() as u64,
        bytes: batches.iter().map(|b| b.bytes() as u64).sum(),
        state_hash,
    })
}

/// The engine: each raw input decoded and folded into a folder over a fresh
/// sled store, committed (one atomic `apply_batch` + `flush`) every
/// `batch_max` inputs and at the end, the way the runner does it: through
/// the pipelined writer, which writes batch N while batch N+1 is folded (one
/// in flight), and the run ends only when the last batch is durable. Opening
/// the store is not timed. `in_memory` puts a `MemStore` under the folder
/// instead, committed in line (a diagnostic: the same loop without sled).
fn run_engine(raws: &[Vec<u8>], batch_max: usize, settings: &EngineSettings, in_memory: bool) -> Result<DurableRun> {
    let dir = TempDir::new("engine")?;
    let (store, mut writer): (Box<dyn Store>, Option<Committer>) = if in_memory {
        (Box::new(MemStore::new()), None)
    } else {
        let s = SledStore::open(dir.path())?;
        let w = Committer::new(Box::new(s.handle()));
        (Box::new(s), Some(w))
    };
    let mut folder = Folder::open(store, settings.clone())?;
    let (mut bytes, mut batches) = (0u64, 0u64);
    // Time the fold spends committing: preparing batches and waiting for the writer.
    let mut commit_secs = 0.0;
    let mut commit = |folder: &mut Folder, writer: &mut Option<Committer>| -> Result<()> {
        let t = Instant::now();
        match writer {
            None => bytes += folder.commit()?.bytes,
            Some(w) => {
                let prepared = folder.prepare();
                w.wait()?;
                if let Some(p) = prepared {
                    bytes += p.outputs.bytes;
                    w.submit(p)?;
                }
            }
        }
        batches += 1;
        commit_secs += t.elapsed().as_secs_f64();
        Ok(())
    };
    let t = Instant::now();
    for (i, raw) in raws.iter().enumerate() {
        let decoded = overlay_proto::decode_envelope(raw);
        let input = match &decoded {
            Ok(e) => Input::Event(e),
            Err(e) => Input::Undecodable(e),
        };
        let source = format!("{SOURCE}/{i}");
        black_box(folder.fold(&source, Some((SOURCE, i as u64 + 1)), raw, input));
        if folder.uncommitted() >= batch_max as u64 {
            commit(&mut folder, &mut writer)?;
        }
    }
    if folder.uncommitted() > 0 {
        commit(&mut folder, &mut writer)?;
    }
    if let Some(w) = writer.as_mut() {
        let t = Instant::now();
        w.wait()?;
        commit_secs += t.elapsed().as_secs_f64();
    }
    let secs = t.elapsed().as_secs_f64();
    drop(writer);
    let state_hash = overlay_store::state_hash(folder.store())?;
    Ok(DurableRun { secs, commit_secs, batches, bytes, state_hash })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn durable_fold(
    spec: &DemoSpec,
    rounds: usize,
    batch_max: usize,
    settings: &EngineSettings,
    out: &mut dyn Write,
) -> Result<Vec<Row>> {
    writeln!(
        out,
        "\n[{DURABLE_FOLD}] demo scenario: {} households, {} price days, seed {}; batch = {batch_max} inputs; {rounds} round(s)",
        spec.households, spec.price_days, spec.seed
    )?;
    out.flush()?;
    let t = Instant::now();
    let m = mixed_stream(spec, batch_max, settings)?;
    let inputs = m.raws.len() as u64;
    let input_bytes: u64 = m.raws.iter().map(|r| r.len() as u64).sum();
    let written: u64 = m.batches.iter().map(|b| b.bytes() as u64).sum();
    let ops: u64 = m.batches.iter().map(|b| b.len() as u64).sum();
    let nbatches = m.batches.len() as u64;
    writeln!(
        out,
        "  setup ({:.1} s, untimed): {} inputs, {} protobuf bytes ({})",
        t.elapsed().as_secs_f64(),
        group(inputs as f64),
        group(input_bytes as f64),
        m.by_type.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(
        out,
        "  writes: {nbatches} batches, {} ops, {} bytes ({:.1} MB, {:.2} MB per batch); {} orders, {} audit records",
        group(ops as f64),
        group(written as f64),
        written as f64 / 1e6,
        written as f64 / 1e6 / nbatches as f64,
        group(m.orders as f64),
        group(m.audit as f64)
    )?;
    writeln!(
        out,
        "  diagnostic: fold + take_batch alone, during setup (in memory, fresh process, no decode, no sled) took {:.2} s = {} inputs/s",
        m.fold_s,
        group(inputs as f64 / m.fold_s)
    )?;
    out.flush()?;

    let (mut base_s, mut eng_s) = (Vec::new(), Vec::new());
    let mut durable_hash = String::new();
    for round in 1..=rounds {
        // Alternate which side goes first, so neither always inherits the other's dirty pages.
        let engine_first = round % 2 == 0;
        let mut runs = Vec::new();
        for engine in [engine_first, !engine_first] {
            let r = if engine { run_engine(&m.raws, batch_max, settings, false)? } else { run_baseline(&m.batches)? };
            runs.push((engine, r));
        }
        let (mut e, mut b) = (None, None);
        for (engine, r) in runs {
            if engine {
                e = Some(r);
            } else {
                b = Some(r);
            }
        }
        let (e, b) = (e.expect("the engine ran"), b.expect("the baseline ran"));
        ensure!(
            e.bytes == b.bytes && e.batches == b.batches && b.bytes == written,
            "the engine wrote {} bytes in {} batches, the baseline {} in {}: not the same I/O",
            e.bytes,
            e.batches,
            b.bytes,
            b.batches
        );
        ensure!(
            e.state_hash == b.state_hash,
            "the engine's state hash {} differs from the baseline's {}",
            e.state_hash,
            b.state_hash
        );
        writeln!(
            out,
            "  round {round} ({} first): baseline {:.2} s = {:.1} MB/s, {:.1} batches/s | engine {:.2} s = {:.1} MB/s, {:.1} batches/s, {} inputs/s ({:.2} s decode + fold, {:.2} s commit) | ratio {:.0}%",
            if engine_first { "engine" } else { "baseline" },
            b.secs,
            written as f64 / 1e6 / b.secs,
            nbatches as f64 / b.secs,
            e.secs,
            written as f64 / 1e6 / e.secs,
            nbatches as f64 / e.secs,
            group(inputs as f64 / e.secs),
            e.secs - e.commit_secs,
            e.commit_secs,
            100.0 * b.secs / e.secs
        )?;
        out.flush()?;
        base_s.push(b.secs);
        eng_s.push(e.secs);
        if round == 1 {
            writeln!(
                out,
                "  check: same batches ({nbatches}), same bytes ({written}), same state hash ({}…)",
                &e.state_hash[..16]
            )?;
            durable_hash = e.state_hash.clone();
        }
    }
    let (b, e) = (median(base_s), median(eng_s));
    writeln!(
        out,
        "  median: baseline {b:.2} s, engine {e:.2} s; engine input rate {} inputs/s, {:.2} MB/s of protobuf in",
        group(inputs as f64 / e),
        input_bytes as f64 / 1e6 / e
    )?;
    let mem = run_engine(&m.raws, batch_max, settings, true)?;
    ensure!(mem.state_hash == durable_hash, "the in-memory engine's state hash differs from the durable one's");
    writeln!(
        out,
        "  diagnostic: the same engine loop over a MemStore (no sled): {:.2} s ({:.2} s decode + fold, {:.2} s commit) = {} inputs/s",
        mem.secs,
        mem.secs - mem.commit_secs,
        mem.commit_secs,
        group(inputs as f64 / mem.secs)
    )?;

    let name = DURABLE_FOLD.to_string();
    Ok(vec![
        Row {
            benchmark: name.clone(),
            figure: written as f64 / 1e6 / e,
            unit: "MB/s",
            baseline: Some(written as f64 / 1e6 / b),
            goal: Some(Goal::RatioAtLeast(DURABLE_GOAL_RATIO)),
        },
        Row {
            benchmark: name.clone(),
            figure: nbatches as f64 / e,
            unit: "batches/s",
            baseline: Some(nbatches as f64 / b),
            goal: Some(Goal::RatioAtLeast(DURABLE_GOAL_RATIO)),
        },
        Row { benchmark: name, figure: inputs as f64 / e, unit: "inputs/s", baseline: None, goal: None },
    ])
}

// ---------------------------------------------------------------------------
// tick-fold
// ---------------------------------------------------------------------------

/// Folds every tick with `step` into a clone of `base`; returns the seconds.
/// Folds pre-decoded ticks into a clone of `base`: `decide` + `apply` (the
/// fold proper), and with `seal` also the audit chain (each record's JSON and
/// SHA-256), i.e. the whole `step`. Returns the seconds.
fn fold_ticks(base: &State, envs: &[Envelope], seal: bool) -> Result<f64> {
    let mut state = base.clone();
    let t = Instant::now();
    for env in envs {
        if seal {
            black_box(step(&mut state, Input::Event(env)));
        } else {
            let d = decide(&state, Input::Event(env));
            black_box(apply(&mut state, d));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        state.meta.dead_letter_seq == 0,
        "{} ticks were refused: the benchmark's ticks are wrong",
        state.meta.dead_letter_seq
    );
    ensure!(state.meta.applied == base.meta.applied + envs.len() as u64, "not every tick was applied");
    Ok(secs)
}

/// Decodes each raw tick and folds it with `step` into a clone of `base`; returns the seconds.
fn decode_fold_ticks(base: &State, raws: &[Vec<u8>]) -> Result<f64> {
    let mut state = base.clone();
    let t = Instant::now();
    for raw in raws {
        let decoded = overlay_proto::decode_envelope(raw);
        let input = match &decoded {
            Ok(e) => Input::Event(e),
            Err(e) => Input::Undecodable(e),
        };
        black_box(step(&mut state, input));
    }
    let secs = t.elapsed().as_secs_f64();
    ensure!(state.meta.dead_letter_seq == 0, "{} decoded ticks were refused", state.meta.dead_letter_seq);
    ensure!(state.meta.applied == base.meta.applied + raws.len() as u64, "not every decoded tick was applied");
    Ok(secs)
}

fn tick_fold(n: usize, rounds: usize, settings: &EngineSettings, out: &mut dyn Write) -> Result<Vec<Row>> {
    writeln!(out, "\n[{TICK_FOLD}] {} price ticks, one thread; {rounds} round(s)", group(n as f64))?;
    out.flush()?;
    let t = Instant::now();
    let data = MarketData::embedded().context("loading the shipped market data")?;
    let scenario = demo(&DemoSpec { households: 1, price_days: 1, ..DemoSpec::default() }, &data)
        .context("building the demo scenario")?;
    let mut base = State::default();
    base.meta.settings = settings.clone();
    let mut closes = Vec::new();
    for env in &scenario.days[0].events {
        match &env.payload {
            Payload::SecurityUpserted(_) => {
                step(&mut base, Input::Event(env));
            }
            Payload::PriceTick(p) => closes.push((p.security.clone(), p.price)),
            _ => {}
        }
    }
    ensure!(!closes.is_empty(), "the scenario has no prices on its first day");
    let start = close_time_utc(scenario.days[0].date);
    let envs = price_ticks(&closes, n, start);
    let raws: Vec<Vec<u8>> = envs.iter().map(overlay_proto::encode_envelope).collect();
    let raw_bytes: usize = raws.iter().map(Vec::len).sum();
    writeln!(
        out,
        "  setup ({:.1} s, untimed): {} securities in state; ticks cycle through {} of them, as_of +1 µs each, prices within ±0.3% of the close; {:.0} protobuf bytes per tick",
        t.elapsed().as_secs_f64(),
        base.securities.len(),
        closes.len(),
        raw_bytes as f64 / n as f64
    )?;
    out.flush()?;

    // Diagnostic: decide alone, against the loaded state (no apply, no audit sealing).
    let t = Instant::now();
    for env in &envs {
        black_box(decide(&base, Input::Event(env)));
    }
    let decide_s = t.elapsed().as_secs_f64();

    let per = |s: f64| n as f64 / s;
    let ns = |s: f64| s * 1e9 / n as f64;
    let (mut fold_s, mut step_s, mut decode_s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate the order: the first run of a process also pays for growing the heap.
        let (a, f, d) = if round % 2 == 1 {
            let a = fold_ticks(&base, &envs, false)?;
            let f = fold_ticks(&base, &envs, true)?;
            (a, f, decode_fold_ticks(&base, &raws)?)
        } else {
            let d = decode_fold_ticks(&base, &raws)?;
            let f = fold_ticks(&base, &envs, true)?;
            (fold_ticks(&base, &envs, false)?, f, d)
        };
        writeln!(
            out,
            "  round {round}: fold (decide + apply) {a:.2} s = {} events/s ({:.0} ns/event) | + seal {f:.2} s = {} events/s ({:.0} ns/event) | decode + step {d:.2} s = {} events/s ({:.0} ns/event)",
            group(per(a)),
            ns(a),
            group(per(f)),
            ns(f),
            group(per(d)),
            ns(d)
        )?;
        out.flush()?;
        fold_s.push(a);
        step_s.push(f);
        decode_s.push(d);
    }
    let (a, f, d) = (median(fold_s), median(step_s), median(decode_s));
    writeln!(
        out,
        "  median: fold (decide + apply) {} events/s ({:.0} ns/event); + seal {} events/s ({:.0} ns/event); decode + step {} events/s ({:.0} ns/event)",
        group(per(a)),
        ns(a),
        group(per(f)),
        ns(f),
        group(per(d)),
        ns(d)
    )?;
    writeln!(
        out,
        "  diagnostic: decide alone {} events/s ({:.0} ns/event); the rest of step is apply + seal: state changes, the idempotency set, the audit record JSON + SHA-256 chain",
        group(per(decide_s)),
        ns(decide_s)
    )?;
    Ok(vec![
        Row {
            benchmark: format!("{TICK_FOLD} (decide + apply)"),
            figure: per(a),
            unit: "events/s",
            baseline: None,
            goal: Some(Goal::AtLeast(TICK_GOAL_EVENTS_PER_S)),
        },
        Row {
            benchmark: format!("{TICK_FOLD} (+ audit seal)"),
            figure: per(f),
            unit: "events/s",
            baseline: None,
            goal: None,
        },
        Row {
            benchmark: format!("{TICK_FOLD} (+ decode)"),
            figure: per(d),
            unit: "events/s",
            baseline: None,
            goal: None,
        },
    ])
}

/// `n` price ticks cycling through `closes`, each as of 1 µs after the one
/// before, priced within ±0.3% of its security's close (well inside the
/// price-jump band, so none is held).
fn price_ticks(closes: &[(overlay_core::ids::SecurityId, Decimal)], n: usize, start: DateTime<Utc>) -> Vec<Envelope> {
    const STEPS: [i64; 7] = [0, 1, 2, 3, -3, -2, -1];
    let variants: Vec<Vec<Decimal>> = closes
        .iter()
        .map(|(_, c)| STEPS.iter().map(|s| (*c * (Decimal::ONE + Decimal::new(*s, 3))).round_dp(2)).collect())
        .collect();
    (0..n)
        .map(|i| {
            let k = i % closes.len();
            let round = i / closes.len();
            let at = start + Duration::microseconds(i as i64);
            Envelope {
                event_id: format!("px-{i}"),
                producer: "price-feed".into(),
                event_time: at,
                schema_version: 1,
                payload: Payload::PriceTick(PriceTick {
                    security: closes[k].0.clone(),
                    price: variants[k][round % STEPS.len()],
                    as_of: at,
                }),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// A number with thousands separators (no decimals), or one decimal below 100.
fn group(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 100.0 {
        return format!("{v:.1}");
    }
    let s = format!("{:.0}", v.abs());
    let mut outs = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            outs.push(',');
        }
        outs.push(c);
    }
    if v < 0.0 {
        outs.insert(0, '-');
    }
    outs
}

pub fn print_table(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.benchmark.clone(),
                group(r.figure),
                r.unit.to_string(),
                r.baseline.map_or_else(|| "-".to_string(), group),
                r.ratio().map_or_else(|| "-".to_string(), |x| format!("{:.0}%", x * 100.0)),
                r.goal_text(),
                match r.met() {
                    Some(true) => "yes".to_string(),
                    Some(false) => "NO".to_string(),
                    None => "-".to_string(),
                },
            ]
        })
        .collect();
    let header = ["benchmark", "figure", "unit", "baseline", "ratio", "goal", "met?"];
    let mut width: [usize; 7] = header.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |out: &mut dyn Write, c: &[String]| -> std::io::Result<()> {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (s, w))| if matches!(i, 1 | 3 | 4) { format!("{s:>w$}") } else { format!("{s:<w$}") })
            .collect();
        writeln!(out, "| {} |", parts.join(" | "))
    };
    line(out, &header.map(str::to_string))?;
    writeln!(
        out,
        "|{}|",
        width
            .iter()
            .enumerate()
            .map(|(i, w)| if matches!(i, 1 | 3 | 4) { format!("{}:", "-".repeat(w + 1)) } else { "-".repeat(w + 2) })
            .collect::<Vec<_>>()
            .join("|")
    )?;
    for c in &cells {
        line(out, c)?;
    }
    writeln!(out, "(baseline = raw sled apply_batch + flush of the engine's own batches, measured in the same run; MB = 10^6 bytes)")
}
