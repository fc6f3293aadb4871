//! Crash cycles on Kafka: `overlay run --kafka` killed with SIGKILL at
//! pseudo-random moments, over and over, must end with exactly the outputs
//! of an uninterrupted run, as the broker holds them.
//!
//! Given the embedded crash test's scenario (with its bad inputs) on two
//! real brokers (tansu on loopback), and the simulated custodian's fills for
//! every order, when engine A folds broker A's inputs with uninterrupted runs
//! and engine B folds broker B's copy while being killed at least N times
//! mid-work (N = 20, or `OVERLAY_CRASH_CYCLES`), then B's order, audit and
//! dead-letter topics, read back from broker B, are byte-for-byte A's, no
//! order id is published twice, and `overlay replay verify --kafka` passes.
//!
//! Not transactional: tansu 0.6.0 cannot commit a transaction, so this is
//! the exactly-once effect without transactions (docs/kafka.md): outputs
//! leave from the shard's outbox after the durable write, and a restarted
//! shard learns where publishing stopped from its output partitions' last
//! records. Each start joins a group of its own (`OVERLAY_KAFKA_GROUP_ID`):
//! tansu 0.6.0 keeps a SIGKILLed member in its group with its partitions
//! assigned, so a restart in the same group is given none or only some of
//! them. The group is membership only; the positions the shards stored are
//! the truth, so this changes nothing the test checks.
//!
//! A start on tansu takes a second or so (it joins its group, reads its
//! output partitions' tails and re-reads the inputs from the log start), and
//! the work after it comes in bursts as fetches arrive; timed from the start,
//! kills would land in the start-up or after the work. So a start with inputs
//! to fold is killed a paced delay after its first publish (its log says so):
//! its shards' first batch, or what the killed run before it left in the
//! outbox; a start with none, a moment after its partitions are assigned.
//!
//! B runs with small batches (4 inputs), so kills land between many commits and
//! publishes, and one fold thread where A has the default: outputs must not
//! depend on either.

use crate::crash_cycles::{GARBAGE, GARBAGE_ARGS, HOUSEHOLDS, PRICE_DAYS};
use overlay_app::demo::fills_of;
use overlay_core::event::{Envelope, EventKey};
use overlay_core::output::Order;
use overlay_scenario::{demo, DemoSpec, MarketData};
use overlay_tests::cycles::{kill_cycles, target_kills, KillTarget};
use overlay_tests::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 4;
/// On 2 cores a debug-build cycle takes about 2 s (a start joins the group
/// and re-reads the inputs from the log start, as tansu needs).
const DEFAULT_KILLS: u64 = 20;
const B_CONFIG: &str = "[engine]\nbatch_inputs_max = 4\nfold_threads = 1\n";
const RUN: [&str; 2] = ["run", "--kafka"];
/// The pacing's start-up term: none, as delays count from a start's first
/// publish, when its work is under way (see the module's notes).
const READY_TO_KILL_S: f64 = 0.0;

/// `overlay run --kafka` on engine B, a group of its own per start; lag by
/// the positions its shards stored (read between runs, when no engine holds
/// the store), in the unit the engine counts: a reference input once per shard.
struct KafkaRun<'a> {
    dir: &'a Path,
    broker: &'a Broker,
    /// Each start's group is `<group_prefix>-<cycle>`.
    group_prefix: &'static str,
    /// Input partition ends (`topic/partition` → end).
    ends: BTreeMap<String, u64>,
    /// The lag measured last, valid until the next start.
    lag: Option<u64>,
    /// The last start had inputs to fold.
    work: bool,
}

impl<'a> KafkaRun<'a> {
    fn new(dir: &'a Path, broker: &'a Broker, group_prefix: &'static str) -> Self {
        let mut ends = partition_ends(broker, topics::HOUSEHOLDS);
        ends.extend(partition_ends(broker, topics::REFERENCE));
        Self { dir, broker, group_prefix, ends, lag: None, work: true }
    }
}

