//! Stream chunks. Each commit stores the records it adds to one stream (the
//! journal, orders, audit records, dead letters) as ONE value, a chunk,
//! rather than one key per record: sled pays per key, on write (a leaf
//! copied per insert) and on read (the tree walked again per item).
//!
//! - **Key**: the stream's prefix and the chunk's LAST seq, u64 big-endian
//!   ([`keys::seq_key`]). So the stream's greatest key names its last seq,
//!   and the chunk holding seq `s` is the first key at or after
//!   `seq_key(prefix, s)`.
//! - **Value**: the chunk's first seq (u64 BE), then each record in seq order
//!   as its length (u32 BE) and its bytes. A chunk holds seqs
//!   `first..=last`, one record each: no gap, nothing before or after.
//!
//! Decoding checks all of that and reports anything else as
//! [`StoreError::Corrupt`], naming the stream and the chunk; it never panics.

use crate::keys::{self, seq_key};
use crate::{StoreError, WriteBatch};

/// Bytes of the header: the first seq.
const HEADER: usize = 8;
/// Bytes of a record's length.
const LEN: usize = 4;

/// The stream a prefix names, for messages.
pub fn stream_name(prefix: &[u8]) -> &'static str {
    match prefix {
        keys::JOURNAL => "journal",
        keys::ORDERS => "orders",
        keys::AUDIT => "audit records",
        keys::DEAD_LETTERS => "dead letters",
        _ => "stream",
    }
}

/// Collects one stream's records as a commit's batch grows, as chunks.
/// Records are pushed in seq order; a seq that does not follow the previous
/// one starts a new chunk, so a chunk never holds a gap.
#[derive(Debug)]
pub struct ChunkWriter {
    prefix: &'static [u8],
    /// (first, last) seq of the open chunk.
    open: Option<(u64, u64)>,
    buf: Vec<u8>,
    sealed: Vec<(Vec<u8>, Vec<u8>)>,
    /// The size of the last chunk sealed: the next one starts with room for
    /// as much (a batch's chunk is megabytes; growing it step by step copies it over and over).
    hint: usize,
}

impl ChunkWriter {
    pub fn new(prefix: &'static [u8]) -> Self {
        Self { prefix, open: None, buf: Vec::new(), sealed: Vec::new(), hint: 0 }
    }

    /// Adds the record of `seq`.
    pub fn push(&mut self, seq: u64, record: &[u8]) {
        match self.open {
            Some((first, last)) if last.checked_add(1) == Some(seq) => self.open = Some((first, seq)),
            _ => {
                self.seal();
                self.buf.reserve(self.hint);
                self.buf.extend_from_slice(&seq.to_be_bytes());
                self.open = Some((seq, seq));
            }
        }
        append(&mut self.buf, record);
    }

    fn seal(&mut self) {
        if let Some((_, last)) = self.open.take() {
            self.hint = self.buf.len();
            self.sealed.push((seq_key(self.prefix, last), std::mem::take(&mut self.buf)));
        }
    }

    /// Puts every chunk pushed since the last call into `batch`; with
    /// `keep`, a copy of each too.
    pub fn finish(&mut self, batch: &mut WriteBatch, keep: Option<&mut Vec<KeptChunk>>) {
        self.seal();
        if let Some(keep) = keep {
            keep.extend(self.sealed.iter().map(|(k, v)| KeptChunk {
                prefix: self.prefix,
                key: k.clone(),
                value: v.clone(),
            }));
        }
        for (k, v) in self.sealed.drain(..) {
            batch.put(k, v);
        }
    }
}

/// A copy of a chunk as a batch writes it: its records can be read after the
/// batch is written without reading them back from the store.
#[derive(Clone, Debug)]
pub struct KeptChunk {
    pub prefix: &'static [u8],
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl KeptChunk {
    pub fn chunk(&self) -> Result<Chunk<'_>, StoreError> {
        Chunk::parse(self.prefix, &self.key, &self.value)
    }
}

/// The value of a chunk holding `records`, seqs `first..`.
pub fn encode<R: AsRef<[u8]>>(first: u64, records: &[R]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + records.iter().map(|r| LEN + r.as_ref().len()).sum::<usize>());
    v.extend_from_slice(&first.to_be_bytes());
    for r in records {
        append(&mut v, r.as_ref());
    }
    v
}

/// Appends one record: its length, then its bytes.
fn append(buf: &mut Vec<u8>, record: &[u8]) {
    // Inputs are at most a log record (8 MiB), outputs a few kilobytes.
    let len = u32::try_from(record.len()).expect("a stored record is under 4 GiB");
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(record);
}

/// A chunk read from the store, its layout checked: its records are
/// borrowed from the value.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub first: u64,
    pub last: u64,
    /// The records, each length-prefixed, exactly `last - first + 1` of them.
    body: &'a [u8],
}

