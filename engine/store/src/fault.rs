//! A store that fails on purpose, for the deterministic simulation.
//!
//! [`SimDisk`] is what a process would find on disk: the records of every
//! batch that was made durable. Each [`FaultyStore`] handle on it (the
//! folder's and the writer thread's) commits through one seeded fault plan,
//! so, for a given seed and the same sequence of commits, the same faults
//! land at the same commits:
//!
//! - **crash before the write**: the process dies; the batch is lost;
//! - **crash after the write**: the batch is durable, then the process dies
//!   before it hears so;
//! - **write error**: the write fails and nothing of it lands (an `EIO`);
//! - **ambiguous write**: the batch lands but the call reports failure (an
//!   `fsync` error after the write reached the disk);
//! - **disk full**: this commit and the next few attempts fail, nothing lands,
//!   until space comes back.
//!
//! After a crash every operation fails until [`SimDisk::restart`] (the
//! process is gone). Commits are the only operations that draw from the plan:
//! the engine's commits are totally ordered (a batch, then its publish
//! cursor), while reads may run on two threads at once, so drawing on reads
//! would make a seed's faults depend on thread timing.

use crate::{Entry, Records, Store, StoreError, WriteBatch};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// How often each fault strikes a commit, in parts per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultRates {
    pub crash_before_write: u32,
    pub crash_after_write: u32,
    pub write_error: u32,
    pub ambiguous_write: u32,
    pub disk_full: u32,
}

impl FaultRates {
    /// No faults: the reference run.
    pub const NONE: Self =
        Self { crash_before_write: 0, crash_after_write: 0, write_error: 0, ambiguous_write: 0, disk_full: 0 };

    fn total(&self) -> u64 {
        [self.crash_before_write, self.crash_after_write, self.write_error, self.ambiguous_write, self.disk_full]
            .iter()
            .map(|&r| u64::from(r))
            .sum()
    }
}

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    CrashBeforeWrite,
    CrashAfterWrite,
    WriteError,
    AmbiguousWrite,
    /// The disk is full for this and the next `further` commit attempts.
    DiskFull {
        further: u32,
    },
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::CrashBeforeWrite => "crash_before_write",
            Fault::CrashAfterWrite => "crash_after_write",
            Fault::WriteError => "write_error",
            Fault::AmbiguousWrite => "ambiguous_write",
            Fault::DiskFull { .. } => "disk_full",
        }
    }

    /// Whether the process died of it.
    pub fn is_crash(&self) -> bool {
        matches!(self, Fault::CrashBeforeWrite | Fault::CrashAfterWrite)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::DiskFull { further } => write!(f, "disk_full (+{further} attempts)"),
            other => f.write_str(other.name()),
        }
    }
}

/// A fault and the commit attempt (counted from 1 over the whole run) it struck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Struck {
    pub commit: u64,
    pub fault: Fault,
}

struct Disk {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    rates: FaultRates,
    rng: u64,
    /// The process is down: everything fails until a restart.
    down: bool,
    /// Commit attempts that will still find the disk full.
    full_for: u32,
    commits: u64,
    struck: Vec<Struck>,
    /// Failures injected since the last restart (an engine error with none
    /// is a bug).
    since_restart: u64,
}

impl Disk {
    /// SplitMix64: small, and the same on every platform.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw(&mut self) -> Option<Fault> {
        if self.rates.total() == 0 {
            return None;
        }
        let r = self.next() % 1_000_000;
        let mut edge = 0u64;
        let r_ = &self.rates;
        let table = [
            (r_.crash_before_write, Fault::CrashBeforeWrite),
            (r_.crash_after_write, Fault::CrashAfterWrite),
            (r_.write_error, Fault::WriteError),
            (r_.ambiguous_write, Fault::AmbiguousWrite),
            (r_.disk_full, Fault::DiskFull { further: 0 }),
        ];
        for (rate, fault) in table {
            edge += u64::from(rate);
            if r < edge {
                return Some(match fault {
                    Fault::DiskFull { .. } => Fault::DiskFull { further: (self.next() % 4) as u32 },
                    f => f,
                });
            }
        }
        None
    }

    fn apply(&mut self, batch: WriteBatch) {
        for (k, v) in batch.ops {
            match v {
                Some(v) => self.records.insert(k, v),
                None => self.records.remove(&k),
            };
        }
    }

    fn strike(&mut self, fault: Fault) {
        self.struck.push(Struck { commit: self.commits, fault });
        self.since_restart += 1;
    }

    fn check_up(&self) -> Result<(), StoreError> {
        if self.down {
            return Err(StoreError::Io("the process has crashed (simulated)".into()));
        }
        Ok(())
    }
}

/// The durable records and the fault plan shared by every handle.
#[derive(Clone)]
pub struct SimDisk {
    disk: Arc<Mutex<Disk>>,
}

