//! The engine on Kafka: one **shard** per household partition.
//!
//! A shard folds the reference topic (read in full) merged with its one
//! household partition, by (event time, topic rank, offset) as the embedded
//! runner does, into a state of its own (a sled tree of the instance's store).
//! A shard's state and outputs are a function of those two inputs only, so
//! any instance that owns the partition computes the same bytes: hand-off is
//! re-reading the inputs (the journal) from the shard's stored positions, or
//! from the start when the new owner has no state for it.
//!
//! Exactly-once effect: a shard's input positions, state changes and outputs
//! are written in one atomic, durable sled batch (by the shard's writer
//! thread, while the shard folds the next batch: one batch in flight, as in
//! the embedded runner); once it is durable, its outputs leave from that
//! outbox to the shard's own partition of each output topic, with their
//! sequence number in a header. A shard is the only writer of its output
//! partitions, so a new owner reads their last record to learn where
//! publishing stopped, and publishes only what comes after. Publishing does
//! not wait for the broker: the acknowledgements (by sequence number) move
//! the shard's publish cursors, stored with its next batch, and the group's
//! committed offsets, advanced after the durable write and the acknowledged
//! publish, so lag tools see the truth. With `transactional`, each publish is one
//! Kafka transaction that also commits the input offset, under a per-shard
//! transactional id that fences a previous owner still running.
//!
//! Instances share partitions through a consumer group used for membership
//! only (its partitions stay paused); a second, group-less consumer fetches
//! the reference partition and the owned household partitions from the
//! positions the shards stored.

use crate::admin::{idempotent_producer, send, seq_header, DeliveryTracker, ReaderContext, REQUEST_TIMEOUT};
use crate::config::{KafkaClientConfig, KafkaConfig};
use crate::output_key::{output_key, OutputKey};
use crate::workers::Workers;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use overlay_core::event::{Envelope, InputError};
use overlay_core::fold::{Applied, Input};
use overlay_core::state::EngineSettings;
use overlay_proto::topics::*;
use overlay_store::{keys, Committer, Folder, Prepared, SledStore};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the engine folds, independent of the transport.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Most inputs of one shard folded into one atomic store write.
    pub batch_inputs_max: usize,
    /// Settings a new shard is created with (a shard keeps its own afterwards).
    pub settings: EngineSettings,
    /// How long to wait for records when nothing can be folded.
    pub idle_poll: Duration,
    /// Threads the shards are folded on (0: one per CPU). Shards are
    /// independent, so this changes speed only, never a byte of output.
    pub fold_threads: usize,
    /// Keep following new records instead of stopping when caught up.
    pub follow: bool,
    /// Stop after this many inputs (all shards together).
    pub max_inputs: Option<u64>,
    /// How long to wait for the group to assign partitions before giving up (not following).
    pub join_timeout: Duration,
    /// Told when a shard's batch is durable and published (metrics).
    pub observer: Option<Arc<dyn crate::observe::ShardObserver>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            batch_inputs_max: 1000,
            settings: EngineSettings::default(),
            idle_poll: Duration::from_millis(50),
            fold_threads: 0,
            follow: false,
            max_inputs: None,
            join_timeout: Duration::from_secs(60),
            observer: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub inputs: u64,
    pub orders: u64,
    pub audit: u64,
    pub dead_letters: u64,
    pub batches: u64,
    /// Shards taken over, with the inputs re-read to restore them and how long it took.
    pub restores: Vec<Restore>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restore {
    pub partition: u32,
    /// Inputs folded to bring the shard up to where its partition's records ended when it was assigned.
    pub inputs: u64,
    pub millis: u64,
}

/// What the group's rebalance callbacks report to the engine loop.
#[derive(Debug)]
enum GroupEvent {
    Assigned(BTreeSet<u32>),
    Revoked,
}

struct GroupContext {
    events: Arc<Mutex<Vec<GroupEvent>>>,
    /// The shared producer (not transactional), whose records still in
    /// flight must land before the partitions go to another owner.
    producer: Option<Arc<BaseProducer<DeliveryTracker>>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // The next owner learns where publishing stopped from the output
        // partitions' last records: those sent must be there before it looks.
        if let (Rebalance::Revoke(_), Some(producer)) = (rebalance, &self.producer) {
            if let Err(e) = crate::admin::flush(producer, REQUEST_TIMEOUT) {
                tracing::warn!(error = %e, "flushing the outputs before letting go of the partitions");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => {
                // Membership only: the data consumer fetches.
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "pausing the group's partitions");
                }
                GroupEvent::Assigned(tpl.elements_for_topic(HOUSEHOLDS).iter().map(|e| e.partition() as u32).collect())
            }
            Rebalance::Revoke(_) => GroupEvent::Revoked,
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "group rebalance error");
                return;
            }
        };
        self.events.lock().expect("group events lock").push(event);
    }
}

/// One input record, decoded once.
struct Head {
    offset: u64,
    raw: Vec<u8>,
    decoded: Result<Envelope, InputError>,
}

impl Head {
    fn new(offset: u64, raw: Vec<u8>) -> Self {
        let decoded = overlay_proto::decode_envelope(&raw);
        Self { offset, raw, decoded }
    }
    /// Undecodable inputs sort first: they have no time of their own.
    fn time(&self) -> DateTime<Utc> {
        self.decoded.as_ref().map_or(DateTime::<Utc>::MIN_UTC, |e| e.event_time)
    }
    fn input(&self) -> Input<'_> {
        match &self.decoded {
            Ok(env) => Input::Event(env),
            Err(e) => Input::Undecodable(e),
        }
    }
}

