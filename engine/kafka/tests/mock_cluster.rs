//! The sharded engine on librdkafka's mock cluster, which (unlike tansu)
//! offers transactions: outputs published in transactions, a restart
//! publishes nothing twice, and a new instance restores every shard from the
//! inputs to the same outputs.
//!
//! Fault tests: a broker outage, a transaction that must abort, a fenced
//! zombie, a rebalance while an instance holds folded inputs it has not
//! written, and partitions moving while an instance's published records are
//! still in flight (the broker refusing them for a while). Each ends with the outputs of a clean run: every record once, in
//! the same order and with the same sequence numbers in each output
//! partition, no order id twice.
//!
//! What the mock cluster (librdkafka 2.12) cannot show: `EndTxn` writes no
//! transaction markers and Fetch reports no aborted transactions, so records
//! of an aborted transaction stay visible to `read_committed` readers; and a
//! second `InitProducerId` for a transactional id makes a new producer id
//! without fencing the old one (`rd_kafka_mock_handle_EndTxn`,
//! `rd_kafka_mock_pid_new` in rdkafka_mock_handlers.c). So faults here strike
//! before a transaction's records reach the log, and fencing is the broker's
//! answer injected into the zombie's next transaction.

use overlay_core::event::{decode_json, Envelope};
use overlay_kafka::admin::{publish_events, read_topic, topic_specs, ReaderContext, REQUEST_TIMEOUT};
use overlay_kafka::{EngineOptions, KafkaClientConfig, KafkaConfig, KafkaEngine, RunStats};
use overlay_proto::topics::{AUDIT, DEAD_LETTERS, HEADER_SEQ, HOUSEHOLDS, ORDERS, REFERENCE};
use overlay_scenario::{demo_events, DemoSpec, MarketData};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

fn day() -> Vec<Envelope> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples/day.ndjson")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| decode_json(l.as_bytes()).unwrap()).collect()
}

fn orders(cfg: &KafkaConfig) -> Vec<Value> {
    read_topic(cfg, "overlay.orders")
        .unwrap()
        .into_iter()
        .map(|(_, _, v)| serde_json::from_slice(&v).unwrap())
        .collect()
}

fn run(dir: &std::path::Path, cfg: &KafkaConfig) -> overlay_kafka::RunStats {
    let mut engine = KafkaEngine::open(dir, cfg, EngineOptions::default()).expect("the engine opens");
    engine.run(&mut |_, _| {}).expect("the engine runs")
}

#[test]
fn transactional_shards_publish_once_and_a_new_instance_restores_them() {
    // given a mock cluster with the engine's topics and the example day published
    let cluster = MockCluster::new(1).expect("a mock cluster");
    let cfg = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        household_partitions: 2,
        transactional: true,
        ..KafkaConfig::default()
    };
    // (the mock cluster does not serve CreateTopics: its own call makes them)
    for t in topic_specs(&cfg) {
        cluster.create_topic(t.name, t.partitions as i32, 1).expect("a topic");
    }
    publish_events(&cfg, &day()).expect("published");
    // when an engine folds it, publishing in transactions
    let tmp = tempfile::tempdir().unwrap();
    let first = run(&tmp.path().join("a"), &cfg);
    // then it made orders, each once
    let published = orders(&cfg);
    assert!(first.orders > 0, "{first:?}");
    assert_eq!(published.len() as u64, first.orders);
    let ids: BTreeSet<&str> = published.iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), published.len(), "an order id repeats");
    // when the same instance runs again, nothing new is folded or published
    let again = run(&tmp.path().join("a"), &cfg);
    assert_eq!(again.inputs, 0, "{again:?}");
    assert_eq!(orders(&cfg).len(), published.len());
    // when a new instance (no state of its own) takes the partitions over
    let other = run(&tmp.path().join("b"), &cfg);
    // then it restores every shard from the inputs and publishes nothing twice
    assert_eq!(other.restores.len(), 2, "{other:?}");
    assert_eq!(other.orders, first.orders, "the restored shards made the same orders");
    assert_eq!(orders(&cfg), published, "the restore published orders again");
}

