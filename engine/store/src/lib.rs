//! The state store: a small trait ([`Store`]), its sled implementation
//! ([`SledStore`]) and an in-memory one ([`MemStore`], for replay and
//! benchmarks), one that fails on purpose ([`fault::FaultyStore`], for the
//! simulation), plus the [`Folder`] that turns inputs into one atomic batch
//! of state changes, journal entries, outputs (the outbox) and positions.
//!
//! Guarantee: a batch is written with one atomic `apply_batch` and flushed
//! before `commit` returns; only then may its outputs be published. A crash
//! before the flush loses the whole batch (its inputs are re-read from their
//! positions); a crash after it loses nothing. A batch holds its inputs'
//! journal entries, outputs and positions; the state records changed go
//! with every [`STATE_EVERY_COMMITS`]th batch and with
//! [`Folder::prepare_all`]'s, and [`load_state`] folds the journal after
//! them again, so the state read back is always the journal's.

pub mod chunk;
pub mod codec;
pub mod fault;
pub mod folder;
pub mod keys;
mod mem;
pub mod pipeline;
mod sled_store;

pub use folder::{dead_letter, Folder, Outputs, Prepared};
pub use mem::MemStore;
pub use pipeline::Committer;
pub use sled_store::SledStore;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Io(String),
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// A store in a layout this engine does not read.
    #[error("{0}")]
    Format(String),
}

/// One atomic write: puts (Some) and deletes (None), in order.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.ops.push((k, Some(v)));
    }
    pub fn delete(&mut self, k: Vec<u8>) {
        self.ops.push((k, None));
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.ops.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum()
    }
}

/// One stored record: key and value.
pub type Entry = (Vec<u8>, Vec<u8>);
/// Records in key order, as a store yields them.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

/// A stored value as a scan hands it over: shared with the store where the
/// store keeps its values reference-counted (sled), so a long value (a
/// chunk of a thousand records) is not copied to be read.
#[derive(Clone, Debug)]
pub enum Value {
    Owned(Vec<u8>),
    Shared(sled::IVec),
}

impl std::ops::Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Value::Owned(v) => v,
            Value::Shared(v) => v,
        }
    }
}

/// Records in key order, their values shared where the store can.
pub type SharedRecords<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Value), StoreError>> + 'a>;

/// An ordered key-value store with atomic, durable batches. `Send`, so that
/// a folder over it can fold on another thread (the Kafka engine folds its
/// shards in parallel).
pub trait Store: Send {
    /// Applies every op atomically and makes it durable before returning.
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every record whose key starts with `prefix`, in key order, from `start` (inclusive) if given.
    fn scan(&self, prefix: &[u8], start: Option<&[u8]>) -> Records<'_>;
    /// The record with the greatest key starting with `prefix`.
    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError>;
    /// [`Store::scan`] with the values shared rather than copied where the store can.
    fn scan_shared(&self, prefix: &[u8], start: Option<&[u8]>) -> SharedRecords<'_> {
        Box::new(self.scan(prefix, start).map(|r| r.map(|(k, v)| (k, Value::Owned(v)))))
    }
}

/// Loads state from a store: the state records as of the last commit that
/// wrote them, then the journal's inputs after it folded again
/// ([`Folder`] writes state records every [`STATE_EVERY_COMMITS`] commits;
/// the journal, outputs and positions at every commit).
pub fn load_state(store: &dyn Store) -> Result<overlay_core::State, StoreError> {
    Ok(load_state_and_tail(store)?.0)
}

