//! The pieces of `overlay bench --only kafka` that need librdkafka (see
//! BENCHMARKS.md): scratch brokers, the baseline (a raw rdkafka consume →
//! produce of the input topics), and the engine timed from open to caught up.
//!
//! Every round needs empty topics: a fresh engine learns where publishing
//! stopped from the last record of each output partition, so outputs left by
//! an earlier round would make it publish nothing.

use crate::admin::{
    block_on, create_topics, flush, idempotent_producer, partitions, producer_config, read_topic, send, topic_specs,
    DeliveryTracker, ReaderContext, REQUEST_TIMEOUT,
};
use crate::config::{KafkaClientConfig, KafkaConfig};
use crate::engine::{EngineOptions, KafkaEngine, RunStats};
use anyhow::{anyhow, bail, ensure, Context, Result};
use overlay_proto::topics::{HOUSEHOLDS, REFERENCE};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The baseline's output topic: one record per input record, one partition per household partition.
pub const COPY: &str = "overlay.bench.copy";

/// How long a broker the benchmark starts may take to listen.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Most records the baseline takes from one fetcher before turning to the other (the engine's bound).
const RECEIVE_RECORDS_MAX: usize = 10_000;

/// A broker for one round.
pub enum Broker {
    /// librdkafka's in-process mock cluster: transactions, but no CreateTopics.
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A tansu process this benchmark started (memory storage), stopped when dropped.
    Tansu { child: Child, port: u16 },
    /// A broker someone else runs. The benchmark's topics must not exist on
    /// it; they are deleted after each round (`Broker::clean`).
    External(String),
}

impl Broker {
    pub fn mock() -> Result<Self> {
        Ok(Self::Mock(MockCluster::new(1).context("starting librdkafka's mock cluster")?))
    }

