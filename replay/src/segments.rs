//! `verify` of a whole journal in segments, checked side by side on every
//! core, from the checkpoints `state --at` keeps ([`crate::checkpoint`]).
//!
//! Each segment runs from a checkpoint (the first from the empty state) to
//! the next segment's start, on one thread: read, fold, seal and compare
//! inline (nothing crosses threads). A checkpoint is never trusted: the
//! state a segment ends with must equal the one the next segment started
//! from, so the segments together are the one fold from the empty state.
//! If a pair differs (checkpoints from another build, say), or a segment
//! that started from a checkpoint fails, the journal is verified again from
//! the start the ordinary way, and that one fold's report is the answer.
//!
//! The work is shared out as it goes: there is one segment per thread at
//! first, in equal shares of the inputs; a thread that runs out of work
//! takes over the second part of the segment with the most inputs left, from
//! a checkpoint that segment has not reached yet (its end moves back to
//! that checkpoint), when loading that checkpoint costs less than it saves.
//! Inputs do not all cost the same (a daily clock re-plans every household,
//! a price tick re-plans none), so no plan made beforehand splits the time
//! evenly; where the segments end changes nothing in what is checked.

use crate::checkpoint::{self, Checkpoint};
use crate::journal::{fold_entries, Entry, Fold, Journal, Scope};
use crate::prefetch::{Entries, Inline, Reader};
use crate::verify::{compare_state, compare_state_with, verify_range_threaded, Checker, VerifyRange, VerifyReport};
use crate::ReplayError;
use overlay_core::state::EngineSettings;
use overlay_core::State;
use overlay_store::{state_hash, Store};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;

/// What loading a checkpoint costs, in inputs folded, per state record it
/// holds: loading decodes every record (a few microseconds each, about what
/// folding an input takes; measured with `overlay bench --only replay`).
const LOAD_INPUTS_PER_RECORD: u64 = 1;

/// A segment is started from a checkpoint only if it holds at least this
/// many times the inputs its load costs.
const SEGMENT_LOADS: u64 = 4;

/// [`crate::verify`] of the whole journal, in segments on every core when
/// `checkpoints` holds checkpoints for it and the machine has more than one
/// core; otherwise as [`verify_range_threaded`]. Same checks, same result.
pub fn verify_checkpointed(
    recorded: &(dyn Store + Sync),
    checkpoints: &(dyn Store + Sync),
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ReplayError> {
    let workers = thread::available_parallelism().map_or(1, |n| n.get());
    verify_in_segments(recorded, checkpoints, workers, LOAD_INPUTS_PER_RECORD, progress)
}

/// [`verify_checkpointed`] on `workers` threads, a checkpoint's load
/// counted as `load_per_record` inputs per state record (0: free, so
/// segments are split wherever there is a checkpoint to split at).
pub(crate) fn verify_in_segments(
    recorded: &(dyn Store + Sync),
    checkpoints: &(dyn Store + Sync),
    workers: usize,
    load_per_record: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, ReplayError> {
    let journal = Journal::open(recorded)?;
    let have = checkpoint::stored(&journal, checkpoints)?;
    let plan = plan_segments(journal.len, &have, workers, load_per_record);
    if workers < 2 || plan.len() < 2 {
        return verify_range_threaded(recorded, VerifyRange::default(), progress);
    }
    let len = journal.len;
    let settings = journal.settings.clone();
    let board = Board::new(len, &have, &plan, load_per_record);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<u64>();
    // The recorded state's hash does not depend on the fold: taken on a
    // thread of its own, it is ready when the last segment compares states
    // (None: reading it failed; that segment then reads it again and says why).
    let recorded_hash: OnceLock<Option<String>> = OnceLock::new();
    let mut results: Vec<(u64, Segment)> = thread::scope(|scope| {
        scope.spawn(|| {
            // Set whatever happens: the last segment waits for it.
            let hash = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state_hash(recorded).ok()));
            recorded_hash.set(hash.ok().flatten())
        });
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (board, settings, done, recorded_hash) = (&board, &settings, done_tx.clone(), &recorded_hash);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    while let Some((i, start)) = board.take() {
                        let run = Run { recorded, board, i, done: &done, recorded_hash };
                        let segment = verify_segment(&run, checkpoints, settings, start);
                        board.finish(i);
                        out.push((start, segment));
                    }
                    out
                })
            })
            .collect();
        drop(done_tx);
        let mut checked = 0;
        for n in done_rx {
            checked += n;
            progress(checked, len);
        }
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    results.sort_by_key(|(start, _)| *start);
    let mut report = VerifyReport { inputs: len, checked_first: 1, checked_last: len, ..VerifyReport::default() };
    // Where the segments so far ended, and the state they ended with.
    let (mut reached, mut ends_with): (u64, Option<Box<State>>) = (0, None);
    // The states compared at the seams are freed on a thread of their own,
    // once the report is made: tens of milliseconds of freeing, otherwise
    // the last thing a verify waits for.
    let mut compared: Vec<Box<State>> = Vec::new();
    for (start, segment) in results {
        let ended = match segment {
            Segment::Ran { starts_from, ended } if start == reached && starts_from == ends_with => {
                compared.extend(starts_from.into_iter().chain(ends_with.take()));
                ended
            }
            // The checkpoint is not the state the fold reached there (or it
            // would not load): start over from the empty state.
            _ => return verify_range_threaded(recorded, VerifyRange::default(), progress),
        };
        let ended = match ended {
            Ok(ended) => ended,
            Err(e) if start == 0 => return Err(e),
            // A segment from a checkpoint failed: the state it started from
            // equals the one the fold reached there, but the one fold from
            // the empty state has the last word on what it reports.
            Err(_) => return verify_range_threaded(recorded, VerifyRange::default(), progress),
        };
        report.orders += ended.counts.0;
        report.audit += ended.counts.1;
        report.dead_letters += ended.counts.2;
        (reached, ends_with) = (ended.end, ended.ends_with);
        report.state_hash = ended.state_hash;
    }
    free_apart(compared);
    if reached != len {
        return verify_range_threaded(recorded, VerifyRange::default(), progress);
    }
    progress(len, len);
    Ok(report)
}

