//! Threads kept for the engine's life, to fold shards on.
//!
//! A fold round is short (a batch of a shard, often less, after every
//! fetch), and a thread started for each round (a scoped thread) begins
//! with an empty allocator heap, whose pages the kernel must fault in, and
//! hands them back when it ends. Threads that stay keep theirs from one
//! round to the next, and start nothing per round.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// `n` threads named `name`; none for `n` ≤ 1 (callers then work inline).
    pub fn new(n: usize, name: &str) -> Self {
        if n <= 1 {
            return Self { jobs: None, threads: Vec::new() };
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..n {
            let rx = rx.clone();
            let started = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || loop {
                // The lock is held only to take a job, not to run it.
                let Ok(job) = rx.lock().map(|jobs| jobs.recv()) else { break };
                let Ok(job) = job else { break };
                job();
            });
            match started {
                Ok(t) => threads.push(t),
                // Fewer threads than asked (the system refused one): the
                // ones started serve; with none, callers work inline.
                Err(e) => tracing::warn!(error = %e, "starting a {name} thread"),
            }
        }
        if threads.is_empty() {
            return Self { jobs: None, threads };
        }
        Self { jobs: Some(tx), threads }
    }

    /// How many threads there are (0: callers work inline).
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// `f` of each item, on the threads, in the items' order. A panic in
    /// `f` is raised again here, on the caller's thread, as a scoped thread's
    /// would be.
    pub fn map<T, R, F>(&self, items: Vec<T>, f: F) -> Vec<R>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> R + Send + Sync + 'static,
    {
        let Some(jobs) = &self.jobs else {
            return items.into_iter().map(f).collect();
        };
        let f = Arc::new(f);
        let n = items.len();
        let (tx, rx) = mpsc::channel();
        for (i, item) in items.into_iter().enumerate() {
            let (f, tx) = (f.clone(), tx.clone());
            let job: Job = Box::new(move || {
                let r = catch_unwind(AssertUnwindSafe(|| f(item)));
                let _ = tx.send((i, r));
            });
            if let Err(mpsc::SendError(job)) = jobs.send(job) {
                // Every thread has ended (each ends only when the pool is
                // dropped, so this is a thread that died): run it here.
                job();
            }
        }
        drop(tx);
        let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for (i, r) in rx.iter().take(n) {
            match r {
                Ok(r) => out[i] = Some(r),
                Err(panic) => resume_unwind(panic),
            }
        }
        out.into_iter().map(|r| r.expect("every job sends its result once")).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Workers;

    #[test]
    fn results_come_back_in_the_items_order_from_threads_that_stay() {
        let w = Workers::new(2, "test-worker");
        assert_eq!(w.len(), 2);
        let mut threads = std::collections::BTreeSet::new();
        for round in 0..20u64 {
            let got = w.map((0..8u64).collect(), move |i| {
                std::thread::sleep(std::time::Duration::from_micros((8 - i) * 50));
                (i * round, std::thread::current().name().map(str::to_string))
            });
            assert_eq!(got.iter().map(|(x, _)| *x).collect::<Vec<_>>(), (0..8).map(|i| i * round).collect::<Vec<_>>());
            threads.extend(got.into_iter().map(|(_, name)| name.expect("a named thread")));
        }
        assert_eq!(threads.into_iter().collect::<Vec<_>>(), ["test-worker-0", "test-worker-1"]);
    }

    #[test]
    fn one_thread_means_inline() {
        let w = Workers::new(1, "test-worker");
        assert_eq!(w.len(), 0);
        let here = std::thread::current().id();
        assert!(w.map(vec![1, 2], move |_| std::thread::current().id() == here).into_iter().all(|x| x));
    }

    #[test]
    fn a_panic_in_a_job_is_raised_on_the_caller() {
        let w = Workers::new(2, "test-worker");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.map(vec![1, 2, 3], |i| if i == 2 { panic!("job {i}") } else { i })
        }));
        assert!(r.is_err());
        // The threads still serve.
        assert_eq!(w.map(vec![4, 5], |i| i + 1), vec![5, 6]);
    }
}