/// A chunk whose header was read, its records not yet walked: each is
/// checked as it is reached ([`Header::record`]), so that a reader going
/// through a chunk of megabytes reads it once, in order.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    stream: &'static str,
    pub first: u64,
    pub last: u64,
}

impl Header {
    /// Where a chunk's records start in its value: after the header.
    pub const RECORDS_AT: usize = HEADER;

    /// Reads the header of the chunk stored under `key` in stream `prefix`.
    pub fn read(prefix: &[u8], key: &[u8], value: &[u8]) -> Result<Self, StoreError> {
        let stream = stream_name(prefix);
        let last = match key.strip_prefix(prefix).map(<[u8; 8]>::try_from) {
            Some(Ok(tail)) => u64::from_be_bytes(tail),
            _ => return Err(corrupt(stream, format!("key {} is not the prefix and a seq", hex::encode(key)))),
        };
        let header = Self { stream, first: 0, last };
        let Some(head) = value.first_chunk::<HEADER>() else {
            return Err(header.bad(format!("is {} bytes, shorter than its {HEADER}-byte header", value.len())));
        };
        let first = u64::from_be_bytes(*head);
        if first == 0 || first > last {
            return Err(header.bad(format!("says it starts at seq {first}")));
        }
        Ok(Self { first, ..header })
    }

    /// The record of `seq` (one of this chunk's), whose length prefix starts
    /// at byte `at` of `value`: where its bytes are, and where the next record
    /// starts. A record that runs past the chunk's end, or bytes left after
    /// its last record, are corrupt.
    pub fn record(&self, value: &[u8], seq: u64, at: usize) -> Result<(std::ops::Range<usize>, usize), StoreError> {
        let rest = value.get(at..).unwrap_or_default();
        let Some((len, tail)) = rest.split_first_chunk::<LEN>() else {
            return Err(
                self.bad(format!("is truncated: it ends before the record of seq {seq} (from seq {})", self.first))
            );
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > tail.len() {
            return Err(
                self.bad(format!("is truncated: the record of seq {seq} is {len} bytes, {} are left", tail.len()))
            );
        }
        let (start, next) = (at + LEN, at + LEN + len);
        if seq == self.last && next < value.len() {
            return Err(self.bad(format!("has {} bytes after the record of its last seq", value.len() - next)));
        }
        Ok((start..next, next))
    }

    fn bad(&self, what: String) -> StoreError {
        corrupt(self.stream, format!("the chunk ending at seq {} {what}", self.last))
    }
}

impl<'a> Chunk<'a> {
    /// Parses the chunk stored under `key` in stream `prefix`: its header,
    /// then every record's length (exactly one record per seq, nothing after).
    pub fn parse(prefix: &[u8], key: &[u8], value: &'a [u8]) -> Result<Self, StoreError> {
        let header = Header::read(prefix, key, value)?;
        let mut at = Header::RECORDS_AT;
        for seq in header.first..=header.last {
            at = header.record(value, seq, at)?.1;
        }
        Ok(Self { first: header.first, last: header.last, body: &value[Header::RECORDS_AT..] })
    }

    /// The records in seq order, with their seqs.
    pub fn records(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let (body, mut at) = (self.body, 0);
        (self.first..=self.last).map(move |seq| {
            let (record, next) = record_span(body, at);
            at = next;
            (seq, &body[record])
        })
    }

    /// The record of `seq`, if this chunk holds it.
    pub fn record(&self, seq: u64) -> Option<&'a [u8]> {
        if seq < self.first || seq > self.last {
            return None;
        }
        self.records().nth((seq - self.first) as usize).map(|(_, r)| r)
    }
}

/// The record whose length prefix starts at byte `at` of a parsed chunk's
/// body: where the record's bytes are, and where the next record starts.
/// The layout was checked by [`Chunk::parse`].
fn record_span(bytes: &[u8], at: usize) -> (std::ops::Range<usize>, usize) {
    let len = u32::from_be_bytes(bytes[at..at + LEN].try_into().expect("4 bytes")) as usize;
    let start = at + LEN;
    (start..start + len, start + len)
}

