//! `overlay bench --only kafka`: the Kafka engine (consume → fold → durable
//! write → produce) against a raw rdkafka consume → produce of the same
//! records on the same broker, in the same run (see BENCHMARKS.md).
//!
//! Each round starts an empty broker (a new tansu process or mock cluster;
//! an external broker gets its topics deleted after the round), publishes the
//! inputs (untimed), then runs the baseline and the engine, alternating which
//! goes first. Modes: a real broker without transactions (tansu has none),
//! the mock cluster without, and the mock cluster with transactions.

use crate::bench::{count, group, median, mixed_stream, Goal, Row, TempDir};
use crate::config::Config;
use anyhow::{ensure, Context, Result};
use overlay_core::event::{Envelope, EventKey};
use overlay_core::fold::Input;
use overlay_core::state::EngineSettings;
use overlay_kafka::bench::{count_records, engine_run, raw_pipe, Broker, EngineRun, PipeRun, COPY};
use overlay_kafka::{EngineOptions, KafkaConfig};
use overlay_proto::topics::{AUDIT, HOUSEHOLDS, ORDERS, REFERENCE};
use overlay_scenario::demo::DemoSpec;
use overlay_store::{Folder, MemStore, SledStore, Store};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const KAFKA: &str = "kafka";

/// The engine must reach this share of the raw consume → produce rate.
const KAFKA_GOAL_RATIO: f64 = 0.5;

/// Where a real broker comes from; without either, only the mock cluster runs.
#[derive(Clone, Debug, Default)]
pub struct KafkaBrokers {
    /// A broker someone else runs (`--brokers`, `OVERLAY_KAFKA_BROKERS`): a scratch one.
    pub external: Option<String>,
    /// The tansu binary to start a broker from (`OVERLAY_TANSU`).
    pub tansu: Option<PathBuf>,
}

impl KafkaBrokers {
    pub fn any(&self) -> bool {
        self.external.is_some() || self.tansu.is_some()
    }
}

/// The benchmark's sizes.
#[derive(Clone, Debug)]
pub struct KafkaSizes {
    pub spec: DemoSpec,
    pub household_partitions: u32,
    pub rounds: usize,
}

impl KafkaSizes {
    pub fn new(quick: bool) -> Self {
        let base = DemoSpec::default();
        if quick {
            Self { spec: DemoSpec { households: 20, price_days: 3, ..base }, household_partitions: 2, rounds: 1 }
        } else {
            Self {
                spec: DemoSpec { households: 200, price_days: 10, ..base },
                household_partitions: KafkaConfig::default().household_partitions,
                rounds: 3,
            }
        }
    }
}

enum Place {
    Tansu(PathBuf),
    External(String),
    Mock,
}

struct Mode {
    label: &'static str,
    place: Place,
    transactional: bool,
}

impl Mode {
    fn broker(&self) -> Result<Broker> {
        match &self.place {
            Place::Tansu(bin) => Broker::tansu(bin),
            Place::External(b) => Ok(Broker::External(b.clone())),
            Place::Mock => Broker::mock(),
        }
    }
}

/// What every run must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outputs {
    orders: u64,
    audit: u64,
    dead_letters: u64,
}

