//! Reading on a thread of its own: a store's records (the journal, decoded;
//! an output stream) are read in batches by a scoped thread and handed over
//! through a bounded channel, so that reading overlaps the fold. The order is
//! the store's; an error ends the stream where it happened.

use crate::journal::{Entry, Journal, Records};
use crate::ReplayError;
use overlay_store::Store;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::Scope;

/// Records per batch handed over.
const BATCH: usize = 1024;
/// Batches read ahead at most.
const AHEAD: usize = 8;

/// How a replay reads the recorded store: on the folding thread, or on
/// threads of their own (a store that can be shared between threads).
#[derive(Clone, Copy)]
pub enum Reader<'a> {
    Inline(&'a dyn Store),
    Threaded(&'a (dyn Store + Sync)),
}

impl<'a> Reader<'a> {
    pub fn store(&self) -> &'a dyn Store {
        match *self {
            Reader::Inline(s) => s,
            Reader::Threaded(s) => s,
        }
    }

    /// The journal's entries after `after`, read (and decoded) on a thread of
    /// `scope` when threaded.
    pub fn entries<'scope, 'env>(&self, scope: &'scope Scope<'scope, 'env>, after: u64) -> Box<dyn Entries + 'a>
    where
        'a: 'scope,
    {
        match *self {
            Reader::Inline(s) => match Journal::open(s) {
                Ok(j) => Box::new(Inline::new(j.entries(after))),
                Err(e) => Box::new(Inline::failed(e)),
            },
            Reader::Threaded(s) => Box::new(spawn(scope, move || {
                let entries: Box<dyn Iterator<Item = Result<Entry, ReplayError>>> = match Journal::open(s) {
                    Ok(j) => Box::new(j.entries(after)),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
                entries
            })),
        }
    }
}

/// Items handed over in batches from a reading thread.
pub struct Batches<T> {
    rx: Receiver<Result<Vec<T>, ReplayError>>,
    current: std::vec::IntoIter<T>,
    /// Items used, handed back to the reading thread to be freed there (an
    /// allocator frees memory fastest on the thread that allocated it).
    used: Vec<T>,
    back: SyncSender<Vec<T>>,
}

impl<T> Batches<T> {
    /// Hands an item back to be freed on the reading thread.
    pub fn recycle(&mut self, item: T) {
        self.used.push(item);
        if self.used.len() == BATCH {
            // If the reader is gone or behind, the batch is freed here.
            let _ = self.back.try_send(std::mem::replace(&mut self.used, Vec::with_capacity(BATCH)));
        }
    }
}

/// Journal entries, which the folding thread hands back once used.
pub trait Entries {
    fn next_entry(&mut self) -> Option<Result<Entry, ReplayError>>;
    /// Done with `e`.
    fn used(&mut self, e: Entry) {
        drop(e);
    }
}

/// Entries read on the folding thread, each into the buffers of the one
/// used before it.
pub struct Inline<'a> {
    records: Option<Records<'a>>,
    /// Why the journal would not open, until it is reported.
    failed: Option<ReplayError>,
    spare: Option<Entry>,
}

impl<'a> Inline<'a> {
    pub fn new(records: Records<'a>) -> Self {
        Self { records: Some(records), failed: None, spare: None }
    }

    /// No entries, only `e`.
    pub fn failed(e: ReplayError) -> Self {
        Self { records: None, failed: Some(e), spare: None }
    }
}

impl Entries for Inline<'_> {
    fn next_entry(&mut self) -> Option<Result<Entry, ReplayError>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        self.records.as_mut()?.next_into(self.spare.take())
    }

    fn used(&mut self, e: Entry) {
        self.spare = Some(e);
    }
}

impl Entries for Batches<Entry> {
    fn next_entry(&mut self) -> Option<Result<Entry, ReplayError>> {
        self.next()
    }
    fn used(&mut self, e: Entry) {
        self.recycle(e);
    }
}

impl<T> Iterator for Batches<T> {
    type Item = Result<T, ReplayError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.current.next() {
                return Some(Ok(x));
            }
            match self.rx.recv() {
                Ok(Ok(batch)) => self.current = batch.into_iter(),
                Ok(Err(e)) => return Some(Err(e)),
                // The reader is done.
                Err(_) => return None,
            }
        }
    }
}

/// Runs the iterator `make` returns on a thread of `scope`, in batches. The
/// thread stops when the iterator ends or fails, or when the [`Batches`] is
/// dropped.
pub fn spawn<'scope, 'env, T, I, F>(scope: &'scope Scope<'scope, 'env>, make: F) -> Batches<T>
where
    T: Send + 'scope,
    I: Iterator<Item = Result<T, ReplayError>>,
    F: FnOnce() -> I + Send + 'scope,
{
    let (tx, rx) = sync_channel(AHEAD);
    let (back, returned) = sync_channel::<Vec<T>>(AHEAD);
    scope.spawn(move || {
        // The next batch: a used one handed back (its items freed here), or a new one.
        let next_batch = || match returned.try_recv() {
            Ok(mut used) => {
                used.clear();
                used
            }
            Err(_) => Vec::with_capacity(BATCH),
        };
        let mut batch = next_batch();
        for r in make() {
            match r {
                Ok(x) => {
                    batch.push(x);
                    if batch.len() == BATCH && tx.send(Ok(std::mem::replace(&mut batch, next_batch()))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(Ok(batch));
        }
    });
    Batches { rx, current: Vec::new().into_iter(), used: Vec::with_capacity(BATCH), back }
}
