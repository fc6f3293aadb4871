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
//! - `fanout`: one `model_published` of a ~490-name direct index, folded into
//!   a state where many households (one taxable account each, holding the
//!   index in about three lots per position) follow it: households
//!   rebalanced per second. Then single-household latency: many households,
//!   each following its own copy of the index, and a new version of each
//!   model folded one at a time, each `step` timed.
//!
//! - `replay` (`crate::bench_replay`): `overlay replay verify` and
//!   `state --at` on a recorded history of a million inputs.
//! - `kafka` (`crate::bench_kafka`): the engine on Kafka against a raw
//!   rdkafka consume → produce of the same records on the same broker. It
//!   runs by default only when a real broker is given; `--only kafka` runs
//!   the mock-cluster parts without one.
//!
//! Setup (scenario generation, encoding, the dry run, building the baseline's
//! batches) is outside every timed region.

use crate::config::Config;
use crate::demo::fills_for;
use anyhow::{bail, ensure, Context, Result};
use chrono::{DateTime, Duration, Utc};
use overlay_core::event::{
    AccountKind, AccountSettings, AccountSpec, Envelope, HouseholdUpserted, ModelKind, ModelPublished, ModelWeight,
    OpeningLot, Payload, PriceTick, Side, Sleeve, TaxProfile, SCHEMA_VERSION_CURRENT,
};
use overlay_core::fold::{apply, decide, step, Input};
use overlay_core::ids::{AccountId, HouseholdId, ModelId, SecurityId};
use overlay_core::output::Order;
use overlay_core::state::{one_year_after, EngineSettings};
use overlay_core::State;
use overlay_scenario::data::MarketData;
use overlay_scenario::demo::{close_time_utc, demo, DemoSpec, MODEL_SP500_CW, PRODUCER_CRM, PRODUCER_MODEL_PROVIDER};
use overlay_scenario::rng::SplitMix64;
use overlay_store::{Committer, Folder, MemStore, SledStore, Store, WriteBatch};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Benchmark names, for `--only`.
pub const DURABLE_FOLD: &str = "durable-fold";
pub const TICK_FOLD: &str = "tick-fold";
pub const FANOUT: &str = "fanout";
pub use crate::bench_kafka::KAFKA;
pub use crate::bench_replay::REPLAY;
pub const NAMES: [&str; 5] = [DURABLE_FOLD, TICK_FOLD, FANOUT, REPLAY, KAFKA];

/// The durable fold must reach this share of raw sled's throughput.
const DURABLE_GOAL_RATIO: f64 = 0.5;
/// In-memory price-tick fold goal, events per second on one core.
const TICK_GOAL_EVENTS_PER_S: f64 = 2_000_000.0;
/// A model update must rebalance at least this many households per second on one core.
const FANOUT_GOAL_HOUSEHOLDS_PER_S: f64 = 1_000.0;

/// The source name the benchmark's inputs are recorded under.
const SOURCE: &str = "bench/0";

#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Smaller inputs: a quick check that everything runs, not figures to quote.
    pub quick: bool,
    /// Run only the benchmark of this name.
    pub only: Option<String>,
    /// Real brokers for the Kafka benchmark.
    pub kafka: crate::bench_kafka::KafkaBrokers,
    /// Household partitions of the Kafka benchmark, if not its default.
    pub kafka_partitions: Option<u32>,
}