// ---------------------------------------------------------------------------
// Fault tests: the scenario, the clean run, and how outputs are compared

const PARTITIONS: u32 = 2;
/// Inputs per durable batch: small, so that a run publishes many times.
const BATCH_INPUTS_MAX: usize = 5;
/// Engines a supervisor starts on one data directory before the test gives up.
const RESTARTS_MAX: usize = 4;
/// How long an engine may take to reach the input where a fault strikes.
const FAULT_POINT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long following instances may take to publish everything after a rebalance.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the broker stays down: longer than librdkafka's first reconnect backoffs.
const OUTAGE: Duration = Duration::from_secs(4);
/// Time for a joining member to reach the group coordinator and for the
/// running member's heartbeat (every second) to learn of the rebalance.
const JOIN_SETTLE: Duration = Duration::from_secs(3);

/// The demo on its first 30 tickers (12 households, 3 price days): a few
/// hundred inputs, enough for dozens of publishes at `BATCH_INPUTS_MAX`.
fn scenario() -> &'static [Envelope] {
    static EVENTS: OnceLock<Vec<Envelope>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let full = MarketData::embedded().expect("the shipped market data");
        let mut prices = full.prices.clone();
        prices.tickers.truncate(30);
        for row in &mut prices.closes {
            row.truncate(30);
        }
        let spec = DemoSpec { households: 12, price_days: 3, ..DemoSpec::default() };
        demo_events(&spec, &full.with_prices(prices)).expect("the demo scenario")
    })
}

/// Every output partition's records: (topic, partition) → (overlay-seq, value)s in offset order.
type Outputs = BTreeMap<(&'static str, u32), Vec<(u64, Vec<u8>)>>;

/// A fault-free run of the scenario, on a cluster of its own.
struct Clean {
    outputs: Outputs,
    /// Inputs each shard folds (the whole reference topic and its household partition).
    folds: BTreeMap<u32, u64>,
}

impl Clean {
    fn inputs(&self) -> u64 {
        self.folds.values().sum()
    }
}

fn clean() -> &'static Clean {
    static CLEAN: OnceLock<Clean> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let bed = Bed::new(false, &[]);
        let dir = bed.dir("clean");
        let opts = EngineOptions::default();
        let run = run_engine(&dir, &bed.cfg, opts, None, None);
        let stats = run.result.expect("the clean run finishes");
        let outputs = read_outputs(&bed.cfg);
        // what the comparisons rest on
        assert_eq!(stats.inputs, run.folds.values().sum::<u64>());
        assert!(stats.orders > 0 && stats.orders == outputs_len(&outputs, ORDERS), "{stats:?}");
        for ((topic, p), records) in &outputs {
            if *topic != DEAD_LETTERS {
                let seqs: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
                assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{topic}/{p}: seqs not 1..n");
            }
        }
        for (p, folded) in &run.folds {
            assert_eq!(durable_inputs(&dir, *p), *folded, "shard {p}: positions count the inputs folded");
        }
        assert_no_twice(&outputs, "the clean run");
        Clean { outputs, folds: run.folds }
    })
}

fn outputs_len(outputs: &Outputs, topic: &str) -> u64 {
    outputs.iter().filter(|((t, _), _)| *t == topic).map(|(_, r)| r.len() as u64).sum()
}

/// A mock cluster with the engine's topics and the scenario published.
struct Bed {
    cluster: MockCluster<'static, DefaultProducerContext>,
    cfg: KafkaConfig,
    tmp: tempfile::TempDir,
}

impl Bed {
    fn new(transactional: bool, properties: &[(&str, &str)]) -> Self {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        let cfg = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            household_partitions: PARTITIONS,
            transactional,
            properties: properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..KafkaConfig::default()
        };
        for t in topic_specs(&cfg) {
            cluster.create_topic(t.name, t.partitions as i32, 1).expect("a topic");
        }
        publish_events(&cfg, scenario()).expect("the scenario is published");
        Self { cluster, cfg, tmp: tempfile::tempdir().expect("a temporary directory") }
    }

    /// An instance's data directory.
    fn dir(&self, instance: &str) -> PathBuf {
        self.tmp.path().join(instance)
    }
}

