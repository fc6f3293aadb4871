//! The runner: reads the input topics, folds each input through the store's
//! folder, commits atomic batches, then publishes the committed outputs.
//!
//! Order of inputs: a k-way merge of the input partitions by (event time,
//! topic, partition, offset). Given the same log contents it yields the same
//! sequence from any restart point, so an interrupted run and an
//! uninterrupted one fold the same inputs in the same order. In follow mode,
//! records that arrive later are folded when they arrive; the journal records
//! the order actually used, and replay follows the journal.
//!
//! Exactly-once effect: each input's effects and its position are in the same
//! batch; outputs are published only after their batch is durable, and the
//! publisher resumes from the last record it finds in each output topic.
//!
//! Pipelining: a writer thread applies and flushes batch N while batch N+1 is
//! folded (one batch in flight at most). In-memory state runs ahead of the
//! store by at most that much; a crash loses only in-memory work, which is
//! folded again from the durable positions, to the same bytes.

use crate::config::Config;
use crate::topics::{self, ENGINE_GROUP, INPUTS};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use overlay_core::event::{Envelope, InputError};
use overlay_core::fold::{Applied, Input};
use overlay_core::State;
use overlay_log::{EmbeddedLog, Record};
use overlay_store::{keys, Committer, Folder, Prepared, SledStore, Store};
use serde::Deserialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most output records published in one append.
const PUBLISH_CHUNK_MAX: usize = 1000;

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state")
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Keep waiting for new inputs instead of stopping when caught up.
    pub follow: bool,
    /// Stop after this many inputs (for tests and tools).
    pub max_inputs: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub inputs: u64,
    pub orders: u64,
    pub audit: u64,
    pub dead_letters: u64,
    pub batches: u64,
    pub bytes: u64,
}

struct Head {
    offset: u64,
    raw: Vec<u8>,
    decoded: Result<Envelope, InputError>,
}

impl Head {
    /// Undecodable inputs sort first: they have no time of their own.
    fn time(&self) -> DateTime<Utc> {
        self.decoded.as_ref().map_or(DateTime::<Utc>::MIN_UTC, |e| e.event_time)
    }
}

struct Source {
    topic: &'static str,
    rank: usize,
    partition: u32,
    next: u64,
    buf: VecDeque<Head>,
}