/// The reference partition as fetched, shared by every shard: records from
/// the lowest offset a shard still needs.
#[derive(Clone, Default)]
struct ReferenceCache {
    records: VecDeque<Arc<Head>>,
    /// Every record below this offset has been received (or skipped as a gap).
    fetched_to: u64,
    /// The fetch reached the partition's end and no record came after.
    at_end: bool,
}

impl ReferenceCache {
    /// The first record at or after `offset`.
    fn at_or_after(&self, offset: u64) -> Option<&Arc<Head>> {
        let i = self.records.partition_point(|h| h.offset < offset);
        self.records.get(i)
    }
}

struct Shard {
    partition: u32,
    name: String,
    folder: Folder,
    /// Next household offset to fold, next to receive, what is received and unfolded.
    next: u64,
    fetch_next: u64,
    buf: VecDeque<Head>,
    /// The fetch reached the partition's end and no record came after.
    at_end: bool,
    ref_next: u64,
    /// The transactional producer (transactional mode only).
    txn: Option<BaseProducer<DeliveryTracker>>,
    /// Writes batch N while batch N+1 is folded (one batch in flight at most).
    writer: Committer,
    /// A full batch, prepared on the fold thread, for the writer (the shard
    /// folds no more until it is handed over).
    prepared: Option<Prepared>,
    /// Publishing has read what the shard's store held unpublished when it
    /// was assigned; since then each durable batch brings its own outputs.
    outbox_read: bool,
    /// The household position of the last durable batch: what the group
    /// offset (or the transaction's offset) may say.
    durable_next: u64,
    /// The group offset last committed for the partition (idle shards do not
    /// commit again: a stream of commits can hold up a rebalance).
    group_committed: Option<u64>,
    /// Publishing, per output (in `OUTPUTS` order): the seq up to which
    /// records were handed to the producer (`sent`); the last record actually
    /// produced, 0 for none (`produced`: a dead letter of a reference input is
    /// published by shard 0 alone); the publish cursors, as stored or to be
    /// stored with the next batch (`cursors`, `cursors_dirty`).
    sent: [u64; 3],
    produced: [u64; 3],
    cursors: [u64; 3],
    cursors_dirty: bool,
    /// Published batches the broker has not acknowledged every record of:
    /// (`produced` and `sent` after it, the household position it covers).
    unacked: VecDeque<Unacked>,
    /// Until the shard first reaches its partition's end: since when, from which offset.
    restoring: Option<(Instant, u64)>,
    folded_since_assign: u64,
    /// The input position keys (`topic/partition`) of the household partition and of the reference's.
    position: String,
    ref_position: String,
    /// The source of the input being folded (a buffer used input after input).
    source: String,
    /// What the shard's last fold returned, seen by the observer: freed on
    /// a fold thread with the next fold (a round's records are many small
    /// buffers, and freeing them is work the engine's thread need not do).
    spent: Vec<Applied>,
}

impl Shard {
    /// Everything fetched is folded and the fetch is at the partition's end.
    fn household_done(&self) -> bool {
        self.buf.is_empty() && self.at_end
    }
    fn caught_up(&self, reference: &ReferenceCache) -> bool {
        self.household_done() && reference.at_end && reference.at_or_after(self.ref_next).is_none()
    }
}

/// A published batch awaiting the broker's acknowledgements.
struct Unacked {
    produced: [u64; 3],
    sent: [u64; 3],
    next: u64,
}

pub struct KafkaEngine {
    cfg: KafkaConfig,
    opts: EngineOptions,
    root: SledStore,
    group: BaseConsumer<GroupContext>,
    /// Group-less fetchers: the reference partition, and the owned household
    /// partitions (apart, so that a partition-end event names its topic).
    reference_fetch: BaseConsumer<ReaderContext>,
    household_fetch: BaseConsumer<ReaderContext>,
    /// The fetchers have been assigned partitions (new ones are made for the next assignment).
    fetchers_used: bool,
    producer: Option<Arc<BaseProducer<DeliveryTracker>>>,
    events: Arc<Mutex<Vec<GroupEvent>>>,
    reference: ReferenceCache,
    shards: BTreeMap<u32, Shard>,
    /// The threads shards are folded on (none: on the engine's thread).
    fold_workers: Workers,
    assigned: bool,
    stop: Arc<AtomicBool>,
}

/// How long a fetch may wait at a partition's end before coming back empty.
const FETCH_WAIT_MS: &str = "100";

