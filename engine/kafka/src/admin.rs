//! Topics and publishing: `overlay kafka create-topics` and `overlay publish`
//! to Kafka.

use crate::config::{KafkaClientConfig, KafkaConfig};
use anyhow::{anyhow, bail, Context, Result};
use overlay_core::event::{Envelope, EventKey};
use overlay_proto::topics::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;

/// How long an admin or metadata request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic the engine uses, with its partitions and settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: u32,
    /// Topic-level settings (`cleanup.policy`, `retention.ms`, …).
    pub settings: Vec<(&'static str, &'static str)>,
}

/// Every topic, as `create-topics` makes it. Inputs are the journal that
/// replay and shard hand-off re-read, so they are kept forever (deletion,
/// never compaction: every event counts, not only the latest per key).
/// Outputs have one partition per household partition: each shard is the
/// only writer of its output partitions, which is what lets a new owner find
/// where the previous one stopped.
pub fn topic_specs(cfg: &KafkaConfig) -> Vec<TopicSpec> {
    let keep = vec![("cleanup.policy", "delete"), ("retention.ms", "-1")];
    let p = cfg.household_partitions;
    vec![
        TopicSpec { name: REFERENCE, partitions: 1, settings: keep.clone() },
        TopicSpec { name: HOUSEHOLDS, partitions: p, settings: keep.clone() },
        TopicSpec { name: ORDERS, partitions: p, settings: keep.clone() },
        TopicSpec { name: AUDIT, partitions: p, settings: keep.clone() },
        TopicSpec { name: DEAD_LETTERS, partitions: p, settings: keep },
    ]
}

/// Runs a future to completion on this thread (librdkafka's own threads
/// complete admin futures; no async runtime is needed).
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(50)),
        }
    }
}

/// Partitions of a topic, or None if the broker does not know it.
pub fn partitions(cfg: &KafkaConfig, topic: &str) -> Result<Option<u32>> {
    let consumer: BaseConsumer = cfg.client().create().context("creating a metadata client")?;
    let md = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT).context("fetching topic metadata")?;
    Ok(md.topics().iter().find(|t| t.name() == topic).and_then(|t| match t.error() {
        None if !t.partitions().is_empty() => Some(t.partitions().len() as u32),
        _ => None,
    }))
}

/// Creates the engine's topics; existing ones are kept when their partition
/// count is right (and refused otherwise). Returns (topic, created?) pairs.
pub fn create_topics(cfg: &KafkaConfig) -> Result<Vec<(&'static str, bool)>> {
    cfg.validate()?;
    // Nothing to create when every topic is there with its partitions (a
    // broker that does not serve CreateTopics, or no rights to create, is fine then).
    let specs = topic_specs(cfg);
    let mut existing = Vec::new();
    for spec in &specs {
        match partitions(cfg, spec.name)? {
            Some(n) if n == spec.partitions => existing.push((spec.name, false)),
            Some(n) => bail!("topic {} has {n} partitions, the configuration says {}", spec.name, spec.partitions),
            None => break,
        }
    }
    if existing.len() == specs.len() {
        return Ok(existing);
    }
    let admin: AdminClient<DefaultClientContext> = cfg.client().create().context("creating an admin client")?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t =
                NewTopic::new(s.name, s.partitions as i32, TopicReplication::Fixed(cfg.replication_factor as i32));
            for (k, v) in &s.settings {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT)).request_timeout(Some(REQUEST_TIMEOUT));
    let results = block_on(admin.create_topics(&new, &opts)).context("creating topics")?;
    let mut out = Vec::new();
    for (spec, r) in specs.iter().zip(results) {
        let created = match r {
            Ok(_) => true,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => false,
            Err((name, code)) => bail!("creating topic {name}: {code}"),
        };
        out.push((spec.name, created));
    }
    // Creation is asynchronous on some brokers: wait until every topic is
    // visible with the right partition count.
    for spec in &specs {
        let mut waited = Duration::ZERO;
        loop {
            match partitions(cfg, spec.name)? {
                Some(n) if n == spec.partitions => break,
                Some(n) => bail!(
                    "topic {} has {n} partitions, the configuration says {} (household partitions are fixed once created)",
                    spec.name,
                    spec.partitions
                ),
                None if waited < REQUEST_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(100));
                    waited += Duration::from_millis(100);
                }
                None => bail!("topic {} did not appear within {REQUEST_TIMEOUT:?}", spec.name),
            }
        }
    }
    Ok(out)
}

