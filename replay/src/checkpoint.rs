//! Checkpoints of the replayed state, for `state --at`: every
//! [`CHECKPOINT_EVERY`] journal inputs, the state records (encoded as the
//! engine stores them), kept in a store of the replay's own (a named tree
//! next to the engine's, never the engine's tree). Every [`BASE_EVERY`]th
//! checkpoint is a base, every record; the ones between hold the records
//! that changed since their base. A lookup loads the nearest checkpoint at or
//! before its point (its base and its changes, decoded as the engine decodes
//! its store on restart: two scans, however long the history) and folds only
//! the inputs after it.
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
use overlay_core::ids::HouseholdId;
use overlay_store::{codec, keys, Store, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The name of the store (a sled tree next to the engine's) that keeps them.
pub const TREE: &str = "replay/checkpoints";

/// Journal inputs between checkpoints: a lookup folds at most this many.
pub const CHECKPOINT_EVERY: u64 = 10_000;
/// Checkpoints per base (a base holds every record; the others, changes).
pub const BASE_EVERY: u64 = 10;

const SETTINGS: &[u8] = b"settings";
const HEADER: &[u8] = b"h/";
const BASE: &[u8] = b"b/";
const DELTA: &[u8] = b"d/";

/// One checkpoint: where it is, and what it was built after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub as_of: AsOf,
    /// The seq of its base (itself for a base; 0: the empty state).
    pub base: u64,
    /// The latest event time of the inputs up to it (None: none had one).
    pub latest_time: Option<DateTime<Utc>>,
    /// The journal record at `as_of.seq`, as it was when the checkpoint was built.
    pub journal_record: Vec<u8>,
    /// The state records at it (what loading it decodes; 0: not noted, by
    /// an older build).
    #[serde(default)]
    pub records: u64,
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

fn key(kind: &[u8], seq: u64, state_key: &[u8]) -> Vec<u8> {
    [kind, &seq.to_be_bytes(), state_key].concat()
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("checkpoint records serialize")
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Invalid(format!("replay checkpoint store: {what}: {e}"))
}

/// State records: key → value (None: deleted since the base).
type Records = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

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
    // Every record now, and the ones changed since the last base.
    let (mut fold, mut current, mut since_base, mut base) = match have.last() {
        Some(c) => {
            let since_base =
                if c.base == c.as_of.seq { Records::new() } else { scan(store, DELTA, c.as_of.seq, None)? };
            let mut current = scan(store, BASE, c.base, None)?;
            current.extend(since_base.clone());
            current.retain(|_, v| v.is_some());
            (decode(&current, c, Scope::All)?, current, since_base, c.base)
        }
        None => (Fold::new(journal.settings.clone(), Scope::All), Records::new(), Records::new(), 0),
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
            for t in std::mem::take(&mut touched) {
                let (k, v) = codec::encode_touched(&fold.state, &t);
                match &v {
                    Some(v) => current.insert(k.clone(), Some(v.clone())),
                    None => current.remove(&k),
                };
                since_base.insert(k, v);
            }
            let mut batch = WriteBatch::default();
            if (e.seq / every).is_multiple_of(BASE_EVERY) {
                base = e.seq;
                since_base.clear();
                for (k, v) in &current {
                    batch.put(key(BASE, e.seq, k), v.clone().expect("current records are present"));
                }
            } else {
                for (k, v) in &since_base {
                    // A tag byte: 1 the record's value, 0 deleted.
                    let v = match v {
                        Some(v) => [&[1u8][..], v].concat(),
                        None => vec![0u8],
                    };
                    batch.put(key(DELTA, e.seq, k), v);
                }
            }
            let c = Checkpoint {
                as_of: fold.as_of.clone(),
                base,
                latest_time,
                journal_record: journal_record(journal, e.seq)?,
                records: current.len() as u64,
            };
            batch.put(key(HEADER, e.seq, b""), json(&c));
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
    if let Some(have) = matching(journal, store, every)? {
        return Ok(have);
    }
    let mut batch = WriteBatch::default();
    for r in store.scan(b"", None) {
        batch.delete(r?.0);
    }
    batch.put(SETTINGS.to_vec(), json(&(every, BASE_EVERY, &journal.settings)));
    store.commit(batch)?;
    Ok(Vec::new())
}

/// The stored checkpoints (built every `every` inputs), or None if they do
/// not match the journal (other settings, or a journal record that differs
/// from the one a checkpoint was built after). Reads only.
fn matching(journal: &Journal<'_>, store: &dyn Store, every: u64) -> Result<Option<Vec<Checkpoint>>, ReplayError> {
    let settings = json(&(every, BASE_EVERY, &journal.settings));
    if store.get(SETTINGS)?.is_none_or(|s| s != settings) {
        return Ok(None);
    }
    let mut have = Vec::new();
    for r in store.scan(HEADER, None) {
        let (_, v) = r?;
        let c: Checkpoint = serde_json::from_slice(&v).map_err(|e| corrupt("header", e))?;
        if c.as_of.seq > journal.len || journal.record(c.as_of.seq)?.as_deref() != Some(&c.journal_record[..]) {
            return Ok(None);
        }
        have.push(c);
    }
    Ok(Some(have))
}

/// The checkpoints already built for `journal`, at whatever interval (none
/// if they do not match it), without building or discarding any.
pub fn stored(journal: &Journal<'_>, store: &dyn Store) -> Result<Vec<Checkpoint>, ReplayError> {
    let Some(settings) = store.get(SETTINGS)? else { return Ok(Vec::new()) };
    let Ok((every, _, _)) = serde_json::from_slice::<(u64, u64, serde::de::IgnoredAny)>(&settings) else {
        return Ok(Vec::new());
    };
    Ok(matching(journal, store, every)?.unwrap_or_default())
}

/// The state-key prefixes a scope reads: every record, or the reference
/// data, counters, chains and idempotency set and that household's records.
fn prefixes(only: Option<&HouseholdId>) -> Vec<Vec<u8>> {
    match only {
        None => vec![keys::STATE.to_vec()],
        Some(h) => {
            let shared = [keys::SECURITY, keys::MODEL, keys::PRICE, keys::ESG, keys::SEEN, keys::CHAIN, keys::META];
            let own = [keys::ACCOUNT, keys::LOTS, keys::PENDING].map(|p| format!("{p}{h}/"));
            let mut v: Vec<Vec<u8>> = shared.iter().map(|p| p.as_bytes().to_vec()).collect();
            v.extend(own.map(String::into_bytes));
            v.push(keys::text_key(keys::HOUSEHOLD, &[h.as_str()]));
            v
        }
    }
}

/// The records of one base (`kind` BASE) or one set of changes (DELTA):
/// all of them, or (`only`) the reference data, counters, chains and
/// idempotency set and that one household's records.
fn scan(store: &dyn Store, kind: &[u8], seq: u64, only: Option<&HouseholdId>) -> Result<Records, ReplayError> {
    Ok(scan_in_order(store, kind, seq, only)?.into_iter().map(|(k, r)| (k, r.value().map(<[u8]>::to_vec))).collect())
}

fn decode(records: &Records, c: &Checkpoint, scope: Scope) -> Result<Fold, ReplayError> {
    debug_assert!(records.keys().all(|k| k.starts_with(keys::STATE)));
    decode_from(records.iter().filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v))), c, scope)
}