pub fn kafka(sizes: &KafkaSizes, brokers: &KafkaBrokers, out: &mut dyn Write) -> Result<Vec<Row>> {
    let cfg = Config::default();
    let spec = &sizes.spec;
    let partitions = sizes.household_partitions;
    writeln!(
        out,
        "\n[{KAFKA}] demo scenario: {} households, {} price days, seed {}; {partitions} household partitions; batch = {} inputs per shard; {} round(s) per mode",
        spec.households, spec.price_days, spec.seed, cfg.engine.batch_inputs_max, sizes.rounds
    )?;
    let modes = modes(brokers, out)?;

    let t = Instant::now();
    let m = mixed_stream(spec, cfg.engine.batch_inputs_max, &cfg.engine.settings)?;
    let envs: Vec<Envelope> = m
        .raws
        .iter()
        .map(|r| overlay_proto::decode_envelope(r).context("a benchmark input does not decode"))
        .collect::<Result<_>>()?;
    let reference = envs.iter().filter(|e| matches!(e.payload.key(), EventKey::Reference(_))).count() as u64;
    let inputs = envs.len() as u64;
    let households = inputs - reference;
    let input_bytes: u64 = m.raws.iter().map(|r| r.len() as u64).sum();
    writeln!(
        out,
        "  setup ({:.1} s, untimed): {} inputs, {} protobuf bytes: {} reference (1 partition), {} household ({partitions} partitions); each shard folds every reference input, so the engine folds {}",
        t.elapsed().as_secs_f64(),
        group(inputs as f64),
        group(input_bytes as f64),
        group(reference as f64),
        group(households as f64),
        group((households + reference * partitions as u64) as f64)
    )?;
    out.flush()?;

    let opts = EngineOptions {
        batch_inputs_max: cfg.engine.batch_inputs_max,
        settings: cfg.engine.settings.clone(),
        idle_poll: Duration::from_millis(cfg.engine.idle_poll_ms.max(1)),
        fold_threads: cfg.engine.fold_threads,
        ..EngineOptions::default()
    };
    let input = Published { envs, inputs, reference, households, partitions, batch_max: cfg.engine.batch_inputs_max };
    let mut expected: Option<Outputs> = None;
    // The input records as the broker partitioned them, read back once (untimed) for the diagnostic.
    let mut shard_inputs: Option<ShardInputs> = None;
    let mut medians = Vec::new();
    for (mode_index, mode) in modes.iter().enumerate() {
        writeln!(out, "  [{}]", mode.label)?;
        let mut runs = Vec::new();
        for round in 1..=sizes.rounds {
            let r = run_round(mode, mode_index, round, &input, &opts, &mut expected, &mut shard_inputs)?;
            print_round(out, mode, round, inputs, &r)?;
            runs.push(r);
        }
        let m = Medians::of(&runs);
        writeln!(
            out,
            "    median: baseline {:.2} s = {} records/s, engine {:.2} s = {} inputs/s: ratio {:.0}% | from the first record / first fold on: baseline {:.2} s, engine {:.2} s: ratio {:.0}%",
            m.baseline_s,
            group(inputs as f64 / m.baseline_s),
            m.engine_s,
            group(inputs as f64 / m.engine_s),
            100.0 * m.baseline_s / m.engine_s,
            m.baseline_s - m.baseline_start_s,
            m.engine_s - m.engine_start_s,
            100.0 * (m.baseline_s - m.baseline_start_s) / (m.engine_s - m.engine_start_s)
        )?;
        out.flush()?;
        medians.push((mode.label, m));
    }
    if let Some(o) = &expected {
        writeln!(
            out,
            "  every run: {} orders, {} audit records, {} dead letters (the baseline produces one record per input)",
            count(o.orders as usize),
            count(o.audit as usize),
            count(o.dead_letters as usize)
        )?;
    }
    if let Some(shards) = &shard_inputs {
        let (mem_s, durable_s) = fold_diagnostic(shards, &input, expected.as_ref(), &cfg.engine.settings, out)?;
        for (label, m) in &medians {
            writeln!(
                out,
                "  [{label}] engine median {:.2} s = start-up to the first fold {:.2} s + folding (in memory, above) {:.2} s + sled writes (with sled − in memory) {:.2} s + the rest {:.2} s (publishing: produce, waiting for the acknowledgements or the transaction; fetching; idle waits; less the time the writes overlap the folding, which can make it negative)",
                m.engine_s,
                m.engine_start_s,
                mem_s,
                durable_s - mem_s,
                m.engine_s - m.engine_start_s - durable_s
            )?;
        }
    }
    Ok(medians
        .into_iter()
        .flat_map(|(label, m)| {
            [
                Row {
                    benchmark: format!("{KAFKA} {label}"),
                    figure: inputs as f64 / m.engine_s,
                    unit: "inputs/s",
                    baseline: Some(inputs as f64 / m.baseline_s),
                    goal: Some(Goal::RatioAtLeast(KAFKA_GOAL_RATIO)),
                },
                Row {
                    benchmark: format!("{KAFKA} {label} (after start-up)"),
                    figure: inputs as f64 / (m.engine_s - m.engine_start_s),
                    unit: "inputs/s",
                    baseline: Some(inputs as f64 / (m.baseline_s - m.baseline_start_s)),
                    goal: Some(Goal::RatioAtLeast(KAFKA_GOAL_RATIO)),
                },
            ]
        })
        .collect())
}