/// Frees `x` on a thread of its own (here, if none can be started): states
/// of tens of thousands of records take tens of milliseconds to free.
fn free_apart<T: Send + 'static>(x: T) {
    // A thread that does not start drops its closure, and `x` with it.
    let _ = thread::Builder::new().spawn(move || drop(x));
}

/// Where each segment starts (a checkpoint; None: the empty state) and its
/// last input, before any is shared out: one per worker, at the checkpoints
/// nearest to equal shares, each holding at least [`SEGMENT_LOADS`] times
/// what loading its checkpoint costs. One segment (the whole journal) when
/// that leaves no room for two, or when the checkpoints do not note their
/// size (from an older build).
pub(crate) fn plan_segments(
    len: u64,
    have: &[Checkpoint],
    workers: usize,
    load_per_record: u64,
) -> Vec<(Option<&Checkpoint>, u64)> {
    let usable = splits(len, have);
    let records = usable.iter().map(|c| c.records).max().unwrap_or(0);
    let by_size = match records * load_per_record * SEGMENT_LOADS {
        _ if records == 0 => 1,
        0 => u64::MAX,
        cost => len / cost,
    };
    let wanted = (workers as u64).min(usable.len() as u64 + 1).min(by_size).max(1);
    let mut starts: Vec<&Checkpoint> = Vec::new();
    for j in 1..wanted {
        let target = len * j / wanted;
        let after = starts.last().map_or(0, |c| c.as_of.seq);
        let nearest = usable.iter().filter(|c| c.as_of.seq > after).min_by_key(|c| c.as_of.seq.abs_diff(target));
        if let Some(c) = nearest {
            starts.push(c);
        }
    }
    let mut segments = Vec::with_capacity(starts.len() + 1);
    let mut start = None;
    for c in starts {
        segments.push((start, c.as_of.seq));
        start = Some(c);
    }
    segments.push((start, len));
    segments
}

/// The checkpoints a journal of `len` inputs can be split at (inside it), by seq.
fn splits(len: u64, have: &[Checkpoint]) -> Vec<&Checkpoint> {
    let mut cuts: Vec<&Checkpoint> = have.iter().filter(|c| c.as_of.seq > 0 && c.as_of.seq < len).collect();
    cuts.sort_by_key(|c| c.as_of.seq);
    cuts.dedup_by_key(|c| c.as_of.seq);
    cuts
}

/// One segment as it is folded.
#[derive(Clone, Copy, Debug)]
struct Span {
    /// The input it starts after (0: the empty state; else a checkpoint's seq).
    start: u64,
    /// The last checkpoint its fold passed (`start` until it passes one).
    at: u64,
    /// Its last input: the journal's end, or a checkpoint's seq.
    end: u64,
    taken: bool,
    done: bool,
}

/// The segments, shared by the workers: locked when a worker looks for work
/// and when a segment passes a checkpoint (where it may have to stop).
struct Board<'c> {
    /// The checkpoints a segment may start at (0 < seq < the journal's end), by seq.
    cuts: Vec<&'c Checkpoint>,
    spans: Mutex<Vec<Span>>,
    load_per_record: u64,
}

impl<'c> Board<'c> {
    fn new(len: u64, have: &'c [Checkpoint], plan: &[(Option<&Checkpoint>, u64)], load_per_record: u64) -> Self {
        let cuts = splits(len, have);
        let spans = plan
            .iter()
            .map(|&(start, end)| {
                let start = start.map_or(0, |c| c.as_of.seq);
                Span { start, at: start, end, taken: false, done: false }
            })
            .collect();
        Self { cuts, spans: Mutex::new(spans), load_per_record }
    }

