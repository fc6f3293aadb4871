//! One partition: its segment files, their sparse indexes, reading and appending.
//!
//! The in-memory state only ever caches *verified* facts: a byte prefix of a
//! segment that holds complete records with good CRCs and consecutive
//! offsets. Such a prefix never changes on disk (writers only truncate bytes
//! past the last valid record), so the cache cannot go stale; refreshing it
//! means scanning whatever lies beyond the verified prefix of the last
//! segment and probing for the segment that would follow it.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{io_at, LogError, Result};
use crate::format::{decode, encode, encoded_len, Decoded};
use crate::{Record, StoredRecord};

/// Distance in bytes between sparse-index entries: a read starts by scanning
/// at most this much (plus one record) of already-verified data.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 64 * 1024;
/// Reads and scans start with chunks of this size and double them, up to
/// [`MAX_CHUNK`]: short reads stay cheap, long ones take few syscalls.
const FIRST_CHUNK: usize = 64 * 1024;
const MAX_CHUNK: usize = 4 * 1024 * 1024;
/// Appends are written in pieces of about this size.
const WRITE_CHUNK: usize = 1024 * 1024;

pub(crate) fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// Parses `<20 digits>.seg`; `None` for other names.
fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Which partition an error is about.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub topic: Arc<str>,
    pub partition: u32,
}

impl Loc {
    fn corrupt(&self, offset: u64, path: &Path, position: u64, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            path: path.to_path_buf(),
            position,
            reason: reason.into(),
        }
    }
}

/// Sequential chunked reader over `[start, limit)` of a file (or to EOF).
struct ChunkReader {
    file: File,
    buf: Vec<u8>,
    consumed: usize,
    /// File position of `buf[consumed]`.
    pos: u64,
    /// File position just past `buf`.
    read_to: u64,
    limit: Option<u64>,
    eof: bool,
    chunk: usize,
}

impl ChunkReader {
    fn open(path: &Path, start: u64, limit: Option<u64>) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(Self {
            file,
            buf: Vec::new(),
            consumed: 0,
            pos: start,
            read_to: start,
            limit,
            eof: false,
            chunk: FIRST_CHUNK,
        })
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.consumed..]
    }

    fn advance(&mut self, n: usize) {
        self.consumed += n;
        self.pos += n as u64;
    }

    /// Makes at least `needed` bytes available; `false` if the file (or the
    /// limit) ends first.
    fn fill(&mut self, needed: usize) -> io::Result<bool> {
        while self.buf.len() - self.consumed < needed {
            if self.eof {
                return Ok(false);
            }
            if self.consumed > 0 {
                self.buf.drain(..self.consumed);
                self.consumed = 0;
            }
            let mut want = (needed - self.buf.len()).max(self.chunk) as u64;
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
            if let Some(limit) = self.limit {
                want = want.min(limit.saturating_sub(self.read_to));
                if want == 0 {
                    self.eof = true;
                    return Ok(false);
                }
            }
            let want = want as usize;
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let mut filled = 0;
            while filled < want {
                match self.file.read(&mut self.buf[start + filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf.truncate(start + filled);
                        return Err(e);
                    }
                }
            }
            self.buf.truncate(start + filled);
            self.read_to += filled as u64;
            if filled < want {
                self.eof = true;
            }
        }
        Ok(true)
    }

    /// Whether everything from `skip` bytes past the current position to the
    /// end of the file is zero.
    fn rest_is_zero(&mut self, skip: usize) -> io::Result<bool> {
        if !self.fill(skip)? {
            return Ok(false);
        }
        self.advance(skip);
        loop {
            let avail = self.available();
            if avail.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            let n = avail.len();
            self.advance(n);
            if !self.fill(1)? {
                return Ok(true);
            }
        }
    }
}

/// One segment file and what is known about it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    /// Length of the verified prefix: complete records, good CRCs.
    pub valid_len: u64,
    /// Offset of the record following the verified prefix.
    pub next_offset: u64,
    /// File length seen by the last scan; bytes in `valid_len..file_len`
    /// are a torn (partially written) tail.
    pub file_len: u64,
    /// Sparse index: `(offset, position)`, ascending; `(base, 0)` is implicit.
    index: Vec<(u64, u64)>,
    last_indexed_pos: u64,
    /// A later segment exists, so this file never changes again and any
    /// invalid tail is corruption.
    pub sealed: bool,
    /// Sealed and completely scanned.
    pub verified: bool,
}

impl Segment {
    fn new(base: u64, path: PathBuf) -> Self {
        Self {
            base,
            path,
            valid_len: 0,
            next_offset: base,
            file_len: 0,
            index: Vec::new(),
            last_indexed_pos: 0,
            sealed: false,
            verified: false,
        }
    }

