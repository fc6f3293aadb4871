//! Checkpoints of the replayed state, for `state --at`: every
//! [`CHECKPOINT_EVERY`] journal inputs, the state records (encoded as the
//! engine stores them), kept in a store of the replay's own (a named tree
//! next to the engine's, never the engine's tree), packed: one value holds a
//! household's own records, one each kind of shared record (a store pays per
//! key read; a state holds tens of thousands of records, most of them small). Every [`BASE_EVERY`]th
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
/// How the records are laid out, in the settings record: checkpoints laid
/// out otherwise (one key per record, before packs) are rebuilt.
const LAYOUT: u64 = 2;
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

/// State records lent out of packs: (state key, value).
type Lent<'a> = Vec<(&'a [u8], &'a [u8])>;

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
            let since_base = if c.base == c.as_of.seq { Records::new() } else { scan(store, DELTA, c.as_of.seq)? };
            let mut current = scan(store, BASE, c.base)?;
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
                put_packs(&mut batch, BASE, e.seq, &current);
            } else {
                put_packs(&mut batch, DELTA, e.seq, &since_base);
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
    if let Some(have) = matching(journal, store, every, JournalRecords::Checked)? {
        return Ok(have);
    }
    let mut batch = WriteBatch::default();
    for r in store.scan(b"", None) {
        batch.delete(r?.0);
    }
    batch.put(SETTINGS.to_vec(), settings_record(journal, every));
    store.commit(batch)?;
    Ok(Vec::new())
}

/// What the settings record of checkpoints built every `every` inputs says.
fn settings_record(journal: &Journal<'_>, every: u64) -> Vec<u8> {
    json(&(every, BASE_EVERY, &journal.settings, LAYOUT))
}

/// The stored checkpoints (built every `every` inputs), or None if they do
/// not match the journal (other settings, a checkpoint past its end, or,
/// with `records`, a journal record that differs from the one a checkpoint
/// was built after). Reads only.
fn matching(
    journal: &Journal<'_>,
    store: &dyn Store,
    every: u64,
    records: JournalRecords,
) -> Result<Option<Vec<Checkpoint>>, ReplayError> {
    let settings = settings_record(journal, every);
    if store.get(SETTINGS)?.is_none_or(|s| s != settings) {
        return Ok(None);
    }
    let mut have = Vec::new();
    for r in store.scan(HEADER, None) {
        let (_, v) = r?;
        let c: Checkpoint = serde_json::from_slice(&v).map_err(|e| corrupt("header", e))?;
        if c.as_of.seq > journal.len {
            return Ok(None);
        }
        if records == JournalRecords::Checked && journal.record(c.as_of.seq)?.as_deref() != Some(&c.journal_record[..])
        {
            return Ok(None);
        }
        have.push(c);
    }
    Ok(Some(have))
}

/// Whether [`matching`] reads the journal record at each checkpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JournalRecords {
    Checked,
    Unchecked,
}

/// The checkpoints already built for `journal`, at whatever interval (none
/// if their settings do not match it), without building or discarding any.
/// For `verify` in segments, which trusts none of them (each segment's start
/// must equal the state the segment before it ended with, and every output
/// is compared), so the journal record a checkpoint was built after is not
/// read back for each (a hundred chunk reads for a million inputs).
pub fn stored(journal: &Journal<'_>, store: &dyn Store) -> Result<Vec<Checkpoint>, ReplayError> {
    let Some(settings) = store.get(SETTINGS)? else { return Ok(Vec::new()) };
    let Ok((every, _, _, LAYOUT)) = serde_json::from_slice::<(u64, u64, serde::de::IgnoredAny, u64)>(&settings) else {
        return Ok(Vec::new());
    };
    Ok(matching(journal, store, every, JournalRecords::Unchecked)?.unwrap_or_default())
}

/// The state-key prefixes of the records every scope reads: the reference
/// data, counters, chains and idempotency set.
const SHARED: [&str; 7] = [keys::SECURITY, keys::MODEL, keys::PRICE, keys::ESG, keys::SEEN, keys::CHAIN, keys::META];
/// The state-key prefixes of a household's own records, each followed by the household's id.
const OWN: [&str; 4] = [keys::HOUSEHOLD, keys::ACCOUNT, keys::LOTS, keys::PENDING];

