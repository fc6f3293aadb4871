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
use overlay_store::{Folder, MemStore, SledStore, Store, WriteBatch};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
    /// The sizes of a full or a `quick` run, with `partitions` household
    /// partitions instead of the default where given.
    pub fn new(quick: bool, partitions: Option<u32>) -> Self {
        let base = DemoSpec::default();
        let mut sizes = if quick {
            Self { spec: DemoSpec { households: 20, price_days: 3, ..base }, household_partitions: 2, rounds: 1 }
        } else {
            Self {
                spec: DemoSpec { households: 200, price_days: 10, ..base },
                household_partitions: KafkaConfig::default().household_partitions,
                rounds: 3,
            }
        };
        if let Some(p) = partitions {
            sizes.household_partitions = p;
        }
        sizes
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
                "  [{label}] engine median {:.2} s = start-up to the first fold {:.2} s + folding (in memory, above) {:.2} s + sled writes (with sled − in memory) {:.2} s + the rest {:.2} s (publishing: produce, the transaction where there is one, the acknowledgements at the end; fetching; idle waits; less the time the writes and the publishing overlap the folding, which can make it negative)",
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
    // The mock cluster keeps only the last 5 MB of a partition: the audit
    // partitions outgrow that, and with fewer partitions than the default
    // the orders and copies do too (their counts above hold all the same).
    let mock = matches!(mode.place, Place::Mock);
    if !mock || input.partitions >= KafkaConfig::default().household_partitions {
        let (orders_on, copies_on) = (count_records(&kcfg, ORDERS)?, count_records(&kcfg, COPY)?);
        ensure!(
            orders_on == outputs.orders && copies_on == input.inputs,
            "on the broker: {orders_on} orders, {copies_on} copies; expected {}, {}",
            outputs.orders,
            input.inputs
        );
    }
    if !mock {
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
    let (mem_s, mem) = fold_shards(shards, Stores::Memory, input.batch_max, settings)?;
    let dir = TempDir::new("kafka-shards")?;
    let (durable_s, durable) = fold_shards(shards, Stores::Sled(dir.path()), input.batch_max, settings)?;
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
    explain_sled_writes(shards, input.batch_max, settings, durable_s - mem_s, out)?;
    Ok((mem_s, durable_s))
}

/// Where the diagnostic's sled time goes: its batches counted by kind of
/// key (a new key, an update, a delete; untimed, a third fold over counting
/// in-memory stores), against what sled takes on this machine for each
/// (measured alone, [`sled_costs`]).
fn explain_sled_writes(
    shards: &ShardInputs,
    batch_max: usize,
    settings: &EngineSettings,
    measured_s: f64,
    out: &mut dyn Write,
) -> Result<()> {
    let counts: Vec<Arc<Mutex<KeyCounts>>> = shards.shards.iter().map(|_| Arc::default()).collect();
    fold_shards(shards, Stores::Counting(&counts), batch_max, settings)?;
    let mut total = KeyCounts::default();
    for c in &counts {
        total.add(&c.lock().expect("key counts lock"));
    }
    let dir = TempDir::new("sled-costs")?;
    let costs = sled_costs(dir.path())?;
    let small =
        |f: fn(&Tally) -> u64| total.kinds.iter().filter(|(k, _)| k.starts_with("s:")).map(|(_, t)| f(t)).sum::<u64>();
    let (new, updated, deleted) = (small(|t| t.new), small(|t| t.updated), small(|t| t.deleted));
    let chunk_bytes: u64 = total.kinds.iter().filter(|(k, _)| !k.starts_with("s:")).map(|(_, t)| t.bytes).sum();
    let by_kind: Vec<String> = total
        .kinds
        .iter()
        .filter(|(k, t)| k.starts_with("s:") && t.new > 0)
        .map(|(k, t)| format!("{} {k}", count(t.new as usize)))
        .collect();
    let predicted = total.batches as f64 * costs.commit_s
        + new as f64 * costs.new_key_s
        + (updated + deleted) as f64 * costs.update_s
        + chunk_bytes as f64 / costs.chunk_bytes_per_s;
    writeln!(
        out,
        "  diagnostic: its sled writes, by kind: {} commits; state records: {} new keys ({}), {} updates, {} deletes; stream chunks {:.1} MB",
        count(total.batches as usize),
        count(new as usize),
        by_kind.join(", "),
        count(updated as usize),
        count(deleted as usize),
        chunk_bytes as f64 / 1e6
    )?;
    writeln!(
        out,
        "  diagnostic: sled alone on this machine (SledStore::commit of synthetic batches): a commit {:.2} ms, a new key {:.1} µs, an update or delete {:.1} µs, chunk bytes {:.0} MB/s: so {:.2} s for the writes above, {:.2} s measured (with sled − in memory)",
        costs.commit_s * 1e3,
        costs.new_key_s * 1e6,
        costs.update_s * 1e6,
        costs.chunk_bytes_per_s / 1e6,
        predicted,
        measured_s
    )?;
    Ok(())
}

/// One kind of key's writes.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    new: u64,
    updated: u64,
    deleted: u64,
    bytes: u64,
}