/// A reading consumer's context: a partition's end is news for the reader,
/// not an error for the log.
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        match error {
            rdkafka::error::KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "partition end")
            }
            e => tracing::error!(error = %e, reason, "librdkafka"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

/// Counts delivery failures and keeps the first error; of records with a
/// sequence-number header, keeps the highest the broker acknowledged per
/// topic and partition.
#[derive(Default)]
pub struct DeliveryTracker {
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    acked: Mutex<BTreeMap<String, BTreeMap<i32, u64>>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("delivery error lock");
                first.get_or_insert_with(|| e.to_string());
            }
            Ok(m) => {
                let Some(seq) = seq_header(m) else { return };
                let mut acked = self.acked.lock().expect("delivery acks lock");
                let topic = match acked.get_mut(m.topic()) {
                    Some(t) => t,
                    None => acked.entry(m.topic().to_string()).or_default(),
                };
                let top = topic.entry(m.partition()).or_default();
                *top = (*top).max(seq);
            }
        }
    }
}

/// A record's sequence number, from its `HEADER_SEQ` header.
pub fn seq_header<M: Message>(m: &M) -> Option<u64> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == HEADER_SEQ)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

impl DeliveryTracker {
    /// The highest sequence number acknowledged in `topic`'s `partition`
    /// (through this producer; with an idempotent producer, every record
    /// sent to the partition before it was acknowledged too).
    pub fn acked(&self, topic: &str, partition: i32) -> Option<u64> {
        self.acked.lock().expect("delivery acks lock").get(topic)?.get(&partition).copied()
    }

    pub fn check(&self) -> Result<()> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = self.first_error.lock().expect("delivery error lock").clone().unwrap_or_default();
            bail!("{failed} records were not delivered (first error: {first})");
        }
        Ok(())
    }
}

/// An idempotent producer (acks=all, no duplicates from retries).
pub fn idempotent_producer(cfg: &KafkaConfig) -> Result<BaseProducer<DeliveryTracker>> {
    let mut c = producer_config(cfg);
    c.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5");
    c.create_with_context(DeliveryTracker::default()).context("creating a Kafka producer")
}

/// A producer's client configuration. Keys are placed by murmur2, as the
/// Java client and the embedded log do, so every producer of household
/// events puts a household in the same partition (librdkafka's own default,
/// CRC32, would not). A `partitioner` property still overrides it.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = cfg.client();
    if !cfg.properties.contains_key("partitioner") {
        c.set("partitioner", "murmur2_random");
    }
    c
}

/// Waits until the broker has acknowledged every record sent and their
/// delivery reports are served. (rdkafka's `flush` waits in steps of 100 ms:
/// its `poll` always waits out its timeout, which made every publish of a
/// shard take at least 100 ms.)
pub fn flush(producer: &BaseProducer<DeliveryTracker>, timeout: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!("{} records not acknowledged within {timeout:?}", producer.in_flight_count());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Sends one record, waiting while librdkafka's queue is full.
pub fn send(producer: &BaseProducer<DeliveryTracker>, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(5));
                record = r;
            }
            Err((e, _)) => return Err(anyhow!("producing to Kafka: {e}")),
        }
    }
}

/// One record to produce.
struct Outgoing<'a> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    timestamp_ms: Option<i64>,
    /// An input event's schema version and type, for its headers.
    event: Option<(u32, &'static str)>,
}