/// [`load_state`], and the records the journal's inputs after the stored
/// state changed (to be written with the next state records).
pub(crate) fn load_state_and_tail(
    store: &dyn Store,
) -> Result<(overlay_core::State, std::collections::BTreeSet<overlay_core::fold::Touched>), StoreError> {
    let records: Vec<(Vec<u8>, Vec<u8>)> = store.scan(keys::STATE, None).collect::<Result<_, _>>()?;
    let mut state = codec::decode_state(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
    let mut touched = std::collections::BTreeSet::new();
    let mut journal = Cursor::new(store, keys::JOURNAL, state.meta.applied);
    while let Some(r) = journal.next_record() {
        let (seq, record) = r?;
        let (_, raw) = codec::decode_journal(record)?;
        let decoded = overlay_proto::decode_envelope(raw);
        let input = match &decoded {
            Ok(env) => overlay_core::fold::Input::Event(env),
            Err(e) => overlay_core::fold::Input::Undecodable(e),
        };
        let applied = overlay_core::fold::step(&mut state, input);
        if state.meta.applied != seq {
            return Err(StoreError::Corrupt(format!(
                "journal record {seq} folded as state version {}",
                state.meta.applied
            )));
        }
        touched.extend(applied.touched);
    }
    Ok((state, touched))
}

/// How often a [`Folder`] writes the state records it changed: with its
/// first commit and every this many commits after. The commits between
/// write their inputs to the journal, their outputs and input positions,
/// as every commit does; [`load_state`] folds the journal's inputs after
/// the stored state again. A record changed over and over (a household's
/// account, its open orders created and filled) is written once per
/// interval, and records that come and go within it not at all; a restart
/// folds at most this many commits' inputs again.
pub const STATE_EVERY_COMMITS: u64 = 8;

/// The store's counters and settings, without loading the rest of state.
pub fn load_meta(store: &dyn Store) -> Result<overlay_core::state::Meta, StoreError> {
    match store.get(keys::META.as_bytes())? {
        Some(v) => codec::decode_meta(&v),
        None => Ok(overlay_core::state::Meta::default()),
    }
}

/// SHA-256 over every logical state record (key and value,
/// length-prefixed) in key order ([`state_records`]) of the state
/// [`load_state`] gives: two stores with the same state have the same hash,
/// wherever their commits and state writes fell.
pub fn state_hash(store: &dyn Store) -> Result<String, StoreError> {
    if !state_stored_whole(store)? {
        let state = load_state(store)?;
        return Ok(hash_records(encode_records(&state, &overlay_core::fold::every_record(&state))));
    }
    let mut h = StateHasher::default();
    for r in state_records(store) {
        let (k, v) = r?;
        h.record(&k, &v);
    }
    Ok(h.finish())
}

/// Whether the stored state records are the whole state: written with the
/// journal's last input, so that [`load_state`] folds nothing after them.
pub fn state_stored_whole(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(load_meta(store)?.applied == last_seq(store, keys::JOURNAL)?)
}

/// `records` of `state` as logical records ([`codec::encode_touched`]),
/// the deleted ones left out.
pub fn encode_records(state: &overlay_core::State, records: &[overlay_core::fold::Touched]) -> Vec<Entry> {
    records
        .iter()
        .filter_map(|t| {
            let (k, v) = codec::encode_touched(state, t);
            v.map(|v| (k, v))
        })
        .collect()
}

/// The [`state_hash`] of a store holding exactly `records` (in any order).
pub fn hash_records(mut records: Vec<Entry>) -> String {
    records.sort_unstable_by(|x, y| x.0.cmp(&y.0));
    // (A store keeps one record per key.)
    records.dedup_by(|x, y| x.0 == y.0);
    let mut h = StateHasher::default();
    for (k, v) in &records {
        h.record(k, v);
    }
    h.finish()
}

/// The store's stored state records as logical records, in key order
/// (the state as of the last commit that wrote them: see [`load_state`]): what
/// [`codec::encode_touched`] gives for every record of the state. They are
/// the stored `s:` records, except the idempotency set: stored as one
/// record per commit ([`keys::SEEN_COMMIT`]), it is handed out as one
/// `s:seen:` record per id, in its place in the key order. (Every logical
/// idempotency key sorts before every stored commit record, and no other
/// kind of state key sorts among them.)
pub fn state_records(store: &dyn Store) -> Records<'_> {
    let mut scan = store.scan(keys::STATE, None);
    // Idempotency records read, not yet handed out.
    let mut seen: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::collections::BTreeMap::new();
    // A record read past them, handed out after them.
    let mut held: Option<Entry> = None;
    let mut scanned = false;
    Box::new(std::iter::from_fn(move || loop {
        if held.is_some() || scanned {
            if let Some(r) = seen.pop_first() {
                return Some(Ok(r));
            }
            return held.take().map(Ok);
        }
        match scan.next() {
            None => scanned = true,
            Some(Err(e)) => {
                scanned = true;
                seen.clear();
                return Some(Err(e));
            }
            Some(Ok((k, v))) if k.starts_with(keys::SEEN_COMMIT.as_bytes()) => match codec::decode_seen(&k, &v) {
                Ok(ids) => {
                    for (id, at) in ids {
                        seen.insert(keys::text_key(keys::SEEN, &[&id]), at.to_be_bytes().to_vec());
                    }
                }
                Err(e) => {
                    scanned = true;
                    seen.clear();
                    return Some(Err(e));
                }
            },
            Some(Ok((k, v))) if k.starts_with(keys::SEEN.as_bytes()) => {
                seen.insert(k, v);
            }
            Some(Ok(r)) if seen.is_empty() => return Some(Ok(r)),
            Some(Ok(r)) => held = Some(r),
        }
    }))
}

/// [`state_hash`] taken record by record: fed the state records in key
/// order, it gives the hash of a store that holds exactly those.
#[derive(Default)]
pub struct StateHasher(Sha256);

