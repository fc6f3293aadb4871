//! The recorded input journal, read back: each applied input with its
//! journal seq (the state version after it), where it came from and its raw
//! bytes, decoded once. Points in it ([`Point`]) are a seq or an event time;
//! a [`Fold`] replays it into a bare in-memory state, for every household or
//! for one (reference data plus that household's own inputs).

use crate::ReplayError;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use overlay_core::event::{Envelope, EventKey, InputError};
use overlay_core::fold::{apply_into, decide, seal, Applied, Input};
use overlay_core::ids::HouseholdId;
use overlay_core::state::EngineSettings;
use overlay_core::State;
use overlay_store::{check_format, codec, keys, last_seq, load_meta, record_at, Cursor, Store};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

/// One journal record, decoded.
#[derive(Debug)]
pub struct Entry {
    /// Position in the journal, 1-based: the state version once it is applied.
    pub seq: u64,
    /// Where the input came from (`topic/partition/offset`).
    pub source: String,
    pub raw: Vec<u8>,
    /// Boxed: an entry is moved from reader to fold and back for every
    /// input, and an envelope is most of its size.
    pub decoded: Box<Result<Envelope, InputError>>,
}

impl Entry {
    pub fn new(seq: u64, source: String, raw: Vec<u8>) -> Self {
        let decoded = Box::new(overlay_proto::decode_envelope(&raw));
        Self { seq, source, raw, decoded }
    }

    /// `self` made over into the entry of another record, its buffers
    /// reused (a long replay reads a million of them).
    pub fn refill(&mut self, seq: u64, source: &str, raw: &[u8]) {
        self.seq = seq;
        self.source.clear();
        self.source.push_str(source);
        self.raw.clear();
        self.raw.extend_from_slice(raw);
        overlay_proto::decode_envelope_into(&self.raw, &mut self.decoded);
    }

    pub fn input(&self) -> Input<'_> {
        match &*self.decoded {
            Ok(env) => Input::Event(env),
            Err(e) => Input::Undecodable(e),
        }
    }

    /// The event time (None for bytes that did not decode).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        (*self.decoded).as_ref().ok().map(|e| e.event_time)
    }

    /// The household an input belongs to (None: reference data, or undecodable).
    pub fn household(&self) -> Option<&HouseholdId> {
        match (*self.decoded).as_ref().ok()?.payload.key() {
            EventKey::Household(h) => Some(h),
            EventKey::Reference(_) => None,
        }
    }

    /// The input position the engine recorded with it: (source key, next offset).
    pub fn position(&self) -> Option<(&str, u64)> {
        self.source.rsplit_once('/').and_then(|(key, off)| off.parse::<u64>().ok().map(|o| (key, o + 1)))
    }
}

/// The journal of a recorded store, and the settings it was folded with.
pub struct Journal<'a> {
    store: &'a dyn Store,
    pub settings: EngineSettings,
    /// Inputs recorded (the last seq).
    pub len: u64,
}

impl<'a> Journal<'a> {
    /// The journal of `store`; a store of another format is refused
    /// ([`check_format`]).
    pub fn open(store: &'a dyn Store) -> Result<Self, ReplayError> {
        check_format(store)?;
        // The settings are written with a store's first commit; the state
        // records may lag the journal (see `overlay_store::load_state`).
        let meta = load_meta(store)?;
        let len = last_seq(store, keys::JOURNAL)?;
        if len == 0 {
            return Err(ReplayError::EmptyJournal);
        }
        Ok(Self { store, settings: meta.settings, len })
    }

    /// The records from seq `after + 1` on, in order; a gap is an error.
    pub fn entries(&self, after: u64) -> Records<'a> {
        // Each record is read in place and copied once, into its entry.
        Records { records: Cursor::new(self.store, keys::JOURNAL, after), expected: after + 1 }
    }

    /// One record as stored (source and raw bytes), undecoded.
    pub fn record(&self, seq: u64) -> Result<Option<Vec<u8>>, ReplayError> {
        Ok(record_at(self.store, keys::JOURNAL, seq)?)
    }

    /// One record.
    pub fn entry(&self, seq: u64) -> Result<Entry, ReplayError> {
        match self.entries(seq.saturating_sub(1)).next() {
            Some(Ok(e)) if e.seq == seq => Ok(e),
            Some(Err(e)) => Err(e),
            _ => Err(ReplayError::Range(format!("the journal holds inputs 1..={}; there is no input {seq}", self.len))),
        }
    }
}

/// A journal's records in order, decoded ([`Journal::entries`]).
pub struct Records<'a> {
    records: Cursor<'a>,
    expected: u64,
}