/// A group-less consumer that reports partition ends.
fn fetcher(cfg: &KafkaConfig, what: &str, wait_ms: &str) -> Result<BaseConsumer<ReaderContext>> {
    let mut dc = cfg.client();
    if !cfg.properties.contains_key("fetch.wait.max.ms") {
        dc.set("fetch.wait.max.ms", wait_ms);
    }
    dc.set("group.id", format!("{}-fetch", cfg.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    dc.create_with_context(ReaderContext).with_context(|| format!("creating the {what} fetcher"))
}

/// The engine's outputs: (outbox name, outbox key prefix, topic).
const OUTPUTS: [(&str, &[u8], &str); 3] = [
    ("orders", keys::ORDERS, ORDERS),
    ("audit", keys::AUDIT, AUDIT),
    ("dead-letters", keys::DEAD_LETTERS, DEAD_LETTERS),
];

/// Per-output figures (in `OUTPUTS` order) named by their output.
fn by_output(seqs: [u64; 3]) -> [(&'static str, u64); 3] {
    std::array::from_fn(|i| (OUTPUTS[i].0, seqs[i]))
}

/// The sled tree (in the data directory's `state` store) that holds shard `p`.
pub fn shard_tree(p: u32) -> String {
    format!("shard/{HOUSEHOLDS}/{p}")
}

impl KafkaEngine {
    pub fn open(data_dir: &Path, cfg: &KafkaConfig, opts: EngineOptions) -> Result<Self> {
        cfg.validate()?;
        let root = SledStore::open(&data_dir.join("state"))
            .context("opening the state store (is another engine running on this data directory?)")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let producer = if cfg.transactional { None } else { Some(Arc::new(idempotent_producer(cfg)?)) };
        let mut gc = cfg.client();
        gc.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in [("session.timeout.ms", "6000"), ("heartbeat.interval.ms", "1000")] {
            if !cfg.properties.contains_key(k) {
                gc.set(k, v);
            }
        }
        let group: BaseConsumer<GroupContext> = gc
            .create_with_context(GroupContext { events: events.clone(), producer: producer.clone() })
            .context("creating the group consumer")?;
        group.subscribe(&[HOUSEHOLDS]).context("joining the engine group")?;
        let reference_fetch = fetcher(cfg, "reference", FETCH_WAIT_MS)?;
        let household_fetch = fetcher(cfg, "household", FETCH_WAIT_MS)?;
        let reference = ReferenceCache::default();
        let fold_workers = Workers::new(fold_threads(opts.fold_threads), "overlay-fold");
        Ok(Self {
            cfg: cfg.clone(),
            opts,
            root,
            group,
            reference_fetch,
            household_fetch,
            fetchers_used: false,
            producer,
            events,
            reference,
            shards: BTreeMap::new(),
            fold_workers,
            assigned: false,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A flag that, once set, makes `run` finish what it has folded and return.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops on `flag` instead of a flag of its own (one set up before the engine was opened).
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = flag;
    }

    /// The partitions this instance owns now.
    pub fn owned(&self) -> Vec<u32> {
        self.shards.keys().copied().collect()
    }

    pub fn run(&mut self, observer: &mut dyn FnMut(u32, &Applied)) -> Result<RunStats> {
        let mut stats = RunStats::default();
        let started = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) || self.opts.max_inputs.is_some_and(|m| stats.inputs >= m) {
                break;
            }
            self.poll_group()?;
            if !self.assigned {
                if !self.opts.follow && started.elapsed() > self.opts.join_timeout {
                    bail!("the group assigned no partitions within {:?}", self.opts.join_timeout);
                }
                self.group.poll(self.opts.idle_poll);
                continue;
            }
            self.receive(Duration::ZERO)?;
            let folded = self.fold_all(&mut stats, observer)?;
            if folded == 0 {
                self.commit_all(&mut stats)?;
                if !self.opts.follow && self.caught_up() {
                    break;
                }
                self.receive(self.opts.idle_poll)?;
            }
        }
        self.commit_all(&mut stats)?;
        self.finish_publishing()?;
        Ok(stats)
    }

    /// Every owned shard has folded all there is, and the group has assigned
    /// partitions: an instance whose partitions were just revoked is not
    /// caught up but waiting for its next assignment (stopping then would
    /// leave what its shards had not published to nobody).
    fn caught_up(&self) -> bool {
        self.assigned && self.shards.values().all(|s| s.caught_up(&self.reference))
    }

    /// Serves the group (heartbeats, rebalances) and acts on what it reports
    /// at once: after a revocation this instance must not publish for the
    /// partition again, since the next owner may already be publishing.
    fn poll_group(&mut self) -> Result<()> {
        match self.group.poll(Duration::ZERO) {
            // A fatal error (a fenced static member, say) ends membership for good.
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => bail!("the engine group failed: {e}"),
            Some(Err(e)) => tracing::warn!(error = %e, "engine group"),
            // Its partitions are paused: nothing else arrives here.
            Some(Ok(_)) | None => {}
        }
        self.handle_group_events()
    }

    fn handle_group_events(&mut self) -> Result<()> {
        let events: Vec<GroupEvent> = std::mem::take(&mut *self.events.lock().expect("group events lock"));
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            match e {
                GroupEvent::Revoked => {
                    // Stop at once: the next owner re-folds what was not
                    // published and publishes it; two writers must never overlap.
                    for (p, s) in std::mem::take(&mut self.shards) {
                        tracing::info!(partition = p, next = s.next, "partition revoked");
                    }
                    if let Some(o) = &self.opts.observer {
                        o.revoked();
                    }
                    self.assigned = false;
                }
                GroupEvent::Assigned(parts) => {
                    // Shards first (a transactional one fences its previous
                    // owner), then where publishing stopped, whoever published:
                    // the last record of each output partition.
                    let mut opened = Vec::new();
                    for &p in &parts {
                        opened.push(self.open_shard(p)?);
                    }
                    let parts: Vec<u32> = parts.into_iter().collect();
                    // The three outputs at once: each read waits on the broker.
                    let (cfg, parts) = (&self.cfg, &parts);
                    let read = std::thread::scope(|scope| {
                        let readers = OUTPUTS.map(|(output, _, topic)| {
                            (output, scope.spawn(move || last_published_seqs(cfg, topic, parts)))
                        });
                        readers
                            .into_iter()
                            .map(|(output, r)| Ok((output, r.join().expect("an output tail reader panicked")?)))
                            .collect::<Result<Vec<_>>>()
                    })?;
                    let mut tails = BTreeMap::new();
                    for (output, last) in read {
                        for (p, seq) in last {
                            tails.insert((output, p), seq);
                        }
                    }
                    for mut shard in opened {
                        let store = shard.folder.store();
                        let mut ahead = Vec::new();
                        for (i, (output, _, _)) in OUTPUTS.into_iter().enumerate() {
                            let stored = overlay_store::cursor(store, output)?;
                            shard.cursors[i] = match tails.get(&(output, shard.partition)) {
                                Some(&seq) if seq > stored => {
                                    ahead.push((output, seq));
                                    seq
                                }
                                _ => stored,
                            };
                        }
                        overlay_store::set_cursors(store, &ahead)?;
                        shard.sent = shard.cursors;
                        tracing::info!(
                            partition = shard.partition,
                            next = shard.next,
                            ref_next = shard.ref_next,
                            "partition assigned"
                        );
                        self.shards.insert(shard.partition, shard);
                    }
                    self.assigned = true;
                }
            }
        }
        self.reassign()
    }

    fn open_shard(&mut self, p: u32) -> Result<Shard> {
        let name = shard_tree(p);
        let store = self.root.tree(&name)?;
        let writer = Committer::new(Box::new(store.handle()));
        let mut folder = Folder::open(Box::new(store), self.opts.settings.clone())?;
        folder.keep_outbox();
        let (position_key, ref_position) = (format!("{HOUSEHOLDS}/{p}"), format!("{REFERENCE}/0"));
        let position = |key: &str| overlay_store::position(folder.store(), key).map(|v| v.unwrap_or(0));
        let next = position(&position_key)?;
        let ref_next = position(&ref_position)?;
        let txn = if self.cfg.transactional {
            let mut c = crate::admin::producer_config(&self.cfg);
            c.set("transactional.id", format!("{}-shard-{p}", self.cfg.group_id))
                .set("enable.idempotence", "true")
                .set("acks", "all");
            let producer: BaseProducer<DeliveryTracker> =
                c.create_with_context(DeliveryTracker::default()).context("creating a transactional producer")?;
            // Fences a previous owner of this shard that may still be running.
            producer.init_transactions(REQUEST_TIMEOUT).context("initialising transactions")?;
            Some(producer)
        } else {
            None
        };
        Ok(Shard {
            partition: p,
            name,
            folder,
            next,
            fetch_next: next,
            buf: VecDeque::new(),
            at_end: false,
            ref_next,
            txn,
            writer,
            prepared: None,
            outbox_read: false,
            durable_next: next,
            group_committed: None,
            sent: [0; 3],
            produced: [0; 3],
            cursors: [0; 3],
            cursors_dirty: false,
            unacked: VecDeque::new(),
            restoring: Some((Instant::now(), next)),
            folded_since_assign: 0,
            position: position_key,
            ref_position,
            source: String::new(),
            spent: Vec::new(),
        })
    }

    /// Where a fetch for records from `offset` on starts (records before
    /// `offset` are skipped as they arrive).
    fn fetch_from(&self, offset: u64) -> Offset {
        if self.cfg.fetch_from_log_start {
            Offset::Beginning
        } else {
            Offset::Offset(offset as i64)
        }
    }

    /// Points the fetchers at the reference partition and every owned
    /// household partition, from the offsets still needed. New fetchers,
    /// unless these were never assigned: a consumer reports a partition's end
    /// once per end offset, so one that had reached the end before would stay
    /// silent on reaching it again.
    fn reassign(&mut self) -> Result<()> {
        // Fetchers never assigned yet (made at open, connected since) serve as they are.
        if std::mem::replace(&mut self.fetchers_used, true) {
            let_go(std::mem::replace(&mut self.reference_fetch, fetcher(&self.cfg, "reference", FETCH_WAIT_MS)?));
            let_go(std::mem::replace(&mut self.household_fetch, fetcher(&self.cfg, "household", FETCH_WAIT_MS)?));
        }
        // The new fetchers report the ends again.
        self.reference.at_end = false;
        for s in self.shards.values_mut() {
            s.at_end = false;
        }
        let need = self.shards.values().map(|s| s.ref_next).min();
        if let Some(need) = need {
            let cached_from = self.reference.records.front().map_or(self.reference.fetched_to, |h| h.offset);
            if need < cached_from.min(self.reference.fetched_to) {
                // A new shard needs reference records already dropped: fetch them again.
                self.reference.records.clear();
                self.reference.fetched_to = need;
                self.reference.at_end = false;
            }
        }
        let mut tpl = TopicPartitionList::new();
        if !self.shards.is_empty() {
            tpl.add_partition_offset(REFERENCE, 0, self.fetch_from(self.reference.fetched_to))?;
        }
        self.reference_fetch.assign(&tpl).context("assigning the reference fetcher")?;
        let mut tpl = TopicPartitionList::new();
        for s in self.shards.values() {
            tpl.add_partition_offset(HOUSEHOLDS, s.partition as i32, self.fetch_from(s.fetch_next))?;
        }
        self.household_fetch.assign(&tpl).context("assigning the household fetcher")?;
        Ok(())
    }

    /// Takes in fetched records: waits up to `wait` for the first, then takes what is ready.
    fn receive(&mut self, wait: Duration) -> Result<()> {
        // Waiting, split between the two fetchers (the merge needs both).
        let wait = wait / 2;
        let mut timeout = wait;
        for _ in 0..10_000 {
            let Some(m) = self.household_fetch.poll(timeout) else { break };
            timeout = Duration::ZERO;
            match m {
                Ok(m) => {
                    let offset = m.offset() as u64;
                    if let Some(s) = self.shards.get_mut(&(m.partition() as u32)) {
                        if offset > s.fetch_next + 1 {
                            // One offset is a transaction marker; more is a hole.
                            tracing::warn!(
                                partition = s.partition,
                                from = s.fetch_next,
                                to = offset,
                                "household offsets skipped by the broker (see kafka.fetch_from_log_start)"
                            );
                        }
                        if offset >= s.fetch_next {
                            s.fetch_next = offset + 1;
                            s.at_end = false;
                            s.buf.push_back(Head::new(offset, m.payload().unwrap_or_default().to_vec()));
                        }
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    if let Some(s) = self.shards.get_mut(&(p as u32)) {
                        s.at_end = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "household fetch error"),
            }
        }
        let mut timeout = wait;
        for _ in 0..10_000 {
            let Some(m) = self.reference_fetch.poll(timeout) else { break };
            timeout = Duration::ZERO;
            match m {
                Ok(m) => {
                    let offset = m.offset() as u64;
                    if offset >= self.reference.fetched_to {
                        self.reference.fetched_to = offset + 1;
                        self.reference.at_end = false;
                        let head = Head::new(offset, m.payload().unwrap_or_default().to_vec());
                        self.reference.records.push_back(Arc::new(head));
                    }
                }
                Err(KafkaError::PartitionEOF(_)) => self.reference.at_end = true,
                Err(e) => tracing::warn!(error = %e, "reference fetch error"),
            }
        }
        Ok(())
    }

    /// Folds what every shard can fold without guessing at records not yet
    /// received: each shard up to a full batch at a time, the shards in
    /// parallel, then the batches prepared (full, or a caught-up shard's
    /// last) are handed to their writers, until no shard can fold more.
    fn fold_all(&mut self, stats: &mut RunStats, observer: &mut dyn FnMut(u32, &Applied)) -> Result<u64> {
        let mut folded = 0;
        let batch_max = self.opts.batch_inputs_max as u64;
        loop {
            let budget = self.opts.max_inputs.map(|m| m.saturating_sub(stats.inputs));
            if budget == Some(0) {
                break;
            }
            let rounds = fold_round(&mut self.shards, &mut self.reference, batch_max, budget, &self.fold_workers);
            let mut ready = Vec::new();
            for (p, applied) in rounds {
                for a in &applied {
                    observer(p, a);
                }
                stats.inputs += applied.len() as u64;
                folded += applied.len() as u64;
                if let Some(s) = self.shards.get_mut(&p) {
                    if s.prepared.is_some() {
                        ready.push(p);
                    }
                    s.spent = applied;
                }
            }
            for &p in &ready {
                self.commit_shard(p, false, stats)?;
            }
            let parts: Vec<u32> = self.shards.keys().copied().collect();
            for p in parts {
                self.finish_restore(p, stats);
            }
            if ready.is_empty() {
                break;
            }
        }
        self.trim_reference();
        Ok(folded)
    }

    fn finish_restore(&mut self, p: u32, stats: &mut RunStats) {
        let Some(s) = self.shards.get_mut(&p) else { return };
        if let Some((since, from)) = s.restoring {
            if s.household_done() {
                let r =
                    Restore { partition: p, inputs: s.folded_since_assign, millis: since.elapsed().as_millis() as u64 };
                tracing::info!(partition = p, from, inputs = r.inputs, millis = r.millis, "shard restored");
                stats.restores.push(r);
                s.restoring = None;
            }
        }
    }

    /// Drops reference records every shard has folded.
    fn trim_reference(&mut self) {
        let Some(low) = self.shards.values().map(|s| s.ref_next).min() else { return };
        while self.reference.records.front().is_some_and(|h| h.offset < low) {
            self.reference.records.pop_front();
        }
    }

    /// Makes every shard's folded inputs durable and publishes their outputs.
    fn commit_all(&mut self, stats: &mut RunStats) -> Result<()> {
        let parts: Vec<u32> = self.shards.keys().copied().collect();
        // Every shard's batch to its writer first, then each waited for:
        // the writers work side by side.
        for &p in &parts {
            // A shard that has folded all there is writes its state records too.
            let caught_up = self.shards.get(&p).is_some_and(|s| s.caught_up(&self.reference));
            self.commit_shard(p, caught_up, stats)?;
        }
        for p in parts {
            self.settle_shard(p, stats)?;
            // Nothing in flight now: acknowledged cursors need not wait for a next batch.
            self.store_cursors(p)?;
        }
        Ok(())
    }

    /// Stores a shard's acknowledged publish cursors, if they moved (its
    /// writer must have no batch in flight).
    fn store_cursors(&mut self, p: u32) -> Result<()> {
        let Some(s) = self.shards.get_mut(&p) else { return Ok(()) };
        if std::mem::take(&mut s.cursors_dirty) {
            overlay_store::set_cursors(s.folder.store(), &by_output(s.cursors))?;
        }
        Ok(())
    }

    /// Hands a shard's folded inputs to its writer, after the batch before
    /// them is durable and published (batches are written in order, and the
    /// shard folds on while the writer applies and flushes).
    /// With `state`, the batch also writes every state record changed since
    /// they were last written ([`Folder::prepare_all`]).
    fn commit_shard(&mut self, p: u32, state: bool, stats: &mut RunStats) -> Result<()> {
        // A rebalance waits for this instance to let go of its partitions:
        // serving it here keeps a long catch-up from holding the group up.
        self.poll_group()?;
        let Some(s) = self.shards.get_mut(&p) else { return Ok(()) };
        let prepared = s.prepared.take().or_else(|| if state { s.folder.prepare_all() } else { s.folder.prepare() });
        self.settle_shard(p, stats)?;
        if let (Some(mut prepared), Some(s)) = (prepared, self.shards.get_mut(&p)) {
            // Acknowledged publish cursors ride along with the next batch.
            if std::mem::take(&mut s.cursors_dirty) {
                for (output, seq) in by_output(s.cursors) {
                    overlay_store::put_cursor(&mut prepared.batch, output, seq);
                }
            }
            s.writer.submit(prepared).with_context(|| format!("committing shard {p}"))?;
        }
        Ok(())
    }

    /// Waits for a shard's batch in flight, if any; then publishes its
    /// committed outputs not yet published (that batch's, and any a previous
    /// run left), then takes note of what the broker has acknowledged.
    fn settle_shard(&mut self, p: u32, stats: &mut RunStats) -> Result<()> {
        let Some(s) = self.shards.get_mut(&p) else { return Ok(()) };
        let done = s.writer.wait().with_context(|| format!("committing shard {p}"))?;
        if let Some(done) = &done {
            stats.batches += 1;
            stats.orders += done.outputs.orders;
            stats.audit += done.outputs.audit;
            stats.dead_letters += done.outputs.dead_letters;
            if let Some((_, next)) = done.positions.iter().find(|(k, _)| *k == s.position) {
                s.durable_next = *next;
            }
        }
        if let Some(o) = &self.opts.observer {
            o.settled(p, done.as_ref(), s.folder.store());
        }
        publish_shard(s, done.as_ref(), self.producer.as_deref(), &self.group)?;
        if s.txn.is_some() {
            // The transaction committed the outputs and the offset.
            if let Some(o) = &self.opts.observer {
                o.published(p);
            }
        } else {
            self.confirm(p)?;
        }
        Ok(())
    }

    /// Takes note of what the broker has acknowledged of a shard's published
    /// batches (not transactional): their publish cursors are stored with the
    /// next batch, and the group's offset advances to the household position
    /// of the last batch wholly acknowledged, so lag tools see the truth.
    fn confirm(&mut self, p: u32) -> Result<()> {
        let (Some(s), Some(producer)) = (self.shards.get_mut(&p), &self.producer) else { return Ok(()) };
        producer.poll(Duration::ZERO);
        producer.context().check()?;
        let acked: [u64; 3] = OUTPUTS.map(|(_, _, topic)| producer.context().acked(topic, p as i32).unwrap_or(0));
        let mut next = None;
        while let Some(u) = s.unacked.front() {
            if (0..3).any(|i| u.produced[i] > acked[i]) {
                break;
            }
            if u.sent != s.cursors {
                s.cursors = u.sent;
                s.cursors_dirty = true;
            }
            next = Some(u.next);
            s.unacked.pop_front();
        }
        let Some(next) = next else { return Ok(()) };
        if let Some(o) = &self.opts.observer {
            o.published(p);
        }
        if s.group_committed != Some(next) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(HOUSEHOLDS, p as i32, Offset::Offset(next as i64))?;
            match self.group.commit(&tpl, CommitMode::Async) {
                Ok(()) => s.group_committed = Some(next),
                // Advisory: the shard's stored position is the truth.
                Err(e) => tracing::warn!(partition = p, error = %e, "committing the group offset"),
            }
        }
        Ok(())
    }

    /// Waits until the broker has acknowledged everything published, then
    /// stores every shard's publish cursors and advances the group's offsets.
    fn finish_publishing(&mut self) -> Result<()> {
        let Some(producer) = &self.producer else { return Ok(()) };
        crate::admin::flush(producer, REQUEST_TIMEOUT).context("flushing outputs")?;
        let parts: Vec<u32> = self.shards.keys().copied().collect();
        for p in parts {
            self.confirm(p)?;
            self.store_cursors(p)?;
        }
        Ok(())
    }
}

/// The sequence number of the last record in each of `parts` of an
/// output topic (absent: the partition has none).
fn last_published_seqs(cfg: &KafkaConfig, topic: &str, parts: &[u32]) -> Result<BTreeMap<u32, u64>> {
    // A new reader each time: a consumer reports a partition's end once
    // per end offset, so a reused one could wait for an end it already
    // saw. Short fetch waits: an end is only known from an empty fetch.
    let tail = fetcher(cfg, "output tail", "10")?;
    // The listed end is only a hint (some brokers list the last batch's
    // start): read from a window before it to the end the fetch reports.
    // The window also passes over trailing transaction markers.
    let mut tpl = TopicPartitionList::new();
    for &p in parts {
        let (low, listed) = tail.fetch_watermarks(topic, p as i32, REQUEST_TIMEOUT)?;
        tpl.add_partition_offset(topic, p as i32, Offset::Offset((listed - 64).max(low).max(0)))?;
    }
    tail.assign(&tpl)?;
    let mut pending: BTreeSet<u32> = parts.iter().copied().collect();
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut last = BTreeMap::new();
    let mut transient: Option<KafkaError> = None;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            let cause = transient.map(|e| format!(" (last error: {e})")).unwrap_or_default();
            bail!("timed out reading the end of {topic} partitions {pending:?}{cause}");
        }
        match tail.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(seq) = seq_header(&m) {
                    last.insert(m.partition() as u32, seq);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&(p as u32));
            }
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                return Err(anyhow!("reading the end of {topic}: {e}"))
            }
            // Broker-down events (possibly queued during an outage while
            // this reader was idle): librdkafka reconnects; keep reading.
            Some(Err(e)) => transient = Some(e),
            None => {}
        }
    }
    let_go(tail);
    Ok(last)
}