    /// Records that a valid record of `len` bytes with `offset` sits at `pos`.
    fn note(&mut self, offset: u64, pos: u64, len: u64) {
        if pos >= self.last_indexed_pos + INDEX_INTERVAL_BYTES {
            self.index.push((offset, pos));
            self.last_indexed_pos = pos;
        }
        self.valid_len = pos + len;
        self.next_offset = offset + 1;
    }

    /// The last indexed `(offset, position)` at or before `offset`.
    fn lookup(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        if i == 0 {
            (self.base, 0)
        } else {
            self.index[i - 1]
        }
    }

    /// Verifies whatever lies past the verified prefix, extending it. An
    /// invalid tail is tolerated (left in `valid_len..file_len`) only if the
    /// segment is not sealed and the tail is torn: an incomplete frame at
    /// EOF, or a bad frame followed by nothing but zero bytes.
    fn scan(&mut self, loc: &Loc) -> Result<()> {
        let path = self.path.clone();
        let stat_len = fs::metadata(&path).map_err(io_at(&path))?.len();
        if stat_len < self.valid_len {
            return Err(loc.corrupt(
                self.next_offset,
                &path,
                stat_len,
                format!("segment shrank to {stat_len} bytes, below its verified length {}", self.valid_len),
            ));
        }
        if stat_len == self.valid_len {
            self.file_len = stat_len;
            return Ok(());
        }
        let mut r = ChunkReader::open(&path, self.valid_len, None).map_err(io_at(&path))?;
        loop {
            let pos = r.pos;
            // `tail_after`: for a bad frame, how many bytes after `pos` must be
            // zero (to EOF) for it to count as a torn tail.
            let (tail_after, reason) = match decode(r.available()) {
                Decoded::Record(f) => {
                    if f.offset != self.next_offset {
                        return Err(loc.corrupt(
                            self.next_offset,
                            &path,
                            pos,
                            format!("record holds offset {}, expected {}", f.offset, self.next_offset),
                        ));
                    }
                    let len = f.len;
                    self.note(self.next_offset, pos, len as u64);
                    r.advance(len);
                    continue;
                }
                Decoded::Incomplete { needed } => {
                    if r.fill(needed).map_err(io_at(&path))? {
                        continue;
                    }
                    if r.available().is_empty() {
                        // Clean end.
                        self.file_len = self.valid_len.max(r.read_to);
                        return Ok(());
                    }
                    (None, format!("incomplete record at end of segment ({} bytes)", r.available().len()))
                }
                Decoded::BadLength { body_len } => (Some(0), format!("impossible record length {body_len}")),
                Decoded::BadCrc { len, stored, computed } => {
                    (Some(len), format!("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"))
                }
                Decoded::Malformed { reason } => {
                    return Err(loc.corrupt(self.next_offset, &path, pos, reason));
                }
            };
            let torn = match tail_after {
                None => true,
                Some(skip) => r.rest_is_zero(skip).map_err(io_at(&path))?,
            };
            if torn && !self.sealed {
                self.file_len = self.valid_len.max(r.read_to).max(stat_len);
                return Ok(());
            }
            let reason = if torn {
                format!("{reason}, at the end of a segment that is followed by another")
            } else {
                format!("{reason}, followed by more data")
            };
            return Err(loc.corrupt(self.next_offset, &path, pos, reason));
        }
    }

    /// Reads records of this segment from `*next` on, within the verified
    /// prefix, into `out`. Returns `true` when a bound was reached.
    fn read_into(&self, loc: &Loc, next: &mut u64, bounds: &mut Bounds, out: &mut Vec<StoredRecord>) -> Result<bool> {
        if *next >= self.next_offset {
            return Ok(false);
        }
        let (mut expected, start) = self.lookup(*next);
        let mut r = ChunkReader::open(&self.path, start, Some(self.valid_len)).map_err(io_at(&self.path))?;
        loop {
            let pos = r.pos;
            if pos >= self.valid_len {
                return Ok(false);
            }
            let frame = match decode(r.available()) {
                Decoded::Record(f) => f,
                Decoded::Incomplete { needed } => {
                    if r.fill(needed).map_err(io_at(&self.path))? {
                        continue;
                    }
                    return Err(loc.corrupt(expected, &self.path, pos, "verified record is now incomplete"));
                }
                Decoded::BadLength { body_len } => {
                    return Err(loc.corrupt(expected, &self.path, pos, format!("impossible record length {body_len}")));
                }
                Decoded::BadCrc { stored, computed, .. } => {
                    return Err(loc.corrupt(
                        expected,
                        &self.path,
                        pos,
                        format!("CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"),
                    ));
                }
                Decoded::Malformed { reason } => return Err(loc.corrupt(expected, &self.path, pos, reason)),
            };
            if frame.offset != expected {
                return Err(loc.corrupt(
                    expected,
                    &self.path,
                    pos,
                    format!("record holds offset {}, expected {expected}", frame.offset),
                ));
            }
            if frame.offset >= *next {
                let size = frame.key.map_or(0, <[u8]>::len) + frame.value.len();
                if !out.is_empty() && bounds.bytes.saturating_add(size) > bounds.max_bytes {
                    return Ok(true);
                }
                out.push(StoredRecord {
                    partition: loc.partition,
                    offset: frame.offset,
                    key: frame.key.map(<[u8]>::to_vec),
                    value: frame.value.to_vec(),
                    timestamp_ms: frame.timestamp_ms,
                });
                bounds.bytes += size;
                *next = frame.offset + 1;
                if out.len() >= bounds.max_records {
                    return Ok(true);
                }
            }
            expected += 1;
            let len = frame.len;
            r.advance(len);
        }
    }
}

