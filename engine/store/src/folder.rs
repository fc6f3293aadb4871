//! The folder: in-memory state in front of a store. Inputs are folded one by
//! one; their effects accumulate in one write batch (the changed state
//! records, the journal entries, the outputs and the input positions), which
//! `commit` writes atomically and durably. The runner, replay and the
//! benchmarks all fold through here, so they produce the same bytes.

use crate::chunk::{ChunkWriter, KeptChunk};
use crate::codec::{encode_journal, encode_seen, encode_touched};
use crate::keys;
use crate::{
    check_format, load_state_and_tail, Format, Store, StoreError, WriteBatch, STATE_EVERY_COMMITS, STORE_FORMAT,
};
use overlay_core::fold::{step, Applied, Input, Touched};
use overlay_core::output::DeadLetter;
use overlay_core::state::EngineSettings;
use overlay_core::State;
use std::collections::BTreeMap;

/// What one committed batch produced, for the publisher and the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    pub inputs: u64,
    pub orders: u64,
    pub audit: u64,
    pub dead_letters: u64,
    pub bytes: u64,
}

/// A batch ready to write, with what it produced and the input positions it records.
#[derive(Debug, Default)]
pub struct Prepared {
    pub batch: WriteBatch,
    pub outputs: Outputs,
    pub positions: Vec<(String, u64)>,
    /// With [`Folder::keep_outbox`]: the batch's chunks of orders, audit
    /// records and dead letters, in stream and seq order, for a publisher to
    /// read once the batch is durable.
    pub outbox: Vec<KeptChunk>,
}

impl Prepared {
    /// Hands `emit` stream `prefix`'s records after seq `after` from the kept
    /// outbox ([`Folder::keep_outbox`]), in order, as long as they follow on
    /// from `after` one by one. Returns false at a gap: the records from the
    /// last one handed over on are in the store ([`crate::records_after`]).
    pub fn outbox_after<E: From<StoreError>>(
        &self,
        prefix: &[u8],
        after: u64,
        mut emit: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        let mut last = after;
        for kept in self.outbox.iter().filter(|k| k.prefix == prefix) {
            for (seq, value) in kept.chunk()?.records() {
                if seq <= last {
                    continue;
                }
                if seq != last + 1 {
                    return Ok(false);
                }
                emit(seq, value)?;
                last = seq;
            }
        }
        Ok(true)
    }
}

/// The folder's list of touched records is deduplicated when it grows to
/// this many (between state writes: a catch-up folds thousands of inputs),
/// and again each time it doubles (so many distinct records are not sorted
/// input after input).
const TOUCHED_COMPACT_AT: usize = 1 << 16;

pub struct Folder {
    store: Box<dyn Store>,
    state: State,
    /// This commit's records of each stream.
    journal: ChunkWriter,
    orders: ChunkWriter,
    audit: ChunkWriter,
    dead_letters: ChunkWriter,
    /// A new store, or one of the previous format: the next batch records the format.
    mark_format: bool,
    /// State records changed since they were last written, as the inputs
    /// named them (repeats included: sorted and deduplicated when written,
    /// which costs less than keeping a set of them input by input).
    touched: Vec<Touched>,
    /// Its length when it was last deduplicated (see [`TOUCHED_COMPACT_AT`]).
    touched_compacted: usize,
    /// Write them with every this many commits ([`STATE_EVERY_COMMITS`]).
    state_every: u64,
    /// Commits since they were last written.
    since_state: u64,
    /// The next batch writes them (the journal's tail folded at open, or [`Folder::prepare_all`]).
    state_due: bool,
    positions: BTreeMap<String, u64>,
    pending: Outputs,
    keep_outbox: bool,
}