impl StateHasher {
    pub fn record(&mut self, key: &[u8], value: &[u8]) {
        self.0.update((key.len() as u64).to_be_bytes());
        self.0.update(key);
        self.0.update((value.len() as u64).to_be_bytes());
        self.0.update(value);
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The next offset to read from an input source, if any was recorded.
pub fn position(store: &dyn Store, source: &str) -> Result<Option<u64>, StoreError> {
    store.get(&keys::position_key(source))?.map(|v| be_u64(&v)).transpose()
}

/// The last output seq published to `output`, or 0.
pub fn cursor(store: &dyn Store, output: &str) -> Result<u64, StoreError> {
    Ok(store.get(&keys::cursor_key(output))?.map(|v| be_u64(&v)).transpose()?.unwrap_or(0))
}

pub fn set_cursor(store: &dyn Store, output: &str, seq: u64) -> Result<(), StoreError> {
    set_cursors(store, &[(output, seq)])
}

/// Sets several outputs' publish cursors in one durable write.
pub fn set_cursors(store: &dyn Store, cursors: &[(&str, u64)]) -> Result<(), StoreError> {
    if cursors.is_empty() {
        return Ok(());
    }
    let mut b = WriteBatch::default();
    for (output, seq) in cursors {
        put_cursor(&mut b, output, *seq);
    }
    store.commit(b)
}

/// Adds the setting of `output`'s publish cursor to a batch.
pub fn put_cursor(batch: &mut WriteBatch, output: &str, seq: u64) {
    batch.put(keys::cursor_key(output), seq.to_be_bytes().to_vec());
}

pub fn be_u64(v: &[u8]) -> Result<u64, StoreError> {
    let a: [u8; 8] = v.try_into().map_err(|_| StoreError::Corrupt(format!("expected 8 bytes, got {}", v.len())))?;
    Ok(u64::from_be_bytes(a))
}

/// The store format this engine writes: the streams and the idempotency set
/// as one record per commit ([`chunk`], [`keys::SEEN_COMMIT`]). It also reads
/// format 2 ([`PREVIOUS_FORMAT`]); format 1 (no `x:format` record) stored one
/// key per stream record.
pub const STORE_FORMAT: u64 = 3;

/// The format before [`STORE_FORMAT`]: the same but for one idempotency
/// record per event id. Read as it is; the next commit marks the store
/// [`STORE_FORMAT`] (from then on it holds records of both kinds, which
/// this engine reads).
pub const PREVIOUS_FORMAT: u64 = 2;

/// A store's format, as [`check_format`] found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Nothing recorded yet: the first commit writes [`STORE_FORMAT`].
    New,
    /// [`STORE_FORMAT`], recorded.
    Current,
    /// [`PREVIOUS_FORMAT`], recorded: readable; the next commit records [`STORE_FORMAT`].
    Previous,
}

/// Checks that `store` is one this engine can read: new (no state, no
/// stream records), of [`STORE_FORMAT`] or of [`PREVIOUS_FORMAT`]. A store of another format is
/// refused with [`StoreError::Format`], saying what it is and what to do.
pub fn check_format(store: &dyn Store) -> Result<Format, StoreError> {
    if let Some(v) = store.get(keys::FORMAT)? {
        let found = be_u64(&v).map_err(|_| StoreError::Corrupt(format!("x:format is {} bytes, not 8", v.len())))?;
        match found {
            STORE_FORMAT => return Ok(Format::Current),
            PREVIOUS_FORMAT => return Ok(Format::Previous),
            _ => {}
        }
        return Err(StoreError::Format(format!(
            "this store is in format {found} and this engine reads formats {PREVIOUS_FORMAT} and {STORE_FORMAT} only \
             (a store written by another version of the engine): run that version on it, \
             or delete the store directory and let this one fold the input log again."
        )));
    }
    for prefix in [keys::STATE, keys::JOURNAL, keys::ORDERS, keys::AUDIT, keys::DEAD_LETTERS] {
        if store.scan(prefix, None).next().transpose()?.is_some() {
            return Err(StoreError::Format(format!(
                "this store is in format 1, written by an earlier version of the engine \
                 (one key per journal entry and output record, no format number); \
                 this engine reads formats {PREVIOUS_FORMAT} and {STORE_FORMAT} only (one record per commit and stream). \
                 Delete the store directory (`state` in the data directory) and run the engine again: \
                 it folds the input log into a new store."
            )));
        }
    }
    Ok(Format::New)
}

/// The highest seq recorded in one stream (0 if none): the last chunk's key.
pub fn last_seq(store: &dyn Store, prefix: &'static [u8]) -> Result<u64, StoreError> {
    Ok(store.last(prefix)?.and_then(|(k, _)| keys::seq_of(&k)).unwrap_or(0))
}

/// The record of `seq` in one stream, if recorded.
pub fn record_at(store: &dyn Store, prefix: &'static [u8], seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
    match store.scan(prefix, Some(&keys::seq_key(prefix, seq))).next().transpose()? {
        None => Ok(None),
        Some((k, v)) => Ok(chunk::Chunk::parse(prefix, &k, &v)?.record(seq).map(<[u8]>::to_vec)),
    }
}

/// Records of one stream (`keys::ORDERS`, `AUDIT`, `DEAD_LETTERS`,
/// `JOURNAL`) with seq greater than `after`, in order, each copied out (see
/// [`Cursor`] to read them in place). The seqs must follow one another from
/// `after + 1` on: a gap or an overlap between chunks is corrupt.
pub fn records_after<'a>(
    store: &'a dyn Store,
    prefix: &'static [u8],
    after: u64,
) -> impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>> + 'a {
    let mut cursor = Cursor::new(store, prefix, after);
    std::iter::from_fn(move || cursor.next_record().map(|r| r.map(|(seq, record)| (seq, record.to_vec()))))
}

