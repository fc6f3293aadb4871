use crate::{Entry, Records, SharedRecords, Store, StoreError, Value, WriteBatch};
use std::path::Path;

/// sled 0.34. `commit` is `apply_batch` (atomic) then `flush` (durable).
/// A store is one tree: the database's default one, or a named tree of its
/// own (a shard of the Kafka engine, one per household partition).
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

/// How long [`SledStore::open`] waits for a lock its own process is releasing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// sled locks its directory, and the last handle of a store dropped in
    /// this process releases the lock only when sled's background flusher
    /// has finished with it, shortly after. So a reopen that finds the lock
    /// held tries again for up to [`LOCK_WAIT`] before it reports the
    /// directory as in use (by another engine, most likely).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        loop {
            let opened =
                sled::Config::new().path(dir).cache_capacity(256 * 1024 * 1024).mode(sled::Mode::HighThroughput).open();
            match opened {
                Ok(db) => {
                    let tree = sled::Tree::clone(&db);
                    return Ok(Self { db, tree });
                }
                // sled reports it as an `Other` I/O error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock") && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(StoreError::Io(format!("opening the store at {}: {e}", dir.display()))),
            }
        }
    }

    /// Another handle to the same store (for a writer thread).
    pub fn handle(&self) -> Self {
        Self { db: self.db.clone(), tree: self.tree.clone() }
    }

    /// The store kept in the named tree of the same database.
    pub fn tree(&self, name: &str) -> Result<Self, StoreError> {
        Ok(Self { db: self.db.clone(), tree: self.db.open_tree(name).map_err(io)? })
    }

    /// Empties the named tree (a shard whose state is rebuilt from the journal).
    pub fn drop_tree(&self, name: &str) -> Result<(), StoreError> {
        self.db.drop_tree(name).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    /// The raw sled handle, for benchmarks that measure sled itself.
    pub fn raw(&self) -> &sled::Db {
        &self.db
    }
}

impl Store for SledStore {
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>) -> Records<'_> {
        Box::new(self.scan_shared(prefix, start).map(|r| r.map(|(k, v)| (k, v.to_vec()))))
    }

    fn scan_shared(&self, prefix: &[u8], start: Option<&[u8]>) -> SharedRecords<'_> {
        let prefix = prefix.to_vec();
        let iter = match start {
            Some(s) => self.tree.range(s.to_vec()..),
            None => self.tree.range(prefix.clone()..),
        };
        Box::new(
            iter.take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
                .map(|r| r.map(|(k, v)| (k.to_vec(), Value::Shared(v))).map_err(io)),
        )
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(self.tree.scan_prefix(prefix).next_back().transpose().map_err(io)?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }
}
