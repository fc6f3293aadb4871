//! The lag poller: every `ops.lag_poll_ms`, the end offset of each input
//! partition the engine holds a position in (the embedded log's end, or the
//! Kafka high watermark), and the store's size on disk. A thread of its own,
//! so that a slow broker never holds the engine up.

use crate::metrics::{Metrics, Partition};
use overlay_log::EmbeddedLog;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the end offsets come from.
pub enum Ends {
    /// The embedded log (its own handle: reads are safe beside the engine's).
    Embedded(EmbeddedLog),
    /// The Kafka brokers' high watermarks.
    Kafka(overlay_kafka::watermarks::Watermarks),
}

impl Ends {
    fn ends(&self, partitions: &[Partition]) -> Result<BTreeMap<Partition, u64>, String> {
        match self {
            Ends::Embedded(log) => partitions
                .iter()
                .map(|(t, p)| log.end_offset(t, *p).map(|e| ((t.clone(), *p), e)).map_err(|e| e.to_string()))
                .collect(),
            Ends::Kafka(w) => w.highs(partitions).map_err(|e| format!("{e:#}")),
        }
    }
}

/// Bytes of every file under `dir` (0 when it does not exist).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// One poll: the ends of the partitions the engine holds a position in.
pub fn poll_once(metrics: &Metrics, ends: &Ends, store_dir: &Path) {
    let asked = metrics.partitions();
    let result = if asked.is_empty() { Ok(BTreeMap::new()) } else { ends.ends(&asked) };
    if let Err(e) = &result {
        tracing::warn!(error = %e, "polling the input partitions' end offsets");
    }
    metrics.polled(&asked, result, dir_bytes(store_dir));
}

/// Polls every `every` until `stop` is set.
pub fn spawn(
    metrics: Arc<Metrics>,
    ends: Ends,
    store_dir: PathBuf,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("overlay-lag-poll".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            poll_once(&metrics, &ends, &store_dir);
            // Short naps, so that a stop is seen quickly.
            let mut left = every;
            while !left.is_zero() && !stop.load(Ordering::Relaxed) {
                let nap = left.min(Duration::from_millis(50));
                std::thread::sleep(nap);
                left -= nap;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_log::Record;

    #[test]
    fn embedded_lag_is_the_logs_end_minus_the_engines_position() {
        // given a log with 5 records in partition 0 of a topic and 2 in partition 1
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join("log")).unwrap();
        log.create_topic("overlay.households", 2).unwrap();
        let records: Vec<Record> =
            (0..7).map(|i| Record::new(vec![i as u8], 0).in_partition(if i < 5 { 0 } else { 1 })).collect();
        log.append("overlay.households", &records).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("state/db"), [0u8; 100]).unwrap();
        // and an engine durably at 3 and 2
        let m = Metrics::new("embedded", 1);
        m.set_running();
        m.positions(0, [("overlay.households/0", 3), ("overlay.households/1", 2)]);
        // when the poller polls
        let ends = Ends::Embedded(EmbeddedLog::open(&dir.path().join("log")).unwrap());
        poll_once(&m, &ends, &dir.path().join("state"));
        // then the lag is 2 and 0, and 2 behind is not ready at a threshold of 1
        let rows = m.status(None).partitions;
        assert_eq!(rows.iter().map(|r| (r.end, r.position, r.lag)).collect::<Vec<_>>(), vec![(5, 3, 2), (2, 2, 0)]);
        assert!(m.readiness().is_err());
        assert!(m.render().contains("overlay_store_bytes 100\n"));
        assert_eq!(m.status(None).history.len(), 1);
        assert_eq!(m.status(None).history[0].lag.get("overlay.households/0"), Some(&2));
    }
}