impl KillTarget for KafkaRun<'_> {
    fn spawn(&mut self, cycle: u64) -> Child {
        let group = format!("{}-{cycle}", self.group_prefix);
        let err = std::fs::File::create(self.stderr_file()).expect("stderr file");
        self.work = self.lag != Some(0);
        self.lag = None;
        kafka_command(self.dir, self.broker, PARTITIONS, B_CONFIG, &RUN)
            .env("OVERLAY_KAFKA_GROUP_ID", &group)
            .env("OVERLAY_LOG", LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawning overlay")
    }

    /// With inputs to fold, from its first publish (its shards' first batch,
    /// or what the killed run before it left in the outbox); with none, from
    /// its partitions assigned.
    fn wait_ready(&mut self, child: &mut Child) -> bool {
        let work = self.work;
        wait_for_log(child, &self.stderr_file(), |log| {
            log.matches("partition assigned").count() >= PARTITIONS as usize && (!work || log.contains(" published"))
        })
    }

    fn lag(&mut self) -> u64 {
        if let Some(lag) = self.lag {
            return lag;
        }
        let lag = shard_lag(self.dir, &self.ends);
        self.lag = Some(lag);
        lag
    }

    fn stderr_file(&self) -> PathBuf {
        self.dir.with_extension("stderr.txt")
    }
}

/// The engine's log level: enough to see its partitions assigned and each publish.
const LOG: &str = "warn,overlay_kafka=debug";