fn fault_opts() -> EngineOptions {
    EngineOptions { batch_inputs_max: BATCH_INPUTS_MAX, ..EngineOptions::default() }
}

/// Every output partition as a `read_committed` consumer sees it now, with
/// each record's `overlay-seq` header. (Up to the high watermarks: on the
/// mock cluster they are the partitions' ends, and the last stable offsets.)
fn read_outputs(cfg: &KafkaConfig) -> Outputs {
    let mut c = cfg.client();
    c.set("group.id", "overlay-fault-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<ReaderContext> = c.create_with_context(ReaderContext).expect("a reader");
    let topics = [ORDERS, AUDIT, DEAD_LETTERS];
    let mut out = Outputs::new();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            let (_, high) = consumer.fetch_watermarks(topic, p as i32, REQUEST_TIMEOUT).expect("the watermarks");
            out.insert((topic, p), Vec::new());
            if high > 0 {
                ends.insert((topic, p), high);
                tpl.add_partition_offset(topic, p as i32, Offset::Beginning).unwrap();
            }
        }
    }
    consumer.assign(&tpl).expect("the reader is assigned");
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while !ends.is_empty() {
        assert!(Instant::now() < deadline, "timed out reading the outputs");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = (*topics.iter().find(|t| **t == m.topic()).expect("an output topic"), m.partition() as u32);
                let seq = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == HEADER_SEQ).and_then(|h| h.value))
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or_else(|| panic!("{}/{} offset {}: no {HEADER_SEQ} header", key.0, key.1, m.offset()));
                out.get_mut(&key).expect("an output partition").push((seq, m.payload().unwrap_or_default().to_vec()));
                if ends.get(&key).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&key);
                }
            }
            Some(Err(e)) => panic!("reading the outputs: {e}"),
            None => {}
        }
    }
    out
}

/// No output partition has a sequence number twice; no order id is published twice.
fn assert_no_twice(outputs: &Outputs, when: &str) {
    for ((topic, p), records) in outputs {
        let mut seen = BTreeSet::new();
        for (seq, _) in records {
            assert!(seen.insert(*seq), "{when}: {topic}/{p} has seq {seq} twice");
        }
    }
    let mut ids = BTreeSet::new();
    for ((topic, _), records) in outputs.iter().filter(|((t, _), _)| *t == ORDERS) {
        for (_, value) in records {
            let order: Value = serde_json::from_slice(value).expect("an order is JSON");
            let id = order["order_id"].as_str().expect("an order id").to_string();
            assert!(ids.insert(id.clone()), "{when}: order {id} published twice in {topic}");
        }
    }
}

/// The outputs are the clean run's: nothing lost, nothing doubled, nothing changed.
fn assert_clean(outputs: &Outputs, when: &str) {
    assert_no_twice(outputs, when);
    assert_prefix_of_clean(outputs, when);
    for (key, records) in outputs {
        let clean = &clean().outputs[key];
        assert_eq!(records.len(), clean.len(), "{when}: {}/{} lost records", key.0, key.1);
    }
}

/// Each output partition holds the beginning of the clean run's: nothing out
/// of order, nothing twice, nothing from an aborted or fenced transaction.
fn assert_prefix_of_clean(outputs: &Outputs, when: &str) {
    assert_eq!(outputs.keys().collect::<Vec<_>>(), clean().outputs.keys().collect::<Vec<_>>());
    for (key, records) in outputs {
        let clean = &clean().outputs[key];
        assert!(
            records.len() <= clean.len(),
            "{when}: {}/{} has {} records, the clean run {}",
            key.0,
            key.1,
            records.len(),
            clean.len()
        );
        if let Some(i) = records.iter().zip(clean).position(|(a, b)| a != b) {
            panic!(
                "{when}: {}/{} differs from the clean run at record {i}: seq {} where the clean run has seq {}",
                key.0, key.1, records[i].0, clean[i].0
            );
        }
    }
}