fn corrupt(stream: &str, message: String) -> StoreError {
    StoreError::Corrupt(format!("{stream}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(last: u64) -> Vec<u8> {
        seq_key(keys::AUDIT, last)
    }

    fn parse_err(last: u64, value: &[u8]) -> String {
        Chunk::parse(keys::AUDIT, &key(last), value).unwrap_err().to_string()
    }

    #[test]
    fn the_writer_starts_a_new_chunk_where_seqs_do_not_follow() {
        // given records 3, 4, 5, then 9, 10 (a gap), pushed into one writer
        let mut w = ChunkWriter::new(keys::ORDERS);
        for seq in [3, 4, 5, 9, 10] {
            w.push(seq, format!("r{seq}").as_bytes());
        }
        let mut batch = WriteBatch::default();
        let mut kept = Vec::new();
        w.finish(&mut batch, Some(&mut kept));
        // then it wrote two chunks, keyed by their last seqs, and kept a copy of each
        let copies: Vec<_> = kept.iter().map(|c| (c.key.clone(), Some(c.value.clone()))).collect();
        assert_eq!(copies, batch.ops);
        assert_eq!(kept.iter().map(|c| c.chunk().unwrap().last).collect::<Vec<_>>(), [5, 10]);
        // and each reads back whole
        let keys: Vec<_> = batch.ops.iter().map(|(k, _)| keys::seq_of(k).unwrap()).collect();
        assert_eq!(keys, [5, 10]);
        let read: Vec<(u64, String)> = batch
            .ops
            .iter()
            .flat_map(|(k, v)| {
                let c = Chunk::parse(keys::ORDERS, k, v.as_ref().unwrap()).unwrap();
                c.records().map(|(s, r)| (s, String::from_utf8(r.to_vec()).unwrap())).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(read, [3, 4, 5, 9, 10].map(|s| (s, format!("r{s}"))));
        // and the writer is empty afterwards
        let mut again = WriteBatch::default();
        w.finish(&mut again, None);
        assert!(again.is_empty());
    }

    #[test]
    fn a_chunk_answers_for_its_own_seqs_only() {
        let v = encode(7, &[b"a".as_slice(), b"", b"ccc"]);
        let c = Chunk::parse(keys::AUDIT, &key(9), &v).unwrap();
        assert_eq!((c.first, c.last), (7, 9));
        assert_eq!(c.record(6), None);
        assert_eq!(c.record(7), Some(&b"a"[..]));
        assert_eq!(c.record(8), Some(&b""[..]));
        assert_eq!(c.record(9), Some(&b"ccc"[..]));
        assert_eq!(c.record(10), None);
    }

    #[test]
    fn a_damaged_chunk_is_corrupt_and_says_how() {
        let good = encode(7, &[b"a".as_slice(), b"bb", b"ccc"]);
        assert!(Chunk::parse(keys::AUDIT, &key(9), &good).is_ok());
        // when the value is shorter than the header
        assert_eq!(
            parse_err(9, &good[..5]),
            "store is corrupt: audit records: the chunk ending at seq 9 is 5 bytes, shorter than its 8-byte header"
        );
        // when it stops inside a record, or before one
        assert_eq!(
            parse_err(9, &good[..good.len() - 1]),
            "store is corrupt: audit records: the chunk ending at seq 9 is truncated: the record of seq 9 is 3 bytes, 2 are left"
        );
        assert_eq!(
            parse_err(9, &good[..good.len() - 4 - 3]),
            "store is corrupt: audit records: the chunk ending at seq 9 is truncated: it ends before the record of seq 9 (from seq 7)"
        );
        // when it holds one record fewer or more than its key says (a gap, or one too many)
        assert!(parse_err(10, &good).contains("it ends before the record of seq 10"));
        assert_eq!(
            parse_err(8, &good),
            "store is corrupt: audit records: the chunk ending at seq 8 has 7 bytes after the record of its last seq"
        );
        // when its first seq is after its last, or 0
        assert!(parse_err(6, &good).ends_with("the chunk ending at seq 6 says it starts at seq 7"));
        assert!(parse_err(9, &encode(0, &[b"x"])).ends_with("says it starts at seq 0"));
        // when the key is not the prefix and a seq
        let err = Chunk::parse(keys::AUDIT, b"a:123", &good).unwrap_err().to_string();
        assert_eq!(err, "store is corrupt: audit records: key 613a313233 is not the prefix and a seq");
    }

    proptest! {
        #[test]
        fn records_round_trip(first in 1u64..u64::MAX / 2, records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..40)) {
            let last = first + records.len() as u64 - 1;
            let v = encode(first, &records);
            let c = Chunk::parse(keys::JOURNAL, &seq_key(keys::JOURNAL, last), &v).unwrap();
            prop_assert_eq!((c.first, c.last), (first, last));
            let back: Vec<(u64, Vec<u8>)> = c.records().map(|(s, r)| (s, r.to_vec())).collect();
            let want: Vec<(u64, Vec<u8>)> = (first..).zip(records.iter().cloned()).collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn any_bytes_parse_or_are_corrupt(last in 0u64..64, value in prop::collection::vec(any::<u8>(), 0..256)) {
            // never a panic: either a chunk whose records all read, or Corrupt
            match Chunk::parse(keys::ORDERS, &seq_key(keys::ORDERS, last), &value) {
                Ok(c) => prop_assert_eq!(c.records().count() as u64, c.last - c.first + 1),
                Err(e) => prop_assert!(matches!(e, StoreError::Corrupt(_))),
            }
        }

        #[test]
        fn a_cut_chunk_is_corrupt(records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..16), 1..10), cut in any::<prop::sample::Index>()) {
            let v = encode(1, &records);
            let at = cut.index(v.len());
            let key = seq_key(keys::ORDERS, records.len() as u64);
            prop_assert!(Chunk::parse(keys::ORDERS, &key, &v[..at]).is_err());
        }
    }
}
