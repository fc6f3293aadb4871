//! [`EmbeddedLog`]: topics, appends, reads and consumer-group positions.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::error::{io_at, LogError, Result};
use crate::format::encoded_len;
use crate::murmur::partition_for_key;
use crate::partition::{sync_dir, PartitionState, PendingSync};
use crate::{Record, StoredRecord, DEFAULT_SEGMENT_BYTES, MAX_KEY_BYTES, MAX_NAME_LEN, MAX_RECORD_BYTES};

const TOPICS_DIR: &str = "topics";
const GROUPS_DIR: &str = "groups";
const META_FILE: &str = "meta.json";
const LOCK_FILE: &str = ".lock";

/// Tunables of an [`EmbeddedLog`] handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is rolled before a record would take it past this many
    /// bytes (a segment holds at least one record, however large).
    /// Default [`DEFAULT_SEGMENT_BYTES`]. Handles on the same directory may
    /// use different values; it only affects where new segments start.
    pub segment_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}

impl LogOptions {
    /// Sets [`LogOptions::segment_bytes`].
    #[must_use]
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        self
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    version: u32,
    partitions: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct GroupFile {
    version: u32,
    /// topic -> partition -> committed offset
    offsets: BTreeMap<String, BTreeMap<u32, u64>>,
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    dir: PathBuf,
    partitions: Vec<Mutex<PartitionState>>,
    /// Serializes this handle's appenders; holds the open `.lock` file.
    writer: Mutex<Option<File>>,
}

impl Topic {
    fn partition(&self, partition: u32) -> Result<&Mutex<PartitionState>> {
        self.partitions.get(partition as usize).ok_or_else(|| LogError::BadPartition {
            topic: self.name.to_string(),
            partition,
            partitions: self.partitions.len() as u32,
        })
    }
}

/// Locks a mutex; a poisoned lock is recovered.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| {
        m.clear_poison();
        poisoned.into_inner()
    })
}

/// Locks a partition; after a panic mid-update the cached view is dropped.
fn lock_partition(m: &Mutex<PartitionState>) -> MutexGuard<'_, PartitionState> {
    m.lock().unwrap_or_else(|poisoned| {
        m.clear_poison();
        let mut guard = poisoned.into_inner();
        guard.reset();
        guard
    })
}

fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidName { kind, name: name.to_string() })
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io_at(path))
}

/// Reads and parses a JSON file; `None` if it does not exist.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LogError::Metadata { path: path.to_path_buf(), reason: e.to_string() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(path)(e)),
    }
}

/// Durably replaces `path`: temp file, fsync, rename, fsync directory.
/// The caller holds a lock that makes the temp name exclusive.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| LogError::Metadata { path: path.to_path_buf(), reason: e.to_string() })?;
    let mut tmp_name = path.file_name().expect("a file path").to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
        f.write_all(&bytes).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_at(path))?;
    sync_dir(path.parent().expect("a file path"))
}

/// Most fsyncs an append runs at once.
const MAX_PARALLEL_SYNCS: usize = 8;

/// fsyncs (data and size) every file. Several files are synced from a few
/// threads at once, which lets the filesystem share journal commits: an
/// append touching four partitions then costs about one fsync, not four.
fn sync_files(files: &[(File, PathBuf)]) -> Result<()> {
    let sync = |(file, path): &(File, PathBuf)| file.sync_data().map_err(io_at(path));
    if files.len() <= 1 {
        return files.iter().try_for_each(sync);
    }
    let workers = files.len().min(MAX_PARALLEL_SYNCS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| scope.spawn(move || files.iter().skip(w).step_by(workers).try_for_each(sync)))
            .collect();
        // Join all before reporting, so no sync is still running on return.
        let results: Vec<Result<()>> =
            handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect();
        results.into_iter().collect()
    })
}

/// The embedded, broker-less event log. See the crate documentation.
///
/// A handle is `Send + Sync`; share it with an `Arc`. Any number of handles,
/// in any number of processes, may use the same directory at once.
#[derive(Debug)]
pub struct EmbeddedLog {
    root: PathBuf,
    topics_dir: PathBuf,
    groups_dir: PathBuf,
    options: LogOptions,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
}