/// Inputs a shard's state in `dir` has written durably: its next reference
/// offset plus its next household offset (the inputs were published without
/// gaps, so an offset counts the records before it).
fn durable_inputs(dir: &Path, p: u32) -> u64 {
    let root = overlay_store::SledStore::open(&dir.join("state")).expect("the instance's store");
    let shard = root.tree(&format!("shard/{HOUSEHOLDS}/{p}")).expect("the shard's tree");
    let position = |source: &str| overlay_store::position(&shard, source).expect("a position").unwrap_or(0);
    position(&format!("{REFERENCE}/0")) + position(&format!("{HOUSEHOLDS}/{p}"))
}

/// Stops an engine at its `at`-th folded input until released (or the
/// releaser is dropped), or later: not before `after_orders` inputs have
/// been folded since the first that made orders. A shard publishes a batch
/// once its next batch is folded, and the shards fold side by side, so a
/// hold that must strike after orders are published asks for a lead of a
/// few batches of every shard.
struct Hold {
    at: u64,
    after_orders: u64,
    reached: Sender<()>,
    release: Receiver<()>,
}

/// A hold, with the ends the test keeps: learn it was reached, release it.
/// A hold at the `at`-th input, or (`after_orders` > 0) `after_orders`
/// inputs after the first that made orders, whichever is later.
fn hold_after_orders(at: u64, after_orders: u64) -> (Hold, Receiver<()>, Sender<()>) {
    let (reached, reached_rx) = channel();
    let (release_tx, release) = channel();
    (Hold { at, after_orders, reached, release }, reached_rx, release_tx)
}

/// Folds that leave every shard time to publish a few batches.
const PUBLISHED_LEAD: u64 = 4 * BATCH_INPUTS_MAX as u64 * PARTITIONS as u64;

/// What one engine did: how its run ended, the inputs it folded per shard.
struct Outcome {
    result: anyhow::Result<RunStats>,
    folds: BTreeMap<u32, u64>,
}

/// Opens an engine on `dir` and runs it, handing its stop flag to `stop_to`.
fn run_engine(
    dir: &Path,
    cfg: &KafkaConfig,
    opts: EngineOptions,
    hold: Option<Hold>,
    stop_to: Option<Sender<Arc<AtomicBool>>>,
) -> Outcome {
    let mut folds: BTreeMap<u32, u64> = BTreeMap::new();
    let mut engine = match KafkaEngine::open(dir, cfg, opts) {
        Ok(e) => e,
        Err(e) => return Outcome { result: Err(e), folds },
    };
    if let Some(to) = stop_to {
        to.send(engine.stop_handle()).expect("the test takes the stop flag");
    }
    let mut folded = 0u64;
    let mut first_orders: Option<u64> = None;
    let mut hold = hold;
    let result = engine.run(&mut |p, applied| {
        *folds.entry(p).or_default() += 1;
        folded += 1;
        if first_orders.is_none() && !applied.orders.is_empty() {
            first_orders = Some(folded);
        }
        let due = |h: &Hold| {
            folded >= h.at && (h.after_orders == 0 || first_orders.is_some_and(|f| folded >= f + h.after_orders))
        };
        if let Some(h) = hold.take_if(|h| due(h)) {
            let _ = h.reached.send(());
            let _ = h.release.recv();
        }
    });
    Outcome { result, folds }
}

