//! `overlay run`'s operations side: when `ops.listen` is set, the metrics
//! registry, its HTTP server (`/metrics`, `/healthz`, `/readyz`, the lag
//! page) and the lag poller; always, one structured log line per input,
//! order and refusal, naming them by id only (no amounts, no payload).
//!
//! The server starts before the engine opens its store, so that `/healthz`
//! answers and `/readyz` says "restoring state" while it loads.

use crate::config::Config;
use crate::runner::{self, Engine};
use crate::topics;
use anyhow::{Context, Result};
use overlay_core::fold::Applied;
use overlay_core::output::AuditBody;
use overlay_log::EmbeddedLog;
use overlay_ops::lag::{self, Ends};
use overlay_ops::Metrics;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Ops {
    metrics: Option<Arc<Metrics>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
    data_dir: PathBuf,
    poll_every: Duration,
}

impl Ops {
    /// Starts the server when `ops.listen` is set (`mode`: `embedded` or `kafka`).
    pub fn start(cfg: &Config, data_dir: &Path, mode: &'static str) -> Result<Self> {
        let metrics = match &cfg.ops.listen {
            None => None,
            Some(listen) => {
                let metrics = Arc::new(Metrics::new(mode, cfg.ops.ready_lag_max));
                let addr = overlay_ops::server::serve(listen, metrics.clone())?;
                eprintln!("overlay: metrics on http://{addr}/metrics, the lag page on http://{addr}/");
                tracing::info!(%addr, mode, "ops server listening");
                Some(metrics)
            }
        };
        Ok(Self {
            metrics,
            stop: Arc::new(AtomicBool::new(false)),
            poller: None,
            data_dir: data_dir.to_path_buf(),
            poll_every: Duration::from_millis(cfg.ops.lag_poll_ms),
        })
    }

    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The Kafka engine's shard observer, if metrics are on.
    pub fn observer(&self) -> Option<Arc<dyn overlay_kafka::observe::ShardObserver>> {
        self.metrics.clone().map(|m| m as Arc<dyn overlay_kafka::observe::ShardObserver>)
    }

    /// The embedded engine has restored its state: it reports its batches
    /// from now on, its stored positions are where it starts, and the
    /// poller compares them with the log's ends.
    pub fn embedded_engine(&mut self, engine: &mut Engine) -> Result<()> {
        let Some(m) = self.metrics.clone() else { return Ok(()) };
        let mut positions = Vec::new();
        for topic in topics::INPUTS {
            for p in 0..engine.log().partitions(topic)? {
                let key = format!("{topic}/{p}");
                let at = overlay_store::position(engine.store(), &key)?.unwrap_or(0);
                positions.push((key, at));
            }
        }
        m.positions(0, positions.iter().map(|(k, v)| (k.as_str(), *v)));
        m.outbox_from_store(0, engine.store())?;
        engine.set_metrics(m.clone());
        let log = EmbeddedLog::open(&runner::log_dir(&self.data_dir)).context("opening the embedded log")?;
        self.running(m, Ends::Embedded(log))
    }

    /// The Kafka engine is open (shards report positions as the group assigns them).
    pub fn kafka_engine(&mut self, cfg: &Config) -> Result<()> {
        let Some(m) = self.metrics.clone() else { return Ok(()) };
        let watermarks = overlay_kafka::watermarks::Watermarks::new(&cfg.kafka)?;
        self.running(m, Ends::Kafka(watermarks))
    }

    fn running(&mut self, m: Arc<Metrics>, ends: Ends) -> Result<()> {
        // One poll before the engine folds: the lag it starts from.
        let store_dir = runner::store_dir(&self.data_dir);
        lag::poll_once(&m, &ends, &store_dir);
        m.set_running();
        self.poller = Some(lag::spawn(m, ends, store_dir, self.poll_every, self.stop.clone())?);
        Ok(())
    }

    /// An input folded by `shard` (the embedded engine is shard 0).
    pub fn folded(&self, shard: u32, applied: &Applied) {
        log_applied(shard, applied);
        if let Some(m) = &self.metrics {
            m.folded(shard, applied);
        }
    }

    /// The run ended: `/healthz` says so until the process exits.
    pub fn finish(mut self) {
        if let Some(m) = &self.metrics {
            m.set_stopped();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
    }
}

/// Debug lines for an input and its orders, a warning for a refusal; ids only.
fn log_applied(shard: u32, applied: &Applied) {
    if let Some((seq, e)) = &applied.rejection {
        tracing::warn!(
            shard,
            dead_letter_seq = seq,
            event_id = e.event_id.as_deref().or_else(|| applied.audit.first().and_then(|a| a.event_id.as_deref())),
            event_type = e.event_type,
            error = %e.kind,
            "input refused"
        );
    }
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let first = applied.audit.first();
    let event_type = first.and_then(|a| match &a.body {
        AuditBody::Applied { event_type, .. } | AuditBody::Duplicate { event_type, .. } => Some(event_type.as_ref()),
        AuditBody::Rejected { event_type, .. } => event_type.as_deref(),
        _ => None,
    });
    tracing::debug!(
        shard,
        event_id = first.and_then(|a| a.event_id.as_deref()),
        event_type,
        household = first.and_then(|a| a.household.as_ref()).map(|h| h.0.as_str()),
        orders = applied.orders.len(),
        "input folded"
    );
    for o in &applied.orders {
        tracing::debug!(
            shard,
            order_id = %o.order_id,
            household = %o.household,
            account = %o.account,
            event_id = o.cause_event_id.as_str(),
            reason = o.reason.as_str(),
            "order decided"
        );
    }
}
