//! The error type of the embedded log.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the embedded log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A topic or consumer-group name outside `[a-zA-Z0-9._-]{1,249}` (or `.`/`..`).
    #[error(
        "invalid {kind} name {name:?}: names are 1 to {max} characters from [a-zA-Z0-9._-] and not \".\" or \"..\"",
        max = crate::MAX_NAME_LEN
    )]
    InvalidName { kind: &'static str, name: String },

    /// The topic has never been created (no `topics/<topic>/meta.json`).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),

    /// `create_topic` for an existing topic with a different partition count.
    #[error("topic {topic:?} already exists with {existing} partitions, not {requested}")]
    PartitionCountMismatch { topic: String, existing: u32, requested: u32 },

    /// `create_topic` with zero partitions.
    #[error("topic {topic:?} needs at least one partition")]
    NoPartitions { topic: String },

    /// A partition number that the topic does not have.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    BadPartition { topic: String, partition: u32, partitions: u32 },

    /// A record whose encoded size exceeds [`crate::MAX_RECORD_BYTES`].
    #[error("record {index} of the batch for topic {topic:?} is too large: {size} bytes encoded, the limit is {max}")]
    RecordTooLarge { topic: String, index: usize, size: usize, max: usize },

    /// A record whose key exceeds [`crate::MAX_KEY_BYTES`].
    #[error("record {index} of the batch for topic {topic:?} has a {size}-byte key, the limit is {max}")]
    KeyTooLarge { topic: String, index: usize, size: usize, max: usize },

    /// A read starting outside `start_offset..=end_offset`.
    #[error("offset {offset} is out of range for {topic}/{partition}: readable offsets are {start}..={end}")]
    OffsetOutOfRange { topic: String, partition: u32, offset: u64, start: u64, end: u64 },

    /// A record that fails its CRC or framing checks and is not a torn tail.
    /// `offset` is the offset the damaged record holds (or should hold).
    #[error(
        "corrupt record in {topic}/{partition} at offset {offset} ({}, byte {position}): {reason}",
        .path.display()
    )]
    Corrupt { topic: String, partition: u32, offset: u64, path: PathBuf, position: u64, reason: String },

    /// A metadata file or directory layout that cannot be understood.
    #[error("invalid log metadata at {}: {reason}", .path.display())]
    Metadata { path: PathBuf, reason: String },

    /// Rejected [`crate::LogOptions`].
    #[error("invalid log options: {0}")]
    InvalidOptions(String),

    /// An I/O error, with the file or directory it happened on.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Shorthand result type.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// `map_err` adapter attaching a path to an `io::Error`.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}