/// Reads the records of one stream with seq greater than `after` in
/// place: each chunk is read once (shared with the store where it can be)
/// and its records lent out one by one, each record's place in the layout
/// checked as it is reached (a chunk is megabytes: walked through twice, it
/// would come from memory twice). The seqs must follow one another from
/// `after + 1` on: a gap or an overlap between chunks, a record that runs
/// past its chunk or bytes after a chunk's last record is corrupt, reported
/// where the read reaches it; after an error (or the end) it yields nothing more.
pub struct Cursor<'a> {
    prefix: &'static [u8],
    chunks: SharedRecords<'a>,
    chunk: Value,
    /// The current chunk's header (None before the first, and after an error).
    header: Option<chunk::Header>,
    /// Where the next record of the chunk starts, and its seq.
    at: usize,
    seq: u64,
    /// The seq the next record must have; None once the stream ended or failed.
    next: Option<u64>,
    first_chunk: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(store: &'a dyn Store, prefix: &'static [u8], after: u64) -> Self {
        let from = after.checked_add(1);
        let chunks = match from {
            Some(from) => store.scan_shared(prefix, Some(&keys::seq_key(prefix, from))),
            None => Box::new(std::iter::empty()),
        };
        Self {
            prefix,
            chunks,
            chunk: Value::Owned(Vec::new()),
            header: None,
            at: 0,
            seq: 1,
            next: from,
            first_chunk: true,
        }
    }

    /// The next record and its seq; None at the end of the stream.
    pub fn next_record(&mut self) -> Option<Result<(u64, &[u8]), StoreError>> {
        let header = loop {
            match self.header {
                Some(h) if self.seq <= h.last => break h,
                _ => {
                    if let Err(e) = self.next_chunk()? {
                        (self.next, self.header) = (None, None);
                        return Some(Err(e));
                    }
                }
            }
        };
        let (record, next) = match header.record(&self.chunk, self.seq, self.at) {
            Ok(span) => span,
            Err(e) => {
                (self.next, self.header) = (None, None);
                return Some(Err(e));
            }
        };
        self.at = next;
        let seq = self.seq;
        self.seq += 1;
        Some(Ok((seq, &self.chunk[record])))
    }

    /// Reads the next chunk, placed at its first record not yet read; None at the end.
    fn next_chunk(&mut self) -> Option<Result<(), StoreError>> {
        let expected = self.next?;
        let (k, v) = match self.chunks.next()? {
            Ok(kv) => kv,
            Err(e) => return Some(Err(e)),
        };
        let c = match chunk::Header::read(self.prefix, &k, &v) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        // The first chunk holds `expected` (it may start before it); each later one starts where the last ended.
        let fits = if self.first_chunk { c.first <= expected } else { c.first == expected };
        if !fits {
            let what = if c.first > expected { "missing" } else { "recorded twice" };
            return Some(Err(StoreError::Corrupt(format!(
                "{}: the chunk of seqs {}..={} follows seq {}: seqs are {what}",
                chunk::stream_name(self.prefix),
                c.first,
                c.last,
                expected - 1
            ))));
        }
        self.first_chunk = false;
        self.chunk = v;
        self.header = Some(c);
        (self.at, self.seq) = (chunk::Header::RECORDS_AT, c.first);
        self.next = c.last.checked_add(1);
        // Skip the records before `expected` (in the first chunk only).
        while self.seq < expected && self.seq <= c.last {
            match c.record(&self.chunk, self.seq, self.at) {
                Ok((_, next)) => self.at = next,
                Err(e) => return Some(Err(e)),
            }
            self.seq += 1;
        }
        Some(Ok(()))
    }
}

#[cfg(test)]
mod tests;
