//! Checkpoints of the replayed state, for `state --at`: every
//! [`CHECKPOINT_EVERY`] journal inputs, the state records that changed since
//! the previous checkpoint (a delta, encoded as the engine stores them), kept
//! in a store of the replay's own (a named tree next to the engine's, never
//! the engine's tree). A lookup loads the nearest checkpoint at or before its
//! point (the deltas up to it, merged, decoded as the engine decodes its
//! store on restart) and folds only the inputs after it.
//!
//! The checkpoints are derived data: built lazily by the first lookup that
//! finds them missing or short (a full fold of the journal, as `verify`
//! does), extended when the journal grows, and thrown away and rebuilt when
//! they no longer match it (other settings, or a journal record at a
//! checkpoint's seq that differs from the one it was built after). They
//! change nothing in the engine's own state or outputs. `verify` stays the
//! complete check of the journal against the outputs.

use crate::journal::{AsOf, Fold, Journal, Point, Scope, PROGRESS_EVERY};
use crate::ReplayError;
use chrono::{DateTime, Utc};
use overlay_core::fold::Touched;
use overlay_store::{codec, keys, Store, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The name of the store (a sled tree next to the engine's) that keeps them.
pub const TREE: &str = "replay/checkpoints";

/// Journal inputs between checkpoints: a lookup folds at most this many.
pub const CHECKPOINT_EVERY: u64 = 10_000;

const SETTINGS: &[u8] = b"settings";
const HEADER: &[u8] = b"h/";
const DELTA: &[u8] = b"d/";

/// One checkpoint: where it is, and what it was built after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub as_of: AsOf,
    /// The latest event time of the inputs up to it (None: none had one).
    pub latest_time: Option<DateTime<Utc>>,
    /// The journal record at `as_of.seq`, as it was when the checkpoint was built.
    pub journal_record: Vec<u8>,
}

impl Checkpoint {
    /// Whether a fold to `at` passes through this checkpoint.
    pub fn before(&self, at: Point) -> bool {
        match at {
            Point::Seq(n) => self.as_of.seq <= n,
            Point::Time(t) => self.latest_time.is_none_or(|lt| lt <= t),
        }
    }
}

fn header_key(seq: u64) -> Vec<u8> {
    [HEADER, &seq.to_be_bytes()].concat()
}

fn delta_key(seq: u64, state_key: &[u8]) -> Vec<u8> {
    [DELTA, &seq.to_be_bytes(), state_key].concat()
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("checkpoint records serialize")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Invalid(format!("replay checkpoint store: {what}: {e}"))
}

/// The checkpoints that match the journal, building the missing ones (every
/// `every` inputs up to the journal's end) first.
pub fn ensure(
    journal: &Journal<'_>,
    store: &dyn Store,
    every: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<Checkpoint>, ReplayError> {
    assert!(every > 0, "checkpoints every 0 inputs");
    let mut have = valid(journal, store, every)?;
    let last = have.last().map_or(0, |c| c.as_of.seq);
    if last + every > journal.len {
        return Ok(have);
    }
    let mut fold = match have.last() {
        Some(c) => resume(store, c, Scope::All)?,
        None => Fold::new(journal.settings.clone(), Scope::All),
    };
    let mut latest_time = have.last().and_then(|c| c.latest_time);
    let mut touched: BTreeSet<Touched> = BTreeSet::new();
    let total = journal.len;
    let target = journal.len / every * every;
    for e in journal.entries(fold.as_of.seq) {
        let e = e?;
        let applied = fold.step(&e)?.expect("a full fold folds every entry");
        touched.extend(applied.touched);
        if let Some(t) = e.time() {
            latest_time = Some(latest_time.map_or(t, |lt| lt.max(t)));
        }
        if e.seq.is_multiple_of(PROGRESS_EVERY) {
            progress(e.seq, total);
        }
        if e.seq.is_multiple_of(every) {
            let c =
                Checkpoint { as_of: fold.as_of.clone(), latest_time, journal_record: journal_record(journal, e.seq)? };
            let mut batch = WriteBatch::default();
            for t in std::mem::take(&mut touched) {
                let (k, v) = codec::encode_touched(&fold.state, &t);
                // A tag byte: 1 the record's value, 0 deleted.
                let v = match v {
                    Some(v) => [&[1u8][..], &v].concat(),
                    None => vec![0u8],
                };
                batch.put(delta_key(e.seq, &k), v);
            }
            batch.put(header_key(e.seq), json(&c));
            store.commit(batch)?;
            have.push(c);
        }
        if e.seq == target {
            break;
        }
    }
    progress(total, total);
    Ok(have)
}

fn journal_record(journal: &Journal<'_>, seq: u64) -> Result<Vec<u8>, ReplayError> {
    journal.record(seq)?.ok_or_else(|| ReplayError::BadJournal { seq, message: "missing".into() })
}

/// The stored checkpoints, if they match the journal; otherwise the store
/// is emptied (they are rebuilt).
fn valid(journal: &Journal<'_>, store: &dyn Store, every: u64) -> Result<Vec<Checkpoint>, ReplayError> {
    let settings = json(&(every, &journal.settings));
    let mut have = Vec::new();
    let mut ok = store.get(SETTINGS)?.is_some_and(|s| s == settings);
    if ok {
        for r in store.scan(HEADER, None) {
            let (_, v) = r?;
            let c: Checkpoint = serde_json::from_slice(&v).map_err(|e| corrupt("header", e))?;
            if c.as_of.seq > journal.len || journal.record(c.as_of.seq)?.as_deref() != Some(&c.journal_record[..]) {
                ok = false;
                break;
            }
            have.push(c);
        }
    }
    if !ok {
        let mut batch = WriteBatch::default();
        for r in store.scan(b"", None) {
            batch.delete(r?.0);
        }
        batch.put(SETTINGS.to_vec(), settings);
        store.commit(batch)?;
        have.clear();
    }
    Ok(have)
}

/// A fold resumed at checkpoint `c`: the state as the deltas up to it leave it.
pub fn resume(store: &dyn Store, c: &Checkpoint, scope: Scope) -> Result<Fold, ReplayError> {
    let mut records: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let end = delta_key(c.as_of.seq + 1, b"");
    for r in store.scan(DELTA, None) {
        let (k, v) = r?;
        if k >= end {
            break;
        }
        let state_key = k[DELTA.len() + 8..].to_vec();
        match v.split_first() {
            Some((1, value)) => {
                records.insert(state_key, value.to_vec());
            }
            Some((0, [])) => {
                records.remove(&state_key);
            }
            _ => return Err(corrupt("delta record", String::from_utf8_lossy(&k))),
        }
    }
    debug_assert!(records.keys().all(|k| k.starts_with(keys::STATE)));
    let state = codec::decode_state(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
    if state.meta.applied != c.as_of.seq {
        return Err(corrupt("state version", format!("{} at checkpoint {}", state.meta.applied, c.as_of.seq)));
    }
    Ok(Fold::resume(state, scope, c.as_of.clone()))
}