impl SimDisk {
    pub fn new(seed: u64, rates: FaultRates) -> Self {
        let disk = Disk {
            records: BTreeMap::new(),
            rates,
            rng: seed,
            down: false,
            full_for: 0,
            commits: 0,
            struck: Vec::new(),
            since_restart: 0,
        };
        Self { disk: Arc::new(Mutex::new(disk)) }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock leaves the records as they were
        // (every change is one insert or remove): carry on with them.
        self.disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A store handle for one user (the folder, the writer thread).
    pub fn handle(&self) -> FaultyStore {
        FaultyStore { disk: self.clone() }
    }

    /// A new process starts on the disk as it is.
    pub fn restart(&self) {
        let mut d = self.lock();
        d.down = false;
        d.since_restart = 0;
    }

    /// Stops injecting faults (what is in progress, a full disk, stays).
    pub fn calm(&self) {
        self.lock().rates = FaultRates::NONE;
    }

    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    pub fn faults_since_restart(&self) -> u64 {
        self.lock().since_restart
    }

    /// Every fault injected so far, in order.
    pub fn struck(&self) -> Vec<Struck> {
        self.lock().struck.clone()
    }

    /// Commit attempts so far.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }
}

/// One handle on a [`SimDisk`].
pub struct FaultyStore {
    disk: SimDisk,
}

impl Store for FaultyStore {
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut d = self.disk.lock();
        d.check_up()?;
        d.commits += 1;
        if d.full_for > 0 {
            d.full_for -= 1;
            d.since_restart += 1;
            return Err(StoreError::Io("no space left on device (simulated; still full)".into()));
        }
        match d.draw() {
            None => {
                d.apply(batch);
                Ok(())
            }
            Some(fault) => {
                d.strike(fault);
                match fault {
                    Fault::CrashBeforeWrite => {
                        d.down = true;
                        Err(StoreError::Io("crashed before the write (simulated)".into()))
                    }
                    Fault::CrashAfterWrite => {
                        d.apply(batch);
                        d.down = true;
                        Err(StoreError::Io("crashed after the write (simulated)".into()))
                    }
                    Fault::WriteError => Err(StoreError::Io("input/output error (simulated)".into())),
                    Fault::AmbiguousWrite => {
                        d.apply(batch);
                        Err(StoreError::Io("fsync failed after the write (simulated)".into()))
                    }
                    Fault::DiskFull { further } => {
                        d.full_for = further;
                        Err(StoreError::Io("no space left on device (simulated)".into()))
                    }
                }
            }
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let d = self.disk.lock();
        d.check_up()?;
        Ok(d.records.get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>) -> Records<'_> {
        let d = self.disk.lock();
        if let Err(e) = d.check_up() {
            return Box::new(std::iter::once(Err(e)));
        }
        Box::new(crate::mem::range_of(&d.records, prefix, start).into_iter().map(Ok))
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let d = self.disk.lock();
        d.check_up()?;
        Ok(crate::mem::last_of(&d.records, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> WriteBatch {
        let mut b = WriteBatch::default();
        b.put(k.as_bytes().to_vec(), b"v".to_vec());
        b
    }

    fn keys(disk: &SimDisk) -> Vec<String> {
        disk.lock().records.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect()
    }

    #[test]
    fn every_fault_lands_as_documented() {
        for (rates, fault, lands, down) in [
            (FaultRates { crash_before_write: 1_000_000, ..FaultRates::NONE }, "crash_before_write", false, true),
            (FaultRates { crash_after_write: 1_000_000, ..FaultRates::NONE }, "crash_after_write", true, true),
            (FaultRates { write_error: 1_000_000, ..FaultRates::NONE }, "write_error", false, false),
            (FaultRates { ambiguous_write: 1_000_000, ..FaultRates::NONE }, "ambiguous_write", true, false),
            (FaultRates { disk_full: 1_000_000, ..FaultRates::NONE }, "disk_full", false, false),
        ] {
            // given a disk where every commit draws that fault
            let disk = SimDisk::new(7, rates);
            let store = disk.handle();
            // when a batch is committed
            let result = store.commit(put("a"));
            // then the commit fails, the batch lands or not, the process is down or not
            assert!(result.is_err(), "{fault}");
            assert_eq!(keys(&disk) == ["a"], lands, "{fault}");
            assert_eq!(disk.is_down(), down, "{fault}");
            assert_eq!(disk.struck().iter().map(|s| s.fault.name()).collect::<Vec<_>>(), [fault]);
            assert_eq!(store.get(b"a").is_err(), down, "{fault}: reads fail while down");
            // and after a restart, with faults calmed, commits land again
            disk.restart();
            disk.calm();
            let mut tries = 0;
            while store.commit(put("b")).is_err() {
                tries += 1;
                assert!(tries <= 4, "{fault}: a full disk frees within 4 attempts");
            }
            assert!(keys(&disk).contains(&"b".to_string()), "{fault}");
        }
    }

    #[test]
    fn a_seed_strikes_the_same_commits_every_time() {
        let rates = FaultRates { write_error: 100_000, disk_full: 50_000, ..FaultRates::NONE };
        let run = |seed| {
            let disk = SimDisk::new(seed, rates);
            let store = disk.handle();
            for i in 0..500 {
                let _ = store.commit(put(&format!("k{i:03}")));
            }
            (disk.struck(), keys(&disk))
        };
        let (a, ka) = run(11);
        assert_eq!((a.clone(), ka.clone()), run(11));
        assert_ne!(a, run(12).0);
        // about 15% of 500 commits draw a fault (and a full disk fails a few more)
        assert!((40..=110).contains(&a.len()), "{}", a.len());
        assert!(ka.len() < 500 && ka.len() > 300, "{}", ka.len());
    }
}