/// What a store's batches did to its keyspace, by kind of key.
#[derive(Debug, Default)]
struct KeyCounts {
    batches: u64,
    /// Keys present (a put of one of these is an update, not a new key).
    present: BTreeSet<Vec<u8>>,
    kinds: BTreeMap<&'static str, Tally>,
}

impl KeyCounts {
    fn note(&mut self, batch: &WriteBatch) {
        self.batches += 1;
        for (k, v) in &batch.ops {
            let t = self.kinds.entry(key_kind(k)).or_default();
            match v {
                Some(v) => {
                    t.bytes += (k.len() + v.len()) as u64;
                    if self.present.insert(k.clone()) {
                        t.new += 1;
                    } else {
                        t.updated += 1;
                    }
                }
                None => {
                    self.present.remove(k);
                    t.deleted += 1;
                }
            }
        }
    }

    fn add(&mut self, other: &KeyCounts) {
        self.batches += other.batches;
        for (k, t) in &other.kinds {
            let mine = self.kinds.entry(k).or_default();
            mine.new += t.new;
            mine.updated += t.updated;
            mine.deleted += t.deleted;
            mine.bytes += t.bytes;
        }
    }
}

/// A key's kind: its state-record prefix (`s:seen@`, `s:po:`, …) or its
/// area (`j:` journal chunks, `a:` audit chunks, `p:` positions, …).
fn key_kind(key: &[u8]) -> &'static str {
    use overlay_store::keys::*;
    const STATE_KINDS: [&str; 12] =
        [SECURITY, MODEL, PRICE, ESG, HOUSEHOLD, ACCOUNT, LOTS, PENDING, SEEN, SEEN_COMMIT, CHAIN, META];
    const AREAS: [&str; 8] = ["j:", "o:", "a:", "d:", "p:", "c:", "x:", "s:"];
    STATE_KINDS.iter().chain(AREAS.iter()).find(|k| key.starts_with(k.as_bytes())).copied().unwrap_or("other")
}

/// A `MemStore` that counts what each batch does to its keys.
struct CountingStore {
    inner: MemStore,
    counts: Arc<Mutex<KeyCounts>>,
}

impl Store for CountingStore {
    fn commit(&self, batch: WriteBatch) -> Result<(), overlay_store::StoreError> {
        self.counts.lock().expect("key counts lock").note(&batch);
        self.inner.commit(batch)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, overlay_store::StoreError> {
        self.inner.get(key)
    }
    fn scan(&self, prefix: &[u8], start: Option<&[u8]>) -> overlay_store::Records<'_> {
        self.inner.scan(prefix, start)
    }
    fn last(&self, prefix: &[u8]) -> Result<Option<overlay_store::Entry>, overlay_store::StoreError> {
        self.inner.last(prefix)
    }
}