/// The pack a state record is kept in: `h:` and its household's id for a
/// household's own records, `k:` and the kind's prefix for shared ones
/// (and for any other key, its own key).
fn pack_of(state_key: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(state_key).unwrap_or("");
    for p in OWN {
        if let Some(rest) = text.strip_prefix(p) {
            let household = rest.split('/').next().unwrap_or(rest);
            return [b"h:", household.as_bytes()].concat();
        }
    }
    let kind = SHARED.iter().find(|p| text.starts_with(**p)).map_or(state_key, |p| p.as_bytes());
    [b"k:", kind].concat()
}

/// The packs a scope reads: every one, or the shared kinds' and that household's.
fn packs_of(only: Option<&HouseholdId>) -> Option<Vec<Vec<u8>>> {
    let h = only?;
    let mut v: Vec<Vec<u8>> = SHARED.iter().map(|p| [b"k:", p.as_bytes()].concat()).collect();
    v.push([b"h:", h.as_str().as_bytes()].concat());
    v.sort();
    Some(v)
}

/// Puts `records` (state key → value, None: deleted) into `batch` as the
/// packs of checkpoint `seq` of `kind`. A pack's value is its records in key
/// order, each as its key and its value, both length-prefixed (u32 BE); in a
/// set of changes a value starts with a tag byte, 1 present or 0 deleted.
fn put_packs(batch: &mut WriteBatch, kind: &[u8], seq: u64, records: &Records) {
    let mut packs: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (k, v) in records {
        let pack = packs.entry(pack_of(k)).or_default();
        let tagged;
        let value: &[u8] = match (kind == BASE, v) {
            (true, Some(v)) => v,
            (true, None) => unreachable!("a base holds present records only"),
            (false, Some(v)) => {
                tagged = [&[1u8][..], v].concat();
                &tagged
            }
            (false, None) => &[0u8],
        };
        push_record(pack, k, value);
    }
    for (pack, value) in packs {
        batch.put(key(kind, seq, &pack), value);
    }
}

/// Appends a record to a pack: its key and its value, each length-prefixed.
fn push_record(pack: &mut Vec<u8>, state_key: &[u8], value: &[u8]) {
    for part in [state_key, value] {
        pack.extend_from_slice(&(part.len() as u32).to_be_bytes());
        pack.extend_from_slice(part);
    }
}

/// The records of one pack, in key order: (state key, stored value).
fn unpack(pack: &[u8]) -> Result<Lent<'_>, ReplayError> {
    fn part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let p = tail.get(..len)?;
        *rest = &tail[len..];
        Some(p)
    }
    let mut records = Vec::new();
    let mut rest = pack;
    while !rest.is_empty() {
        match (part(&mut rest), part(&mut rest)) {
            (Some(k), Some(v)) => records.push((k, v)),
            _ => return Err(corrupt("pack", "a record runs past the end of its pack")),
        }
    }
    Ok(records)
}

/// The packs of one base (`kind` BASE) or one set of changes (DELTA), in
/// pack order: all of them, or (`only`) the shared kinds' and that one
/// household's. Values are shared with the store, not copied.
fn read_packs(
    store: &dyn Store,
    kind: &[u8],
    seq: u64,
    only: Option<&HouseholdId>,
) -> Result<Vec<(Vec<u8>, overlay_store::Value)>, ReplayError> {
    let mut packs = Vec::new();
    if seq == 0 {
        return Ok(packs);
    }
    let at = key(kind, seq, b"");
    match packs_of(only) {
        None => {
            for r in store.scan_shared(&at, None) {
                let (k, v) = r?;
                packs.push((k[at.len()..].to_vec(), v));
            }
        }
        Some(wanted) => {
            for pack in wanted {
                if let Some(v) = store.get(&key(kind, seq, &pack))? {
                    packs.push((pack, overlay_store::Value::Owned(v)));
                }
            }
        }
    }
    Ok(packs)
}