    fn spans(&self) -> MutexGuard<'_, Vec<Span>> {
        // A worker that panicked is re-raised by the scope; the spans stay whole.
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The checkpoint at `seq`.
    fn cut(&self, seq: u64) -> Option<&'c Checkpoint> {
        self.cuts.binary_search_by_key(&seq, |c| c.as_of.seq).ok().map(|i| self.cuts[i])
    }

    /// The next segment to fold (its index and start): one not started yet,
    /// or the second part of the one with the most inputs left. None when
    /// there is nothing left worth taking.
    fn take(&self) -> Option<(usize, u64)> {
        let mut spans = self.spans();
        if let Some(i) = spans.iter().position(|s| !s.taken) {
            spans[i].taken = true;
            return Some((i, spans[i].start));
        }
        let (i, s) = spans.iter().enumerate().filter(|(_, s)| !s.done).max_by_key(|(_, s)| s.end - s.at)?;
        let left = s.end - s.at;
        // The checkpoint that splits what is left so that both parts end
        // soonest, this worker's counting the load; taken only if that ends
        // sooner than the segment would alone.
        let (finish, at) = self
            .cuts
            .iter()
            .filter(|c| c.as_of.seq > s.at && c.as_of.seq < s.end)
            .map(|c| {
                let theirs = c.as_of.seq - s.at;
                let mine = c.records * self.load_per_record + (s.end - c.as_of.seq);
                (theirs.max(mine), c.as_of.seq)
            })
            .min()?;
        if finish >= left {
            return None;
        }
        let end = s.end;
        spans[i].end = at;
        spans.push(Span { start: at, at, end, taken: true, done: false });
        Some((spans.len() - 1, at))
    }

    /// Segment `i` has folded through the checkpoint at `seq`: whether it
    /// ends there.
    fn passed(&self, i: usize, seq: u64) -> bool {
        let mut spans = self.spans();
        spans[i].at = seq;
        spans[i].end == seq
    }

    /// Segment `i` stopped (at its end, or on an error): nothing of it is left to take.
    fn finish(&self, i: usize) {
        self.spans()[i].done = true;
    }
}

/// The journal's entries for segment `i`, up to its end as it is when the
/// fold reaches it (its end only ever moves back to a checkpoint the fold
/// has not passed).
struct Cut<'b, 'c, E> {
    entries: E,
    board: &'b Board<'c>,
    span: usize,
    /// The index in `board.cuts` of the first checkpoint after the last entry.
    next: usize,
    /// The last entry's seq.
    last: u64,
    len: u64,
}

impl<E: Entries> Entries for Cut<'_, '_, E> {
    fn next_entry(&mut self) -> Option<Result<Entry, ReplayError>> {
        if self.last >= self.len {
            return None;
        }
        if self.board.cuts.get(self.next).is_some_and(|c| c.as_of.seq == self.last) {
            self.next += 1;
            if self.board.passed(self.span, self.last) {
                return None;
            }
        }
        let e = self.entries.next_entry()?;
        if let Ok(e) = &e {
            self.last = e.seq;
        }
        Some(e)
    }

    fn used(&mut self, e: Entry) {
        self.entries.used(e);
    }
}

/// What one segment found.
enum Segment {
    /// Its checkpoint would not load.
    Unloadable,
    /// It ran from this state (None: the empty state).
    Ran { starts_from: Option<Box<State>>, ended: Result<Ended, ReplayError> },
}

struct Ended {
    /// Its last input.
    end: u64,
    /// The state it ended with (None: at the journal's end, where the state
    /// is compared with the recorded one instead).
    ends_with: Option<Box<State>>,
    counts: (u64, u64, u64),
    state_hash: Option<String>,
}

/// What a worker folds a segment with.
struct Run<'r, 'c> {
    recorded: &'r (dyn Store + Sync),
    board: &'r Board<'c>,
    /// The segment's index on the board.
    i: usize,
    /// Inputs checked, for the caller's progress.
    done: &'r Sender<u64>,
    recorded_hash: &'r OnceLock<Option<String>>,
}