/// Starts engines on `dir` one after another, as a supervisor restarts a
/// failed process, until one finishes. Returns its stats and the errors before it.
fn restart_until_done(dir: &Path, cfg: &KafkaConfig) -> (RunStats, Vec<String>) {
    let mut errors = Vec::new();
    for _ in 0..RESTARTS_MAX {
        match run_engine(dir, cfg, fault_opts(), None, None).result {
            Ok(stats) => return (stats, errors),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    panic!("no run finished in {RESTARTS_MAX} starts: {errors:#?}");
}

/// Runs one engine on `dir` until it has folded `at` inputs, strikes with
/// `fault` while it waits there, then lets it go on; `after` runs while it
/// does. Returns how that run ended.
fn run_with_fault(
    bed: &Bed,
    dir: &Path,
    at: u64,
    after_orders: u64,
    fault: impl FnOnce(),
    after: impl FnOnce(),
) -> Outcome {
    let cfg = &bed.cfg;
    thread::scope(|s| {
        let (hold, reached, release) = hold_after_orders(at, after_orders);
        let run = s.spawn(move || run_engine(dir, cfg, fault_opts(), Some(hold), None));
        reached.recv_timeout(FAULT_POINT_TIMEOUT).expect("the engine reaches the input where the fault strikes");
        fault();
        release.send(()).expect("the engine waits to be released");
        after();
        run.join().expect("the engine thread")
    })
}

fn broker_outage(transactional: bool) {
    // given the scenario on a mock cluster
    // (clients retry connecting at least every half second, not every 10 s;
    // the group forgets a member silent for 3 s, shorter than the outage)
    let props = [("reconnect.backoff.max.ms", "500"), ("session.timeout.ms", "3000"), ("heartbeat.interval.ms", "500")];
    let bed = Bed::new(transactional, &props);
    let dir = bed.dir("a");
    // when the broker goes down a quarter of the way into a run, and comes back
    let first = run_with_fault(
        &bed,
        &dir,
        clean().inputs() / 4,
        0,
        || bed.cluster.broker_down(-1).expect("the broker goes down"),
        || {
            thread::sleep(OUTAGE);
            bed.cluster.broker_up(-1).expect("the broker comes back");
        },
    );
    // then the run rides it out: the outage is shorter than every request
    // timeout, though long enough for the group to take the partitions back
    if let Err(e) = first.result {
        panic!("the run failed in the outage: {e:#}");
    }
    // and the outputs are the clean run's
    assert_clean(&read_outputs(&bed.cfg), "after a broker outage");
}

#[test]
fn a_broker_outage_mid_run_loses_and_doubles_nothing() {
    broker_outage(false);
}

#[test]
fn a_broker_outage_mid_transactional_run_loses_and_doubles_nothing() {
    broker_outage(true);
}

#[test]
fn a_transaction_that_fails_is_aborted_and_a_restart_publishes_its_outputs_once() {
    // given the scenario on a mock cluster, published in transactions
    let bed = Bed::new(true, &[]);
    let dir = bed.dir("a");
    // when, half way in and past the first published orders, the broker refuses the next
    // produce request with a permanent error (the transaction can only abort)
    let refused = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED];
    let first = run_with_fault(
        &bed,
        &dir,
        clean().inputs() / 2,
        PUBLISHED_LEAD,
        || bed.cluster.request_errors(RDKafkaApiKey::Produce, &refused),
        || {},
    );
    // then the run ends with the failed transaction
    let e = first.result.expect_err("the run fails with its transaction");
    let e = format!("{e:#}");
    assert!(e.contains("committing shard") && e.contains("transaction"), "{e}");
    // and what was published is the clean run's beginning: nothing from the aborted transaction
    let before = read_outputs(&bed.cfg);
    assert_prefix_of_clean(&before, "after the aborted transaction");
    assert!(outputs_len(&before, ORDERS) > 0, "the fault struck before anything was published");
    // when a supervisor restarts the instance
    restart_until_done(&dir, &bed.cfg);
    // then the outputs are the clean run's
    assert_clean(&read_outputs(&bed.cfg), "after the restart");
}

#[test]
fn a_fenced_zombie_publishes_nothing_more_and_the_new_owner_publishes_the_rest_once() {
    // given the scenario on a mock cluster, published in transactions
    let bed = Bed::new(true, &[]);
    let zombie = bed.dir("zombie");
    // when, half way in and past the first published orders, a new owner's init_transactions fences the running
    // instance: the broker answers its next transaction with PRODUCER_FENCED
    // (injected: the mock does not fence by itself)
    let fenced = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED];
    let first = run_with_fault(
        &bed,
        &zombie,
        clean().inputs() / 2,
        PUBLISHED_LEAD,
        || bed.cluster.request_errors(RDKafkaApiKey::AddPartitionsToTxn, &fenced),
        || {},
    );
    // then the zombie's run ends, fenced
    let e = first.result.expect_err("the zombie's run fails");
    assert!(format!("{e:#}").contains("fenced"), "{e:#}");
    // and it published nothing after: the outputs are the clean run's beginning
    let before = read_outputs(&bed.cfg);
    assert_prefix_of_clean(&before, "after the zombie was fenced");
    assert!(outputs_len(&before, ORDERS) > 0, "the fence struck before anything was published");
    // when the new owner, an instance with no state of its own, runs
    let (owner, _) = restart_until_done(&bed.dir("owner"), &bed.cfg);
    // then it restores both shards and publishes exactly the rest
    assert_eq!(owner.restores.len(), PARTITIONS as usize, "{owner:?}");
    assert_clean(&read_outputs(&bed.cfg), "after the new owner ran");
}

