//! `state --household H --at POINT`: the household as it was after the
//! journal's inputs up to a point, rebuilt by folding the journal (reference
//! data and that household's own inputs only; everything if an event id is
//! shared with another household's input).

use crate::checkpoint;
use crate::journal::{check_point, fold_entries, AsOf, Fold, Journal, Point, Scope};
use crate::prefetch::Reader;
use crate::view::{household_view, HouseholdView};
use crate::ReplayError;
use chrono::{DateTime, Utc};
use overlay_core::ids::HouseholdId;
use overlay_core::State;
use overlay_store::{load_state, Store};

/// The household after every journal input up to `at` (a seq: that many
/// inputs; a time: every input before the first one later than it), folded
/// from the journal's start.
pub fn state_at(
    recorded: &dyn Store,
    h: &HouseholdId,
    at: Point,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HouseholdView, ReplayError> {
    state_at_from(Reader::Inline(recorded), None, h, at, progress)
}

/// [`state_at`], folding only from the nearest checkpoint at or before `at`,
/// kept in `checkpoints` (a store of the replay's own: see
/// [`crate::checkpoint`]; built there first when missing or short), with
/// the journal read on a thread of its own.
pub fn state_at_checkpointed(
    recorded: &(dyn Store + Sync),
    checkpoints: &dyn Store,
    h: &HouseholdId,
    at: Point,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HouseholdView, ReplayError> {
    state_at_from(Reader::Threaded(recorded), Some((checkpoints, checkpoint::CHECKPOINT_EVERY)), h, at, progress)
}

pub(crate) fn state_at_from(
    reader: Reader<'_>,
    checkpoints: Option<(&dyn Store, u64)>,
    h: &HouseholdId,
    at: Point,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<HouseholdView, ReplayError> {
    let journal = Journal::open(reader.store())?;
    check_point(&journal, at, "--at")?;
    let start = match checkpoints {
        Some((store, every)) => {
            let all = checkpoint::ensure(&journal, store, every, progress)?;
            all.into_iter().rev().find(|c| c.before(at)).map(|c| (store, c))
        }
        None => None,
    };
    let start_fold = |scope: Scope| -> Result<Fold, ReplayError> {
        match &start {
            Some((store, c)) => checkpoint::resume(*store, c, scope),
            None => Ok(Fold::new(journal.settings.clone(), scope)),
        }
    };
    let mut fold_from_start = |scope: Scope| -> Result<Fold, ReplayError> {
        let mut fold = start_fold(scope)?;
        std::thread::scope(|s| {
            let mut entries = reader.entries(s, fold.as_of.seq);
            fold_entries(&mut *entries, journal.len, &mut fold, Some(at), progress, &mut |_, _, _| Ok(()))
        })?;
        Ok(fold)
    };
    let fold = match fold_from_start(Scope::Household(h.clone())) {
        Err(ReplayError::ScopeCollision { .. }) => fold_from_start(Scope::All)?,
        other => other?,
    };
    let judged_at = match at {
        Point::Time(t) => t,
        Point::Seq(_) => last_time(&journal, &fold.as_of)?,
    };
    household_view(&fold.state, h, fold.as_of.clone(), judged_at).ok_or_else(|| missing(h, at, &fold.as_of))
}

fn missing(h: &HouseholdId, at: Point, as_of: &AsOf) -> ReplayError {
    ReplayError::Range(if as_of.seq == 0 {
        format!("nothing is recorded at or before {at}: the journal's first input comes later")
    } else {
        format!("household {h} does not exist at {at} (after journal input {})", as_of.seq)
    })
}

/// The event time of the last input with one, at or before `as_of`.
fn last_time(journal: &Journal<'_>, as_of: &AsOf) -> Result<DateTime<Utc>, ReplayError> {
    if let Some(t) = as_of.event_time {
        return Ok(t);
    }
    // Bytes that did not decode have no time: look back for one that did.
    let mut seq = as_of.seq;
    while seq > 0 {
        if let Some(t) = journal.entry(seq)?.time() {
            return Ok(t);
        }
        seq -= 1;
    }
    Ok(DateTime::<Utc>::MIN_UTC)
}

/// The household as the store holds it now (the live state), in the same form.
pub fn state_now(recorded: &dyn Store, h: &HouseholdId) -> Result<HouseholdView, ReplayError> {
    let journal = Journal::open(recorded)?;
    let state: State = load_state(recorded)?;
    let last = journal.entry(state.meta.applied)?;
    let as_of = AsOf {
        seq: last.seq,
        event_id: (*last.decoded).as_ref().ok().map(|e| e.event_id.clone()),
        event_time: last.time(),
    };
    let at = last_time(&journal, &as_of)?;
    household_view(&state, h, as_of.clone(), at).ok_or_else(|| missing(h, Point::Seq(as_of.seq), &as_of))
}