/// Folds segment `run.i` (starting after input `start`) on this thread,
/// comparing every output with the recorded one; at the journal's end, no
/// recorded output may be left over and the state hash is compared.
fn verify_segment(
    run: &Run<'_, '_>,
    checkpoints: &(dyn Store + Sync),
    settings: &EngineSettings,
    start: u64,
) -> Segment {
    let (mut fold, starts_from) = match start {
        0 => (Fold::new(settings.clone(), Scope::All), None),
        seq => match run.board.cut(seq).map(|c| checkpoint::resume(checkpoints, c, Scope::All)) {
            Some(Ok(fold)) => {
                let state = Box::new(fold.state.clone());
                (fold, Some(state))
            }
            _ => return Segment::Unloadable,
        },
    };
    let ended = fold_segment(run, &mut fold);
    // What is left of the fold (the whole state, for the segment that
    // reached the journal's end and compared it there): the last segment's
    // would be the last thing a verify waits for.
    free_apart(fold);
    Segment::Ran { ended, starts_from }
}

fn fold_segment(run: &Run<'_, '_>, fold: &mut Fold) -> Result<Ended, ReplayError> {
    let Run { recorded, board, i, done, recorded_hash } = *run;
    let journal = Journal::open(recorded)?;
    let m = &fold.state.meta;
    let counters = (m.order_seq, m.audit_seq, m.dead_letter_seq);
    let mut report = VerifyReport::default();
    let at_end = thread::scope(|scope| -> Result<bool, ReplayError> {
        let mut checker = Checker::store(Reader::Inline(recorded), scope, counters);
        // Progress goes to the caller as inputs checked since the last report.
        let mut reported = fold.as_of.seq;
        let mut progress = |seq: u64, _| {
            let _ = done.send(seq - reported);
            reported = seq;
        };
        let start = fold.as_of.seq;
        let mut entries = Cut {
            entries: Inline::new(journal.entries(start)),
            board,
            span: i,
            next: board.cuts.partition_point(|c| c.as_of.seq <= start),
            last: start,
            len: journal.len,
        };
        fold_entries(&mut entries, journal.len, fold, None, &mut progress, &mut |e, applied, _| {
            checker.check(e, applied.expect("a full fold folds every entry"))
        })?;
        let at_end = fold.as_of.seq == journal.len;
        if at_end {
            checker.finish()?;
        }
        report.orders = checker.orders.count;
        report.audit = checker.audit.count;
        report.dead_letters = checker.dead_letters.count;
        Ok(at_end)
    })?;
    let ends_with = if at_end {
        match recorded_hash.wait() {
            Some(hash) => compare_state_with(recorded, hash.clone(), &fold.state, &mut report)?,
            None => compare_state(recorded, &fold.state, &mut report)?,
        }
        None
    } else {
        Some(Box::new(std::mem::take(&mut fold.state)))
    };
    Ok(Ended {
        end: fold.as_of.seq,
        ends_with,
        counts: (report.orders, report.audit, report.dead_letters),
        state_hash: report.state_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::AsOf;

    fn checkpoint(seq: u64, records: u64) -> Checkpoint {
        Checkpoint {
            as_of: AsOf { seq, ..AsOf::default() },
            base: seq,
            latest_time: None,
            journal_record: Vec::new(),
            records,
        }
    }

    #[test]
    fn an_idle_worker_takes_over_the_end_of_the_longest_segment_only_when_that_ends_sooner() {
        // given 1,000 inputs with a checkpoint every 100, each of 50 records (a load costs 50 inputs)
        let have: Vec<_> = (1..10).map(|k| checkpoint(k * 100, 50)).collect();
        let plan = plan_segments(1000, &have, 2, 1);
        let starts: Vec<_> = plan.iter().map(|(c, end)| (c.map(|c| c.as_of.seq), *end)).collect();
        assert_eq!(starts, [(None, 500), (Some(500), 1000)]);
        let board = Board::new(1000, &have, &plan, 1);
        // when two workers take the planned segments, and the second has passed 900
        assert_eq!(board.take(), Some((0, 0)));
        assert_eq!(board.take(), Some((1, 500)));
        assert!(!board.passed(1, 900));
        // then a third takes the first one's end from 300: both then end after 300 inputs (250 and the load)
        assert_eq!(board.take(), Some((2, 300)));
        // and the first stops at 300, not before
        assert!(!board.passed(0, 100));
        assert!(board.passed(0, 300));
        board.finish(0);
        // then the third's 200 inputs are split at 400 (100, against 50 + 100)
        assert_eq!(board.take(), Some((3, 400)));
        // and with 100 inputs left in each and no checkpoint inside any, nothing is worth taking
        assert_eq!(board.take(), None);

        // when a load costs more than it saves (1,000 records)
        let heavy: Vec<_> = (1..10).map(|k| checkpoint(k * 100, 1000)).collect();
        assert_eq!(plan_segments(1000, &heavy, 2, 1).len(), 1, "a segment under 4 loads is not started");
        let plan = plan_segments(1000, &heavy, 2, 0);
        let board = Board::new(1000, &heavy, &plan, 1);
        assert_eq!((board.take(), board.take()), (Some((0, 0)), Some((1, 500))));
        // then nothing is taken over
        assert_eq!(board.take(), None);
    }
}