/// The modes to run: a real broker if one is given, then the mock cluster without and with transactions.
fn modes(brokers: &KafkaBrokers, out: &mut dyn Write) -> Result<Vec<Mode>> {
    let mut modes = Vec::new();
    match (&brokers.external, &brokers.tansu) {
        (Some(b), _) => modes.push(Mode { label: "broker", place: Place::External(b.clone()), transactional: false }),
        (None, Some(bin)) => modes.push(Mode { label: "tansu", place: Place::Tansu(bin.clone()), transactional: false }),
        (None, None) => writeln!(
            out,
            "  no real broker (give --brokers, OVERLAY_KAFKA_BROKERS or OVERLAY_TANSU; scripts/bench-kafka does): the mock cluster only"
        )?,
    }
    if brokers.tansu.is_some() && brokers.external.is_none() {
        writeln!(out, "  tansu has no transactions (EndTxn unsupported): transactions on the mock cluster only")?;
    }
    modes.push(Mode { label: "mock", place: Place::Mock, transactional: false });
    modes.push(Mode { label: "mock txn", place: Place::Mock, transactional: true });
    Ok(modes)
}

/// The inputs every round publishes, and what the engine must make of them.
struct Published {
    envs: Vec<Envelope>,
    inputs: u64,
    reference: u64,
    households: u64,
    partitions: u32,
    batch_max: usize,
}

impl Published {
    /// Inputs the shards fold together: every shard folds every reference input.
    fn folds(&self) -> u64 {
        self.households + self.reference * self.partitions as u64
    }
}

struct Round {
    engine_first: bool,
    publish_s: f64,
    baseline: PipeRun,
    engine: EngineRun,
}

/// Medians over a mode's rounds (each figure on its own).
struct Medians {
    baseline_s: f64,
    baseline_start_s: f64,
    engine_s: f64,
    engine_start_s: f64,
}

impl Medians {
    fn of(runs: &[Round]) -> Self {
        let m = |f: &dyn Fn(&Round) -> f64| median(runs.iter().map(f).collect());
        Self {
            baseline_s: m(&|r| r.baseline.secs),
            baseline_start_s: m(&|r| r.baseline.first_record_secs),
            engine_s: m(&|r| r.engine.secs),
            engine_start_s: m(&|r| r.engine.first_fold_secs),
        }
    }
}

/// One round on an empty broker: publish (untimed), the baseline and the
/// engine in the round's order, then the checks (untimed).
fn run_round(
    mode: &Mode,
    mode_index: usize,
    round: usize,
    input: &Published,
    opts: &EngineOptions,
    expected: &mut Option<Outputs>,
    shard_inputs: &mut Option<ShardInputs>,
) -> Result<Round> {
    let broker = mode.broker()?;
    let kcfg = KafkaConfig {
        brokers: broker.brokers(),
        household_partitions: input.partitions,
        transactional: mode.transactional,
        group_id: format!("overlay-bench-{}-{mode_index}-{round}", std::process::id()),
        ..KafkaConfig::default()
    };
    broker.create_topics(&kcfg)?;
    let t = Instant::now();
    let published = overlay_kafka::admin::publish_events(&kcfg, &input.envs)?;
    ensure!(published as u64 == input.inputs, "published {published} of {} inputs", input.inputs);
    let publish_s = t.elapsed().as_secs_f64();
    // Alternate which side goes first, so neither always finds the broker busier.
    let engine_first = round.is_multiple_of(2);
    let (mut engine, mut baseline) = (None, None);
    for run_engine in [engine_first, !engine_first] {
        if run_engine {
            let dir = TempDir::new("kafka-engine")?;
            engine = Some(engine_run(dir.path(), &kcfg, opts.clone())?);
        } else {
            let txn_records_max = mode.transactional.then_some(input.batch_max as u64);
            baseline = Some(raw_pipe(&kcfg, &format!("{}-copy", kcfg.group_id), txn_records_max)?);
        }
    }
    let (engine, baseline) = (engine.expect("the engine ran"), baseline.expect("the baseline ran"));
    ensure!(baseline.records == input.inputs, "the baseline copied {} of {} records", baseline.records, input.inputs);
    ensure!(
        engine.stats.inputs == input.folds(),
        "the engine folded {} inputs, expected {}",
        engine.stats.inputs,
        input.folds()
    );
    let outputs =
        Outputs { orders: engine.stats.orders, audit: engine.stats.audit, dead_letters: engine.stats.dead_letters };
    ensure!(
        *expected.get_or_insert_with(|| outputs.clone()) == outputs,
        "the engine's outputs differ between runs: {outputs:?} against {expected:?}"
    );
    let (orders_on, copies_on) = (count_records(&kcfg, ORDERS)?, count_records(&kcfg, COPY)?);
    ensure!(
        orders_on == outputs.orders && copies_on == input.inputs,
        "on the broker: {orders_on} orders, {copies_on} copies; expected {}, {}",
        outputs.orders,
        input.inputs
    );
    // The mock cluster keeps only the last 5 MB of a partition: the audit partitions outgrow that.
    if !matches!(mode.place, Place::Mock) {
        let audit_on = count_records(&kcfg, AUDIT)?;
        ensure!(audit_on == outputs.audit, "on the broker: {audit_on} audit records, expected {}", outputs.audit);
    }
    if shard_inputs.is_none() {
        *shard_inputs = Some(read_shard_inputs(&kcfg)?);
    }
    broker.clean(&kcfg)?;
    Ok(Round { engine_first, publish_s, baseline, engine })
}

