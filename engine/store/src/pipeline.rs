//! A pipelined committer: the writer thread applies and flushes batch N while
//! the caller folds batch N+1. At most one batch is in flight (the bound), and
//! the caller learns a batch is durable only by `wait`, so outputs are still
//! published only after their batch is flushed. A crash loses in-memory work
//! only; it is re-folded from the durable positions, deterministically.

use crate::folder::Prepared;
use crate::{Store, StoreError};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Batches handed to the writer and not yet reported durable.
pub const IN_FLIGHT_MAX: usize = 1;

pub struct Committer {
    tx: Option<SyncSender<Prepared>>,
    done: Receiver<Result<Prepared, StoreError>>,
    in_flight: usize,
    writer: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the writer thread over `store` (a handle to the same store the
    /// folder reads, e.g. a clone of a sled `Db`).
    pub fn new(store: Box<dyn Store + Send>) -> Self {
        let (tx, rx) = sync_channel::<Prepared>(IN_FLIGHT_MAX);
        let (done_tx, done) = sync_channel(IN_FLIGHT_MAX);
        let writer = std::thread::Builder::new()
            .name("overlay-writer".into())
            .spawn(move || {
                for mut prepared in rx {
                    let batch = std::mem::take(&mut prepared.batch);
                    let result = store.commit(batch).map(|()| prepared);
                    if done_tx.send(result).is_err() {
                        break;
                    }
                }
            })
            .expect("spawning the writer thread");
        Self { tx: Some(tx), done, in_flight: 0, writer: Some(writer) }
    }

    /// Waits for the batch in flight, if any: once this returns it is durable.
    pub fn wait(&mut self) -> Result<Option<Prepared>, StoreError> {
        if self.in_flight == 0 {
            return Ok(None);
        }
        self.in_flight -= 1;
        let result = self.done.recv().map_err(|_| StoreError::Io("the writer thread stopped".into()))?;
        result.map(Some)
    }

    /// Hands a batch to the writer. The previous one must have been waited for
    /// (batches are written in order, one at a time).
    pub fn submit(&mut self, prepared: Prepared) -> Result<(), StoreError> {
        assert!(self.in_flight < IN_FLIGHT_MAX, "wait for the batch in flight before submitting another");
        let tx = self.tx.as_ref().expect("the committer is open");
        tx.send(prepared).map_err(|_| StoreError::Io("the writer thread stopped".into()))?;
        self.in_flight += 1;
        Ok(())
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the writer after the batch it holds (if any).
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