impl Records<'_> {
    /// The next record, read into `spare` (an entry done with) when given.
    pub fn next_into(&mut self, spare: Option<Entry>) -> Option<Result<Entry, ReplayError>> {
        let (seq, value) = match self.records.next_record()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e.into())),
        };
        if seq != self.expected {
            return Some(Err(ReplayError::BadJournal {
                seq,
                message: format!("expected journal record {}", self.expected),
            }));
        }
        self.expected += 1;
        let (source, raw) = match codec::decode_journal(value) {
            Ok(r) => r,
            Err(e) => return Some(Err(e.into())),
        };
        Some(Ok(match spare {
            Some(mut e) => {
                e.refill(seq, source, raw);
                e
            }
            None => Entry::new(seq, source.to_string(), raw.to_vec()),
        }))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Entry, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_into(None)
    }
}

/// A place in the journal: a seq (the state version: after that many
/// inputs), or an event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    Seq(u64),
    Time(DateTime<Utc>),
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Seq(n) => write!(f, "input {n}"),
            Point::Time(t) => write!(f, "{}", t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        }
    }
}

/// Which end of a day a bare date names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayEdge {
    Start,
    End,
}

impl Point {
    /// `123` (a journal seq), `2025-03-14` (a UTC day: its start or end,
    /// as `edge` says) or an RFC 3339 time (`2025-03-14T20:15:00Z`).
    pub fn parse(text: &str, edge: DayEdge) -> Result<Self, String> {
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t.parse().map(Point::Seq).map_err(|e| format!("{t}: {e}"));
        }
        if let Ok(d) = t.parse::<NaiveDate>() {
            let time = match edge {
                DayEdge::Start => NaiveTime::MIN,
                DayEdge::End => NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).expect("a valid time"),
            };
            return Ok(Point::Time(d.and_time(time).and_utc()));
        }
        DateTime::parse_from_rfc3339(t)
            .map(|d| Point::Time(d.with_timezone(&Utc)))
            .map_err(|_| format!("{t}: expected a journal seq (digits), a date (YYYY-MM-DD) or an RFC 3339 time"))
    }

    /// Whether `e` is at or before this point (inputs with no time are, since
    /// they sort first).
    pub fn covers(&self, e: &Entry) -> bool {
        match self {
            Point::Seq(n) => e.seq <= *n,
            Point::Time(t) => e.time().is_none_or(|et| et <= *t),
        }
    }

    /// Whether `e` is at or after this point, as the start of a range.
    pub fn starts_by(&self, e: &Entry) -> bool {
        match self {
            Point::Seq(n) => e.seq >= *n,
            Point::Time(t) => e.time().is_some_and(|et| et >= *t),
        }
    }
}

/// The last input read, for showing where a replay stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AsOf {
    /// Inputs folded: the state version.
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<DateTime<Utc>>,
}

/// What a fold covers: every household, or one household and the reference
/// data (securities, models, prices, ESG, clock) its decisions read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Household(HouseholdId),
}

/// A fixed, seedless hasher: the skipped-id set is only probed, never iterated.
type IdHasher = BuildHasherDefault<DefaultHasher>;

/// Journal entries folded into a bare in-memory state with the engine's own
/// `step` (no store, no outputs kept).
///
/// With [`Scope::Household`] the inputs of other households are skipped: a
/// household's state depends only on reference data, its own inputs and the
/// state version, which is kept equal to the journal seq. One thing could
/// couple households: an event id used by another household's input and
/// then by one in scope (the engine treats a repeated id as a duplicate).
/// The fold notices that (ids of skipped inputs are remembered, hashed) and
/// refuses with [`ReplayError::ScopeCollision`]; the caller then folds everything.
pub struct Fold {
    pub state: State,
    scope: Scope,
    skipped_ids: HashSet<u64, IdHasher>,
    /// The last entry read (folded or skipped).
    pub as_of: AsOf,
    /// Entries folded and skipped.
    pub folded: u64,
    pub skipped: u64,
    /// Buffers of the last input folded, handed back ([`Fold::recycle`]).
    spare: Applied,
}

impl Fold {
    pub fn new(settings: EngineSettings, scope: Scope) -> Self {
        let mut state = State::default();
        state.meta.settings = settings;
        Self::resume(state, scope, AsOf::default())
    }