/// The dead letter of a refused input, as the engine stores and publishes it.
pub fn dead_letter(applied: &Applied, source: &str, raw: &[u8]) -> Option<DeadLetter> {
    applied.rejection.as_ref().map(|(seq, err)| DeadLetter {
        seq: *seq,
        event_id: applied.audit.first().and_then(|a| a.event_id.clone()),
        error: err.kind,
        reason: err.message.clone(),
        source: source.to_string(),
        raw_hex: hex::encode(raw),
    })
}

impl Folder {
    /// Loads state from `store`. A new store takes `settings`; an existing one
    /// keeps the settings it was created with (decisions depend on them).
    /// A store of another format is refused ([`check_format`]).
    pub fn open(store: Box<dyn Store>, settings: EngineSettings) -> Result<Self, StoreError> {
        let mark_format = check_format(store.as_ref())? != Format::Current;
        let (mut state, touched) = load_state_and_tail(store.as_ref())?;
        let fresh = state.meta.applied == 0;
        if fresh {
            state.meta.settings = settings;
        }
        Ok(Self {
            store,
            state,
            journal: ChunkWriter::new(keys::JOURNAL),
            orders: ChunkWriter::new(keys::ORDERS),
            audit: ChunkWriter::new(keys::AUDIT),
            dead_letters: ChunkWriter::new(keys::DEAD_LETTERS),
            mark_format,
            since_state: 0,
            // What the journal's inputs after the stored state changed: written with the first commit.
            state_due: !touched.is_empty(),
            touched: touched.into_iter().collect(),
            touched_compacted: 0,
            state_every: STATE_EVERY_COMMITS,
            positions: BTreeMap::new(),
            pending: Outputs::default(),
            keep_outbox: false,
        })
    }