fn print_round(out: &mut dyn Write, mode: &Mode, round: usize, inputs: u64, r: &Round) -> Result<()> {
    let (b, e) = (&r.baseline, &r.engine);
    let produced = e.stats.orders + e.stats.audit + e.stats.dead_letters;
    writeln!(
        out,
        "    round {round} ({} first; inputs published in {:.1} s, untimed): baseline {:.2} s = {} records/s (first record at {:.2} s{}) | engine {:.2} s = {} inputs/s (first fold at {:.2} s; {} batches; {} records produced) | ratio {:.0}%",
        if r.engine_first { "engine" } else { "baseline" },
        r.publish_s,
        b.secs,
        group(inputs as f64 / b.secs),
        b.first_record_secs,
        if mode.transactional {
            format!("; {} transactions, {:.2} s committing them", b.transactions, b.commit_secs)
        } else {
            String::new()
        },
        e.secs,
        group(inputs as f64 / e.secs),
        e.first_fold_secs,
        e.stats.batches,
        group(produced as f64),
        100.0 * b.secs / e.secs
    )?;
    out.flush()?;
    Ok(())
}

/// Folds the shards' inputs without Kafka, in memory and with sled; prints
/// and returns both times.
fn fold_diagnostic(
    shards: &ShardInputs,
    input: &Published,
    expected: Option<&Outputs>,
    settings: &EngineSettings,
    out: &mut dyn Write,
) -> Result<(f64, f64)> {
    let (mem_s, mem) = fold_shards(shards, None, input.batch_max, settings)?;
    let dir = TempDir::new("kafka-shards")?;
    let (durable_s, durable) = fold_shards(shards, Some(dir.path()), input.batch_max, settings)?;
    ensure!(
        mem == durable && expected == Some(&durable),
        "the shards folded without Kafka made {durable:?} (in memory {mem:?}), the engine {expected:?}"
    );
    writeln!(
        out,
        "  diagnostic: the {} shards' {} inputs folded without Kafka, in the engine's merge order, decode included, one thread: in memory {mem_s:.2} s = {} inputs/s; with sled (apply_batch + flush every {} inputs of a shard, inline as the engine commits) {durable_s:.2} s = {} inputs/s",
        input.partitions,
        group(input.folds() as f64),
        group(input.inputs as f64 / mem_s),
        input.batch_max,
        group(input.inputs as f64 / durable_s)
    )?;
    Ok((mem_s, durable_s))
}

