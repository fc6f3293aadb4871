//! Compliance replay, from the recorded input journal (or an input stream
//! read back from Kafka):
//! - [`verify`]: re-fold the inputs and check every output byte (orders,
//!   audit records, dead letters) and the state hash, over the whole journal
//!   or a range of it; on a difference, name the first differing record;
//! - [`state_at`]: a household as it was at a journal seq or a time (from
//!   the nearest [`checkpoint`] with [`state_at_checkpointed`]);
//! - [`explain`]: why an order was made, or why trades were not;
//! - [`whatif`]: the same history with a changed input, in memory, compared;
//! - [`audit`]: the published audit trail's hash chains;
//! - [`export`]: a household's orders or audit records over a date range.

pub mod audit;
pub mod checkpoint;
pub mod explain;
pub mod export;
pub mod journal;
pub mod prefetch;
pub mod segments;
pub mod state_at;
pub mod verify;
pub mod view;
pub mod whatif;

pub use journal::{DayEdge, Point, Scope};
pub use segments::verify_checkpointed;
pub use state_at::{state_at, state_at_checkpointed, state_now};
pub use verify::{verify, verify_range, verify_range_threaded, verify_stream, VerifyRange, VerifyReport};

use overlay_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the journal is empty: nothing to replay")]
    EmptyJournal,
    #[error("{stream} differ at seq {seq} (input {input}, {from}):\n  recorded: {recorded}\n  replayed: {replayed}")]
    OutputMismatch { stream: &'static str, seq: u64, input: u64, from: String, recorded: String, replayed: String },
    #[error("{stream}: the record is missing or extra after the replayed ones: {at}\n  recorded: {recorded}")]
    ExtraOutput { stream: &'static str, at: String, recorded: String },
    #[error("state differs after replay: recorded hash {recorded}, replayed hash {replayed}; first differing record: {first_difference}")]
    StateMismatch { recorded: String, replayed: String, first_difference: String },
    #[error("journal record {seq}: {message}")]
    BadJournal { seq: u64, message: String },
    /// A missing or partial range, or a point the journal cannot answer for.
    #[error("{0}")]
    Range(String),
    /// A household-scoped fold met an event id used by a skipped input too.
    #[error("input {seq} reuses event id {event_id} of another household's input")]
    ScopeCollision { seq: u64, event_id: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// Shows a record's bytes, cut at 600 characters.
pub(crate) fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(b) => {
            let s = String::from_utf8_lossy(b);
            if s.len() > 600 {
                format!("{}…", &s[..s.floor_char_boundary(600)])
            } else {
                s.into_owned()
            }
        }
    }
}

#[cfg(test)]
mod explain_tests;
#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod whatif_tests;