/// Lets go of an rdkafka consumer on a thread of its own: one with a group
/// id closes in 100 ms polls when dropped, which would hold the engine up.
fn let_go<T: Send + 'static>(client: T) {
    // Should the thread not start, the closure (and the client) is dropped here.
    let _ = std::thread::Builder::new().name("overlay-close".into()).spawn(move || drop(client));
}

/// The threads to fold on: `configured`, or one per CPU.
fn fold_threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// One shard's inputs folded by one call of [`fold_shard`].
type Folded = (u32, Vec<Applied>);

/// Folds every shard until its batch is full or its merge must wait for
/// records, on the `workers`' threads; with a `budget` (inputs left to
/// fold), on this thread, the shards in partition order. Returns what each
/// shard folded, in partition order.
fn fold_round(
    shards: &mut BTreeMap<u32, Shard>,
    reference: &mut ReferenceCache,
    batch_max: u64,
    budget: Option<u64>,
    workers: &Workers,
) -> Vec<Folded> {
    if let Some(mut left) = budget {
        let mut out = Vec::new();
        for s in shards.values_mut() {
            let applied = fold_shard(s, reference, batch_max, left);
            left -= applied.len() as u64;
            out.push((s.partition, applied));
        }
        return out;
    }
    if workers.len() <= 1 || shards.len() <= 1 {
        return shards.values_mut().map(|s| (s.partition, fold_shard(s, reference, batch_max, u64::MAX))).collect();
    }
    // The shards and the reference records go to the threads for the round
    // (in partition order) and come back; each job lets go of the records
    // before it returns, so they are this thread's alone again after.
    let shared = Arc::new(std::mem::take(reference));
    let jobs: Vec<(Shard, Arc<ReferenceCache>)> =
        std::mem::take(shards).into_values().map(|s| (s, shared.clone())).collect();
    let folded = workers.map(jobs, move |(mut s, reference)| {
        let applied = fold_shard(&mut s, &reference, batch_max, u64::MAX);
        drop(reference);
        (s, applied)
    });
    *reference = Arc::try_unwrap(shared).unwrap_or_else(|still_shared| (*still_shared).clone());
    folded
        .into_iter()
        .map(|(s, applied)| {
            let p = s.partition;
            shards.insert(p, s);
            (p, applied)
        })
        .collect()
}