/// Most a start may take to be ready (its partitions assigned, its first publish).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the log a started `overlay run --kafka` writes to
/// `stderr_file` satisfies `ready`; false when the program exited first.
fn wait_for_log(child: &mut Child, stderr_file: &Path, ready: impl Fn(&str) -> bool) -> bool {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(stderr_file).unwrap_or_default();
        if ready(&text) {
            return true;
        }
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        assert!(started.elapsed() < READY_LIMIT, "not ready within {READY_LIMIT:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Inputs the shards of the engine on `dir` have not made durable: each
/// shard's household partition and the reference partition after its stored positions.
fn shard_lag(dir: &Path, ends: &BTreeMap<String, u64>) -> u64 {
    let state = dir.join("state");
    if !state.exists() {
        return ends.values().sum::<u64>() + ends[&format!("{}/0", topics::REFERENCE)] * (PARTITIONS as u64 - 1);
    }
    let root = overlay_store::SledStore::open(&state).expect("opening the engine's store");
    let mut lag = 0;
    for p in 0..PARTITIONS {
        let shard = root.tree(&overlay_kafka::engine::shard_tree(p)).expect("a shard's tree");
        for source in [format!("{}/{p}", topics::HOUSEHOLDS), format!("{}/0", topics::REFERENCE)] {
            let at = overlay_store::position(&shard, &source).expect("a stored position").unwrap_or(0);
            lag += ends[&source].saturating_sub(at);
        }
    }
    lag
}

fn config(broker: &Broker) -> overlay_kafka::KafkaConfig {
    overlay_kafka::KafkaConfig {
        brokers: broker.brokers(),
        household_partitions: PARTITIONS,
        fetch_from_log_start: true,
        ..overlay_kafka::KafkaConfig::default()
    }
}

/// A topic's partition ends (`topic/partition` → end), by reading it:
/// tansu 0.6.0 lists the last batch's start as the end.
fn partition_ends(broker: &Broker, topic: &str) -> BTreeMap<String, u64> {
    let records = overlay_kafka::admin::read_topic(&config(broker), topic).expect("reading an input topic");
    let parts = if topic == topics::REFERENCE { 1 } else { PARTITIONS };
    let mut ends: BTreeMap<String, u64> = (0..parts).map(|p| (format!("{topic}/{p}"), 0)).collect();
    for (p, offset, _) in records {
        let end = ends.entry(format!("{topic}/{p}")).or_default();
        *end = (*end).max(offset + 1);
    }
    ends
}

/// Publishes `events` (and, with `garbage`, the undecodable household record) to a broker.
fn publish_kafka(dir: &Path, broker: &Broker, events: &[Envelope], garbage: bool) {
    overlay_kafka_with(dir, broker, PARTITIONS, "", &["publish", "--kafka", "-"], Some(ndjson(events).into_bytes()))
        .ok();
    if garbage {
        let args = [&["publish", "--kafka"][..], &GARBAGE_ARGS[..], &["-"][..]].concat();
        overlay_kafka_with(dir, broker, PARTITIONS, "", &args, Some(GARBAGE.as_bytes().to_vec())).ok();
    }
}

fn read(dir: &Path, broker: &Broker, topic: &str) -> String {
    overlay_kafka(dir, broker, PARTITIONS, &["kafka", "read", topic]).ok().stdout
}

/// The custodian's fills of the orders on a broker.
fn fills(dir: &Path, broker: &Broker, date: chrono::NaiveDate) -> Vec<Envelope> {
    let orders: Vec<Order> = read(dir, broker, topics::ORDERS)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an order ({e}): {}", head(l, 300))))
        .collect();
    fills_of(&orders, date)
}

#[test]
fn kill_cycles_on_kafka_give_the_outputs_of_an_uninterrupted_run() {
    let _one_at_a_time = timing_sensitive();
    let started = Instant::now();
    let target = target_kills(DEFAULT_KILLS);
    let spec = DemoSpec { households: HOUSEHOLDS, price_days: PRICE_DAYS, ..DemoSpec::default() };
    let scenario = demo(&spec, &MarketData::embedded().expect("shipped market data")).expect("demo scenario");
    let last_day = scenario.days.last().expect("at least one day").date;
    let mut events: Vec<Envelope> = scenario.events().cloned().collect();
    events.extend(bad_inputs(&scenario, "crash-test"));
    let household_events = events.iter().filter(|e| matches!(e.payload.key(), EventKey::Household(_))).count() + 1;
    // Every shard folds every reference input; each household input is one shard's.
    let main_inputs = (events.len() + 1 - household_events) * PARTITIONS as usize + household_events;
    let root = tempdir("overlay-kafka-crash-");
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let (broker_a, broker_b) = (Broker::start(), Broker::start());
    for (dir, broker) in [(&a, &broker_a), (&b, &broker_b)] {
        overlay_kafka(dir, broker, PARTITIONS, &["kafka", "create-topics"]).ok();
    }
    let b_run = |args: &[&str]| overlay_kafka_with(&b, &broker_b, PARTITIONS, B_CONFIG, args, None).ok();
    eprintln!(
        "[kafka-crash] scenario: {} events ({household_events} household inputs), {HOUSEHOLDS} households; binary {}",
        events.len() + 1,
        overlay_bin().display()
    );

    // Given the reference: A folds everything without interruption.
    publish_kafka(&a, &broker_a, &events, true);
    let main_a = overlay_kafka(&a, &broker_a, PARTITIONS, &RUN).ok();
    assert_folded(&main_a, main_inputs);
    let fills_a = fills(&a, &broker_a, last_day);
    assert!(!fills_a.is_empty(), "the scenario made no orders to fill");
    publish_kafka(&a, &broker_a, &fills_a, false);
    let fills_run_a = overlay_kafka(&a, &broker_a, PARTITIONS, &RUN).ok();
    assert_folded(&fills_run_a, fills_a.len());
    // A run with nothing to do (it joins the group, reads the output tails and
    // re-reads the inputs): what a start costs, for the rates. The quickest of
    // three, as other work on the machine only ever slows a run down.
    let startup_s = (0..3)
        .map(|_| {
            let idle = overlay_kafka(&a, &broker_a, PARTITIONS, &RUN).ok();
            assert_folded(&idle, 0);
            idle.elapsed.as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let rate = |n: usize, run: &Run| n as f64 / (run.elapsed.as_secs_f64() - startup_s).max(0.05);
    let (main_rate, fills_rate) = (rate(main_inputs, &main_a), rate(fills_a.len(), &fills_run_a));
    eprintln!(
        "[kafka-crash] reference: main run {:.2} s, fills run ({} fills) {:.2} s, idle start {:.3} s",
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
    publish_kafka(&b, &broker_b, &events, true);
    let mut main_target = KafkaRun::new(&b, &broker_b, "crash-main");
    let main_b = kill_cycles(&mut main_target, main_kills, 0x5EED_0011, READY_TO_KILL_S, main_rate, 0.7);
    b_run(&RUN);
    let fills_b = fills(&b, &broker_b, last_day);
    assert!(
        fills_b == fills_a,
        "the custodian answered B's orders differently from A's ({} vs {} fills)",
        fills_b.len(),
        fills_a.len()
    );
    publish_kafka(&b, &broker_b, &fills_b, false);
    let mut fills_target = KafkaRun::new(&b, &broker_b, "crash-fills");
    let fills_cycles =
        kill_cycles(&mut fills_target, fills_kills, 0x5EED_0012, READY_TO_KILL_S, fills_rate, main_b.pace);
    b_run(&RUN);
    let last = b_run(&RUN);
    assert_folded(&last, 0);
    let landed = main_b.landed + fills_cycles.landed;
    let mid_work = main_b.landed_mid_work + fills_cycles.landed_mid_work;
    println!(
        "[kafka-crash] kills landed: {landed} ({mid_work} mid-work, leaving inputs unfolded) in {:.1} s; main phase {main_b:?}; fills phase {fills_cycles:?}",
        b_started.elapsed().as_secs_f64()
    );
    eprintln!("[kafka-crash] kills landed: {landed} ({mid_work} mid-work, leaving inputs unfolded)");

    // Then every output on broker B is A's, byte for byte.
    let (orders_a, orders_b) = (read(&a, &broker_a, topics::ORDERS), read(&b, &broker_b, topics::ORDERS));
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
    let (audit_a, audit_b) = (read(&a, &broker_a, topics::AUDIT), read(&b, &broker_b, topics::AUDIT));
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
    let (dl_a, dl_b) = (read(&a, &broker_a, topics::DEAD_LETTERS), read(&b, &broker_b, topics::DEAD_LETTERS));
    if let Some(d) = first_difference(&dl_a, &dl_b) {
        panic!("dead letters differ after crash cycles: {d}");
    }
    let mut kinds: Vec<String> =
        json_lines(&dl_b).iter().map(|d| d["error"].as_str().unwrap_or("?").to_string()).collect();
    kinds.sort();
    assert_eq!(kinds, ["malformed", "unknown_reference"], "dead letters of the bad inputs");
    let verify = overlay_kafka(&b, &broker_b, PARTITIONS, &["replay", "verify", "--kafka", "--quiet"]).ok();
    assert!(verify.stdout.starts_with("replay verify OK: 4 Kafka shards"), "{}", verify.stdout);
    // And the kills did land in the middle of the work (checked last: a
    // difference in the outputs is the more useful failure).
    assert!(landed >= target, "only {landed} of {target} kills landed");
    assert!(mid_work * 3 >= landed * 2, "too few kills landed mid-work: {mid_work} of {landed}");
    assert!(
        main_kills == 0 || main_b.lag_after < main_b.lag_before,
        "no batch was committed during the main phase's kill cycles: {main_b:?}"
    );
    eprintln!(
        "[kafka-crash] {} orders, {} audit records, {} dead letters identical; replay verify {:.1} s; test {:.1} s",
        json_lines(&orders_b).len(),
        json_lines(&audit_b).len(),
        json_lines(&dl_b).len(),
        verify.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
