//! The metrics registry: what the engine did, counted once it is durable,
//! and where each input partition stands. Read by `/metrics` (Prometheus
//! text), `/readyz` and the lag page.
//!
//! The engine reports at three points of a batch's life, per shard (the
//! embedded runner is shard 0): each input as it is folded ([`Metrics::folded`],
//! kept aside), the batch durable ([`Metrics::durable`]: its inputs are
//! counted from then on), and its outputs published ([`Metrics::published`]:
//! the decision latency of each of its inputs is observed). Input ends come
//! from a poller ([`crate::lag`]); positions from the engine's durable state.
//!
//! Metrics are not state: they use `Instant` for latencies, and nothing here
//! reaches the fold, the store or the outputs.

use overlay_core::event::InputErrorKind;
use overlay_core::fold::Applied;
use overlay_core::output::AuditBody;
use overlay_store::{keys, Store, StoreError};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Dead letters kept for the lag page (the newest).
pub const RECENT_DEAD_LETTERS_MAX: usize = 20;
/// Lag samples kept for the lag page's history (one per poll).
pub const HISTORY_SAMPLES_MAX: usize = 900;

/// Upper bounds of the decision-latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// A metric family: name, Prometheus type, help.
pub struct Family {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str) -> Family {
    Family { name, kind, help }
}

/// Every family the engine exports, in the order `/metrics` lists them.
/// Dashboards and alert rules may use these names (and a histogram's
/// `_bucket`, `_sum` and `_count` series) and no others.
pub const FAMILIES: [Family; 17] = [
    family("overlay_info", "gauge", "Always 1; labels say how the engine runs (mode: embedded or kafka) and its version."),
    family("overlay_ready", "gauge", "1 when the engine has restored its state and is caught up within ops.ready_lag_max, else 0."),
    family("overlay_consumer_lag", "gauge", "Records of an input partition not yet durably folded: its end offset (high watermark) minus the engine's durable position."),
    family("overlay_input_end_offset", "gauge", "The end offset (high watermark) of an input partition, as last polled."),
    family("overlay_input_position", "gauge", "The engine's durable position in an input partition: the next offset it will fold."),
    family("overlay_events_total", "counter", "Inputs durably folded, by event type and outcome (applied, rejected, duplicate)."),
    family("overlay_decision_latency_seconds", "histogram", "From an input's fold to its outputs being durable and published."),
    family("overlay_orders_total", "counter", "Orders durably decided, by reason."),
    family("overlay_skips_total", "counter", "Trades a decision chose not to make, by reason."),
    family("overlay_dead_letters_total", "counter", "Inputs refused into the dead-letter stream, by error."),
    family("overlay_outbox_depth", "gauge", "Durable outputs not yet published, by output."),
    family("overlay_batches_total", "counter", "Atomic batches made durable."),
    family("overlay_store_bytes", "gauge", "Bytes the state store occupies on disk."),
    family("overlay_lag_polls_total", "counter", "Polls of the input partitions' end offsets."),
    family("overlay_lag_poll_errors_total", "counter", "Polls of the input partitions' end offsets that failed."),
    family("overlay_uptime_seconds", "gauge", "Seconds since the engine started."),
    family("overlay_http_requests_total", "counter", "Requests served by the operations HTTP server, by path."),
];

/// The names of every exported family.
pub fn metric_names() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.name).collect()
}

/// The outputs, as the outbox names them.
pub const OUTPUTS: [(&str, &[u8]); 3] =
    [("orders", keys::ORDERS), ("audit", keys::AUDIT), ("dead-letters", keys::DEAD_LETTERS)];

/// An input refused, as the lag page lists it: ids and the reason, no payload.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetterNote {
    pub seq: u64,
    pub shard: u32,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub error: String,
    pub reason: String,
}