/// Folds a shard's inputs until its batch holds `batch_max` inputs, `limit`
/// inputs are folded, or the merge must wait for records. A full batch, or
/// the last one when the shard has caught up, is prepared for the writer
/// here, on the fold thread.
fn fold_shard(s: &mut Shard, reference: &ReferenceCache, batch_max: u64, limit: u64) -> Vec<Applied> {
    drop(std::mem::take(&mut s.spent));
    let mut applied = Vec::new();
    if s.prepared.is_some() {
        return applied;
    }
    while (applied.len() as u64) < limit && s.folder.uncommitted() < batch_max {
        match fold_one(s, reference) {
            Some(a) => applied.push(a),
            None => break,
        }
    }
    if s.folder.uncommitted() >= batch_max {
        s.prepared = s.folder.prepare();
    } else if s.caught_up(reference) {
        // All there is, folded: the batch writes the state records too
        // (encoded here, on the fold thread, as a full batch is).
        s.prepared = s.folder.prepare_all();
    }
    applied
}

/// Folds the shard's next input, if the merge can tell which one it is.
fn fold_one(s: &mut Shard, reference: &ReferenceCache) -> Option<Applied> {
    let r = reference.at_or_after(s.ref_next).cloned();
    if r.is_none() && reference.fetched_to > s.ref_next {
        s.ref_next = reference.fetched_to;
    }
    let ref_done = r.is_none() && reference.at_end;
    let hh_done = s.household_done();
    let take_reference = match (&r, s.buf.front()) {
        (Some(r), Some(h)) => (r.time(), 0u32, r.offset) <= (h.time(), 1, h.offset),
        (Some(_), None) if hh_done => true,
        (Some(_), None) => return None,
        (None, Some(_)) if ref_done => false,
        (None, _) => return None,
    };
    // The source, `topic/partition/offset`, written over the last one's.
    let source = &mut s.source;
    source.clear();
    let applied = if take_reference {
        let head = r.expect("a reference head");
        s.ref_next = head.offset + 1;
        let _ = write!(source, "{}/{}", s.ref_position, head.offset);
        s.folder.fold(source, Some((&s.ref_position, s.ref_next)), &head.raw, head.input())
    } else {
        let head = s.buf.pop_front().expect("a household head");
        s.next = head.offset + 1;
        let _ = write!(source, "{}/{}", s.position, head.offset);
        s.folder.fold(source, Some((&s.position, s.next)), &head.raw, head.input())
    };
    s.folded_since_assign += 1;
    Some(applied)
}