/// Produce requests the broker refuses while records are to stay in flight
/// (more than the producer's retries send in that time).
const PRODUCE_REFUSALS: usize = 2_000;
/// How long the broker still refuses produce requests after the first
/// instance is released: it serves the group's rebalance in that time.
const REFUSING_AFTER_RELEASE: Duration = Duration::from_secs(3);

#[test]
fn records_in_flight_when_partitions_move_land_before_the_new_owner_reads_where_publishing_stopped() {
    // given the scenario on a mock cluster whose broker refuses every produce
    // request for now, with a retriable error: records handed to the
    // producer stay in flight, retried, whatever the machine's speed
    let bed = Bed::new(false, &[]);
    let refused = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; PRODUCE_REFUSALS];
    bed.cluster.request_errors(RDKafkaApiKey::Produce, &refused);
    // when an instance has folded three quarters of the inputs, its batches
    // durable and handed to the producer, none acknowledged, and a second
    // instance joins the group while those records are in flight, and the
    // first goes on, serving the rebalance, while the broker still refuses
    // them for a while, then takes them
    let joined = second_instance_joins_at_hold(&bed, clean().inputs() * 3 / 4, 0, || {
        thread::sleep(REFUSING_AFTER_RELEASE);
        bed.cluster.clear_request_errors(RDKafkaApiKey::Produce);
    });
    assert!(joined.at_hold.values().all(Vec::is_empty), "records landed while the broker refused them");
    // then partitions moved to the second instance
    let (a_stats, b_stats) = joined.stats();
    assert!(!joined.moved().is_empty(), "the second instance took nothing over: a {a_stats:?}, b {b_stats:?}");
    // and the outputs are the clean run's: what the first instance had in
    // flight landed before it let go, so the new owner, reading where
    // publishing stopped, published none of it again
    assert_clean(&joined.outputs, "once both instances had caught up");
    assert_clean(&read_outputs(&bed.cfg), "after both instances stopped");
}

/// Two instances following the scenario in one group, the second joining
/// while the first waits at a hold.
struct Joined {
    a: Outcome,
    b: Outcome,
    /// The outputs when the first instance reached its hold.
    at_hold: Outputs,
    /// The outputs once complete (or when the time was up).
    outputs: Outputs,
}

impl Joined {
    /// The partitions the second instance took over (restored).
    fn moved(&self) -> BTreeSet<u32> {
        let b = self.b.result.as_ref().expect("the second instance runs");
        b.restores.iter().map(|r| r.partition).collect()
    }

    fn stats(&self) -> (&RunStats, &RunStats) {
        (
            self.a.result.as_ref().expect("the first instance runs"),
            self.b.result.as_ref().expect("the second instance runs"),
        )
    }
}