/// Sizes of one run.
#[derive(Clone, Debug)]
struct Sizes {
    durable: DemoSpec,
    ticks: usize,
    /// Households following the one index model whose update is timed.
    fanout_households: usize,
    /// Households each following their own copy of the index (one update each, timed apart).
    latency_households: usize,
    /// Timed repetitions of each measurement (the median is reported).
    rounds: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        let base = DemoSpec::default();
        if quick {
            Self {
                durable: DemoSpec { households: 20, price_days: 3, ..base },
                ticks: 200_000,
                fanout_households: 100,
                latency_households: 30,
                rounds: 1,
            }
        } else {
            Self { durable: base, ticks: 2_000_000, fanout_households: 2_000, latency_households: 300, rounds: 3 }
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
    if selected(FANOUT) {
        rows.extend(fanout(
            sizes.fanout_households,
            sizes.latency_households,
            sizes.rounds,
            &cfg.engine.settings,
            out,
        )?);
    }
    if selected(REPLAY) {
        let sizes = crate::bench_replay::ReplaySizes::new(opts.quick);
        rows.extend(crate::bench_replay::replay(&sizes, &cfg.engine.settings, out)?);
    }
    if selected(KAFKA) {
        let sizes = crate::bench_kafka::KafkaSizes::new(opts.quick, opts.kafka_partitions);
        if opts.only.is_some() || opts.kafka.any() {
            rows.extend(crate::bench_kafka::kafka(&sizes, &opts.kafka, out)?);
        } else {
            writeln!(
                out,
                "\n[{KAFKA}] skipped: no broker (give --brokers, OVERLAY_KAFKA_BROKERS or OVERLAY_TANSU, or run scripts/bench-kafka; `--only kafka` runs the mock-cluster parts alone)"
            )?;
        }
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
pub(crate) struct Mixed {
    /// Protobuf inputs, in fold order.
    pub(crate) raws: Vec<Vec<u8>>,
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
pub(crate) fn mixed_stream(spec: &DemoSpec, batch_max: usize, settings: &EngineSettings) -> Result<Mixed> {
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
    // The last batch, caught up, writes the state records too (as the engine's does).
    let t = Instant::now();
    if let Some(p) = folder.prepare_all() {
        m.batches.push(p.batch);
    }
    m.fold_s += t.elapsed().as_secs_f64();
    Ok(m)
}

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("overlay-bench-{}-{name}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }

    pub(crate) fn path(&self) -> &Path {
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
    // The last commit, caught up, writes the state records too (as the runner's does).
    let mut commit = |folder: &mut Folder, writer: &mut Option<Committer>, last: bool| -> Result<()> {
        let t = Instant::now();
        let prepared = if last { folder.prepare_all() } else { folder.prepare() };
        if let Some(w) = writer.as_mut() {
            w.wait()?;
        }
        if let Some(p) = prepared {
            bytes += p.outputs.bytes;
            batches += 1;
            match writer {
                None => folder.store().commit(p.batch)?,
                Some(w) => w.submit(p)?,
            }
        }
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
            commit(&mut folder, &mut writer, false)?;
        }
    }
    commit(&mut folder, &mut writer, true)?;
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

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
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
pub(crate) fn price_ticks(
    closes: &[(overlay_core::ids::SecurityId, Decimal)],
    n: usize,
    start: DateTime<Utc>,
) -> Vec<Envelope> {
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
// fanout
// ---------------------------------------------------------------------------

/// Each household's one taxable account is worth between these (whole
/// dollars, drawn uniformly): from $5M up, the default `direct_index_names`
/// table holds the full index, so every account holds every name.
const FANOUT_ACCOUNT_USD_MIN: i64 = 5_000_000;
const FANOUT_ACCOUNT_USD_MAX: i64 = 20_000_000;
/// Lots per position (a position of fewer shares has one lot per share).
const FANOUT_LOTS_PER_POSITION: u64 = 3;
/// Opening lots were bought this many days before the setup day: about two
/// thirds of them more than a year before (long-term), the rest short-term.
const FANOUT_LOT_AGE_DAYS: (i64, i64) = (20, 1_100);
/// A lot's cost is the setup day's close times this many thousandths: about
/// 60% of lots at a gain, 40% at a loss.
const FANOUT_LOT_COST_PER_MILLE: (i64, i64) = (600, 1_250);
/// Share of the index whose weight version 2 moves out of its drift band
/// (default band: ±50% of the target weight): half of them up, half down.
const FANOUT_MOVED_SHARE: f64 = 0.2;
/// Factors, in thousandths, for the weights that move up, move down, or
/// stay (before renormalizing to 1, which scales every weight by about 1/1.04).
const FANOUT_UP_PER_MILLE: (i64, i64) = (1_700, 2_500);
const FANOUT_DOWN_PER_MILLE: (i64, i64) = (200, 450);
const FANOUT_STAY_PER_MILLE: (i64, i64) = (970, 1_030);
/// SplitMix64 stream labels (under the demo's default seed).
const FANOUT_STREAM_HOUSEHOLD: u64 = 1;
const FANOUT_STREAM_MODEL: u64 = 2;
/// At least this share of the households must get orders from the update,
/// so the benchmark cannot silently time a decision that trades nothing.
const FANOUT_TRADED_SHARE_MIN: f64 = 0.9;

/// The demo scenario's first day as reference data: its securities and
/// closes folded into a state, and its cap-weighted index.
struct IndexUniverse {
    /// Securities and first-day prices, folded with `step`.
    state: State,
    /// The scenario's `sp500-cw` v1 weights (dollar-volume proxy for market cap, 6 decimals).
    weights: Vec<ModelWeight>,
    prices: BTreeMap<SecurityId, Decimal>,
    /// The setup day's close: reference data at it, households a minute after.
    t0: DateTime<Utc>,
    /// The next trading day's close: model updates are stamped then.
    t1: DateTime<Utc>,
    seed: u64,
}

/// Validates an event and folds it with `step`; a refusal is a broken setup.
fn setup_step(state: &mut State, env: &Envelope) -> Result<overlay_core::Applied> {
    env.validate().map_err(|e| anyhow::anyhow!("setup event {} does not validate: {e}", env.event_id))?;
    let applied = step(state, Input::Event(env));
    if let Some((_, err)) = &applied.rejection {
        bail!("setup event {} was refused: {err}", env.event_id);
    }
    Ok(applied)
}

fn index_universe(settings: &EngineSettings) -> Result<IndexUniverse> {
    let data = MarketData::embedded().context("loading the shipped market data")?;
    let spec = DemoSpec { households: 1, price_days: 1, ..DemoSpec::default() };
    let scenario = demo(&spec, &data).context("building the demo scenario")?;
    let mut state = State::default();
    state.meta.settings = settings.clone();
    let (mut prices, mut weights) = (BTreeMap::new(), None);
    for env in &scenario.days[0].events {
        match &env.payload {
            Payload::SecurityUpserted(_) => {
                setup_step(&mut state, env)?;
            }
            Payload::PriceTick(p) => {
                setup_step(&mut state, env)?;
                prices.insert(p.security.clone(), p.price);
            }
            Payload::ModelPublished(m) if m.model.as_str() == MODEL_SP500_CW => weights = Some(m.weights.clone()),
            _ => {}
        }
    }
    let weights = weights.context("the scenario publishes no cap-weighted index")?;
    ensure!(weights.iter().all(|w| prices.contains_key(&w.security)), "an index name has no first-day price");
    Ok(IndexUniverse {
        state,
        weights,
        prices,
        t0: close_time_utc(scenario.days[0].date),
        t1: close_time_utc(scenario.days[1].date),
        seed: spec.seed,
    })
}

fn model_event(model: &ModelId, version: u64, weights: Vec<ModelWeight>, at: DateTime<Utc>) -> Envelope {
    Envelope {
        event_id: format!("fanout-{model}-v{version}"),
        producer: PRODUCER_MODEL_PROVIDER.into(),
        event_time: at,
        schema_version: SCHEMA_VERSION_CURRENT,
        payload: Payload::ModelPublished(ModelPublished {
            model: model.clone(),
            version,
            kind: ModelKind::DirectIndex,
            weights,
        }),
    }
}

/// Version 2 of the index: a `FANOUT_MOVED_SHARE` of the names (drawn by
/// SplitMix64 stream `label`) move well out of their bands, the rest by
/// ±3%; renormalized to 1 and rounded down to 6 decimals.
fn perturbed_weights(u: &IndexUniverse, label: u64) -> Vec<ModelWeight> {
    let mut rng = SplitMix64::derive(u.seed, &[FANOUT_STREAM_MODEL, label]);
    let raw: Vec<Decimal> = u
        .weights
        .iter()
        .map(|w| {
            let roll = rng.next_f64();
            let (lo, hi) = if roll < FANOUT_MOVED_SHARE / 2.0 {
                FANOUT_UP_PER_MILLE
            } else if roll < FANOUT_MOVED_SHARE {
                FANOUT_DOWN_PER_MILLE
            } else {
                FANOUT_STAY_PER_MILLE
            };
            w.weight * Decimal::new(rng.range_i64(lo, hi), 3)
        })
        .collect();
    let total: Decimal = raw.iter().sum();
    u.weights
        .iter()
        .zip(raw)
        .map(|(w, r)| ModelWeight {
            security: w.security.clone(),
            weight: (r / total).round_dp_with_strategy(6, RoundingStrategy::ToZero),
        })
        .filter(|w| w.weight > Decimal::ZERO)
        .collect()
}

/// `shares` (whole, positive) cut into up to `FANOUT_LOTS_PER_POSITION` lots of at least one share.
fn lot_sizes(rng: &mut SplitMix64, shares: Decimal) -> Vec<Decimal> {
    let n = shares.min(Decimal::from(FANOUT_LOTS_PER_POSITION)).to_u64().unwrap_or(1);
    let mut left = shares;
    let mut out = Vec::with_capacity(n as usize);
    for k in (1..n).rev() {
        // k lots still to come after this one, each needing a share.
        let take =
            (left * Decimal::new(rng.range_i64(20, 50), 2)).floor().max(Decimal::ONE).min(left - Decimal::from(k));
        out.push(take);
        left -= take;
    }
    out.push(left);
    out
}

/// Household `h`: one taxable account worth $5M–$20M following `model` in
/// full, arriving already invested in the index (whole shares of 99% of its
/// value at the first day's closes, the 1% cash reserve and rounding in
/// cash), each position in about three lots of different ages and costs.
fn index_household(u: &IndexUniverse, h: usize, model: &ModelId) -> Envelope {
    let mut rng = SplitMix64::derive(u.seed, &[FANOUT_STREAM_HOUSEHOLD, h as u64]);
    let value = Decimal::from(rng.range_i64(FANOUT_ACCOUNT_USD_MIN, FANOUT_ACCOUNT_USD_MAX));
    let settings = AccountSettings::default();
    let invested = value * (Decimal::ONE - settings.cash_reserve_pct);
    let today = u.t0.date_naive();
    let (mut lots, mut spent) = (Vec::new(), Decimal::ZERO);
    for w in &u.weights {
        let price = u.prices[&w.security];
        // Whole shares, rounded down: never more than the account's value.
        let shares = (invested * w.weight / price).floor();
        if shares <= Decimal::ZERO {
            continue;
        }
        spent += shares * price;
        for quantity in lot_sizes(&mut rng, shares) {
            let cost = (price
                * Decimal::new(rng.range_i64(FANOUT_LOT_COST_PER_MILLE.0, FANOUT_LOT_COST_PER_MILLE.1), 3))
            .round_dp(2)
            .max(Decimal::new(1, 2));
            let age = rng.range_i64(FANOUT_LOT_AGE_DAYS.0, FANOUT_LOT_AGE_DAYS.1);
            lots.push(OpeningLot {
                security: w.security.clone(),
                quantity,
                cost_per_share: cost,
                acquired: today - Duration::days(age),
            });
        }
    }
    Envelope {
        event_id: format!("fanout-hh-{h:05}"),
        producer: PRODUCER_CRM.into(),
        event_time: u.t0 + Duration::minutes(1),
        schema_version: SCHEMA_VERSION_CURRENT,
        payload: Payload::HouseholdUpserted(HouseholdUpserted {
            household: HouseholdId::new(format!("fh-{h:05}")),
            tax: TaxProfile::default(),
            accounts: vec![AccountSpec {
                account: AccountId::new("taxable"),
                kind: AccountKind::Taxable,
                sleeves: vec![Sleeve { model: model.clone(), percent: Decimal::ONE }],
                settings,
                opening_cash: value - spent,
                opening_lots: lots,
            }],
            restrictions: Vec::new(),
        }),
    }
}

/// What folding households' setup produced.
#[derive(Default)]
struct SetupCount {
    households: usize,
    lots: usize,
    positions: usize,
    /// Lots whose cost is below the first day's close.
    lots_at_gain: usize,
    /// Lots held more than a year on the update's trade date.
    lots_long_term: usize,
    orders: usize,
}

/// Folds `index_household(h, model_of(h))` for `h` in `0..n` into `state`.
fn fold_households(
    u: &IndexUniverse,
    state: &mut State,
    n: usize,
    model_of: impl Fn(usize) -> ModelId,
) -> Result<SetupCount> {
    let mut c = SetupCount::default();
    let trade_date = u.t1.date_naive();
    for h in 0..n {
        let env = index_household(u, h, &model_of(h));
        if let Payload::HouseholdUpserted(up) = &env.payload {
            for a in &up.accounts {
                c.lots += a.opening_lots.len();
                c.positions += a.opening_lots.iter().map(|l| &l.security).collect::<BTreeSet<_>>().len();
                c.lots_at_gain += a.opening_lots.iter().filter(|l| l.cost_per_share < u.prices[&l.security]).count();
                c.lots_long_term += a.opening_lots.iter().filter(|l| one_year_after(l.acquired) < trade_date).count();
            }
        }
        c.orders += setup_step(state, &env)?.orders.len();
        c.households += 1;
    }
    Ok(c)
}

/// One timed model update.
struct FanoutRun {
    secs: f64,
    /// Of `secs`, the time in `decide` (measured when the run is `decide` + `apply`).
    decide_secs: Option<f64>,
    orders: usize,
    sells: usize,
    /// Households that got at least one order.
    households: usize,
    audit: usize,
}

/// Folds `env` into a clone of `base` (the clone and the drop of the state
/// and of the outputs are untimed): `decide` then `apply`, or with `seal`
/// the whole `step` (the audit records' JSON and SHA-256 chain too).
fn fanout_update(base: &State, env: &Envelope, seal: bool) -> Result<FanoutRun> {
    let mut state = base.clone();
    let t = Instant::now();
    let (applied, decide_secs) = if seal {
        (step(&mut state, Input::Event(env)), None)
    } else {
        let d = decide(&state, Input::Event(env));
        let decide_secs = t.elapsed().as_secs_f64();
        (apply(&mut state, d), Some(decide_secs))
    };
    let secs = t.elapsed().as_secs_f64();
    if let Some((_, err)) = &applied.rejection {
        bail!("the model update was refused: {err}");
    }
    let households: BTreeSet<&HouseholdId> = applied.orders.iter().map(|o| &o.household).collect();
    Ok(FanoutRun {
        secs,
        decide_secs,
        orders: applied.orders.len(),
        sells: applied.orders.iter().filter(|o| o.side == Side::Sell).count(),
        households: households.len(),
        audit: applied.audit.len(),
    })
}

/// Folds each update with `step` into one clone of `base`, in order, timing
/// each `step` alone; checks that each traded its household and no other.
fn latency_round(base: &State, updates: &[(HouseholdId, Envelope)]) -> Result<Vec<f64>> {
    let mut state = base.clone();
    let mut secs = Vec::with_capacity(updates.len());
    for (h, env) in updates {
        let t = Instant::now();
        let applied = step(&mut state, Input::Event(env));
        secs.push(t.elapsed().as_secs_f64());
        if let Some((_, err)) = &applied.rejection {
            bail!("model update {} was refused: {err}", env.event_id);
        }
        ensure!(!applied.orders.is_empty(), "model update {} made no orders for {h}", env.event_id);
        ensure!(
            applied.orders.iter().all(|o| &o.household == h),
            "model update {} traded a household other than {h}",
            env.event_id
        );
    }
    Ok(secs)
}

/// The nearest-rank `q` quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn fanout(
    n: usize,
    n_latency: usize,
    rounds: usize,
    settings: &EngineSettings,
    out: &mut dyn Write,
) -> Result<Vec<Row>> {
    writeln!(
        out,
        "\n[{FANOUT}] a model update on a ~490-name direct index: {} households following it; then {} households with a model each, one update at a time; one thread; {rounds} round(s)",
        count(n),
        count(n_latency)
    )?;
    out.flush()?;

    // ---- (a) one update, every household.
    let t = Instant::now();
    let u = index_universe(settings)?;
    let index = ModelId::new("idx");
    let mut base = u.state.clone();
    setup_step(&mut base, &model_event(&index, 1, u.weights.clone(), u.t0))?;
    let setup = fold_households(&u, &mut base, n, |_| index.clone())?;
    let update = model_event(&index, 2, perturbed_weights(&u, 0), u.t1);
    update.validate().map_err(|e| anyhow::anyhow!("version 2 of the index does not validate: {e}"))?;
    writeln!(
        out,
        "  setup ({:.1} s, untimed): {} securities priced at the {} closes; model {index} v1 = the scenario's cap-weighted index ({} names); {} households, one taxable account each, ${}–${} (full index), {} positions in {} lots ({:.2} lots per position; {:.0}% of lots at a gain, {:.0}% long-term); their setup made {} orders",
        t.elapsed().as_secs_f64(),
        u.state.securities.len(),
        u.t0.date_naive(),
        u.weights.len(),
        count(setup.households),
        group(FANOUT_ACCOUNT_USD_MIN as f64),
        group(FANOUT_ACCOUNT_USD_MAX as f64),
        count(setup.positions),
        count(setup.lots),
        setup.lots as f64 / setup.positions as f64,
        100.0 * setup.lots_at_gain as f64 / setup.lots as f64,
        100.0 * setup.lots_long_term as f64 / setup.lots as f64,
        setup.orders
    )?;
    writeln!(
        out,
        "  update: {index} v2, {:.0}% of the names moved out of their bands (×1.7–2.5 or ×0.2–0.45), the rest ±3%, renormalized",
        FANOUT_MOVED_SHARE * 100.0
    )?;
    out.flush()?;

    let per = |s: f64| n as f64 / s;
    let (mut fold_s, mut step_s) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first, so neither always runs on the heap the other left behind.
        let (a, f) = if round % 2 == 1 {
            let a = fanout_update(&base, &update, false)?;
            (a, fanout_update(&base, &update, true)?)
        } else {
            let f = fanout_update(&base, &update, true)?;
            (fanout_update(&base, &update, false)?, f)
        };
        ensure!(
            a.orders == f.orders && a.households == f.households && a.audit == f.audit,
            "decide + apply and step made different outputs"
        );
        ensure!(
            a.households as f64 >= FANOUT_TRADED_SHARE_MIN * n as f64,
            "only {} of {n} households got orders: the update does not exercise the rebalance",
            a.households
        );
        let decide_s = a.decide_secs.unwrap_or(f64::NAN);
        writeln!(
            out,
            "  round {round}: fold (decide + apply) {:.3} s = {} households/s ({:.0} µs/household; decide {:.3} s, apply {:.3} s) | + seal {:.3} s = {} households/s ({:.0} µs/household) | {} orders ({} sells) for {} households, {} audit records",
            a.secs,
            group(per(a.secs)),
            a.secs * 1e6 / n as f64,
            decide_s,
            a.secs - decide_s,
            f.secs,
            group(per(f.secs)),
            f.secs * 1e6 / n as f64,
            count(a.orders),
            count(a.sells),
            count(a.households),
            count(a.audit)
        )?;
        out.flush()?;
        fold_s.push(a.secs);
        step_s.push(f.secs);
    }
    let (a, f) = (median(fold_s), median(step_s));
    writeln!(
        out,
        "  median: fold (decide + apply) {} households/s ({:.0} µs/household); + seal {} households/s ({:.0} µs/household)",
        group(per(a)),
        a * 1e6 / n as f64,
        group(per(f)),
        f * 1e6 / n as f64
    )?;
    drop(base);

    // ---- (b) one household per update.
    let t = Instant::now();
    let model_of = |h: usize| ModelId::new(format!("idx-{:04}", h + 1));
    let mut base = u.state.clone();
    for h in 0..n_latency {
        setup_step(&mut base, &model_event(&model_of(h), 1, u.weights.clone(), u.t0))?;
    }
    let setup = fold_households(&u, &mut base, n_latency, model_of)?;
    let updates: Vec<(HouseholdId, Envelope)> = (0..n_latency)
        .map(|h| {
            let hid = HouseholdId::new(format!("fh-{h:05}"));
            (hid, model_event(&model_of(h), 2, perturbed_weights(&u, h as u64 + 1), u.t1))
        })
        .collect();
    for (_, env) in &updates {
        env.validate().map_err(|e| anyhow::anyhow!("update {} does not validate: {e}", env.event_id))?;
    }
    writeln!(
        out,
        "  latency setup ({:.1} s, untimed): {} models idx-0001… (copies of v1), {} households, household k following model k only; their setup made {} orders; then v2 of each model (its own draw), one after the other",
        t.elapsed().as_secs_f64(),
        count(n_latency),
        count(setup.households),
        setup.orders
    )?;
    out.flush()?;
    let ms = |s: f64| s * 1e3;
    let (mut p50s, mut p99s, mut maxs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut v = latency_round(&base, &updates)?;
        v.sort_by(f64::total_cmp);
        let (p50, p99, max) = (quantile(&v, 0.5), quantile(&v, 0.99), v[v.len() - 1]);
        writeln!(
            out,
            "  round {round}: step per update (one household each): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, min {:.2} ms",
            ms(p50),
            ms(p99),
            ms(max),
            ms(v[0])
        )?;
        out.flush()?;
        p50s.push(p50);
        p99s.push(p99);
        maxs.push(max);
    }
    let (p50, p99, max) = (median(p50s), median(p99s), median(maxs));
    writeln!(out, "  median: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms(p50), ms(p99), ms(max))?;
    // Diagnostic: one household's share of the fan-out, next to the latency of a lone update.
    writeln!(
        out,
        "  diagnostic: in the fan-out above, one household's share of the update took {:.2} ms",
        ms(f / n as f64)
    )?;

    Ok(vec![
        Row {
            benchmark: format!("{FANOUT} (decide + apply)"),
            figure: per(a),
            unit: "households/s",
            baseline: None,
            goal: Some(Goal::AtLeast(FANOUT_GOAL_HOUSEHOLDS_PER_S)),
        },
        Row {
            benchmark: format!("{FANOUT} (+ audit seal)"),
            figure: per(f),
            unit: "households/s",
            baseline: None,
            goal: None,
        },
        Row { benchmark: format!("{FANOUT} 1 household p50"), figure: ms(p50), unit: "ms", baseline: None, goal: None },
        Row { benchmark: format!("{FANOUT} 1 household p99"), figure: ms(p99), unit: "ms", baseline: None, goal: None },
    ])
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

/// A count, with thousands separators.
pub(crate) fn count(n: usize) -> String {
    if n < 100 {
        n.to_string()
    } else {
        group(n as f64)
    }
}

/// A number with thousands separators (no decimals), or one decimal below 100.
pub(crate) fn group(v: f64) -> String {
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
    let kafka = rows.iter().any(|r| r.benchmark.starts_with(KAFKA));
    if !kafka || rows.iter().any(|r| r.benchmark.starts_with(DURABLE_FOLD)) {
        writeln!(out, "(baseline = raw sled apply_batch + flush of the engine's own batches, measured in the same run; MB = 10^6 bytes)")?;
    }
    if kafka {
        writeln!(out, "(kafka baseline = raw rdkafka consume -> produce of the same input records on the same broker, measured in the same run)")?;
    }
    Ok(())
}