/// The input records as the broker partitioned them, and each shard's fold
/// order: the reference partition merged with one household partition by
/// (event time, reference first, offset), as the engine merges them.
struct ShardInputs {
    /// (topic/partition, offset, protobuf): the reference records, then the household records.
    records: Vec<(String, u64, Vec<u8>)>,
    /// Per household partition: indexes into `records`, in fold order.
    shards: Vec<(u32, Vec<usize>)>,
}

fn read_shard_inputs(cfg: &KafkaConfig) -> Result<ShardInputs> {
    let mut records: Vec<(String, u64, Vec<u8>)> = Vec::new();
    let mut partition_of = Vec::new();
    for (p, o, v) in overlay_kafka::admin::read_topic(cfg, REFERENCE)? {
        records.push((format!("{REFERENCE}/{p}"), o, v));
        partition_of.push(None);
    }
    for (p, o, v) in overlay_kafka::admin::read_topic(cfg, HOUSEHOLDS)? {
        records.push((format!("{HOUSEHOLDS}/{p}"), o, v));
        partition_of.push(Some(p));
    }
    let keys: Vec<_> = records
        .iter()
        .zip(&partition_of)
        .map(|((_, o, v), p)| {
            let time =
                overlay_proto::decode_envelope(v).map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |e| e.event_time);
            (time, p.is_some(), *o)
        })
        .collect();
    let reference: Vec<usize> = (0..records.len()).filter(|i| partition_of[*i].is_none()).collect();
    let shards = (0..cfg.household_partitions)
        .map(|p| {
            let households: Vec<usize> = (0..records.len()).filter(|i| partition_of[*i] == Some(p)).collect();
            // Two offset-ordered sequences merged by the key, as the engine's fold_one does.
            let (mut r, mut h) = (reference.iter().peekable(), households.iter().peekable());
            let mut order = Vec::with_capacity(reference.len() + households.len());
            loop {
                let next = match (r.peek(), h.peek()) {
                    (Some(&&a), Some(&&b)) if keys[a] <= keys[b] => r.next(),
                    (Some(_), Some(_)) | (None, Some(_)) => h.next(),
                    (Some(_), None) => r.next(),
                    (None, None) => break,
                };
                order.extend(next.copied());
            }
            (p, order)
        })
        .collect();
    Ok(ShardInputs { records, shards })
}

/// Folds every shard's inputs, one shard after the other, through a folder
/// over a `MemStore`, or over its own tree of one sled store in `dir`
/// committed (apply_batch + flush) every `batch_max` inputs of a shard and at
/// its end, as the engine's `commit_shard` does. Every record is decoded
/// once, as the engine does. Returns the seconds and the outputs.
fn fold_shards(
    inputs: &ShardInputs,
    dir: Option<&std::path::Path>,
    batch_max: usize,
    settings: &EngineSettings,
) -> Result<(f64, Outputs)> {
    let root = dir.map(SledStore::open).transpose()?;
    let mut folders = Vec::new();
    for (p, _) in &inputs.shards {
        let store: Box<dyn Store> = match &root {
            Some(r) => Box::new(r.tree(&format!("shard/{HOUSEHOLDS}/{p}"))?),
            None => Box::new(MemStore::new()),
        };
        folders.push(Folder::open(store, settings.clone())?);
    }
    let mut o = Outputs { orders: 0, audit: 0, dead_letters: 0 };
    let mut add = |c: overlay_store::Outputs| {
        o.orders += c.orders;
        o.audit += c.audit;
        o.dead_letters += c.dead_letters;
    };
    let t = Instant::now();
    let decoded: Vec<_> = inputs.records.iter().map(|(_, _, raw)| overlay_proto::decode_envelope(raw)).collect();
    for ((_, order), folder) in inputs.shards.iter().zip(&mut folders) {
        for &i in order {
            let (position_key, offset, raw) = &inputs.records[i];
            let input = match &decoded[i] {
                Ok(e) => Input::Event(e),
                Err(e) => Input::Undecodable(e),
            };
            let source = format!("{position_key}/{offset}");
            std::hint::black_box(folder.fold(&source, Some((position_key, offset + 1)), raw, input));
            if folder.uncommitted() >= batch_max as u64 {
                add(folder.commit()?);
            }
        }
        add(folder.commit()?);
    }
    Ok((t.elapsed().as_secs_f64(), o))
}