/// Limits of one read call.
pub(crate) struct Bounds {
    pub max_records: usize,
    pub max_bytes: usize,
    pub bytes: usize,
}

/// Files and directories an append must fsync before it returns.
#[derive(Default)]
pub(crate) struct PendingSync {
    pub files: Vec<(File, PathBuf)>,
    pub dirs: BTreeSet<PathBuf>,
}

/// The cached view of one partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    loc: Loc,
    dir: PathBuf,
    segments: Vec<Segment>,
}

impl PartitionState {
    pub fn new(topic: Arc<str>, partition: u32, dir: PathBuf) -> Self {
        Self { loc: Loc { topic, partition }, dir, segments: Vec::new() }
    }

    /// Forgets everything cached; the next call re-reads the disk.
    pub fn reset(&mut self) {
        self.segments.clear();
    }

    pub fn start_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base)
    }

    pub fn end_offset(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    fn list(&mut self) -> Result<()> {
        let entries = fs::read_dir(&self.dir).map_err(io_at(&self.dir))?;
        let mut bases = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_at(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.ends_with(".seg") {
                continue;
            }
            match parse_segment_name(name) {
                Some(base) => bases.push(base),
                None => {
                    return Err(LogError::Metadata {
                        path: entry.path(),
                        reason: "segment files are named <first offset, 20 digits>.seg".into(),
                    })
                }
            }
        }
        bases.sort_unstable();
        let n = bases.len();
        self.segments = bases
            .into_iter()
            .enumerate()
            .map(|(i, base)| {
                let mut s = Segment::new(base, segment_path(&self.dir, base));
                s.sealed = i + 1 < n;
                s
            })
            .collect();
        Ok(())
    }

    /// Brings the view of the partition's end up to date: scans new bytes of
    /// the last segment and picks up segments rolled by other writers.
    pub fn refresh(&mut self) -> Result<()> {
        if self.segments.is_empty() {
            self.list()?;
        }
        while let Some(last) = self.segments.last_mut() {
            last.scan(&self.loc)?;
            if last.next_offset == last.base {
                // An empty segment is never rolled.
                return Ok(());
            }
            let next = segment_path(&self.dir, last.next_offset);
            match fs::symlink_metadata(&next) {
                Ok(_) => {
                    // Its writer finished (and fsynced) this segment before
                    // creating the next one: whatever is left must be valid.
                    last.sealed = true;
                    last.scan(&self.loc)?;
                    last.verified = true;
                    let base = last.next_offset;
                    self.segments.push(Segment::new(base, next));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_at(&next)(e)),
            }
        }
        Ok(())
    }

    /// Fully verifies the sealed segment `i` (not the last one) once.
    fn ensure_verified(&mut self, i: usize) -> Result<()> {
        let next_base = self.segments[i + 1].base;
        let seg = &mut self.segments[i];
        if seg.verified {
            return Ok(());
        }
        seg.sealed = true;
        seg.scan(&self.loc)?;
        if seg.next_offset != next_base {
            return Err(self.loc.corrupt(
                seg.next_offset,
                &seg.path,
                seg.valid_len,
                format!("segment ends before offset {} but the next segment starts at {next_base}", seg.next_offset),
            ));
        }
        seg.verified = true;
        Ok(())
    }

    fn out_of_range(&self, offset: u64) -> LogError {
        LogError::OffsetOutOfRange {
            topic: self.loc.topic.to_string(),
            partition: self.loc.partition,
            offset,
            start: self.start_offset(),
            end: self.end_offset(),
        }
    }

    pub fn read(&mut self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        self.refresh()?;
        if from < self.start_offset() || from > self.end_offset() {
            return Err(self.out_of_range(from));
        }
        let mut out = Vec::new();
        if from == self.end_offset() || max_records == 0 {
            return Ok(out);
        }
        let mut bounds = Bounds { max_records, max_bytes, bytes: 0 };
        let mut next = from;
        let mut i = self.segments.partition_point(|s| s.base <= from) - 1;
        while i < self.segments.len() {
            if i + 1 < self.segments.len() {
                self.ensure_verified(i)?;
            }
            if self.segments[i].read_into(&self.loc, &mut next, &mut bounds, &mut out)? {
                break;
            }
            i += 1;
        }
        Ok(out)
    }

    /// Appends `records[i]` for each `i` in `which` (all routed to this
    /// partition), writing each assigned offset to `assigned[i]`. The caller
    /// holds the topic's exclusive file lock. Data is written but not synced:
    /// the files to sync are added to `pending`.
    pub fn append(
        &mut self,
        records: &[Record],
        which: &[usize],
        segment_bytes: u64,
        assigned: &mut [(u32, u64)],
        pending: &mut PendingSync,
    ) -> Result<()> {
        let result = self.append_inner(records, which, segment_bytes, assigned, pending);
        if result.is_err() {
            // The cache may describe bytes that never reached the file.
            self.reset();
        }
        result
    }

    fn append_inner(
        &mut self,
        records: &[Record],
        which: &[usize],
        segment_bytes: u64,
        assigned: &mut [(u32, u64)],
        pending: &mut PendingSync,
    ) -> Result<()> {
        // We hold the lock: whatever we now find past the verified prefix is
        // a torn tail of a crashed or failed writer.
        self.refresh()?;
        if self.segments.is_empty() {
            let path = segment_path(&self.dir, 0);
            OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(io_at(&path))?;
            pending.dirs.insert(self.dir.clone());
            self.segments.push(Segment::new(0, path));
        }
        let mut file = {
            let seg = self.segments.last_mut().expect("at least one segment");
            let path = &seg.path;
            let mut file = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
            if seg.file_len > seg.valid_len {
                file.set_len(seg.valid_len).map_err(io_at(path))?;
                seg.file_len = seg.valid_len;
            }
            file.seek(SeekFrom::Start(seg.valid_len)).map_err(io_at(path))?;
            file
        };
        let mut buf = Vec::with_capacity(WRITE_CHUNK.min(which.len() * 256));
        for &i in which {
            let rec = &records[i];
            let len = encoded_len(rec.key.as_deref(), &rec.value) as u64;
            let seg = self.segments.last_mut().expect("at least one segment");
            if seg.valid_len > 0 && seg.valid_len + len > segment_bytes {
                // Roll: finish and sync this segment before the next one
                // exists, so a sealed segment never has a torn tail.
                flush(&mut file, &mut buf, &seg.path)?;
                file.sync_data().map_err(io_at(&seg.path))?;
                seg.sealed = true;
                seg.verified = true;
                let base = seg.next_offset;
                let path = segment_path(&self.dir, base);
                file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_at(&path))?;
                pending.dirs.insert(self.dir.clone());
                self.segments.push(Segment::new(base, path));
            }
            let seg = self.segments.last_mut().expect("at least one segment");
            let offset = seg.next_offset;
            let pos = seg.valid_len;
            encode(&mut buf, offset, rec.timestamp_ms, rec.key.as_deref(), &rec.value);
            seg.note(offset, pos, len);
            seg.file_len = seg.valid_len;
            assigned[i] = (self.loc.partition, offset);
            if buf.len() >= WRITE_CHUNK {
                flush(&mut file, &mut buf, &seg.path)?;
            }
        }
        let path = self.segments.last().expect("at least one segment").path.clone();
        flush(&mut file, &mut buf, &path)?;
        pending.files.push((file, path));
        Ok(())
    }
}

fn flush(file: &mut File, buf: &mut Vec<u8>, path: &Path) -> Result<()> {
    if !buf.is_empty() {
        file.write_all(buf).map_err(io_at(path))?;
        buf.clear();
    }
    Ok(())
}

/// Makes a directory entry change (create, rename) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_are_twenty_digit_offsets() {
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.seg"), None);
        assert_eq!(segment_path(Path::new("p"), 7), Path::new("p").join("00000000000000000007.seg"));
    }

    #[test]
    fn sparse_index_lookup_finds_the_last_entry_at_or_before() {
        let mut s = Segment::new(100, PathBuf::from("x"));
        let step = INDEX_INTERVAL_BYTES / 4;
        for k in 0..20u64 {
            s.note(100 + k, k * step, step);
        }
        // Entries every 4 records (positions 0 is implicit).
        assert_eq!(s.lookup(100), (100, 0));
        assert_eq!(s.lookup(103), (100, 0));
        assert_eq!(s.lookup(104), (104, 4 * step));
        assert_eq!(s.lookup(107), (104, 4 * step));
        assert_eq!(s.lookup(119), (116, 16 * step));
        assert_eq!(s.next_offset, 120);
        assert_eq!(s.valid_len, 20 * step);
    }
}