/// One publish of a shard's outputs under way.
struct Publishing<'a> {
    producer: &'a BaseProducer<DeliveryTracker>,
    partition: u32,
    txn: bool,
    /// A transaction was begun (transactional only).
    began: bool,
    /// Per output: the last seq handed over, the last actually produced.
    sent: [u64; 3],
    produced: [u64; 3],
}

impl Publishing<'_> {
    /// Produces output `i`'s record `seq` to the shard's partition of its topic.
    fn emit(&mut self, i: usize, seq: u64, value: &[u8]) -> Result<()> {
        let (output, _, topic) = OUTPUTS[i];
        let p = self.partition;
        if self.txn && !self.began {
            self.producer.begin_transaction().context("beginning a transaction")?;
            self.began = true;
        }
        self.sent[i] = seq;
        let OutputKey { key, source } = output_key(topic, value)?;
        // A bad reference input is dead-lettered by every shard; shard 0 publishes it.
        if topic == DEAD_LETTERS && p != 0 && source.as_deref().is_some_and(|src| src.starts_with(REFERENCE)) {
            return Ok(());
        }
        self.produced[i] = seq;
        let seq_text = seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: HEADER_SEQ, value: Some(seq_text.as_bytes()) })
            .insert(Header { key: HEADER_EVENT_TYPE, value: Some(output.as_bytes()) })
            .insert(Header { key: HEADER_CONTENT_TYPE, value: Some("application/json".as_bytes()) });
        let record = BaseRecord::to(topic).partition(p as i32).key(key.as_bytes()).payload(value).headers(headers);
        send(self.producer, record)?;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }
}