    /// A fold that goes on from `state`, the state after the input `as_of`.
    pub fn resume(state: State, scope: Scope, as_of: AsOf) -> Self {
        Self { state, scope, skipped_ids: HashSet::default(), as_of, folded: 0, skipped: 0, spare: Applied::default() }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn id_hash(id: &str) -> u64 {
        let mut h = DefaultHasher::default();
        id.hash(&mut h);
        h.finish()
    }

    /// Whether the scope leaves `e` out.
    pub fn skips(&self, e: &Entry) -> bool {
        match &self.scope {
            Scope::All => false,
            // Undecodable bytes change nothing but counters.
            Scope::Household(h) => e.decoded.is_err() || e.household().is_some_and(|x| x != h),
        }
    }

    /// Folds one entry (the next in the journal): its `Applied`, or None if out of scope.
    pub fn step(&mut self, e: &Entry) -> Result<Option<Applied>, ReplayError> {
        self.step_with(e, true)
    }

    /// [`Fold::step`] without sealing the audit records: they come back with
    /// empty hashes and the state's chain heads keep empty hashes, for a
    /// caller that seals them itself ([`overlay_core::fold::seal_record`],
    /// in order) and sets the heads before it reads them.
    pub fn step_unsealed(&mut self, e: &Entry) -> Result<Option<Applied>, ReplayError> {
        self.step_with(e, false)
    }

    fn step_with(&mut self, e: &Entry, sealed: bool) -> Result<Option<Applied>, ReplayError> {
        assert!(e.seq > self.as_of.seq, "journal entries fold in order ({} after {})", e.seq, self.as_of.seq);
        self.as_of.seq = e.seq;
        self.as_of.event_time = e.time();
        // The id's buffer is reused: this runs for every input of a replay.
        match ((*e.decoded).as_ref(), &mut self.as_of.event_id) {
            (Ok(env), Some(id)) => id.clone_from(&env.event_id),
            (Ok(env), id) => *id = Some(env.event_id.clone()),
            (Err(_), id) => *id = None,
        }
        if self.skips(e) {
            if let Ok(env) = &*e.decoded {
                self.skipped_ids.insert(Self::id_hash(&env.event_id));
            }
            self.skipped += 1;
            return Ok(None);
        }
        if let (Scope::Household(_), Ok(env)) = (&self.scope, &*e.decoded) {
            if self.skipped_ids.contains(&Self::id_hash(&env.event_id)) {
                return Err(ReplayError::ScopeCollision { seq: e.seq, event_id: env.event_id.clone() });
            }
        }
        if self.scope == Scope::All && self.state.meta.applied + 1 != e.seq {
            return Err(ReplayError::BadJournal {
                seq: e.seq,
                message: format!("expected journal record {}", self.state.meta.applied + 1),
            });
        }
        // The state version the engine had when it folded this input.
        self.state.meta.applied = e.seq - 1;
        self.folded += 1;
        let decision = decide(&self.state, e.input());
        let mut applied = std::mem::take(&mut self.spare);
        apply_into(&mut self.state, decision, &mut applied);
        if sealed {
            seal(&mut self.state, &mut applied);
        }
        Ok(Some(applied))
    }

    /// Hands back what folding an input produced once it is used: its audit
    /// JSON and hash buffers serve the next input.
    pub fn recycle(&mut self, applied: Applied) {
        self.spare = applied;
    }
}

/// Called with each entry read, what folding it produced and the state after it.
pub type Visit<'a> = dyn FnMut(&Entry, Option<&Applied>, &State) -> Result<(), ReplayError> + 'a;

/// Entries read between progress reports.
pub const PROGRESS_EVERY: u64 = 10_000;

/// Folds the journal's entries after `fold`'s last one, up to `to` (None:
/// to the end), calling `visit` with each entry read, what folding it
/// produced (None when the scope skipped it) and the state after it.
pub fn fold_to(
    journal: &Journal<'_>,
    fold: &mut Fold,
    to: Option<Point>,
    progress: &mut dyn FnMut(u64, u64),
    visit: &mut Visit<'_>,
) -> Result<(), ReplayError> {
    let mut entries = crate::prefetch::Inline::new(journal.entries(fold.as_of.seq));
    fold_entries(&mut entries, journal.len, fold, to, progress, visit)
}

/// [`fold_to`] over entries read elsewhere (on another thread): the
/// journal's, from the one after `fold`'s last; `len` is the journal's length.
pub fn fold_entries(
    entries: &mut dyn crate::prefetch::Entries,
    len: u64,
    fold: &mut Fold,
    to: Option<Point>,
    progress: &mut dyn FnMut(u64, u64),
    visit: &mut Visit<'_>,
) -> Result<(), ReplayError> {
    let total = match to {
        Some(Point::Seq(n)) => n.min(len),
        _ => len,
    };
    while let Some(e) = entries.next_entry() {
        let e = e?;
        if to.is_some_and(|p| !p.covers(&e)) {
            break;
        }
        let applied = fold.step(&e)?;
        visit(&e, applied.as_ref(), &fold.state)?;
        if let Some(applied) = applied {
            fold.recycle(applied);
        }
        if e.seq.is_multiple_of(PROGRESS_EVERY) {
            progress(e.seq, total);
        }
        entries.used(e);
    }
    progress(fold.as_of.seq, total);
    Ok(())
}

/// Refuses a point the journal cannot answer for.
pub fn check_point(journal: &Journal<'_>, p: Point, what: &str) -> Result<(), ReplayError> {
    match p {
        Point::Seq(n) if n > journal.len => {
            Err(ReplayError::Range(format!("{what} {n} is beyond the journal, which holds inputs 1..={}", journal.len)))
        }
        _ => Ok(()),
    }
}