/// Produces records in order through one idempotent producer and waits until
/// the broker has every one. Input events carry the schema-version,
/// event-type and content-type headers.
fn produce_all<'a>(cfg: &KafkaConfig, records: impl IntoIterator<Item = Outgoing<'a>>) -> Result<usize> {
    let producer = idempotent_producer(cfg)?;
    let mut n = 0;
    for r in records {
        let mut record = BaseRecord::to(r.topic).payload(r.value);
        if let Some(k) = r.key {
            record = record.key(k);
        }
        if let Some(ts) = r.timestamp_ms {
            record = record.timestamp(ts);
        }
        let version;
        if let Some((v, kind)) = r.event {
            version = v.to_string();
            record = record.headers(
                OwnedHeaders::new()
                    .insert(Header { key: HEADER_SCHEMA_VERSION, value: Some(version.as_bytes()) })
                    .insert(Header { key: HEADER_EVENT_TYPE, value: Some(kind.as_bytes()) })
                    .insert(Header { key: HEADER_CONTENT_TYPE, value: Some("application/x-protobuf".as_bytes()) }),
            );
        }
        send(&producer, record)?;
        producer.poll(Duration::ZERO);
        n += 1;
    }
    flush(&producer, REQUEST_TIMEOUT).context("flushing the producer")?;
    producer.context().check()?;
    Ok(n)
}

/// Publishes events in protobuf to their topics, keyed by household (household
/// events) or subject (reference data), with schema-version and event-type
/// headers and the event time as the record time. Returns how many were sent.
pub fn publish_events(cfg: &KafkaConfig, events: &[Envelope]) -> Result<usize> {
    let values: Vec<Vec<u8>> = events.iter().map(overlay_proto::encode_envelope).collect();
    produce_all(
        cfg,
        events.iter().zip(&values).map(|(env, value)| {
            let (topic, key) = match env.payload.key() {
                EventKey::Household(h) => (HOUSEHOLDS, h.as_str()),
                EventKey::Reference(k) => (REFERENCE, k),
            };
            Outgoing {
                topic,
                key: Some(key.as_bytes()),
                value,
                timestamp_ms: Some(env.event_time.timestamp_millis()),
                event: Some((env.schema_version, env.payload.type_name())),
            }
        }),
    )
}

/// Sends raw bytes to a topic (a partition of the key's choosing), for
/// integrators testing what the engine does with bad input.
pub fn publish_raw(cfg: &KafkaConfig, topic: &str, key: Option<&str>, values: &[Vec<u8>]) -> Result<usize> {
    produce_all(
        cfg,
        values.iter().map(|v| Outgoing {
            topic,
            key: key.map(str::as_bytes),
            value: v,
            timestamp_ms: None,
            event: None,
        }),
    )
}

/// Every record of a topic as it stands now (all partitions, in partition
/// then offset order; committed records only): (partition, offset, value).
pub fn read_topic(cfg: &KafkaConfig, topic: &str) -> Result<Vec<(u32, u64, Vec<u8>)>> {
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let n = partitions(cfg, topic)?.ok_or_else(|| anyhow!("topic {topic} does not exist"))?;
    let mut c = cfg.client();
    c.set("group.id", "overlay-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<ReaderContext> = c.create_with_context(ReaderContext).context("creating a reader")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    // A partition is read when the fetch reports its end: the listed end
    // offsets are not relied on (some brokers list the last batch's start).
    let mut at_end = vec![false; n as usize];
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    while !at_end.iter().all(|e| *e) {
        if std::time::Instant::now() > deadline {
            bail!("timed out reading {topic}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end[m.partition() as usize] = false;
                out.push((m.partition() as u32, m.offset() as u64, m.payload().unwrap_or_default().to_vec()))
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|(p, o, _)| (*p, *o));
    Ok(out)
}

/// One record to publish as it is: key, value, record time.
pub struct RawRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: i64,
}

/// Publishes records to one topic, each partitioned by its key, in order.
/// Input events (protobuf that decodes) get the schema-version and
/// event-type headers; anything else goes as it is.
pub fn publish_records(cfg: &KafkaConfig, topic: &str, records: &[RawRecord]) -> Result<usize> {
    produce_all(
        cfg,
        records.iter().map(|r| Outgoing {
            topic,
            key: r.key.as_deref(),
            value: &r.value,
            timestamp_ms: Some(r.timestamp_ms),
            event: overlay_proto::decode_envelope(&r.value).ok().map(|e| (e.schema_version, e.payload.type_name())),
        }),
    )
}