/// Runs a first instance until its hold (`at`, `after_orders`: see
/// [`hold_after_orders`]); then starts a second one in the group, gives it
/// time to join, releases the first and runs `after_release`; both follow
/// until the outputs are the clean run's (or the time is up), then stop.
fn second_instance_joins_at_hold(bed: &Bed, at: u64, after_orders: u64, after_release: impl FnOnce()) -> Joined {
    let (dir_a, dir_b) = (bed.dir("a"), bed.dir("b"));
    let cfg = &bed.cfg;
    let follow = EngineOptions { follow: true, ..fault_opts() };
    thread::scope(|s| {
        let (hold, reached, release) = hold_after_orders(at, after_orders);
        let (stop_a_tx, stop_a) = channel();
        let (stop_b_tx, stop_b) = channel();
        let a = s.spawn(|| run_engine(&dir_a, cfg, follow.clone(), Some(hold), Some(stop_a_tx)));
        let stop_a = stop_a.recv_timeout(FAULT_POINT_TIMEOUT).expect("the first instance opens");
        reached.recv_timeout(FAULT_POINT_TIMEOUT).expect("the first instance reaches the fault point");
        let at_hold = read_outputs(cfg);
        let b = s.spawn(|| run_engine(&dir_b, cfg, follow.clone(), None, Some(stop_b_tx)));
        let stop_b = stop_b.recv_timeout(FAULT_POINT_TIMEOUT).expect("the second instance opens");
        thread::sleep(JOIN_SETTLE);
        release.send(()).expect("the first instance waits to be released");
        after_release();
        let outputs = await_clean(cfg);
        stop_a.store(true, Ordering::Relaxed);
        stop_b.store(true, Ordering::Relaxed);
        let (a, b) = (a.join().expect("the first instance"), b.join().expect("the second instance"));
        Joined { a, b, at_hold, outputs }
    })
}

/// Reads the outputs until they are the clean run's (or the time is up), and returns the last read.
fn await_clean(cfg: &KafkaConfig) -> Outputs {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let outputs = read_outputs(cfg);
        if outputs == clean().outputs || Instant::now() > deadline {
            return outputs;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

fn rebalance_mid_batch(transactional: bool) {
    // given the scenario on a mock cluster, and an instance following it
    let bed = Bed::new(transactional, &[]);
    // when a second instance joins the group while the first holds folded,
    // unwritten inputs (it writes a batch only after serving the group),
    // three quarters in, and well after the first orders (both shards have
    // published by then); and both follow until the outputs are complete
    let joined = second_instance_joins_at_hold(&bed, clean().inputs() * 3 / 4, PUBLISHED_LEAD, || {});
    let Joined { a, at_hold, outputs, .. } = &joined;
    let (a_stats, b_stats) = joined.stats();
    // then partitions moved: the second instance took over (restored) some,
    // each with outputs the first instance had published. (Not who owns what
    // at the stop: on a loaded machine a later rebalance may be under way.)
    let moved = joined.moved();
    assert!(!moved.is_empty(), "the second instance took nothing over: a {a_stats:?}, b {b_stats:?}");
    for p in &moved {
        let published = at_hold.iter().filter(|((_, q), _)| q == p).map(|(_, r)| r.len()).sum::<usize>();
        assert!(published > 0, "partition {p} moved before the first instance published any of it");
    }
    // and the first instance let go of inputs it had folded and not written
    let dropped: u64 = a.folds.iter().map(|(p, folded)| folded - durable_inputs(&bed.dir("a"), *p)).sum();
    assert!(dropped > 0, "the rebalance found the first instance with nothing unwritten: folds {:?}", a.folds);
    // and the outputs are the clean run's, then and after both stopped
    assert_clean(outputs, "once both instances had caught up");
    assert_clean(&read_outputs(&bed.cfg), "after both instances stopped");
}

#[test]
fn a_rebalance_mid_batch_loses_and_doubles_nothing() {
    rebalance_mid_batch(false);
}

#[test]
fn a_rebalance_mid_batch_of_transactional_shards_loses_and_doubles_nothing() {
    rebalance_mid_batch(true);
}