/// One folded input, until its batch is durable.
struct Folded {
    at: Instant,
    event_type: Cow<'static, str>,
    outcome: &'static str,
    orders: Vec<(&'static str, u64)>,
    skips: Vec<(&'static str, u64)>,
    dead_letter: Option<DeadLetterNote>,
}

#[derive(Default)]
struct Pipe {
    /// Folded, not yet durable, in fold order.
    folded: VecDeque<Folded>,
    /// Fold instants of inputs durable but not yet published.
    unpublished: Vec<Instant>,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

impl Histogram {
    fn observe(&mut self, s: f64) {
        for (b, le) in self.buckets.iter_mut().zip(LATENCY_BUCKETS_S) {
            if s <= le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum_s += s;
    }
}

/// A topic partition: (topic, partition).
pub type Partition = (String, u32);

/// One poll of the lag, for the page's history.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Milliseconds since the engine started.
    pub t_ms: u64,
    /// `topic/partition` → lag.
    pub lag: BTreeMap<String, u64>,
    pub events: u64,
    pub dead_letters: u64,
}

#[derive(Default)]
struct Inner {
    pipes: BTreeMap<u32, Pipe>,
    events: BTreeMap<(Cow<'static, str>, &'static str), u64>,
    orders: BTreeMap<&'static str, u64>,
    skips: BTreeMap<&'static str, u64>,
    dead_letters: BTreeMap<String, u64>,
    latency: Histogram,
    batches: u64,
    /// (shard, output) → durable records not yet published.
    outbox: BTreeMap<(u32, &'static str), u64>,
    /// Durable positions, per shard (a Kafka shard folds the reference
    /// partition too: its position there is the lowest of the shards').
    positions: BTreeMap<Partition, BTreeMap<u32, u64>>,
    /// End offsets, as last polled.
    ends: BTreeMap<Partition, u64>,
    /// Every partition with a position has had its end polled since.
    ends_fresh: bool,
    store_bytes: u64,
    polls: u64,
    poll_errors: u64,
    last_poll_error: Option<String>,
    recent_dead_letters: VecDeque<DeadLetterNote>,
    history: VecDeque<Sample>,
    running: bool,
    stopped: bool,
    http: BTreeMap<&'static str, u64>,
}

/// The registry, shared by the engine thread, the lag poller and the HTTP server.
pub struct Metrics {
    mode: &'static str,
    ready_lag_max: u64,
    started: Instant,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// How an input went, from its audit records: (event type, outcome).
fn classify(applied: &Applied) -> (Cow<'static, str>, &'static str) {
    for a in &applied.audit {
        match &a.body {
            AuditBody::Applied { event_type, .. } => return (event_type.clone(), "applied"),
            AuditBody::Duplicate { event_type, .. } => return (event_type.clone(), "duplicate"),
            AuditBody::Rejected { event_type, .. } => {
                return (event_type.clone().unwrap_or(Cow::Borrowed("unknown")), "rejected")
            }
            _ => {}
        }
    }
    match &applied.rejection {
        Some((_, e)) => (e.event_type.map_or(Cow::Borrowed("unknown"), Cow::Borrowed), "rejected"),
        None => (Cow::Borrowed("unknown"), "applied"),
    }
}

fn bump(counts: &mut Vec<(&'static str, u64)>, key: &'static str) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += 1,
        None => counts.push((key, 1)),
    }
}

fn error_name(kind: InputErrorKind) -> String {
    kind.to_string()
}

impl Metrics {
    /// `mode` is `embedded` or `kafka`; `ready_lag_max` the most inputs
    /// behind (all partitions together) at which the engine is ready.
    pub fn new(mode: &'static str, ready_lag_max: u64) -> Self {
        Self { mode, ready_lag_max, started: Instant::now(), inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the metrics down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Milliseconds since the registry was made.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The engine has restored its state and folds.
    pub fn set_running(&self) {
        self.lock().running = true;
    }

    /// The engine has stopped folding (its run ended).
    pub fn set_stopped(&self) {
        let mut m = self.lock();
        m.running = false;
        m.stopped = true;
    }

    /// An input was folded by `shard` (not durable yet).
    pub fn folded(&self, shard: u32, applied: &Applied) {
        let (event_type, outcome) = classify(applied);
        let mut orders = Vec::new();
        for o in &applied.orders {
            bump(&mut orders, o.reason.as_str());
        }
        let mut skips = Vec::new();
        for a in &applied.audit {
            if let AuditBody::Decision { skipped, .. } = &a.body {
                for s in skipped {
                    bump(&mut skips, s.reason.as_str());
                }
            }
        }
        let dead_letter = applied.rejection.as_ref().map(|(seq, e)| DeadLetterNote {
            seq: *seq,
            shard,
            event_id: e.event_id.clone().or_else(|| applied.audit.first().and_then(|a| a.event_id.clone())),
            event_type: e.event_type.map(str::to_string),
            error: error_name(e.kind),
            reason: e.message.clone(),
        });
        let f = Folded { at: Instant::now(), event_type, outcome, orders, skips, dead_letter };
        self.lock().pipes.entry(shard).or_default().folded.push_back(f);
    }

    /// `shard`'s next `inputs` folded inputs are durable: they count from now on.
    pub fn durable(&self, shard: u32, inputs: u64) {
        let mut guard = self.lock();
        let m = &mut *guard;
        let pipe = m.pipes.entry(shard).or_default();
        let n = (inputs as usize).min(pipe.folded.len());
        for f in pipe.folded.drain(..n) {
            pipe.unpublished.push(f.at);
            *m.events.entry((f.event_type, f.outcome)).or_default() += 1;
            for (reason, k) in f.orders {
                *m.orders.entry(reason).or_default() += k;
            }
            for (reason, k) in f.skips {
                *m.skips.entry(reason).or_default() += k;
            }
            if let Some(dl) = f.dead_letter {
                *m.dead_letters.entry(dl.error.clone()).or_default() += 1;
                if m.recent_dead_letters.len() == RECENT_DEAD_LETTERS_MAX {
                    m.recent_dead_letters.pop_front();
                }
                m.recent_dead_letters.push_back(dl);
            }
        }
        m.batches += 1;
    }

    /// What `shard`'s outbox holds beyond its publish cursors, read from its store.
    pub fn outbox_from_store(&self, shard: u32, store: &dyn Store) -> Result<(), StoreError> {
        let mut depth = Vec::new();
        for (output, prefix) in OUTPUTS {
            let last = overlay_store::last_seq(store, prefix)?;
            depth.push((output, last.saturating_sub(overlay_store::cursor(store, output)?)));
        }
        let mut m = self.lock();
        for (output, d) in depth {
            m.outbox.insert((shard, output), d);
        }
        Ok(())
    }

    /// `shard`'s durable outputs are published: its outbox is empty, and the
    /// latency of each input they came from is known.
    pub fn published(&self, shard: u32) {
        let now = Instant::now();
        let mut guard = self.lock();
        let m = &mut *guard;
        for output in OUTPUTS.map(|o| o.0) {
            m.outbox.insert((shard, output), 0);
        }
        if let Some(pipe) = m.pipes.get_mut(&shard) {
            for at in pipe.unpublished.drain(..) {
                m.latency.observe(now.saturating_duration_since(at).as_secs_f64());
            }
        }
    }

    /// `shard`'s durable positions (`topic/partition` → next offset).
    pub fn positions<'a>(&self, shard: u32, positions: impl IntoIterator<Item = (&'a str, u64)>) {
        let parsed: Vec<(Partition, u64)> = positions
            .into_iter()
            .filter_map(|(key, next)| {
                let (topic, p) = key.rsplit_once('/')?;
                Some(((topic.to_string(), p.parse().ok()?), next))
            })
            .collect();
        let mut m = self.lock();
        for (part, next) in parsed {
            if !m.ends.contains_key(&part) {
                m.ends_fresh = false;
            }
            m.positions.entry(part).or_default().insert(shard, next);
        }
    }

    /// The instance let go of every shard (a Kafka rebalance took its
    /// partitions): their positions, folded inputs and outboxes are no longer its own.
    pub fn forget_shards(&self) {
        let mut m = self.lock();
        m.pipes.clear();
        m.positions.clear();
        m.outbox.clear();
        m.ends.clear();
        m.ends_fresh = false;
    }

    /// The partitions the engine holds a position in.
    pub fn partitions(&self) -> Vec<Partition> {
        self.lock().positions.keys().cloned().collect()
    }

    /// The result of one poll: end offsets of `partitions` (those asked
    /// for), and the store's size.
    pub fn polled(&self, asked: &[Partition], ends: Result<BTreeMap<Partition, u64>, String>, store_bytes: u64) {
        let mut guard = self.lock();
        let m = &mut *guard;
        m.polls += 1;
        m.store_bytes = store_bytes;
        match ends {
            Ok(ends) => {
                m.ends = ends;
                m.last_poll_error = None;
                m.ends_fresh = m.positions.keys().all(|p| m.ends.contains_key(p) && asked.contains(p));
            }
            Err(e) => {
                m.poll_errors += 1;
                m.last_poll_error = Some(e);
            }
        }
        let sample = Sample {
            t_ms: self.started.elapsed().as_millis() as u64,
            lag: lag_rows(m).into_iter().map(|r| (format!("{}/{}", r.topic, r.partition), r.lag)).collect(),
            events: m.events.values().sum(),
            dead_letters: m.dead_letters.values().sum(),
        };
        if m.history.len() == HISTORY_SAMPLES_MAX {
            m.history.pop_front();
        }
        m.history.push_back(sample);
    }

    pub fn count_request(&self, path: &'static str) {
        *self.lock().http.entry(path).or_default() += 1;
    }

    /// Whether the engine is ready, and why not.
    pub fn readiness(&self) -> Result<(), String> {
        let m = self.lock();
        readiness(&m, self.ready_lag_max)
    }

    /// Whether the engine loop is alive.
    pub fn healthy(&self) -> bool {
        !self.lock().stopped
    }

    /// The registry in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut out = String::with_capacity(8192);
        for f in &FAMILIES {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            self.render_samples(&m, f.name, &mut out);
        }
        out
    }

    fn render_samples(&self, m: &Inner, name: &str, out: &mut String) {
        let mut line = |labels: &[(&str, &str)], value: String| {
            out.push_str(name);
            write_labels(out, labels);
            out.push(' ');
            out.push_str(&value);
            out.push('\n');
        };
        match name {
            "overlay_info" => line(&[("mode", self.mode), ("version", env!("CARGO_PKG_VERSION"))], "1".into()),
            "overlay_ready" => line(&[], u8::from(readiness(m, self.ready_lag_max).is_ok()).to_string()),
            "overlay_consumer_lag" | "overlay_input_end_offset" | "overlay_input_position" => {
                for r in lag_rows(m) {
                    let v = match name {
                        "overlay_consumer_lag" => r.lag,
                        "overlay_input_end_offset" => r.end,
                        _ => r.position,
                    };
                    line(&[("topic", &r.topic), ("partition", &r.partition.to_string())], v.to_string());
                }
            }
            "overlay_events_total" => {
                for ((t, outcome), n) in &m.events {
                    line(&[("type", t), ("outcome", outcome)], n.to_string());
                }
            }
            "overlay_orders_total" => m.orders.iter().for_each(|(r, n)| line(&[("reason", r)], n.to_string())),
            "overlay_skips_total" => m.skips.iter().for_each(|(r, n)| line(&[("reason", r)], n.to_string())),
            "overlay_dead_letters_total" => {
                m.dead_letters.iter().for_each(|(e, n)| line(&[("error", e)], n.to_string()))
            }
            "overlay_outbox_depth" => {
                let mut by_output: BTreeMap<&str, u64> = OUTPUTS.iter().map(|o| (o.0, 0)).collect();
                for ((_, output), d) in &m.outbox {
                    *by_output.entry(output).or_default() += d;
                }
                by_output.iter().for_each(|(o, d)| line(&[("output", o)], d.to_string()));
            }
            "overlay_batches_total" => line(&[], m.batches.to_string()),
            "overlay_store_bytes" => line(&[], m.store_bytes.to_string()),
            "overlay_lag_polls_total" => line(&[], m.polls.to_string()),
            "overlay_lag_poll_errors_total" => line(&[], m.poll_errors.to_string()),
            "overlay_uptime_seconds" => line(&[], format!("{:.3}", self.started.elapsed().as_secs_f64())),
            "overlay_http_requests_total" => m.http.iter().for_each(|(p, n)| line(&[("path", p)], n.to_string())),
            "overlay_decision_latency_seconds" => {
                let h = &m.latency;
                for (le, n) in LATENCY_BUCKETS_S.iter().zip(h.buckets) {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
                }
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum {}", h.sum_s);
                let _ = writeln!(out, "{name}_count {}", h.count);
            }
            other => unreachable!("family {other} has no samples renderer"),
        }
    }

    /// What the lag page shows; history samples after `since_ms` only, if given.
    pub fn status(&self, since_ms: Option<u64>) -> Status {
        let m = self.lock();
        let ready = readiness(&m, self.ready_lag_max);
        Status {
            mode: self.mode,
            ready: ready.is_ok(),
            not_ready_because: ready.err(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            partitions: lag_rows(&m),
            events: m.events.values().sum(),
            orders: m.orders.values().sum(),
            dead_letters: m.dead_letters.values().sum(),
            decisions_p99_s: quantile(&m.latency, 0.99),
            last_poll_error: m.last_poll_error.clone(),
            history: m.history.iter().filter(|s| since_ms.is_none_or(|t| s.t_ms > t)).cloned().collect(),
            recent_dead_letters: m.recent_dead_letters.iter().rev().cloned().collect(),
        }
    }
}

/// The lag page's data (`/api/status`).
#[derive(Debug, Serialize)]
pub struct Status {
    pub mode: &'static str,
    pub ready: bool,
    pub not_ready_because: Option<String>,
    pub uptime_ms: u64,
    pub partitions: Vec<LagRow>,
    pub events: u64,
    pub orders: u64,
    pub dead_letters: u64,
    /// The bucket bound under which 99% of decision latencies fall (None before any).
    pub decisions_p99_s: Option<f64>,
    pub last_poll_error: Option<String>,
    pub history: Vec<Sample>,
    /// Newest first.
    pub recent_dead_letters: Vec<DeadLetterNote>,
}

/// One input partition: its end, the engine's durable position, the lag.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LagRow {
    pub topic: String,
    pub partition: u32,
    pub end: u64,
    pub position: u64,
    pub lag: u64,
}

/// Partitions with both a position and a polled end. A position past the
/// polled end (records arrived and were folded since the poll) is no lag.
fn lag_rows(m: &Inner) -> Vec<LagRow> {
    m.positions
        .iter()
        .filter_map(|(part, by_shard)| {
            let position = *by_shard.values().min()?;
            let end = *m.ends.get(part)?;
            Some(LagRow { topic: part.0.clone(), partition: part.1, end, position, lag: end.saturating_sub(position) })
        })
        .collect()
}

fn readiness(m: &Inner, ready_lag_max: u64) -> Result<(), String> {
    if m.stopped {
        return Err("the engine has stopped".into());
    }
    if !m.running {
        return Err("restoring state".into());
    }
    if m.positions.is_empty() {
        return Err("no input partitions assigned".into());
    }
    // A shard that folds but has not settled yet has no positions: its lag is unknown.
    let settled: std::collections::BTreeSet<u32> = m.positions.values().flat_map(|s| s.keys().copied()).collect();
    if let Some(shard) = m.pipes.keys().find(|s| !settled.contains(s)) {
        return Err(format!("shard {shard} has not settled a batch yet"));
    }
    if !m.ends_fresh {
        return Err("input end offsets not polled yet".into());
    }
    let lag: u64 = lag_rows(m).iter().map(|r| r.lag).sum();
    if lag > ready_lag_max {
        return Err(format!("{lag} inputs behind (ready at {ready_lag_max} or fewer)"));
    }
    Ok(())
}

/// The smallest bucket bound holding at least `q` of the observations.
fn quantile(h: &Histogram, q: f64) -> Option<f64> {
    if h.count == 0 {
        return None;
    }
    let want = (h.count as f64 * q).ceil() as u64;
    LATENCY_BUCKETS_S.iter().zip(h.buckets).find(|(_, n)| *n >= want).map(|(le, _)| *le).or(Some(f64::INFINITY))
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(t: &str, p: u32) -> Partition {
        (t.to_string(), p)
    }

    #[test]
    fn lag_is_the_polled_end_minus_the_lowest_durable_position_of_the_shards() {
        // given two shards at different places in the reference partition, and one household partition each
        let m = Metrics::new("kafka", 10);
        m.set_running();
        m.positions(0, [("overlay.reference/0", 40), ("overlay.households/0", 7)]);
        m.positions(1, [("overlay.reference/0", 55), ("overlay.households/1", 3)]);
        assert!(m.readiness().is_err(), "not ready before the ends are polled");
        // when the ends are polled
        let asked = m.partitions();
        let ends: BTreeMap<Partition, u64> = [
            (part("overlay.reference", 0), 60),
            (part("overlay.households", 0), 9),
            (part("overlay.households", 1), 3),
        ]
        .into();
        m.polled(&asked, Ok(ends), 4096);
        // then each partition's lag is its end minus the position furthest behind
        let rows = m.status(None).partitions;
        let lag: Vec<(String, u32, u64)> = rows.iter().map(|r| (r.topic.clone(), r.partition, r.lag)).collect();
        assert_eq!(
            lag,
            vec![
                ("overlay.households".into(), 0, 2),
                ("overlay.households".into(), 1, 0),
                ("overlay.reference".into(), 0, 20)
            ]
        );
        // and 22 behind is not ready at a threshold of 10
        assert_eq!(m.readiness(), Err("22 inputs behind (ready at 10 or fewer)".into()));
        let text = m.render();
        assert!(text.contains("overlay_consumer_lag{topic=\"overlay.reference\",partition=\"0\"} 20\n"), "{text}");
        assert!(text.contains("overlay_input_position{topic=\"overlay.reference\",partition=\"0\"} 40\n"), "{text}");
        assert!(text.contains("overlay_store_bytes 4096\n"), "{text}");
        assert!(text.contains("overlay_ready 0\n"), "{text}");
        // when the shards catch up, it is ready
        m.positions(0, [("overlay.reference/0", 60), ("overlay.households/0", 9)]);
        m.positions(1, [("overlay.reference/0", 60)]);
        assert_eq!(m.readiness(), Ok(()));
        // but not while a third shard folds with no durable position yet
        m.folded(2, &Applied::default());
        assert_eq!(m.readiness(), Err("shard 2 has not settled a batch yet".into()));
        m.positions(2, [("overlay.reference/0", 60), ("overlay.households/2", 0)]);
        m.polled(
            &m.partitions(),
            Ok([
                (part("overlay.reference", 0), 60),
                (part("overlay.households", 0), 9),
                (part("overlay.households", 1), 3),
                (part("overlay.households", 2), 0),
            ]
            .into()),
            4096,
        );
        assert_eq!(m.readiness(), Ok(()));
        // and a rebalance forgets the shards' partitions
        m.forget_shards();
        assert!(m.status(None).partitions.is_empty());
        assert!(m.readiness().is_err());
    }

    #[test]
    fn every_family_renders_its_help_and_type_and_only_declared_names_appear() {
        let m = Metrics::new("embedded", 0);
        m.count_request("/metrics");
        let text = m.render();
        for f in &FAMILIES {
            assert!(text.contains(&format!("# TYPE {} {}\n", f.name, f.kind)), "{}", f.name);
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(metric_names().contains(&name) || metric_names().contains(&base), "undeclared {name}");
        }
        assert!(text.contains("overlay_decision_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("overlay_http_requests_total{path=\"/metrics\"} 1\n"));
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let mut h = Histogram::default();
        for s in [0.0005, 0.003, 0.003, 7.0, 100.0] {
            h.observe(s);
        }
        assert_eq!(h.buckets[0], 1); // ≤ 1 ms
        assert_eq!(h.buckets[2], 3); // ≤ 5 ms
        assert_eq!(h.buckets[12], 4); // ≤ 10 s
        assert_eq!(h.buckets[13], 4); // ≤ 30 s; 100 s is only in +Inf
        assert_eq!(h.count, 5);
        assert_eq!(quantile(&h, 0.5), Some(0.005));
        assert_eq!(quantile(&h, 1.0), Some(f64::INFINITY));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        write_labels(&mut s, &[("a", "x\"y\\z\nw")]);
        assert_eq!(s, r#"{a="x\"y\\z\nw"}"#);
    }
}