/// A stored value of a set of changes: the record, or None if deleted.
fn changed<'a>(state_key: &[u8], v: &'a [u8]) -> Result<Option<&'a [u8]>, ReplayError> {
    match v.split_first() {
        Some((1, v)) => Ok(Some(v)),
        Some((0, [])) => Ok(None),
        _ => Err(corrupt("changed record", String::from_utf8_lossy(state_key))),
    }
}

/// The records at checkpoint `c` for a scope: its base's packs with its
/// changes merged in (a change replaces the base's record of its key, or
/// deletes it), pack by pack, each in key order.
fn merged<'p>(
    base: &'p [(Vec<u8>, overlay_store::Value)],
    changes: &'p [(Vec<u8>, overlay_store::Value)],
) -> Result<Lent<'p>, ReplayError> {
    let mut out = Vec::new();
    for (base_pack, changes_pack) in by_key(base, changes, |p| &p.0[..], |p| &p.0[..]) {
        let kept = match base_pack {
            Some((_, v)) => unpack(v)?,
            None => Vec::new(),
        };
        let mut changed_records = Vec::new();
        if let Some((_, v)) = changes_pack {
            for (k, v) in unpack(v)? {
                changed_records.push((k, changed(k, v)?));
            }
        }
        for (record, change) in by_key(kept, changed_records, |r| r.0, |r| r.0) {
            let (key, value) = match (record, change) {
                (_, Some((k, change))) => (k, change),
                (Some((k, v)), None) => (k, Some(v)),
                (None, None) => unreachable!("each key comes from one list at least"),
            };
            if let Some(v) = value {
                out.push((key, v));
            }
        }
    }
    Ok(out)
}

/// Two lists, each in key order, walked together: each key once, with its
/// item from the first, the second or both.
fn by_key<'k, A: Copy, B: Copy>(
    a: impl IntoIterator<Item = A>,
    b: impl IntoIterator<Item = B>,
    key_a: impl Fn(A) -> &'k [u8],
    key_b: impl Fn(B) -> &'k [u8],
) -> impl Iterator<Item = (Option<A>, Option<B>)> {
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    std::iter::from_fn(move || {
        Some(match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return None,
            (Some(_), None) => (a.next(), None),
            (None, Some(_)) => (None, b.next()),
            (Some(x), Some(y)) => match key_a(x).cmp(key_b(y)) {
                std::cmp::Ordering::Less => (a.next(), None),
                std::cmp::Ordering::Greater => (None, b.next()),
                std::cmp::Ordering::Equal => (a.next(), b.next()),
            },
        })
    })
}

/// Rewrites every stored record (its state key, and its value as stored:
/// tagged in a set of changes) with `edit`, for tests that tamper with them.
#[cfg(test)]
pub(crate) fn edit_records(store: &dyn Store, mut edit: impl FnMut(&[u8], &mut Vec<u8>)) {
    let mut batch = WriteBatch::default();
    for r in store.scan(b"", None) {
        let (k, v) = r.unwrap();
        if !(k.starts_with(BASE) || k.starts_with(DELTA)) {
            continue;
        }
        let mut pack = Vec::new();
        for (state_key, value) in unpack(&v).unwrap() {
            let mut value = value.to_vec();
            edit(state_key, &mut value);
            push_record(&mut pack, state_key, &value);
        }
        batch.put(k, pack);
    }
    store.commit(batch).unwrap();
}

/// The records of one base (`kind` BASE) or one set of changes (DELTA), every one.
fn scan(store: &dyn Store, kind: &[u8], seq: u64) -> Result<Records, ReplayError> {
    let mut records = Records::new();
    for (_, v) in read_packs(store, kind, seq, None)? {
        for (k, v) in unpack(&v)? {
            let v = if kind == BASE { Some(v) } else { changed(k, v)? };
            records.insert(k.to_vec(), v.map(<[u8]>::to_vec));
        }
    }
    Ok(records)
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
    let base = read_packs(store, BASE, c.base, only.as_ref())?;
    let changes =
        if c.base == c.as_of.seq { Vec::new() } else { read_packs(store, DELTA, c.as_of.seq, only.as_ref())? };
    decode_from(merged(&base, &changes)?.into_iter(), c, scope)
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