    /// Writes the state records with every `n` commits (at least 1)
    /// instead of every [`STATE_EVERY_COMMITS`].
    pub fn state_every(&mut self, n: u64) {
        self.state_every = n.max(1);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Inputs folded since the last commit.
    pub fn uncommitted(&self) -> u64 {
        self.pending.inputs
    }

    /// Folds one input. `source` names where it came from (`topic/partition/offset`);
    /// `position` is the input position to record with it (source key, next
    /// offset). `raw` are the bytes `input` was decoded from (a protobuf
    /// envelope, [`overlay_proto::decode_envelope`]): the journal keeps them,
    /// and [`crate::load_state`] and replay decode them again.
    /// Returns what the input made, its `touched` list moved into the
    /// folder's (the records are written from there).
    pub fn fold(&mut self, source: &str, position: Option<(&str, u64)>, raw: &[u8], input: Input<'_>) -> Applied {
        let mut applied = step(&mut self.state, input);
        let seq = self.state.meta.applied;
        self.journal.push(seq, &encode_journal(source, raw));
        for o in &applied.orders {
            self.orders.push(o.seq, &serde_json::to_vec(o).expect("orders serialize"));
        }
        for (a, bytes) in applied.audit.iter().zip(&applied.audit_json) {
            self.audit.push(a.seq, bytes);
        }
        if let Some(dl) = dead_letter(&applied, source, raw) {
            self.dead_letters.push(dl.seq, &serde_json::to_vec(&dl).expect("dead letters serialize"));
            self.pending.dead_letters += 1;
        }
        if let Some((key, next)) = position {
            match self.positions.get_mut(key) {
                Some(at) => *at = next,
                None => {
                    self.positions.insert(key.to_string(), next);
                }
            }
        }
        // Moved: no caller reads what an input touched.
        self.touched.append(&mut applied.touched);
        if self.touched.len() >= TOUCHED_COMPACT_AT.max(2 * self.touched_compacted) {
            self.touched.sort_unstable();
            self.touched.dedup();
            self.touched_compacted = self.touched.len();
        }
        self.pending.inputs += 1;
        self.pending.orders += applied.orders.len() as u64;
        self.pending.audit += applied.audit.len() as u64;
        applied
    }

    /// Writes everything folded since the last commit in one atomic, durable batch.
    pub fn commit(&mut self) -> Result<Outputs, StoreError> {
        let prepared = self.prepare();
        self.write(prepared)
    }

    fn write(&mut self, prepared: Option<Prepared>) -> Result<Outputs, StoreError> {
        let Some(p) = prepared else { return Ok(Outputs::default()) };
        self.store.commit(p.batch)?;
        Ok(p.outputs)
    }

    /// Everything folded since the last commit, as one batch ready to be
    /// written (by `commit`, or by a pipelined writer); None if nothing was folded.
    pub fn prepare(&mut self) -> Option<Prepared> {
        let state_waiting = self.state_due && !self.touched.is_empty();
        if self.pending.inputs == 0 && !state_waiting {
            return None;
        }
        let mut outputs = self.pending;
        let positions: Vec<(String, u64)> = self.positions.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut outbox = Vec::new();
        let batch = self.take_batch_keeping(self.keep_outbox.then_some(&mut outbox));
        outputs.bytes = batch.bytes() as u64;
        Some(Prepared { batch, outputs, positions, outbox })
    }

    /// [`Folder::prepare`], the batch also writing every state record
    /// changed since they were last written (None if there is nothing to
    /// write): for when the input has run out, so that the stored state is
    /// whole while the engine waits (or is stopped).
    pub fn prepare_all(&mut self) -> Option<Prepared> {
        self.state_due |= !self.touched.is_empty();
        self.prepare()
    }

    /// [`Folder::commit`] with the state records, as [`Folder::prepare_all`].
    pub fn commit_all(&mut self) -> Result<Outputs, StoreError> {
        let prepared = self.prepare_all();
        self.write(prepared)
    }

    /// Has [`Folder::prepare`] keep a copy of each batch's outputs in
    /// [`Prepared::outbox`] (a publisher that reads them back from the store
    /// reads megabytes per batch; a copy in memory costs a memcpy).
    pub fn keep_outbox(&mut self) {
        self.keep_outbox = true;
    }

    /// The batch as it would be committed now, without writing it (benchmarks
    /// write the same bytes straight to sled as their baseline).
    pub fn take_batch(&mut self) -> WriteBatch {
        self.take_batch_keeping(None)
    }

    fn take_batch_keeping(&mut self, mut outbox: Option<&mut Vec<KeptChunk>>) -> WriteBatch {
        let mut batch = WriteBatch::default();
        self.journal.finish(&mut batch, None);
        for stream in [&mut self.orders, &mut self.audit, &mut self.dead_letters] {
            stream.finish(&mut batch, outbox.as_deref_mut());
        }
        // The state records: with a new store's first commit, and every
        // `state_every` commits (the ones between are in the journal).
        self.since_state += 1;
        let write_state = self.mark_format || self.state_due || self.since_state >= self.state_every;
        let touched = if write_state {
            self.since_state = 0;
            self.state_due = false;
            let mut touched = std::mem::take(&mut self.touched);
            self.touched_compacted = 0;
            touched.sort_unstable();
            touched.dedup();
            touched
        } else {
            Vec::new()
        };
        // The idempotency records go together, in one record of this commit.
        let mut seen = Vec::new();
        for t in touched {
            if let Touched::Seen(id) = t {
                seen.push(id);
                continue;
            }
            let (k, v) = encode_touched(&self.state, &t);
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        if !seen.is_empty() {
            batch.put(
                keys::seen_commit_key(self.state.meta.applied),
                encode_seen(&self.state, seen.iter().map(String::as_str)),
            );
        }
        for (source, next) in std::mem::take(&mut self.positions) {
            batch.put(keys::position_key(&source), next.to_be_bytes().to_vec());
        }
        // A batch that is not written is never followed by another from
        // this folder (the engine starts again from the store), so the first
        // batch of a new store (or of one in the previous format) carries the format.
        if std::mem::take(&mut self.mark_format) {
            batch.put(keys::FORMAT.to_vec(), STORE_FORMAT.to_be_bytes().to_vec());
        }
        self.pending = Outputs::default();
        batch
    }
}