/// Publishes a shard's committed outputs it has not handed to the producer
/// yet (from its store: that batch's, and any a previous run left). In a
/// transaction, waits for the broker and stores the cursors; otherwise the
/// acknowledgements are taken note of later ([`KafkaEngine::confirm`]).
fn publish_shard(
    s: &mut Shard,
    fresh: Option<&Prepared>,
    shared: Option<&BaseProducer<DeliveryTracker>>,
    group: &BaseConsumer<GroupContext>,
) -> Result<()> {
    let p = s.partition;
    let producer = match (&s.txn, shared) {
        (Some(t), _) => t,
        (None, Some(sh)) => sh,
        (None, None) => bail!("no producer for shard {p}"),
    };
    let store = s.folder.store();
    let mut out =
        Publishing { producer, partition: p, txn: s.txn.is_some(), began: false, sent: s.sent, produced: s.produced };
    for (i, (_, prefix, _)) in OUTPUTS.into_iter().enumerate() {
        // Once the first publish has read what a previous run left, the
        // batch just made durable (if any) holds every record after what was
        // sent; the store is read otherwise (megabytes per batch).
        let in_memory = match fresh.filter(|_| s.outbox_read) {
            Some(done) => done.outbox_after(prefix, out.sent[i], |seq, value| out.emit(i, seq, value))?,
            None => s.outbox_read,
        };
        if !in_memory {
            for record in overlay_store::records_after(store, prefix, out.sent[i]) {
                let (seq, value) = record?;
                out.emit(i, seq, &value)?;
            }
        }
    }
    let Publishing { began, sent, produced, .. } = out;
    s.outbox_read = true;
    let nothing_new = sent == s.sent;
    (s.sent, s.produced) = (sent, produced);
    if !nothing_new {
        tracing::debug!(shard = %s.name, through = ?sent, "published");
    }
    if s.txn.is_none() {
        if !nothing_new || s.unacked.back().is_none_or(|u| u.next != s.durable_next) {
            s.unacked.push_back(Unacked { produced, sent, next: s.durable_next });
        }
        return Ok(());
    }
    if !began {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(HOUSEHOLDS, p as i32, Offset::Offset(s.durable_next as i64))?;
    let meta = group.group_metadata().ok_or_else(|| anyhow!("no group metadata for the transaction"))?;
    // rdkafka's commit_transaction flushes in 100 ms polls: flush first, at once.
    let done = crate::admin::flush(producer, REQUEST_TIMEOUT).and_then(|_| {
        producer
            .send_offsets_to_transaction(&tpl, &meta, REQUEST_TIMEOUT)
            .and_then(|_| producer.commit_transaction(REQUEST_TIMEOUT))
            .map_err(anyhow::Error::from)
    });
    if let Err(e) = done {
        let _ = producer.abort_transaction(REQUEST_TIMEOUT);
        return Err(anyhow!("committing shard {p}'s transaction: {e}"));
    }
    producer.context().check()?;
    // One durable write for all three (a stale cursor would only be corrected
    // from the output partitions' tails when the shard is next assigned).
    overlay_store::set_cursors(store, &by_output(sent))?;
    s.cursors = sent;
    tracing::debug!(shard = %s.name, "transaction committed");
    Ok(())
}
