//! Audit chain verification: proves a sequence of published audit records
//! complete and untouched, or names the exact record where it stops being so.
//!
//! Each audit record carries `seq` (its place in its output stream, 1-based
//! and gap-free), and belongs to a chain (`stream`: a household, or
//! `reference`) in which `stream_seq` counts up from 1 and `prev_hash` is the
//! previous record's `hash` (empty for the first). `hash` is SHA-256 over the
//! record's canonical JSON with `hash` empty ([`audit_hash`]). So, reading a
//! sequence in order:
//! - a changed byte makes the record unreadable or its hash wrong: **altered**,
//!   at that record;
//! - a deleted record leaves a gap in `seq`: **missing**, at the record after it;
//! - two records swapped put a later `seq` first: **missing**, at the first of
//!   them (where the earlier one should be);
//! - a record rewritten with a hash to match breaks its stream's chain:
//!   **chain broken**, at the next record of that stream.
//!
//! An output stream is one partition of the audit topic: the embedded log
//! has one, Kafka one per shard (each shard keeps its own chains).

use overlay_core::fold::audit_hash;
use overlay_core::output::AuditRecord;
use std::collections::BTreeMap;

/// Where a record sits, for people: a file line, or `topic/partition/offset`.
pub type Location = String;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("{at}: altered: not an audit record ({message})")]
    Unreadable { at: Location, message: String },
    #[error("{at}: altered: audit record seq {seq} hashes to {computed}, it carries {carried}")]
    Altered { at: Location, seq: u64, computed: String, carried: String },
    #[error("{at}: missing: audit record seq {found} follows seq {previous}: seq {expected} is not in its place (deleted or moved)")]
    Missing { at: Location, previous: u64, expected: u64, found: u64 },
    #[error("{at}: out of order: audit record seq {found} where seq {expected} should be")]
    OutOfOrder { at: Location, expected: u64, found: u64 },
    #[error(
        "{at}: chain broken: audit record seq {seq} (stream {stream}, record {stream_seq}) does not follow its \
         stream's record {previous_stream_seq} (prev_hash {prev_hash:?}, the previous hash {previous_hash:?})"
    )]
    ChainBroken {
        at: Location,
        seq: u64,
        stream: String,
        stream_seq: u64,
        previous_stream_seq: u64,
        prev_hash: String,
        previous_hash: String,
    },
}