/// The fold resumed from the state `records` (key order) hold: checkpoint `c`'s.
fn decode_from<'r>(
    records: impl Iterator<Item = (&'r [u8], &'r [u8])>,
    c: &Checkpoint,
    scope: Scope,
) -> Result<Fold, ReplayError> {
    let state = codec::decode_state(records)?;
    if state.meta.applied != c.as_of.seq {
        return Err(corrupt("state version", format!("{} at checkpoint {}", state.meta.applied, c.as_of.seq)));
    }
    Ok(Fold::resume(state, scope, c.as_of.clone()))
}

/// A fold resumed at checkpoint `c`: the state its base and its changes
/// hold; for a household's scope, without the other households (which a
/// household-scoped fold never holds: it skips their inputs).
pub fn resume(store: &dyn Store, c: &Checkpoint, scope: Scope) -> Result<Fold, ReplayError> {
    let only = match &scope {
        Scope::All => None,
        Scope::Household(h) => Some(h.clone()),
    };
    // The base's records and the changes since, each read in key order (values
    // shared with the store, not copied) and merged: a change replaces the
    // base's record of its key, or deletes it.
    let base = scan_in_order(store, BASE, c.base, only.as_ref())?;
    let changes =
        if c.base == c.as_of.seq { Vec::new() } else { scan_in_order(store, DELTA, c.as_of.seq, only.as_ref())? };
    let mut merged: Vec<(&[u8], &[u8])> = Vec::with_capacity(base.len() + changes.len());
    let (mut b, mut d) = (base.iter().peekable(), changes.iter().peekable());
    loop {
        let next = match (b.peek(), d.peek()) {
            (None, None) => break,
            (Some(_), None) => b.next(),
            (None, Some(_)) => d.next(),
            (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => b.next(),
                std::cmp::Ordering::Greater => d.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    d.next()
                }
            },
        };
        let (k, v) = next.expect("peeked");
        if let Some(v) = v.value() {
            merged.push((k, v));
        }
    }
    decode_from(merged.into_iter(), c, scope)
}

/// A record of a base (always present) or of a set of changes (tagged:
/// present, or deleted), as stored.
struct Stored {
    value: overlay_store::Value,
    changed: bool,
}

impl Stored {
    /// The record's value; None for a deletion.
    fn value(&self) -> Option<&[u8]> {
        if !self.changed {
            return Some(&self.value);
        }
        match self.value.split_first() {
            Some((1, v)) => Some(v),
            _ => None,
        }
    }
}

/// The records of one base or set of changes ([`scan`]), in key order, as
/// stored: (state key, record).
fn scan_in_order(
    store: &dyn Store,
    kind: &[u8],
    seq: u64,
    only: Option<&HouseholdId>,
) -> Result<Vec<(Vec<u8>, Stored)>, ReplayError> {
    let mut records = Vec::new();
    if seq == 0 {
        return Ok(records);
    }
    let household_key = only.map(|h| keys::text_key(keys::HOUSEHOLD, &[h.as_str()]));
    let at = key(kind, seq, b"");
    for p in prefixes(only) {
        let prefix = key(kind, seq, &p);
        for r in store.scan_shared(&prefix, None) {
            let (k, v) = r?;
            let state_key = &k[at.len()..];
            // `s:hh:H` is a prefix of `s:hh:H2`'s key too.
            if state_key.starts_with(keys::HOUSEHOLD.as_bytes())
                && household_key.as_deref().is_some_and(|hk| hk != state_key)
            {
                continue;
            }
            let changed = kind != BASE;
            if changed && !matches!(v.split_first(), Some((1, _)) | Some((0, []))) {
                return Err(corrupt("changed record", String::from_utf8_lossy(&k)));
            }
            records.push((state_key.to_vec(), Stored { value: v, changed }));
        }
    }
    // The prefixes of a household's scope are read one after the other.
    records.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(records)
}

/// The bytes the checkpoints take (keys and values).
pub fn bytes(store: &dyn Store) -> Result<u64, ReplayError> {
    let mut n = 0;
    for r in store.scan(b"", None) {
        let (k, v) = r?;
        n += (k.len() + v.len()) as u64;
    }
    Ok(n)
}