impl EmbeddedLog {
    /// Opens (creating if needed) a log rooted at `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Opens (creating if needed) a log rooted at `dir`.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<Self> {
        if options.segment_bytes == 0 {
            return Err(LogError::InvalidOptions("segment_bytes must be at least 1".into()));
        }
        let topics_dir = dir.join(TOPICS_DIR);
        let groups_dir = dir.join(GROUPS_DIR);
        fs::create_dir_all(&topics_dir).map_err(io_at(&topics_dir))?;
        fs::create_dir_all(&groups_dir).map_err(io_at(&groups_dir))?;
        Ok(Self { root: dir.to_path_buf(), topics_dir, groups_dir, options, topics: Mutex::new(HashMap::new()) })
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The options of this handle.
    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.topics_dir.join(name)
    }

    fn load_topic(&self, name: &str, partitions: u32) -> Arc<Topic> {
        let dir = self.topic_dir(name);
        let shared_name: Arc<str> = Arc::from(name);
        let topic = Arc::new(Topic {
            partitions: (0..partitions)
                .map(|p| Mutex::new(PartitionState::new(shared_name.clone(), p, dir.join(p.to_string()))))
                .collect(),
            name: shared_name,
            dir,
            writer: Mutex::new(None),
        });
        lock(&self.topics).entry(name.to_string()).or_insert(topic).clone()
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        validate_name("topic", name)?;
        if let Some(t) = lock(&self.topics).get(name) {
            return Ok(t.clone());
        }
        let meta_path = self.topic_dir(name).join(META_FILE);
        let meta: TopicMeta = read_json(&meta_path)?.ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        if meta.partitions == 0 {
            return Err(LogError::Metadata { path: meta_path, reason: "zero partitions".into() });
        }
        Ok(self.load_topic(name, meta.partitions))
    }

    /// Creates `name` with `partitions` partitions. Idempotent when the topic
    /// exists with the same count; [`LogError::PartitionCountMismatch`]
    /// otherwise. The partition count never changes afterwards.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        validate_name("topic", name)?;
        if partitions == 0 {
            return Err(LogError::NoPartitions { topic: name.to_string() });
        }
        let dir = self.topic_dir(name);
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = open_lock_file(&lock_path)?;
        lock_file.lock().map_err(io_at(&lock_path))?;
        let meta_path = dir.join(META_FILE);
        match read_json::<TopicMeta>(&meta_path)? {
            Some(meta) if meta.partitions == partitions => {}
            Some(meta) => {
                return Err(LogError::PartitionCountMismatch {
                    topic: name.to_string(),
                    existing: meta.partitions,
                    requested: partitions,
                })
            }
            None => {
                for p in 0..partitions {
                    let pdir = dir.join(p.to_string());
                    fs::create_dir_all(&pdir).map_err(io_at(&pdir))?;
                }
                sync_dir(&dir)?;
                // meta.json appearing is the commit point of the creation.
                write_json_atomic(&meta_path, &TopicMeta { version: 1, partitions })?;
                sync_dir(&self.topics_dir)?;
            }
        }
        drop(lock_file);
        self.load_topic(name, partitions);
        Ok(())
    }

    /// All created topics, sorted by name.
    pub fn topics(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = fs::read_dir(&self.topics_dir).map_err(io_at(&self.topics_dir))?;
        for entry in entries {
            let entry = entry.map_err(io_at(&self.topics_dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if validate_name("topic", &name).is_ok() && entry.path().join(META_FILE).is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The partition count of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    /// Appends `records` to `topic` and returns each record's
    /// `(partition, offset)`, in input order.
    ///
    /// Partition: `record.partition` if set; else Kafka's default for the
    /// key ([`partition_for_key`]); else 0. All records are checked before
    /// anything is written. The call holds the topic's exclusive file lock,
    /// writes everything, and fsyncs each touched segment once at the end.
    pub fn append(&self, topic: &str, records: &[Record]) -> Result<Vec<(u32, u64)>> {
        let t = self.topic(topic)?;
        let partitions = t.partitions.len() as u32;
        let mut routes: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (index, rec) in records.iter().enumerate() {
            let key_len = rec.key.as_ref().map_or(0, Vec::len);
            if key_len > MAX_KEY_BYTES {
                return Err(LogError::KeyTooLarge {
                    topic: topic.to_string(),
                    index,
                    size: key_len,
                    max: MAX_KEY_BYTES,
                });
            }
            let size = encoded_len(rec.key.as_deref(), &rec.value);
            if size > MAX_RECORD_BYTES {
                return Err(LogError::RecordTooLarge { topic: topic.to_string(), index, size, max: MAX_RECORD_BYTES });
            }
            let partition = match (rec.partition, &rec.key) {
                (Some(p), _) => {
                    t.partition(p)?;
                    p
                }
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => 0,
            };
            routes.entry(partition).or_default().push(index);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }

        let mut writer = lock(&t.writer);
        let lock_path = t.dir.join(LOCK_FILE);
        if writer.is_none() {
            *writer = Some(open_lock_file(&lock_path)?);
        }
        let lock_file = writer.as_ref().expect("opened above");
        lock_file.lock().map_err(io_at(&lock_path))?;
        let result = (|| {
            let mut assigned = vec![(0u32, 0u64); records.len()];
            let mut pending = PendingSync::default();
            for (&p, which) in &routes {
                let mut state = lock_partition(&t.partitions[p as usize]);
                state.append(records, which, self.options.segment_bytes, &mut assigned, &mut pending)?;
            }
            sync_files(&pending.files)?;
            for dir in &pending.dirs {
                sync_dir(dir)?;
            }
            Ok(assigned)
        })();
        let unlocked = lock_file.unlock().map_err(io_at(&lock_path));
        if unlocked.is_err() {
            // Closing the file releases the lock for sure.
            *writer = None;
        }
        let assigned = result?;
        unlocked?;
        Ok(assigned)
    }

    /// Runs `f` on an up-to-date partition view. A corruption report is
    /// double-checked once under a shared file lock (excluding writers), so a
    /// race with a writer repairing a torn tail is never reported as damage.
    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl Fn(&mut PartitionState) -> Result<T>,
    ) -> Result<T> {
        let t = self.topic(topic)?;
        let m = t.partition(partition)?;
        {
            let mut state = lock_partition(m);
            match f(&mut state) {
                Err(LogError::Corrupt { .. }) => state.reset(),
                other => return other,
            }
        }
        // Lock order everywhere: file lock, then partition mutex.
        let lock_path = t.dir.join(LOCK_FILE);
        let lock_file = open_lock_file(&lock_path)?;
        lock_file.lock_shared().map_err(io_at(&lock_path))?;
        let mut state = lock_partition(m);
        state.reset();
        let result = f(&mut state);
        if result.is_err() {
            state.reset();
        }
        result
    }

    /// Reads up to `max_records` records of `topic`/`partition` starting at
    /// `from_offset`, stopping before the record that would take the sum of
    /// key and value lengths past `max_bytes` — but always returning at least
    /// one record if one is available. Returns an empty vector at the end of
    /// the partition; [`LogError::OffsetOutOfRange`] outside
    /// `start_offset..=end_offset`.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.with_partition(topic, partition, |state| state.read(from_offset, max_records, max_bytes))
    }

    /// The offset the next record of the partition will get (the high
    /// watermark): every offset below it is readable.
    pub fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, |state| {
            state.refresh()?;
            Ok(state.end_offset())
        })
    }

    /// The first readable offset of the partition (0: nothing is ever deleted).
    pub fn start_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, |state| {
            state.refresh()?;
            Ok(state.start_offset())
        })
    }

    fn group_path(&self, group: &str) -> PathBuf {
        self.groups_dir.join(format!("{group}.json"))
    }

    /// Durably records `offset` (the next offset the group will read) as
    /// `group`'s position in `topic`/`partition`. Advisory: nothing checks
    /// it against the partition's offsets.
    pub fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        validate_name("group", group)?;
        self.topic(topic)?.partition(partition)?;
        let lock_path = self.groups_dir.join(format!("{group}.lock"));
        let lock_file = open_lock_file(&lock_path)?;
        lock_file.lock().map_err(io_at(&lock_path))?;
        let path = self.group_path(group);
        let mut file: GroupFile = read_json(&path)?.unwrap_or(GroupFile { version: 1, offsets: BTreeMap::new() });
        file.offsets.entry(topic.to_string()).or_default().insert(partition, offset);
        write_json_atomic(&path, &file)
    }

    /// `group`'s committed position in `topic`/`partition`, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<Option<u64>> {
        validate_name("group", group)?;
        self.topic(topic)?.partition(partition)?;
        let file: Option<GroupFile> = read_json(&self.group_path(group))?;
        Ok(file.and_then(|f| f.offsets.get(topic).and_then(|p| p.get(&partition)).copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kafka_charset() {
        for ok in ["orders", "a.b-c_D9", "x", &"n".repeat(MAX_NAME_LEN)] {
            assert!(validate_name("topic", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"n".repeat(MAX_NAME_LEN + 1)] {
            assert!(matches!(validate_name("topic", bad), Err(LogError::InvalidName { .. })), "{bad}");
        }
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<EmbeddedLog>();
    }
}
