//! `verify`: re-fold the inputs in a fresh in-memory state, with the
//! settings recorded at the start, and compare every output byte with what
//! the engine recorded (or published), input by input; at the journal's end,
//! compare the state hash too.
//!
//! A range (`from`, `to`: journal seqs or event times) limits which inputs'
//! outputs are compared. Every input before it is still folded (decisions
//! depend on all of history), but its outputs are not read back.

use crate::journal::{check_point, fold_entries, Entry, Fold, Journal, Point, Scope};
use crate::prefetch::{self, Entries, Reader};
use crate::{show, ReplayError};
use overlay_core::fold::{every_record, Applied, Touched};
use overlay_core::state::EngineSettings;
use overlay_core::State;
use overlay_store::{
    codec, dead_letter, encode_records, hash_records, keys, load_state, records_after, state_hash, state_stored_whole,
    Cursor, MemStore, Store, WriteBatch,
};
use std::collections::BTreeMap;
use std::thread;

/// Which inputs' outputs to compare: from `from` (inclusive) through `to`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyRange {
    pub from: Option<Point>,
    pub to: Option<Point>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Inputs folded (all of them up to the range's end).
    pub inputs: u64,
    /// The inputs whose outputs were compared: first and last journal seq (0 if none).
    pub checked_first: u64,
    pub checked_last: u64,
    pub orders: u64,
    pub audit: u64,
    pub dead_letters: u64,
    /// Compared when the range reaches the end of the journal.
    pub state_hash: Option<String>,
    /// Published records that repeat the one before them exactly (a publish
    /// retried after a hand-off; Kafka only).
    pub repeats: u64,
}

/// One recorded output stream, in order: (where, bytes).
pub type Recorded<'a> = Box<dyn Iterator<Item = Result<(String, Vec<u8>), ReplayError>> + 'a>;

/// The recorded streams the replay is compared with.
pub struct RecordedOutputs<'a> {
    pub orders: Recorded<'a>,
    pub audit: Recorded<'a>,
    pub dead_letters: Recorded<'a>,
    /// Skip the replayed dead letters of reference inputs (a Kafka shard
    /// other than 0 does not publish them: shard 0 does).
    pub skip_reference_dead_letters: bool,
    /// Tolerate a record that repeats the one before it exactly.
    pub tolerate_repeats: bool,
}

/// Where a recorded output is, formatted only for a report.
enum Where {
    Text(String),
    Seq(&'static str, u64),
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Where::Text(t) => f.write_str(t),
            Where::Seq(name, seq) => write!(f, "recorded {name} seq {seq}"),
        }
    }
}

type Records<'a> = Box<dyn Iterator<Item = Result<(Where, Vec<u8>), ReplayError>> + 'a>;

/// Where a stream's recorded outputs come from.
enum Source<'a> {
    /// Handed over one by one, owned (from Kafka, or read on another thread).
    Owned(Records<'a>),
    /// A store's stream, read in place (`name`: a record's kind, for reports).
    InPlace(Cursor<'a>, &'static str),
}

pub(crate) struct Stream<'a> {
    name: &'static str,
    records: Source<'a>,
    /// The last record matched, kept when repeats are tolerated.
    last: Option<Vec<u8>>,
    pub(crate) count: u64,
}

impl Stream<'_> {
    fn check(&mut self, seq: u64, replayed: &[u8], e: &Entry, repeats: Option<&mut u64>) -> Result<(), ReplayError> {
        let records = match &mut self.records {
            Source::Owned(records) => records,
            // A store records each output once: no repeats to tolerate.
            Source::InPlace(cursor, name) => {
                return match cursor.next_record().transpose()? {
                    Some((_, bytes)) if bytes == replayed => {
                        self.count += 1;
                        Ok(())
                    }
                    other => {
                        let recorded = other.map(|(at, b)| (Where::Seq(name, at), b));
                        Err(mismatch(self.name, seq, e, recorded, replayed))
                    }
                };
            }
        };
        let mut next = records.next().transpose()?;
        let tolerate = repeats.is_some();
        if let (Some(repeats), Some((_, bytes)), Some(last)) = (repeats, &next, &self.last) {
            if bytes == last {
                *repeats += 1;
                next = records.next().transpose()?;
            }
        }
        match next {
            Some((_, bytes)) if bytes == replayed => {
                self.count += 1;
                if tolerate {
                    self.last = Some(bytes);
                }
                Ok(())
            }
            other => Err(mismatch(self.name, seq, e, other.as_ref().map(|(at, b)| (at, &b[..])), replayed)),
        }
    }

    fn finish(&mut self) -> Result<(), ReplayError> {
        let extra = match &mut self.records {
            Source::Owned(records) => {
                records.next().transpose()?.map(|(at, bytes)| (at.to_string(), show(Some(&bytes))))
            }
            Source::InPlace(cursor, name) => {
                cursor.next_record().transpose()?.map(|(at, b)| (Where::Seq(name, at).to_string(), show(Some(b))))
            }
        };
        match extra {
            None => Ok(()),
            Some((at, recorded)) => Err(ReplayError::ExtraOutput { stream: self.name, at, recorded }),
        }
    }
}