/// What sled takes on this machine for each kind of write, through
/// `SledStore::commit` (apply_batch + flush), measured alone.
struct SledCosts {
    /// One commit of one small update.
    commit_s: f64,
    /// A new small key (sled splits a leaf every 16 or so), beyond the commit.
    new_key_s: f64,
    /// An update of a small key that exists, beyond the commit.
    update_s: f64,
    /// Bytes of large values (a stream chunk per commit).
    chunk_bytes_per_s: f64,
}

/// Commits in each measurement, and keys per commit (about a shard batch's).
const COST_COMMITS: usize = 60;
const COST_KEYS_PER_COMMIT: usize = 600;
const COST_CHUNK_BYTES: usize = 128 * 1024;

fn sled_costs(dir: &std::path::Path) -> Result<SledCosts> {
    let root = SledStore::open(dir)?;
    let timed = |name: &str, batch_of: &dyn Fn(usize) -> WriteBatch| -> Result<f64> {
        let store = root.tree(name)?;
        // The keys updated below exist before the clock starts.
        store.commit(batch_of(COST_COMMITS))?;
        let t = Instant::now();
        for i in 0..COST_COMMITS {
            store.commit(batch_of(i))?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let small = |k: String| (k.into_bytes(), 7u64.to_be_bytes().to_vec());
    let one = timed("one", &|_| batch([small("s:px:A".into())]))?;
    let new =
        timed("new", &|i| batch((0..COST_KEYS_PER_COMMIT).map(|j| small(format!("s:seen:bench-{i:06}-{j:04}")))))?;
    let updates = timed("updates", &|_| batch((0..COST_KEYS_PER_COMMIT).map(|j| small(format!("s:px:{j:04}")))))?;
    let chunk = vec![b'x'; COST_CHUNK_BYTES];
    let chunks = timed("chunks", &|i| {
        batch([b"j:", b"o:", b"a:", b"d:"].map(|p| (overlay_store::keys::seq_key(p, i as u64), chunk.clone())))
    })?;
    let keys = (COST_COMMITS * COST_KEYS_PER_COMMIT) as f64;
    Ok(SledCosts {
        commit_s: one / COST_COMMITS as f64,
        new_key_s: ((new - one) / keys).max(0.0),
        update_s: ((updates - one) / keys).max(0.0),
        chunk_bytes_per_s: (4 * COST_CHUNK_BYTES * COST_COMMITS) as f64 / (chunks - one).max(1e-9),
    })
}

fn batch(ops: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> WriteBatch {
    let mut b = WriteBatch::default();
    for (k, v) in ops {
        b.put(k, v);
    }
    b
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

/// Where [`fold_shards`] keeps each shard's store.
#[derive(Clone, Copy)]
enum Stores<'a> {
    Memory,
    /// One tree per shard of one sled store in this directory.
    Sled(&'a std::path::Path),
    /// In memory, each shard's batches counted into its own counts.
    Counting(&'a [Arc<Mutex<KeyCounts>>]),
}

/// Folds every shard's inputs, one shard after the other, through a folder
/// over a store of `stores`, committed every `batch_max` inputs of a shard
/// and at its end, as the engine's `commit_shard` does (on sled: one tree per
/// shard, apply_batch + flush). Every record is decoded once, as the engine
/// does. Returns the seconds and the outputs.
fn fold_shards(
    inputs: &ShardInputs,
    stores: Stores<'_>,
    batch_max: usize,
    settings: &EngineSettings,
) -> Result<(f64, Outputs)> {
    let root = match stores {
        Stores::Sled(dir) => Some(SledStore::open(dir)?),
        _ => None,
    };
    let mut folders = Vec::new();
    for (i, (p, _)) in inputs.shards.iter().enumerate() {
        let store: Box<dyn Store> = match (&root, stores) {
            (Some(r), _) => Box::new(r.tree(&format!("shard/{HOUSEHOLDS}/{p}"))?),
            (None, Stores::Counting(counts)) => {
                Box::new(CountingStore { inner: MemStore::new(), counts: counts[i].clone() })
            }
            (None, _) => Box::new(MemStore::new()),
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
        // Caught up: the state records too, as the engine writes them.
        add(folder.commit_all()?);
    }
    Ok((t.elapsed().as_secs_f64(), o))
}