    /// Starts `tansu broker` on a free loopback port, in memory.
    pub fn tansu(bin: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").context("a free port")?.local_addr()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (bash scripts/setup-kafka installs it)", bin.display()))?;
        let broker = Self::Tansu { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > BROKER_START_TIMEOUT {
                bail!("tansu did not listen on port {port} within {BROKER_START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(broker)
    }

    pub fn brokers(&self) -> String {
        match self {
            Self::Mock(c) => c.bootstrap_servers(),
            Self::Tansu { port, .. } => format!("127.0.0.1:{port}"),
            Self::External(b) => b.clone(),
        }
    }

    /// Creates the engine's topics and the copy topic, empty.
    pub fn create_topics(&self, cfg: &KafkaConfig) -> Result<()> {
        let mut specs: Vec<(&str, u32)> = topic_specs(cfg).iter().map(|s| (s.name, s.partitions)).collect();
        specs.push((COPY, cfg.household_partitions));
        match self {
            Self::Mock(c) => {
                for (name, n) in specs {
                    c.create_topic(name, n as i32, 1)
                        .with_context(|| format!("creating {name} on the mock cluster"))?;
                }
            }
            Self::Tansu { .. } | Self::External(_) => {
                for (name, _) in &specs {
                    ensure!(
                        partitions(cfg, name)?.is_none(),
                        "topic {name} already exists on {}: the benchmark needs a scratch broker",
                        cfg.brokers
                    );
                }
                create_topics(cfg)?;
                create_topic(cfg, COPY, cfg.household_partitions)?;
            }
        }
        Ok(())
    }

    /// Deletes the round's topics from an external broker and waits until they are gone.
    pub fn clean(&self, cfg: &KafkaConfig) -> Result<()> {
        if !matches!(self, Self::External(_)) {
            return Ok(());
        }
        let mut names: Vec<&str> = topic_specs(cfg).iter().map(|s| s.name).collect();
        names.push(COPY);
        let admin: AdminClient<DefaultClientContext> = cfg.client().create().context("creating an admin client")?;
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        for r in block_on(admin.delete_topics(&names, &opts)).context("deleting the benchmark's topics")? {
            if let Err((name, code)) = r {
                bail!("deleting {name}: {code}");
            }
        }
        let started = Instant::now();
        for name in names {
            while partitions(cfg, name)?.is_some() {
                ensure!(started.elapsed() < REQUEST_TIMEOUT, "topic {name} was not deleted within {REQUEST_TIMEOUT:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Self::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn create_topic(cfg: &KafkaConfig, name: &str, n: u32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = cfg.client().create().context("creating an admin client")?;
    let topic = NewTopic::new(name, n as i32, TopicReplication::Fixed(cfg.replication_factor as i32));
    let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
    for r in block_on(admin.create_topics([&topic], &opts)).context("creating a topic")? {
        if let Err((name, code)) = r {
            bail!("creating topic {name}: {code}");
        }
    }
    let started = Instant::now();
    while partitions(cfg, name)? != Some(n) {
        ensure!(started.elapsed() < REQUEST_TIMEOUT, "topic {name} did not appear within {REQUEST_TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// One baseline run.
#[derive(Clone, Debug)]
pub struct PipeRun {
    pub secs: f64,
    /// From the start to the first record received (creating the clients, initialising transactions, the first fetch).
    pub first_record_secs: f64,
    /// Records consumed, and as many produced.
    pub records: u64,
    /// Key and value bytes produced (the same as consumed).
    pub bytes: u64,
    pub transactions: u64,
    /// Of `secs`, the time spent committing transactions (flushing, sending the offsets, committing).
    pub commit_secs: f64,
}

/// The baseline: reads the reference partition and every household
/// partition from the start to their ends, as the engine does (two
/// group-less fetchers, `read_committed`, `fetch.wait.max.ms` = 100 ms,
/// partition ends from partition-EOF events), and produces each record as it
/// comes (same key, value and headers) to [`COPY`], a household record to
/// its partition number and a reference record to partition 0; then flushes.
/// With `txn_records_max`, a transactional producer commits every that many
/// records, the consumed offsets sent with each transaction (as the engine's
/// shards do); without, the engine's idempotent producer (`acks=all`,
/// `linger.ms=5`). Timed from creating the clients to the last delivery.
pub fn raw_pipe(cfg: &KafkaConfig, group: &str, txn_records_max: Option<u64>) -> Result<PipeRun> {
    let t = Instant::now();
    let fetcher = || -> Result<BaseConsumer<ReaderContext>> {
        let mut c = cfg.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "100");
        c.create_with_context(ReaderContext).context("creating a baseline consumer")
    };
    let (reference, households) = (fetcher()?, fetcher()?);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(REFERENCE, 0, Offset::Beginning)?;
    reference.assign(&tpl)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.household_partitions {
        tpl.add_partition_offset(HOUSEHOLDS, p as i32, Offset::Beginning)?;
    }
    households.assign(&tpl)?;
    let producer = match txn_records_max {
        None => idempotent_producer(cfg)?,
        Some(_) => {
            let mut c = producer_config(cfg);
            c.set("transactional.id", format!("{group}-copy")).set("enable.idempotence", "true").set("acks", "all");
            let p: BaseProducer<DeliveryTracker> =
                c.create_with_context(DeliveryTracker::default()).context("creating a transactional producer")?;
            p.init_transactions(REQUEST_TIMEOUT).context("initialising transactions")?;
            p.begin_transaction()?;
            p
        }
    };
    // Next offset to consume and whether the fetch is at the end, per (topic, partition).
    let mut next: BTreeMap<(&str, i32), (i64, bool)> = BTreeMap::new();
    next.insert((REFERENCE, 0), (0, false));
    for p in 0..cfg.household_partitions {
        next.insert((HOUSEHOLDS, p as i32), (0, false));
    }
    let mut run =
        PipeRun { secs: 0.0, first_record_secs: 0.0, records: 0, bytes: 0, transactions: 0, commit_secs: 0.0 };
    let mut in_txn = 0u64;
    let commit = |producer: &BaseProducer<DeliveryTracker>,
                  next: &BTreeMap<(&str, i32), (i64, bool)>,
                  run: &mut PipeRun|
     -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), (offset, _)) in next {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
        }
        let meta = households.group_metadata().ok_or_else(|| anyhow!("no group metadata"))?;
        let t = Instant::now();
        // rdkafka's commit_transaction flushes in 100 ms polls: flush first, at once (as the engine does).
        flush(producer, REQUEST_TIMEOUT)?;
        producer.send_offsets_to_transaction(&tpl, &meta, REQUEST_TIMEOUT)?;
        producer.commit_transaction(REQUEST_TIMEOUT)?;
        run.commit_secs += t.elapsed().as_secs_f64();
        run.transactions += 1;
        Ok(())
    };
    // Waits split between the two fetchers, as the engine's receive does.
    let wait = Duration::from_millis(25);
    while !next.values().all(|(_, at_end)| *at_end) {
        for (consumer, topic) in [(&households, HOUSEHOLDS), (&reference, REFERENCE)] {
            let mut timeout = wait;
            for _ in 0..RECEIVE_RECORDS_MAX {
                let Some(m) = consumer.poll(timeout) else { break };
                timeout = Duration::ZERO;
                match m {
                    Ok(m) => {
                        if run.records == 0 {
                            run.first_record_secs = t.elapsed().as_secs_f64();
                        }
                        let p = m.partition();
                        let slot = next.get_mut(&(topic, p)).ok_or_else(|| anyhow!("a record from {topic}/{p}"))?;
                        *slot = (m.offset() + 1, false);
                        let value = m.payload().unwrap_or_default();
                        let key = m.key().unwrap_or_default();
                        let mut record = BaseRecord::to(COPY)
                            .partition(if topic == REFERENCE { 0 } else { p })
                            .key(key)
                            .payload(value);
                        if let Some(h) = m.headers() {
                            record = record.headers(h.detach());
                        }
                        send(&producer, record)?;
                        producer.poll(Duration::ZERO);
                        run.records += 1;
                        run.bytes += (key.len() + value.len()) as u64;
                        in_txn += 1;
                        if txn_records_max.is_some_and(|max| in_txn >= max) {
                            commit(&producer, &next, &mut run)?;
                            producer.begin_transaction()?;
                            in_txn = 0;
                        }
                    }
                    Err(KafkaError::PartitionEOF(p)) => {
                        if let Some(slot) = next.get_mut(&(topic, p)) {
                            slot.1 = true;
                        }
                    }
                    Err(e) => bail!("baseline fetch from {topic}: {e}"),
                }
            }
        }
    }
    if txn_records_max.is_some() {
        commit(&producer, &next, &mut run)?;
    } else {
        flush(&producer, REQUEST_TIMEOUT).context("flushing the baseline's producer")?;
    }
    producer.context().check()?;
    run.secs = t.elapsed().as_secs_f64();
    Ok(run)
}

/// One engine run.
#[derive(Clone, Debug)]
pub struct EngineRun {
    pub secs: f64,
    /// From open to the first input folded: opening the store, joining the
    /// group, the shards' set-up (reading the output partitions' ends,
    /// initialising transactions) and the first fetch.
    pub first_fold_secs: f64,
    pub stats: RunStats,
}

/// The engine on a fresh data directory: `KafkaEngine::open` then `run`
/// until caught up, timed together.
pub fn engine_run(data_dir: &Path, cfg: &KafkaConfig, opts: EngineOptions) -> Result<EngineRun> {
    ensure!(!opts.follow, "a timed run must stop when caught up");
    let t = Instant::now();
    let mut engine = KafkaEngine::open(data_dir, cfg, opts)?;
    let mut first: Option<f64> = None;
    let stats = engine.run(&mut |_, _| {
        if first.is_none() {
            first = Some(t.elapsed().as_secs_f64());
        }
    })?;
    let secs = t.elapsed().as_secs_f64();
    Ok(EngineRun { secs, first_fold_secs: first.unwrap_or(secs), stats })
}

/// How many committed records a topic holds.
pub fn count_records(cfg: &KafkaConfig, topic: &str) -> Result<u64> {
    Ok(read_topic(cfg, topic)?.len() as u64)
}