impl Source {
    fn key(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

/// An engine on the embedded log: the log, and the folder over a sled store.
pub struct Engine {
    log: EmbeddedLog,
    folder: Folder,
    /// Writes batch N while batch N+1 is folded (one batch in flight at most).
    writer: Committer,
    cfg: Config,
    stop: Arc<AtomicBool>,
    /// Told when a batch is durable and published (the operations metrics).
    metrics: Option<Arc<overlay_ops::Metrics>>,
}

impl Engine {
    pub fn open(data_dir: &Path, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let log = EmbeddedLog::open(&log_dir(data_dir)).context("opening the embedded log")?;
        topics::ensure_topics(&log, cfg.log.household_partitions)?;
        let store = SledStore::open(&store_dir(data_dir))
            .context("opening the state store (is another engine running on this data directory?)")?;
        let writer = Box::new(store.handle());
        Self::assemble(log, Box::new(store), writer, cfg).map_err(|e| format_advice(e, data_dir))
    }

    /// An engine on `log` and a store given as two handles on it: the
    /// folder's and the writer thread's (the simulation's faulty store).
    pub fn assemble(log: EmbeddedLog, store: Box<dyn Store>, writer: Box<dyn Store>, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let writer = Committer::new(writer);
        let folder = Folder::open(store, cfg.engine.settings.clone())?;
        let engine =
            Self { log, folder, writer, cfg: cfg.clone(), stop: Arc::new(AtomicBool::new(false)), metrics: None };
        // Outputs committed before a crash but not yet published go out first.
        engine.publish()?;
        Ok(engine)
    }

    pub fn log(&self) -> &EmbeddedLog {
        &self.log
    }

    pub fn state(&self) -> &State {
        self.folder.state()
    }

    pub fn store(&self) -> &dyn Store {
        self.folder.store()
    }

    /// A flag that, once set, makes `run` finish its batch and return.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops on `flag` instead of a flag of its own (one set up before the engine was opened).
    pub fn stop_on(&mut self, flag: Arc<AtomicBool>) {
        self.stop = flag;
    }

    /// Reports each durable batch and publish to `metrics` (as shard 0).
    pub fn set_metrics(&mut self, metrics: Arc<overlay_ops::Metrics>) {
        self.metrics = Some(metrics);
    }

    fn sources(&self) -> Result<Vec<Source>> {
        let mut out = Vec::new();
        for (rank, topic) in INPUTS.iter().enumerate() {
            for partition in 0..self.log.partitions(topic)? {
                let mut s = Source { topic, rank, partition, next: 0, buf: VecDeque::new() };
                s.next = overlay_store::position(self.folder.store(), &s.key())?.unwrap_or(0);
                out.push(s);
            }
        }
        Ok(out)
    }

    fn refill(&self, s: &mut Source) -> Result<()> {
        let from = s.buf.back().map_or(s.next, |h| h.offset + 1);
        let records = self.log.read(s.topic, s.partition, from, self.cfg.engine.read_records_max, 16 << 20)?;
        for r in records {
            let decoded = overlay_proto::decode_envelope(&r.value);
            s.buf.push_back(Head { offset: r.offset, raw: r.value, decoded });
        }
        Ok(())
    }

    /// Folds inputs until caught up (or, following, until stopped).
    pub fn run(&mut self, opts: &RunOptions, observer: &mut dyn FnMut(&Applied)) -> Result<RunStats> {
        let mut sources = self.sources()?;
        let mut stats = RunStats::default();
        loop {
            if self.stop.load(Ordering::Relaxed) || opts.max_inputs.is_some_and(|m| stats.inputs >= m) {
                break;
            }
            for s in sources.iter_mut().filter(|s| s.buf.is_empty()) {
                self.refill(s)?;
            }
            let pick = sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.buf.front().map(|h| ((h.time(), s.rank, s.partition, h.offset), i)))
                .min()
                .map(|(_, i)| i);
            let Some(i) = pick else {
                // Caught up: the state records go with this batch, so the stored state is whole while idle.
                self.commit_with(&mut stats, Folder::prepare_all)?;
                self.settle(&mut stats)?;
                if !opts.follow {
                    break;
                }
                std::thread::sleep(Duration::from_millis(self.cfg.engine.idle_poll_ms));
                continue;
            };
            let s = &mut sources[i];
            let head = s.buf.pop_front().expect("picked a source with a head");
            s.next = head.offset + 1;
            let source = format!("{}/{}/{}", s.topic, s.partition, head.offset);
            let position = s.key();
            let input = match &head.decoded {
                Ok(env) => Input::Event(env),
                Err(e) => Input::Undecodable(e),
            };
            let applied = self.folder.fold(&source, Some((&position, s.next)), &head.raw, input);
            observer(&applied);
            stats.inputs += 1;
            if self.folder.uncommitted() >= self.cfg.engine.batch_inputs_max as u64 {
                self.commit(&mut stats)?;
            }
        }
        self.commit_with(&mut stats, Folder::prepare_all)?;
        self.settle(&mut stats)?;
        // Even with nothing new folded, leave the advisory positions true (a
        // kill may have come between a batch and its group commit).
        self.commit_group(&sources)?;
        Ok(stats)
    }

    fn commit_group(&self, sources: &[Source]) -> Result<()> {
        for s in sources {
            if self.log.committed(ENGINE_GROUP, s.topic, s.partition)? != Some(s.next) {
                self.log.commit(ENGINE_GROUP, s.topic, s.partition, s.next)?;
            }
        }
        Ok(())
    }

    /// Hands everything folded so far to the writer, after the batch before
    /// it is durable (and published): batches are written in order.
    fn commit(&mut self, stats: &mut RunStats) -> Result<()> {
        self.commit_with(stats, Folder::prepare)
    }

    /// [`Self::commit`] of what `prepare` takes from the folder.
    fn commit_with(&mut self, stats: &mut RunStats, prepare: fn(&mut Folder) -> Option<Prepared>) -> Result<()> {
        let prepared = prepare(&mut self.folder);
        self.settle(stats)?;
        if let Some(p) = prepared {
            self.writer.submit(p)?;
        }
        Ok(())
    }

    /// Waits for the batch in flight; once it is durable, publishes its
    /// outputs and advances the advisory group positions it recorded.
    fn settle(&mut self, stats: &mut RunStats) -> Result<()> {
        let Some(done) = self.writer.wait()? else { return Ok(()) };
        let out = done.outputs;
        stats.batches += 1;
        stats.orders += out.orders;
        stats.audit += out.audit;
        stats.dead_letters += out.dead_letters;
        stats.bytes += out.bytes;
        if let Some(m) = &self.metrics {
            m.durable(0, out.inputs);
            m.positions(0, done.positions.iter().map(|(k, v)| (k.as_str(), *v)));
            m.outbox_from_store(0, self.folder.store())?;
        }
        self.publish()?;
        if let Some(m) = &self.metrics {
            m.published(0);
        }
        // Advisory group positions, for lag tools: the store's positions are the truth.
        for (key, next) in &done.positions {
            if let Some((topic, partition)) =
                key.rsplit_once('/').and_then(|(t, p)| p.parse::<u32>().ok().map(|p| (t, p)))
            {
                self.log.commit(ENGINE_GROUP, topic, partition, *next)?;
            }
        }
        Ok(())
    }

    /// Publishes committed outputs not yet in their topics.
    pub fn publish(&self) -> Result<()> {
        publish_outbox(self.folder.store(), &self.log)
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// A store of another format ([`overlay_store::check_format`]), with what
/// to delete in this data directory: the store, and the output topics it
/// published (a new store refuses to publish after records it did not make).
fn format_advice(e: anyhow::Error, data_dir: &Path) -> anyhow::Error {
    if !matches!(e.downcast_ref::<overlay_store::StoreError>(), Some(overlay_store::StoreError::Format(_))) {
        return e;
    }
    let topics_dir = log_dir(data_dir).join("topics");
    let outputs: Vec<String> = [topics::ORDERS, topics::AUDIT, topics::DEAD_LETTERS]
        .iter()
        .map(|t| topics_dir.join(t).display().to_string())
        .collect();
    anyhow::anyhow!(
        "{e}\nHere the store directory is {}. With it, delete the output topics the old store published \
         ({}): the new store publishes them again, byte for byte.",
        store_dir(data_dir).display(),
        outputs.join(", ")
    )
}

/// Outbox → output topics, exactly once: the store's cursor says what was
/// published; if a crash came between an append and the cursor update, the
/// topic's last record says it instead.
pub fn publish_outbox(store: &dyn Store, log: &EmbeddedLog) -> Result<()> {
    for (output, prefix, topic) in [
        ("orders", keys::ORDERS, topics::ORDERS),
        ("audit", keys::AUDIT, topics::AUDIT),
        ("dead-letters", keys::DEAD_LETTERS, topics::DEAD_LETTERS),
    ] {
        let mut cursor = overlay_store::cursor(store, output)?;
        let end = log.end_offset(topic, 0)?;
        if end > 0 {
            let last = log.read(topic, 0, end - 1, 1, usize::MAX)?;
            if let Some(r) = last.first() {
                let seq: SeqOnly = serde_json::from_slice(&r.value)
                    .with_context(|| format!("the last record of {topic} is not one the engine wrote"))?;
                // Only the engine writes output topics; a record claiming a seq
                // the store never produced means something else wrote there.
                let highest = overlay_store::last_seq(store, prefix)?;
                anyhow::ensure!(
                    seq.seq <= highest,
                    "{topic} ends with seq {} but the engine has produced only {highest}: refusing to publish past records that are not its own",
                    seq.seq
                );
                cursor = cursor.max(seq.seq);
            }
        }
        let mut chunk: Vec<Record> = Vec::new();
        let mut last = cursor;
        for r in overlay_store::records_after(store, prefix, cursor) {
            let (seq, value) = r?;
            chunk.push(Record::new(value, 0));
            last = seq;
            if chunk.len() >= PUBLISH_CHUNK_MAX {
                log.append(topic, &chunk)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            log.append(topic, &chunk)?;
        }
        if last != overlay_store::cursor(store, output)? {
            overlay_store::set_cursor(store, output, last)?;
        }
    }
    Ok(())
}