/// The error for replayed output `seq` of input `e` that is not the
/// recorded one (None: the stream ended before it).
fn mismatch(
    stream: &'static str,
    seq: u64,
    e: &Entry,
    recorded: Option<(impl std::fmt::Display, &[u8])>,
    replayed: &[u8],
) -> ReplayError {
    ReplayError::OutputMismatch {
        stream,
        seq,
        input: e.seq,
        from: e.source.clone(),
        recorded: recorded.map_or_else(|| show(None), |(at, b)| format!("{at}: {}", show(Some(b)))),
        replayed: show(Some(replayed)),
    }
}

/// Compares each replayed input's outputs with the recorded streams.
pub(crate) struct Checker<'a> {
    pub(crate) orders: Stream<'a>,
    pub(crate) audit: Stream<'a>,
    pub(crate) dead_letters: Stream<'a>,
    skip_reference_dead_letters: bool,
    tolerate_repeats: bool,
    repeats: u64,
}

impl<'a> Checker<'a> {
    fn new(r: RecordedOutputs<'a>) -> Self {
        let texts = |records: Recorded<'a>| -> Source<'a> {
            Source::Owned(Box::new(records.map(|r| r.map(|(w, b)| (Where::Text(w), b)))))
        };
        Self::with(
            texts(r.orders),
            texts(r.audit),
            texts(r.dead_letters),
            r.skip_reference_dead_letters,
            r.tolerate_repeats,
        )
    }

    fn with(
        orders: Source<'a>,
        audit: Source<'a>,
        dead_letters: Source<'a>,
        skip_reference_dead_letters: bool,
        tolerate_repeats: bool,
    ) -> Self {
        let stream = |name, records| Stream { name, records, last: None, count: 0 };
        Self {
            orders: stream("orders", orders),
            audit: stream("audit records", audit),
            dead_letters: stream("dead letters", dead_letters),
            skip_reference_dead_letters,
            tolerate_repeats,
            repeats: 0,
        }
    }

