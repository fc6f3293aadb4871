//! Event-log transports: the **embedded log**, a broker-less, on-disk,
//! byte-level log with Kafka's semantics (topics, keyed partitions, offsets,
//! consumer-group positions), so one engine can run the whole flow on one
//! machine. It knows nothing about event types: records are bytes.
//!
//! # Layout
//!
//! ```text
//! <dir>/topics/<topic>/meta.json                     {"version":1,"partitions":N}, fixed at creation
//! <dir>/topics/<topic>/.lock                         advisory lock file (appends, topic creation)
//! <dir>/topics/<topic>/<partition>/<first_offset:020>.seg   segment files
//! <dir>/groups/<group>.json                          committed offsets: topic -> partition -> offset
//! <dir>/groups/<group>.lock                          advisory lock file (commits)
//! ```
//!
//! Topic and group names are 1–249 characters from `[a-zA-Z0-9._-]`, not
//! `.` or `..` (Kafka's rule).
//!
//! # Record format
//!
//! A segment is a plain concatenation of frames (little-endian):
//!
//! ```text
//! body_len:u32  crc32:u32  | magic:u8=1  attributes:u8  offset:u64  timestamp_ms:u64
//!                          | key_len:u32  key[key_len]  value[..]
//! ```
//!
//! The CRC-32 (IEEE) covers the whole body, which includes the record's own
//! offset. Attribute bit 0 marks a present key (an empty key and no key
//! differ). The overhead is [`RECORD_OVERHEAD`] (30) bytes per record. An
//! encoded record is at most [`MAX_RECORD_BYTES`] (8 MiB) and a key at most
//! [`MAX_KEY_BYTES`] (64 KiB); larger ones are refused before anything is
//! written. `timestamp_ms` is whatever the caller supplies: the log never
//! reads a clock.
//!
//! # Partitioning
//!
//! `Record::partition` wins; otherwise a keyed record goes to Kafka's default
//! partition, `toPositive(murmur2(key)) % partitions` ([`murmur2`] is
//! bit-exact with the Java client's `Utils.murmur2`); otherwise partition 0.
//!
//! # Guarantees
//!
//! * **Offsets** in a partition are dense and start at 0: each record's
//!   offset is one more than the previous one's, and is stored in the record.
//! * **Appends** take an exclusive advisory lock (`flock`) on the topic's
//!   `.lock`, re-read each touched partition's end from disk, write all
//!   records, then fsync each touched segment once (plus the directory when
//!   a segment file was created) before returning. Any number of handles and
//!   processes may append concurrently without losing or duplicating offsets.
//!   Appends to one partition are totally ordered; one call's records for a
//!   partition are contiguous.
//! * **Reads** never cache the end of a partition: every `read`/`end_offset`
//!   re-checks the last segment's length (one `stat`) and probes for the next
//!   segment, so data appended by other processes shows up on the next call.
//!   Reads take no file lock.
//! * **Torn tails**: a frame cut short at the end of the last segment (a
//!   crash or failure mid-write, or a write still in progress), or an
//!   invalid frame followed only by zero bytes, is invisible to readers.
//!   The next appender, holding the lock, truncates it before writing, and
//!   offsets continue from the last complete record.
//! * **Corruption** anywhere else (a CRC mismatch or impossible frame with
//!   data after it, a damaged sealed segment, a gap between segments) is
//!   reported as [`LogError::Corrupt`] naming topic, partition, offset, file
//!   and byte position — never skipped. Before a reader reports corruption
//!   it re-checks once under a shared lock, so racing with a writer that is
//!   repairing a torn tail is not mistaken for damage.
//! * **Segments** roll before a record would take the active one past
//!   [`LogOptions::segment_bytes`] (default [`DEFAULT_SEGMENT_BYTES`], 64 MiB).
//!   The old segment is fsynced before the next one is created, so only the
//!   last segment can ever have a torn tail.
//! * **Consumer groups**: [`EmbeddedLog::commit`] durably replaces
//!   `groups/<group>.json` (temp file, fsync, rename, fsync directory) under
//!   the group's lock. Positions are advisory (for lag tools): lag of a
//!   partition is `end_offset - committed`.
//!
//! # Bounds and cost
//!
//! * Each handle keeps, per segment it has read, a sparse index with one
//!   entry per 64 KiB of segment (about 16 KiB of memory per full 64 MiB
//!   segment). Reading from offset N costs a binary search over segments, a
//!   binary search in the index, and a scan of at most 64 KiB plus one record.
//! * Indexes are built lazily: the first read of a segment (and the first
//!   `end_offset`/`read`/`append` of a partition, for its last segment) scans
//!   it once, checking every CRC; later calls only scan bytes appended since.
//! * Reads and scans use chunked reads (starting at 64 KiB, doubling up to
//!   4 MiB), never one syscall per record. `max_bytes` counts key + value bytes; a read returns at
//!   least one record when one is available, even if it alone exceeds
//!   `max_bytes`.
//!
//! # Caveats
//!
//! * Visibility precedes durability: records are readable as soon as they
//!   are written, before the appender's fsync. A process crash loses nothing
//!   that was written, but an OS crash or power loss can drop the tail of an
//!   append that had not returned — records another reader may already have
//!   seen; later appends then reuse those offsets.
//! * An append is not atomic across a crash or an I/O error: a prefix of its
//!   records may survive (at-least-once; a retry can duplicate them).
//! * A damaged *last* record of the last segment (e.g. a bit flip) cannot be
//!   told apart from a torn write: it is hidden and the next append
//!   truncates it. Damage anywhere else is reported.
//! * `end_offset` verifies only the last segment; older segments are
//!   verified (every CRC) the first time a handle reads from them.
//! * Nothing is ever deleted (no retention), so `start_offset` is 0.
//! * Locks are advisory `flock`s: fine on local disks, unreliable on network
//!   filesystems.

mod error;
mod format;
mod log;
mod murmur;
mod partition;

pub use crate::error::{LogError, Result};
pub use crate::format::RECORD_OVERHEAD;
pub use crate::log::{EmbeddedLog, LogOptions};
pub use crate::murmur::{murmur2, partition_for_key};

/// Largest encoded record (frame header, fixed fields, key and value).
pub const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;
/// Largest key.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Default segment size bound.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Longest topic or group name (Kafka's limit).
pub const MAX_NAME_LEN: usize = 249;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Optional key; chooses the partition when `partition` is `None`.
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Caller-supplied timestamp, stored as is.
    pub timestamp_ms: u64,
    /// Explicit partition; overrides the key.
    pub partition: Option<u32>,
}

impl Record {
    /// An unkeyed record (partition 0 unless [`Record::in_partition`] is used).
    pub fn new(value: impl Into<Vec<u8>>, timestamp_ms: u64) -> Self {
        Self { key: None, value: value.into(), timestamp_ms, partition: None }
    }

    /// A keyed record, partitioned by [`partition_for_key`].
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, timestamp_ms: u64) -> Self {
        Self { key: Some(key.into()), value: value.into(), timestamp_ms, partition: None }
    }

    /// Pins the record to `partition`.
    #[must_use]
    pub fn in_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: u64,
}