impl ChainBreak {
    /// Where the chain breaks.
    pub fn location(&self) -> &str {
        match self {
            Self::Unreadable { at, .. }
            | Self::Altered { at, .. }
            | Self::Missing { at, .. }
            | Self::OutOfOrder { at, .. }
            | Self::ChainBroken { at, .. } => at,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    pub records: u64,
    pub streams: u64,
    /// The seq of the last record (the output stream's length).
    pub last_seq: u64,
}

/// Checks one output stream's audit records, in order: `(location, bytes)`.
pub fn verify_chain(records: impl IntoIterator<Item = (Location, Vec<u8>)>) -> Result<ChainReport, ChainBreak> {
    // Per chain: (stream_seq, hash) of its last record.
    let mut heads: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut report = ChainReport::default();
    for (at, bytes) in records {
        let record: AuditRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ChainBreak::Unreadable { at: at.clone(), message: e.to_string() })?;
        let computed = audit_hash(&record);
        if computed != record.hash {
            return Err(ChainBreak::Altered { at, seq: record.seq, computed, carried: record.hash });
        }
        let expected = report.last_seq + 1;
        if record.seq > expected {
            return Err(ChainBreak::Missing { at, previous: report.last_seq, expected, found: record.seq });
        }
        if record.seq < expected {
            return Err(ChainBreak::OutOfOrder { at, expected, found: record.seq });
        }
        let (previous_stream_seq, previous_hash) = heads.get(record.stream.as_ref()).cloned().unwrap_or_default();
        if record.prev_hash != previous_hash || record.stream_seq != previous_stream_seq + 1 {
            return Err(ChainBreak::ChainBroken {
                at,
                seq: record.seq,
                stream: record.stream.to_string(),
                stream_seq: record.stream_seq,
                previous_stream_seq,
                prev_hash: record.prev_hash,
                previous_hash,
            });
        }
        heads.insert(record.stream.to_string(), (record.stream_seq, record.hash));
        report.records += 1;
        report.last_seq = record.seq;
    }
    report.streams = heads.len() as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_core::output::AuditBody;
    use std::borrow::Cow;

    /// Records labelled by their position, as a reader of a file sees them.
    fn by_position(records: Vec<(Location, Vec<u8>)>) -> Vec<(Location, Vec<u8>)> {
        records.into_iter().enumerate().map(|(i, (_, bytes))| (format!("line {}", i + 1), bytes)).collect()
    }

    /// A sealed chain of `n` records over two streams, as published (JSON).
    fn published(n: u64) -> Vec<(Location, Vec<u8>)> {
        let mut heads: BTreeMap<&str, (u64, String)> = BTreeMap::new();
        (1..=n)
            .map(|seq| {
                let stream = if seq % 3 == 0 { "reference" } else { "household/H1" };
                let head = heads.entry(stream).or_default();
                head.0 += 1;
                let mut r = AuditRecord {
                    seq,
                    stream: Cow::Owned(stream.into()),
                    stream_seq: head.0,
                    event_id: Some(format!("e{seq}")),
                    at: None,
                    household: None,
                    body: AuditBody::Applied { event_type: "price_tick".into(), summary: format!("tick {seq}") },
                    prev_hash: head.1.clone(),
                    hash: String::new(),
                };
                r.hash = audit_hash(&r);
                head.1 = r.hash.clone();
                (format!("line {seq}"), serde_json::to_vec(&r).unwrap())
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let report = verify_chain(published(10)).expect("intact");
        assert_eq!(report, ChainReport { records: 10, streams: 2, last_seq: 10 });
    }

    #[test]
    fn a_flipped_byte_is_reported_at_its_record() {
        for (i, offset) in [(3, 20), (6, 60), (7, 150)] {
            // given a byte changed inside record i (a digit, so it may stay valid JSON)
            let mut records = published(10);
            let bytes = &mut records[i].1;
            let at = bytes.iter().skip(offset).position(|b| b.is_ascii_digit()).unwrap() + offset;
            bytes[at] = if bytes[at] == b'9' { b'0' } else { bytes[at] + 1 };
            // then the break is at that record
            let err = verify_chain(records).expect_err("tampered");
            assert_eq!(err.location(), format!("line {}", i + 1), "{err}");
            assert!(matches!(err, ChainBreak::Altered { .. } | ChainBreak::Unreadable { .. }), "{err}");
        }
    }

    #[test]
    fn a_deleted_record_is_reported_at_the_record_after_it() {
        let mut records = published(10);
        records.remove(4);
        let err = verify_chain(by_position(records)).expect_err("tampered");
        assert_eq!(err, ChainBreak::Missing { at: "line 5".into(), previous: 4, expected: 5, found: 6 });
    }

    #[test]
    fn two_swapped_records_are_reported_at_the_first_of_them() {
        let mut records = published(10);
        records.swap(6, 7);
        let err = verify_chain(by_position(records)).expect_err("tampered");
        assert_eq!(err, ChainBreak::Missing { at: "line 7".into(), previous: 6, expected: 7, found: 8 });
        let mut records = published(10);
        records.swap(6, 8);
        let err = verify_chain(by_position(records)).expect_err("tampered");
        assert_eq!(err, ChainBreak::Missing { at: "line 7".into(), previous: 6, expected: 7, found: 9 });
    }

    #[test]
    fn a_record_rewritten_with_a_matching_hash_breaks_its_stream_at_the_next_record() {
        // given record 4 (household/H1) changed and re-hashed, so it verifies alone
        let mut records = published(10);
        let mut r: AuditRecord = serde_json::from_slice(&records[3].1).unwrap();
        r.body = AuditBody::Applied { event_type: "price_tick".into(), summary: "forged".into() };
        r.hash = audit_hash(&r);
        records[3].1 = serde_json::to_vec(&r).unwrap();
        // then the stream's next record (5) no longer follows it
        let err = verify_chain(records).expect_err("tampered");
        assert_eq!(err.location(), "line 5", "{err}");
        assert!(matches!(err, ChainBreak::ChainBroken { seq: 5, .. }), "{err}");
    }
}