    /// The store's output streams from the given counters on, read as `reader` reads.
    pub(crate) fn store<'scope, 'env>(
        reader: Reader<'a>,
        scope: &'scope thread::Scope<'scope, 'env>,
        after: (u64, u64, u64),
    ) -> Self
    where
        'a: 'scope,
    {
        let stream = |prefix: &'static [u8], after: u64, name: &'static str| -> Source<'a> {
            let located = move |r: Result<(u64, Vec<u8>), ReplayError>| r.map(|(seq, v)| (Where::Seq(name, seq), v));
            match reader {
                Reader::Inline(store) => Source::InPlace(Cursor::new(store, prefix, after), name),
                Reader::Threaded(store) => Source::Owned(Box::new(
                    prefetch::spawn(scope, move || {
                        records_after(store, prefix, after).map(|r| r.map_err(ReplayError::from))
                    })
                    .map(located),
                )),
            }
        };
        Self::with(
            stream(keys::ORDERS, after.0, "order"),
            stream(keys::AUDIT, after.1, "audit record"),
            stream(keys::DEAD_LETTERS, after.2, "dead letter"),
            false,
            false,
        )
    }

    /// All of an input's outputs, in the order they were recorded: its
    /// orders, its audit records, its dead letter.
    pub(crate) fn check(&mut self, e: &Entry, applied: &Applied) -> Result<(), ReplayError> {
        self.check_orders(e, applied)?;
        for (a, bytes) in applied.audit.iter().zip(&applied.audit_json) {
            self.check_audit(e, a.seq, bytes)?;
        }
        self.check_dead_letter(e, applied)
    }

    fn check_orders(&mut self, e: &Entry, applied: &Applied) -> Result<(), ReplayError> {
        let mut repeats = self.tolerate_repeats.then_some(&mut self.repeats);
        for o in &applied.orders {
            let bytes = serde_json::to_vec(o).expect("orders serialize");
            self.orders.check(o.seq, &bytes, e, repeats.as_deref_mut())?;
        }
        Ok(())
    }

    /// One sealed audit record of `e`'s, numbered `seq`.
    fn check_audit(&mut self, e: &Entry, seq: u64, sealed: &[u8]) -> Result<(), ReplayError> {
        let repeats = self.tolerate_repeats.then_some(&mut self.repeats);
        self.audit.check(seq, sealed, e, repeats)
    }

    fn check_dead_letter(&mut self, e: &Entry, applied: &Applied) -> Result<(), ReplayError> {
        if let Some(dl) = dead_letter(applied, &e.source, &e.raw) {
            let from_reference = e.source.starts_with(overlay_proto::topics::REFERENCE);
            if !(self.skip_reference_dead_letters && from_reference) {
                let bytes = serde_json::to_vec(&dl).expect("dead letters serialize");
                let repeats = self.tolerate_repeats.then_some(&mut self.repeats);
                self.dead_letters.check(dl.seq, &bytes, e, repeats)?;
            }
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> Result<(), ReplayError> {
        self.orders.finish()?;
        self.audit.finish()?;
        self.dead_letters.finish()
    }
}

/// Replays the whole journal and compares everything the engine recorded.
pub fn verify(recorded: &dyn Store, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, ReplayError> {
    verify_range(recorded, VerifyRange::default(), progress)
}

/// Replays the journal through `range.to` and compares the outputs of the
/// inputs in the range with the recorded ones; when the range reaches the
/// journal's end, the state hash too.
pub fn verify_range(
    recorded: &dyn Store,
    range: VerifyRange,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ReplayError> {
    verify_with(Reader::Inline(recorded), range, progress)
}

/// [`verify_range`] with the journal and the recorded outputs read on
/// threads of their own, overlapping the fold (same checks, same result).
pub fn verify_range_threaded(
    recorded: &(dyn Store + Sync),
    range: VerifyRange,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ReplayError> {
    verify_with(Reader::Threaded(recorded), range, progress)
}

fn verify_with(
    reader: Reader<'_>,
    range: VerifyRange,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ReplayError> {
    if let Reader::Threaded(store) = reader {
        return verify_pipelined(store, range, progress);
    }
    let recorded = reader.store();
    let journal = Journal::open(recorded)?;
    check_range(&journal, range)?;
    let mut fold = Fold::new(journal.settings.clone(), Scope::All);
    let mut report = VerifyReport::default();
    let counts = thread::scope(|scope| -> Result<Option<(u64, u64, u64)>, ReplayError> {
        let mut checker: Option<Checker<'_>> = None;
        let mut in_range = InRange::new(range);
        let mut entries = reader.entries(scope, 0);
        fold_entries(&mut *entries, journal.len, &mut fold, range.to, progress, &mut |e, applied, _| {
            let applied = applied.expect("a full fold folds every entry");
            if let Some(counters) = in_range.step(e, applied, &mut report) {
                let c = checker.get_or_insert_with(|| Checker::store(reader, scope, counters));
                c.check(e, applied)?;
            }
            Ok(())
        })?;
        let Some(mut checker) = checker else { return Ok(None) };
        if fold.as_of.seq == journal.len {
            checker.finish()?;
        }
        Ok(Some((checker.orders.count, checker.audit.count, checker.dead_letters.count)))
    })?;
    report.inputs = fold.as_of.seq;
    let Some(counts) = counts else { return Err(nothing_in(range, journal.len)) };
    (report.orders, report.audit, report.dead_letters) = counts;
    if report.inputs == journal.len {
        compare_state(recorded, &fold.state, &mut report)?;
    }
    Ok(report)
}

/// One folded input on its way from the folding thread to the sealing one.
struct Folded {
    entry: Entry,
    applied: Applied,
    /// The output counters before it, when its outputs are compared.
    check: Option<(u64, u64, u64)>,
}

enum ToSeal {
    Batch(Vec<Folded>),
    /// The fold is over; it reached the journal's end (so no recorded output may be left over).
    End {
        at_end: bool,
    },
}

/// Folded inputs per hand-over to the sealing thread.
const SEAL_BATCH: usize = 256;

/// A batch the sealer gave back, emptied here (on the thread that allocated
/// what the fold made; the entries are handed back to their reader), or a new one.
fn reused(back: &std::sync::mpsc::Receiver<Vec<Folded>>, entries: &mut dyn Entries) -> Vec<Folded> {
    match back.try_recv() {
        Ok(mut batch) => {
            // The entries go back to the reading thread, which allocated them.
            for f in batch.drain(..) {
                entries.used(f.entry);
            }
            batch
        }
        Err(_) => Vec::with_capacity(SEAL_BATCH),
    }
}

/// The stream heads after sealing, and the counts of records compared (None: no input was in the range).
type Sealed = (BTreeMap<String, String>, Option<(u64, u64, u64)>);

/// [`verify_with`] over a store threads can share, in three stages that
/// overlap: the journal is read and decoded on one thread; this thread
/// folds (decide and apply); a third seals the audit records (their JSON
/// and hash chain, in order, keeping the chain heads itself) and compares
/// every output with the recorded one, read on threads of their own. The
/// chain heads come back to the state before its hash is taken. Same checks,
/// same first difference reported, as the one-thread fold.
fn verify_pipelined(
    recorded: &(dyn Store + Sync),
    range: VerifyRange,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ReplayError> {
    let journal = Journal::open(recorded)?;
    check_range(&journal, range)?;
    let total = match range.to {
        Some(Point::Seq(n)) => n.min(journal.len),
        _ => journal.len,
    };
    let mut fold = Fold::new(journal.settings.clone(), Scope::All);
    let mut report = VerifyReport::default();
    let (heads, counts) = thread::scope(|scope| -> Result<Sealed, ReplayError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToSeal>(8);
        // Sealed batches go back to the fold thread, which frees what it
        // allocated (a free on another thread costs the allocator more) and
        // reuses the batch.
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<Folded>>();
        let sealer = scope.spawn(move || -> Result<Sealed, ReplayError> {
            let mut heads: BTreeMap<String, String> = BTreeMap::new();
            let mut checker: Option<Checker<'_>> = None;
            let mut sealed = Vec::new();
            for msg in rx {
                let mut batch = match msg {
                    ToSeal::Batch(batch) => batch,
                    ToSeal::End { at_end } => {
                        if let (Some(c), true) = (checker.as_mut(), at_end) {
                            c.finish()?;
                        }
                        break;
                    }
                };
                for Folded { entry, applied, check } in batch.iter_mut() {
                    let mut checker = check.map(|counters| {
                        checker.get_or_insert_with(|| Checker::store(Reader::Threaded(recorded), scope, counters))
                    });
                    if let Some(c) = checker.as_mut() {
                        c.check_orders(entry, applied)?;
                    }
                    // Each record is sealed into one buffer, compared, and let go:
                    // the replay keeps no audit bytes.
                    for r in applied.audit.iter_mut() {
                        let head = match heads.get_mut(r.stream.as_ref()) {
                            Some(h) => h,
                            None => heads.entry(r.stream.to_string()).or_default(),
                        };
                        overlay_core::fold::seal_record_into(head, r, &mut sealed);
                        if let Some(c) = checker.as_mut() {
                            c.check_audit(entry, r.seq, &sealed)?;
                        }
                    }
                    if let Some(c) = checker {
                        c.check_dead_letter(entry, applied)?;
                    }
                }
                // The fold may be over and gone: then the batch is freed here.
                let _ = back_tx.send(batch);
            }
            let counts = checker.map(|c| (c.orders.count, c.audit.count, c.dead_letters.count));
            Ok((heads, counts))
        });
        let folded = (|| -> Result<(), ReplayError> {
            let mut entries = Reader::Threaded(recorded).entries(scope, 0);
            let mut in_range = InRange::new(range);
            let mut batch = Vec::with_capacity(SEAL_BATCH);
            while let Some(e) = entries.next_entry() {
                let e = e?;
                if range.to.is_some_and(|p| !p.covers(&e)) {
                    break;
                }
                let applied = fold.step_unsealed(&e)?.expect("a full fold folds every entry");
                let check = in_range.step(&e, &applied, &mut report);
                if e.seq.is_multiple_of(crate::journal::PROGRESS_EVERY) {
                    progress(e.seq, total);
                }
                batch.push(Folded { entry: e, applied, check });
                if batch.len() == SEAL_BATCH
                    && tx.send(ToSeal::Batch(std::mem::replace(&mut batch, reused(&back_rx, &mut *entries)))).is_err()
                {
                    // The sealer stopped: it says why below.
                    return Ok(());
                }
            }
            progress(fold.as_of.seq, total);
            if !batch.is_empty() && tx.send(ToSeal::Batch(batch)).is_err() {
                return Ok(());
            }
            let _ = tx.send(ToSeal::End { at_end: fold.as_of.seq == journal.len });
            Ok(())
        })();
        drop(tx);
        let sealed = sealer.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The sealer's error is about an earlier input than the fold's, if both failed.
        let sealed = sealed?;
        folded?;
        Ok(sealed)
    })?;
    report.inputs = fold.as_of.seq;
    let Some(counts) = counts else { return Err(nothing_in(range, journal.len)) };
    (report.orders, report.audit, report.dead_letters) = counts;
    for (stream, hash) in heads {
        fold.state.meta.chains.get_mut(stream.as_str()).expect("apply opened every stream sealed").hash = hash;
    }
    if report.inputs == journal.len {
        compare_state(recorded, &fold.state, &mut report)?;
    }
    Ok(report)
}

/// The error for a range that holds no recorded input.
fn nothing_in(range: VerifyRange, len: u64) -> ReplayError {
    ReplayError::Range(format!(
        "no recorded input from {} to {}: the journal holds inputs 1..={len}",
        range.from.map_or("the start".into(), |p| p.to_string()),
        range.to.map_or("the end".into(), |p| p.to_string()),
    ))
}

/// Compares the replayed state (every record of it: what the inputs left
/// behind) with the recorded one by their hashes, naming the first
/// difference if they differ.
pub(crate) fn compare_state(recorded: &dyn Store, state: &State, report: &mut VerifyReport) -> Result<(), ReplayError> {
    compare_state_with(recorded, state_hash(recorded)?, state, report)
}

/// [`compare_state`] with the recorded state's hash taken already (`a`).
pub(crate) fn compare_state_with(
    recorded: &dyn Store,
    a: String,
    state: &State,
    report: &mut VerifyReport,
) -> Result<(), ReplayError> {
    let b = replayed_hash(state);
    if a != b {
        let replayed = state_store(state, &every_record(state))?;
        // A recorded store whose state records lag its journal is compared as `load_state` reads it.
        let caught_up;
        let recorded: &dyn Store = if state_stored_whole(recorded)? {
            recorded
        } else {
            let recorded_state = load_state(recorded)?;
            caught_up = state_store(&recorded_state, &every_record(&recorded_state))?;
            &caught_up
        };
        return Err(ReplayError::StateMismatch {
            recorded: a,
            replayed: b,
            first_difference: first_state_difference(recorded, &replayed)?,
        });
    }
    report.state_hash = Some(a);
    Ok(())
}

/// The hash [`state_hash`] takes of a store holding exactly `state`'s
/// records, without building that store: the records encoded as the engine
/// stores them, half of them on a thread of its own (this is the last step
/// of a verify, when the other cores are done), then hashed in key order.
pub(crate) fn replayed_hash(state: &State) -> String {
    let records = every_record(state);
    let (first, second) = records.split_at(records.len() / 2);
    let encoded = thread::scope(|scope| {
        let other = scope.spawn(|| encode_records(state, second));
        let mut encoded = encode_records(state, first);
        encoded.extend(other.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        encoded
    });
    hash_records(encoded)
}

/// Where the compared range stands as the fold goes on: whether it has
/// begun, and the output counters so far.
struct InRange {
    range: VerifyRange,
    started: bool,
    counters: (u64, u64, u64),
}

impl InRange {
    fn new(range: VerifyRange) -> Self {
        Self { range, started: range.from.is_none(), counters: (0, 0, 0) }
    }

    /// For entry `e`, folded into `applied`: the output counters before it
    /// when its outputs are compared (noted in `report`), else None.
    fn step(&mut self, e: &Entry, applied: &Applied, report: &mut VerifyReport) -> Option<(u64, u64, u64)> {
        if !self.started && self.range.from.is_some_and(|p| p.starts_by(e)) {
            self.started = true;
        }
        let before = self.counters;
        self.counters = counters_after(applied, before);
        if !self.started {
            return None;
        }
        if report.checked_first == 0 {
            report.checked_first = e.seq;
        }
        report.checked_last = e.seq;
        Some(before)
    }
}

/// The output counters after an input: the last seq of each stream it
/// produced into, or the counters before it.
fn counters_after(applied: &Applied, before: (u64, u64, u64)) -> (u64, u64, u64) {
    (
        applied.orders.last().map_or(before.0, |o| o.seq),
        applied.audit.last().map_or(before.1, |a| a.seq),
        applied.rejection.as_ref().map_or(before.2, |(s, _)| *s),
    )
}

fn check_range(journal: &Journal<'_>, range: VerifyRange) -> Result<(), ReplayError> {
    if let Some(p) = range.from {
        check_point(journal, p, "--from")?;
    }
    if let Some(p) = range.to {
        check_point(journal, p, "--to")?;
    }
    match (range.from, range.to) {
        (Some(Point::Seq(a)), Some(Point::Seq(b))) if a > b => {
            Err(ReplayError::Range(format!("--from {a} is after --to {b}")))
        }
        (Some(Point::Time(a)), Some(Point::Time(b))) if a > b => {
            Err(ReplayError::Range(format!("--from {} is after --to {}", Point::Time(a), Point::Time(b))))
        }
        (Some(Point::Seq(0)), _) => Err(ReplayError::Range("--from 0: journal seqs start at 1".into())),
        _ => Ok(()),
    }
}

/// The replayed state as stored records, in a store of its own, to name its
/// first difference from the recorded one.
pub(crate) fn state_store(state: &State, records: &[Touched]) -> Result<MemStore, ReplayError> {
    let store = MemStore::new();
    let mut batch = WriteBatch::default();
    for t in records {
        let (k, v) = codec::encode_touched(state, t);
        match v {
            Some(v) => batch.put(k, v),
            None => batch.delete(k),
        }
    }
    store.commit(batch)?;
    Ok(store)
}

/// Replays an input stream read back from elsewhere (a Kafka shard's
/// inputs, in its merge order: `(source, raw)`) into a fresh state with
/// `settings`, and compares its outputs with the published streams, all of them.
pub fn verify_stream(
    inputs: impl IntoIterator<Item = (String, Vec<u8>)>,
    settings: EngineSettings,
    published: RecordedOutputs<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<VerifyReport, ReplayError> {
    let mut fold = Fold::new(settings, Scope::All);
    let mut checker = Checker::new(published);
    let mut report = VerifyReport::default();
    for (i, (source, raw)) in inputs.into_iter().enumerate() {
        let e = Entry::new(i as u64 + 1, source, raw);
        let applied = fold.step(&e)?.expect("a full fold folds every entry");
        checker.check(&e, &applied)?;
        if e.seq.is_multiple_of(crate::journal::PROGRESS_EVERY) {
            progress(e.seq);
        }
    }
    checker.finish()?;
    report.inputs = fold.as_of.seq;
    (report.checked_first, report.checked_last) = (report.inputs.min(1), report.inputs);
    (report.orders, report.audit, report.dead_letters, report.repeats) =
        (checker.orders.count, checker.audit.count, checker.dead_letters.count, checker.repeats);
    progress(report.inputs);
    Ok(report)
}

fn first_state_difference(recorded: &dyn Store, replayed: &dyn Store) -> Result<String, ReplayError> {
    let mut a = overlay_store::state_records(recorded);
    let mut b = overlay_store::state_records(replayed);
    loop {
        match (a.next().transpose()?, b.next().transpose()?) {
            (None, None) => return Ok("none found".into()),
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                let key =
                    |r: &Option<(Vec<u8>, Vec<u8>)>| r.as_ref().map(|(k, _)| String::from_utf8_lossy(k).into_owned());
                return Ok(format!(
                    "recorded {} = {}, replayed {} = {}",
                    key(&x).unwrap_or_default(),
                    show(x.as_ref().map(|r| r.1.as_slice())),
                    key(&y).unwrap_or_default(),
                    show(y.as_ref().map(|r| r.1.as_slice()))
                ));
            }
        }
    }
}
