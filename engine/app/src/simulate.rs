//! The deterministic simulation (`overlay simulate`; RELIABILITY.md).
//!
//! One seed decides everything: a small demo scenario (real prices,
//! households with legacy lots and restrictions), how its events reach the
//! input topics (in chunks that interleave every producer, some held back and
//! delivered late, some re-sent, some swapped, with bad records among them),
//! when each chunk arrives (once the engine has caught up, or after it has
//! folded a given number of the inputs waiting), the engine's batch and read
//! sizes, and the faults its store meets: crashes before and after a write,
//! write errors, writes that land but report failure, and a full disk (see
//! [`overlay_store::fault`]). The simulated custodian fills each day's
//! orders, and its fills are delivered the same way.
//!
//! The seed is played twice, each run on an embedded log of its own: a
//! reference run with no faults and default batching, and the faulty run,
//! whose engine is dropped and opened again (a new process on the same disk)
//! whenever its store fails, as a supervisor would restart it. Chunks arrive
//! at points defined by the inputs durably folded, so both runs see the same
//! log at each point. Then:
//!
//! - the faulty run's order, audit and dead-letter topics equal the
//!   reference's byte for byte, and so does its state hash;
//! - every input record was folded exactly once (the journal names each
//!   position once, and the stored positions are the topics' ends);
//! - each re-sent event was audited as a duplicate, each bad record
//!   dead-lettered once;
//! - orders are numbered 1..n without gaps and no order id repeats, and each
//!   output topic holds exactly the store's outbox, once;
//! - the audit chain verifies, and `replay verify` re-derives state and every
//!   output from the journal.
//!
//! A failing seed fails the same way every time: `overlay simulate --seed S`.

use crate::config::Config;
use crate::demo::Custodian;
use crate::runner::{Engine, RunOptions};
use crate::topics::{self, AUDIT, DEAD_LETTERS, HOUSEHOLDS, INPUTS, ORDERS, REFERENCE};
use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{Duration, NaiveDate};
use overlay_core::event::{Envelope, Payload, PriceTick};
use overlay_core::output::{AuditRecord, DeadLetter, Order};
use overlay_log::{EmbeddedLog, Record};
use overlay_scenario::{demo, DemoSpec, MarketData, SplitMix64};
use overlay_store::fault::{FaultRates, SimDisk};
use overlay_store::{keys, Store};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Engine restarts one seed may take before it is called stuck.
const RESTARTS_MAX: u64 = 20_000;

/// What one seed did, and the fingerprint of its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub seed: u64,
    pub households: usize,
    pub days: usize,
    /// Input records appended (events, re-sent copies, bad records, fills).
    pub inputs: u64,
    pub fills: u64,
    pub chunks: u64,
    pub late: u64,
    pub duplicates: u64,
    pub swapped: u64,
    pub bad: u64,
    pub orders: u64,
    pub audit: u64,
    pub dead_letters: u64,
    /// Store commit attempts of the faulty run.
    pub commits: u64,
    pub restarts: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// SHA-256 of the faulty run's outputs, state hash and fault trace: a
    /// seed played again must give the same.
    pub fingerprint: String,
}

/// One record to append to an input topic.
#[derive(Clone, Debug)]
enum Delivery {
    Event(Envelope),
    /// Bytes that are not a valid event; the engine must dead-letter them.
    Bad {
        topic: &'static str,
        key: Option<Vec<u8>>,
        bytes: Vec<u8>,
        why: &'static str,
    },
}

/// A chunk of deliveries, and when it arrives: once the inputs before it are
/// folded (`None`), or after the engine has folded this many of them.
#[derive(Clone, Debug)]
struct Chunk {
    after: Option<u64>,
    records: Vec<Delivery>,
}

/// What the seed decided, shared by both runs.
struct Plan {
    spec: DemoSpec,
    partitions: u32,
    batch_inputs_max: usize,
    read_records_max: usize,
    rates: FaultRates,
}

impl Plan {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::derive(seed, &[1]);
        let start = NaiveDate::from_ymd_opt(2013, 3, 1).expect("valid date") + Duration::days(rng.below(900) as i64);
        let spec = DemoSpec {
            households: 2 + rng.below(5) as usize,
            price_days: 1 + rng.below(3) as usize,
            seed: rng.next_u64(),
            start_date: start,
        };
        let partitions = 1 + rng.below(4) as u32;
        let batch_inputs_max = [1, 2, 5, 16, 64][rng.index(5)];
        let read_records_max = [1, 3, 17, 100][rng.index(4)];
        // Total fault rate per commit: light, medium or heavy; split by kind.
        let total = [5_000u32, 20_000, 60_000][rng.index(3)];
        let rates = FaultRates {
            crash_before_write: total * 30 / 100,
            crash_after_write: total * 25 / 100,
            write_error: total * 15 / 100,
            ambiguous_write: total * 15 / 100,
            disk_full: total * 15 / 100,
        };
        Self { spec, partitions, batch_inputs_max, read_records_max, rates }
    }

    fn config(&self, faulty: bool) -> Config {
        let mut cfg = Config::default();
        cfg.log.household_partitions = self.partitions;
        if faulty {
            cfg.engine.batch_inputs_max = self.batch_inputs_max;
            cfg.engine.read_records_max = self.read_records_max;
        }
        cfg
    }
}

/// Turns a step's events (and what an earlier step held back) into chunks:
/// some events held back for the next step, some re-sent, neighbours
/// swapped, a few bad records added. Decided by `rng` alone.
fn perturb(
    rng: &mut SplitMix64,
    events: Vec<Envelope>,
    held: &mut Vec<Envelope>,
    last: bool,
    step: usize,
    report: &mut SeedReport,
) -> Vec<Chunk> {
    let mut out: Vec<Delivery> = held.drain(..).map(Delivery::Event).collect();
    for e in events {
        if !last && rng.below(1000) < 40 {
            report.late += 1;
            held.push(e);
            continue;
        }
        if rng.below(1000) < 30 {
            report.duplicates += 1;
            if !last && rng.below(2) == 0 {
                held.push(e.clone());
            } else {
                out.push(Delivery::Event(e.clone()));
            }
        }
        out.push(Delivery::Event(e));
    }
    for i in 1..out.len() {
        if rng.below(1000) < 50 {
            out.swap(i - 1, i);
            report.swapped += 1;
        }
    }
    let template = out.iter().find_map(|d| match d {
        Delivery::Event(e) => Some(e.clone()),
        Delivery::Bad { .. } => None,
    });
    for n in 0..rng.below(3) {
        let bad = bad_record(rng, template.as_ref(), step, n);
        let at = rng.index(out.len() + 1);
        out.insert(at, bad);
        report.bad += 1;
    }
    // Cut into 1..=4 chunks; each after the first may arrive mid-fold.
    let pieces = 1 + rng.below(4) as usize;
    let mut cuts: Vec<usize> = (1..pieces).map(|_| rng.index(out.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut rest = out;
    for cut in cuts.into_iter().rev() {
        let tail = rest.split_off(cut.min(rest.len()));
        chunks.push(tail);
    }
    chunks.push(rest);
    chunks.reverse();
    chunks
        .into_iter()
        .enumerate()
        .filter(|(_, c)| !c.is_empty())
        .map(|(i, records)| {
            let after = if i > 0 && rng.below(2) == 0 { Some(rng.below(64)) } else { None };
            Chunk { after, records }
        })
        .collect()
}

/// A bad record: noise, a cut-off event, a future schema version, or a valid
/// event with a value out of its domain.
fn bad_record(rng: &mut SplitMix64, template: Option<&Envelope>, step: usize, n: u64) -> Delivery {
    let topic = if rng.below(2) == 0 { REFERENCE } else { HOUSEHOLDS };
    let key = (rng.below(2) == 0).then(|| format!("HH-{}", rng.below(1000)).into_bytes());
    let id = format!("sim-bad-{step}-{n}");
    let at = template.map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |e| e.event_time);
    let tick = |price: Decimal| Envelope {
        event_id: id.clone(),
        producer: "price-feed".into(),
        event_time: at,
        schema_version: 1,
        payload: Payload::PriceTick(PriceTick { security: "AAPL".into(), price, as_of: at }),
    };
    let (bytes, why) = match rng.below(5) {
        0 => ((0..1 + rng.below(40)).map(|_| rng.below(256) as u8).collect(), "noise"),
        1 => {
            let whole = overlay_proto::encode_envelope(template.unwrap_or(&tick(Decimal::ONE)));
            (whole[..whole.len() / 2].to_vec(), "cut off")
        }
        2 => {
            let mut e = tick(Decimal::ONE);
            e.schema_version = 2;
            (overlay_proto::encode_envelope(&e), "schema version 2")
        }
        3 => (overlay_proto::encode_envelope(&tick(Decimal::NEGATIVE_ONE)), "negative price"),
        _ => (
            format!(r#"{{"event_id":"{id}","producer":"x","schema_version":1}}"#).into_bytes(),
            "JSON on a protobuf topic",
        ),
    };
    Delivery::Bad { topic, key, bytes, why }
}

/// One run of a seed: its log, its disk, and the engine on them (none while
/// "down").
struct Run {
    log_dir: PathBuf,
    producer: EmbeddedLog,
    disk: SimDisk,
    cfg: Config,
    engine: Option<Engine>,
    restarts: u64,
    /// Input records appended so far (each must fold to one journal entry).
    delivered: u64,
    /// Where each bad record went (`topic/partition/offset`), and what was bad.
    bad_at: BTreeMap<String, &'static str>,
    /// How many times each event id was delivered.
    deliveries_of: BTreeMap<String, u64>,
    custodian: Custodian,
}

impl Run {
    fn new(dir: &Path, cfg: Config, disk: SimDisk) -> Result<Self> {
        let log_dir = dir.join("log");
        let producer = EmbeddedLog::open(&log_dir)?;
        topics::ensure_topics(&producer, cfg.log.household_partitions)?;
        Ok(Self {
            log_dir,
            producer,
            disk,
            cfg,
            engine: None,
            restarts: 0,
            delivered: 0,
            bad_at: BTreeMap::new(),
            deliveries_of: BTreeMap::new(),
            custodian: Custodian::default(),
        })
    }

    /// The engine failed: it must have been a fault injected since the last
    /// start (anything else is a bug). The process is gone; a new one starts.
    fn crashed(&mut self, e: anyhow::Error) -> Result<()> {
        if self.disk.faults_since_restart() == 0 {
            return Err(e.context("the engine failed with no fault injected"));
        }
        self.engine = None;
        self.disk.restart();
        self.restarts += 1;
        ensure!(self.restarts <= RESTARTS_MAX, "{RESTARTS_MAX} restarts without finishing: {e:#}");
        Ok(())
    }

    /// The running engine, starting one if the last has died.
    fn engine(&mut self) -> Result<Option<&mut Engine>> {
        if self.engine.is_none() {
            let log = EmbeddedLog::open(&self.log_dir)?;
            match Engine::assemble(log, Box::new(self.disk.handle()), Box::new(self.disk.handle()), &self.cfg) {
                Ok(e) => self.engine = Some(e),
                Err(e) => {
                    self.crashed(e)?;
                    return Ok(None);
                }
            }
        }
        Ok(self.engine.as_mut())
    }

    /// Folds until `target` inputs are durable (and their outputs published).
    fn fold_to(&mut self, target: u64) -> Result<()> {
        let mut idle = 0;
        loop {
            let Some(engine) = self.engine()? else { continue };
            let applied = engine.state().meta.applied;
            if applied >= target {
                ensure!(applied == target, "folded {applied} inputs, past the {target} asked for");
                return Ok(());
            }
            let opts = RunOptions { follow: false, max_inputs: Some(target - applied) };
            match engine.run(&opts, &mut |_| {}) {
                Ok(_) => {
                    let now = self.engine.as_ref().map_or(0, |e| e.state().meta.applied);
                    idle = if now == applied { idle + 1 } else { 0 };
                    ensure!(idle < 2, "the engine stopped at {now} inputs with {target} delivered");
                }
                Err(e) => self.crashed(e)?,
            }
        }
    }

    /// Appends a chunk: one append per topic, each topic's records in the
    /// chunk's order (the engine orders inputs by partition position and
    /// event time, never by which topic was written first).
    fn deliver(&mut self, records: &[Delivery]) -> Result<()> {
        for want in [REFERENCE, HOUSEHOLDS] {
            let mut batch = Vec::new();
            let mut bad = Vec::new();
            for d in records {
                let (topic, record) = match d {
                    Delivery::Event(e) => topics::record_for(e, overlay_proto::encode_envelope(e)),
                    Delivery::Bad { topic, key, bytes, .. } => match key {
                        Some(k) => (*topic, Record::keyed(k.clone(), bytes.clone(), 0)),
                        None => (*topic, Record::new(bytes.clone(), 0)),
                    },
                };
                if topic != want {
                    continue;
                }
                match d {
                    Delivery::Event(e) => *self.deliveries_of.entry(e.event_id.clone()).or_default() += 1,
                    Delivery::Bad { why, .. } => bad.push((batch.len(), *why)),
                }
                batch.push(record);
            }
            if batch.is_empty() {
                continue;
            }
            let at = self.producer.append(want, &batch)?;
            ensure!(at.len() == batch.len(), "{want}: {} records appended, {} positions back", batch.len(), at.len());
            for (i, why) in bad {
                let (p, o) = at[i];
                self.bad_at.insert(format!("{want}/{p}/{o}"), why);
            }
            self.delivered += batch.len() as u64;
        }
        Ok(())
    }

    /// Delivers the chunks, each at its point, then folds everything.
    fn play(&mut self, chunks: &[Chunk]) -> Result<()> {
        for c in chunks {
            let applied = loop {
                if let Some(e) = self.engine()? {
                    break e.state().meta.applied;
                }
            };
            let waiting = self.delivered - applied;
            let point = match c.after {
                Some(n) => applied + n.min(waiting),
                None => self.delivered,
            };
            self.fold_to(point)?;
            self.deliver(&c.records)?;
        }
        self.fold_to(self.delivered)
    }

    fn store(&self) -> Box<dyn Store> {
        Box::new(self.disk.handle())
    }
}

fn topic_values(log: &EmbeddedLog, topic: &str) -> Result<Vec<Vec<u8>>> {
    Ok(topics::read_partition(log, topic, 0)?.into_iter().map(|r| r.value).collect())
}

/// Plays `seed` in `work` (a fresh directory) and checks every invariant.
pub fn run_seed(seed: u64, data: &MarketData, work: &Path) -> Result<SeedReport> {
    let plan = Plan::new(seed);
    let scenario = demo(&plan.spec, data).context("building the scenario")?;
    let mut report =
        SeedReport { seed, households: scenario.info.households, days: scenario.days.len(), ..SeedReport::default() };
    let mut reference = Run::new(&work.join("reference"), plan.config(false), SimDisk::new(0, FaultRates::NONE))?;
    let mut faulty = Run::new(&work.join("faulty"), plan.config(true), SimDisk::new(seed, plan.rates))?;
    let mut rng = SplitMix64::derive(seed, &[2]);
    let mut held = Vec::new();
    let days = scenario.days.len();
    for (d, day) in scenario.days.iter().enumerate() {
        // The day's events, then the custodian's fills for its orders.
        let chunks = perturb(&mut rng, day.events.clone(), &mut held, false, 2 * d, &mut report);
        report.chunks += chunks.len() as u64;
        for run in [&mut reference, &mut faulty] {
            run.play(&chunks).with_context(|| format!("day {} ({})", day.day, day.date))?;
        }
        let fills = reference.custodian.fills(&reference.producer, day.date)?;
        let theirs = faulty.custodian.fills(&faulty.producer, day.date)?;
        ensure!(fills == theirs, "on {}, the two runs' orders gave different fills", day.date);
        report.fills += fills.len() as u64;
        let chunks = perturb(&mut rng, fills, &mut held, d + 1 == days, 2 * d + 1, &mut report);
        report.chunks += chunks.len() as u64;
        for run in [&mut reference, &mut faulty] {
            run.play(&chunks).with_context(|| format!("fills of {}", day.date))?;
        }
    }
    ensure!(held.is_empty(), "events held back past the last step");
    report.inputs = faulty.delivered;
    check(&reference, &faulty, &mut report)?;
    Ok(report)
}

/// The invariants (module documentation), and the report's counts.
fn check(reference: &Run, faulty: &Run, report: &mut SeedReport) -> Result<()> {
    ensure!(reference.restarts == 0 && reference.disk.struck().is_empty(), "the reference run met a fault");
    let store = faulty.store();
    let mut fingerprint = Sha256::new();
    // Outputs: byte for byte the reference's, and exactly the outbox, once.
    let mut published: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    for (topic, prefix) in [(ORDERS, keys::ORDERS), (AUDIT, keys::AUDIT), (DEAD_LETTERS, keys::DEAD_LETTERS)] {
        let theirs = topic_values(&faulty.producer, topic)?;
        let ours = topic_values(&reference.producer, topic)?;
        if let Some(i) = (0..theirs.len().max(ours.len())).find(|&i| theirs.get(i) != ours.get(i)) {
            bail!(
                "{topic} differs from the reference run at offset {i} ({} records against {}): {:?} against {:?}",
                theirs.len(),
                ours.len(),
                theirs.get(i).map(|v| String::from_utf8_lossy(v).into_owned()),
                ours.get(i).map(|v| String::from_utf8_lossy(v).into_owned()),
            );
        }
        let outbox: Vec<Vec<u8>> = overlay_store::records_after(store.as_ref(), prefix, 0)
            .map(|r| r.map(|(_, v)| v))
            .collect::<Result<_, _>>()?;
        ensure!(
            theirs == outbox,
            "{topic} does not hold exactly the store's outbox ({} published, {} in the outbox)",
            theirs.len(),
            outbox.len()
        );
        for v in &theirs {
            fingerprint.update((v.len() as u64).to_be_bytes());
            fingerprint.update(v);
        }
        published.insert(topic, theirs);
    }
    let state = overlay_store::state_hash(store.as_ref())?;
    ensure!(
        state == overlay_store::state_hash(reference.store().as_ref())?,
        "the state differs from the reference run's"
    );
    fingerprint.update(state.as_bytes());
    // Orders: numbered 1..n, no order id twice.
    let orders: Vec<Order> = published[ORDERS].iter().map(|v| serde_json::from_slice(v)).collect::<Result<_, _>>()?;
    let mut ids = BTreeSet::new();
    for (i, o) in orders.iter().enumerate() {
        ensure!(o.seq == i as u64 + 1, "order {} carries seq {} at offset {i}", o.order_id, o.seq);
        ensure!(ids.insert(o.order_id.clone()), "order id {} published twice", o.order_id);
    }
    report.orders = orders.len() as u64;
    // Every input record folded exactly once.
    let mut expected = BTreeSet::new();
    for topic in INPUTS {
        for p in 0..faulty.producer.partitions(topic)? {
            let end = faulty.producer.end_offset(topic, p)?;
            let at = overlay_store::position(store.as_ref(), &format!("{topic}/{p}"))?.unwrap_or(0);
            ensure!(at == end, "the stored position of {topic}/{p} is {at}, its end {end}");
            expected.extend((0..end).map(|o| format!("{topic}/{p}/{o}")));
        }
    }
    let journal = overlay_replay::journal::Journal::open(store.as_ref())?;
    let mut folded = BTreeSet::new();
    for entry in journal.entries(0) {
        let entry = entry?;
        ensure!(folded.insert(entry.source.clone()), "{} was folded twice", entry.source);
    }
    ensure!(folded == expected, "folded {} input records of {}", folded.len(), expected.len());
    ensure!(
        folded.len() as u64 == faulty.delivered,
        "{} records delivered, {} in the topics",
        faulty.delivered,
        folded.len()
    );
    // Each bad record dead-lettered once; each re-sent event audited as a duplicate.
    let dead: Vec<DeadLetter> =
        published[DEAD_LETTERS].iter().map(|v| serde_json::from_slice(v)).collect::<Result<_, _>>()?;
    report.dead_letters = dead.len() as u64;
    let dead_at: BTreeMap<&str, usize> = dead.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.source.as_str()).or_default() += 1;
        m
    });
    for (at, why) in &faulty.bad_at {
        let n = dead_at.get(at.as_str()).copied().unwrap_or(0);
        ensure!(n == 1, "the bad record at {at} ({why}) was dead-lettered {n} times");
    }
    let audit: Vec<(String, Vec<u8>)> = published
        .remove(AUDIT)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("{AUDIT}/0/{i}"), v))
        .collect();
    report.audit = audit.len() as u64;
    // Each copy of an event is accepted once, refused (dead-lettered: say a
    // fill delivered before its order's day) or audited as a duplicate: of
    // an event the state has seen, all but one copy are refused or
    // duplicates. (Price ticks are idempotent by security and as-of, not
    // by event id; of theirs, at most all copies.)
    let mut handled: BTreeMap<String, u64> = BTreeMap::new();
    for (_, v) in &audit {
        let r: AuditRecord = serde_json::from_slice(v)?;
        if let (overlay_core::output::AuditBody::Duplicate { .. }, Some(id)) = (&r.body, r.event_id) {
            *handled.entry(id).or_default() += 1;
        }
    }
    for d in &dead {
        if let Some(id) = &d.event_id {
            *handled.entry(id.clone()).or_default() += 1;
        }
    }
    let state_now = overlay_store::load_state(store.as_ref())?;
    for (id, copies) in &faulty.deliveries_of {
        let n = handled.get(id).copied().unwrap_or(0);
        if state_now.meta.seen.get(id).is_some() {
            ensure!(n + 1 == *copies, "{id}: {copies} copies delivered, one accepted, {n} refused or duplicates");
        } else {
            ensure!(n <= *copies, "{id}: {copies} copies delivered, {n} refused or duplicates");
        }
    }
    overlay_replay::audit::verify_chain(audit).map_err(|e| anyhow!("the audit chain breaks: {e}"))?;
    // Replay re-derives everything from the journal.
    let verified = overlay_replay::verify(store.as_ref(), &mut |_, _| {}).map_err(|e| anyhow!("replay verify: {e}"))?;
    ensure!(verified.state_hash.as_deref() == Some(state.as_str()), "replay verify gave another state hash");
    // The run itself.
    report.commits = faulty.disk.commits();
    report.restarts = faulty.restarts;
    for s in faulty.disk.struck() {
        *report.faults.entry(s.fault.name()).or_default() += 1;
        fingerprint.update(s.commit.to_be_bytes());
        fingerprint.update(s.fault.to_string().as_bytes());
    }
    report.fingerprint = hex::encode(&fingerprint.finalize()[..8]);
    Ok(())
}

/// Where seeds play: under tmpfs when the machine has one with room (the
/// log fsyncs every append and group commit; a seed writes a few MB), else
/// under the system's temp directory.
fn scratch() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let base = if free_bytes(shm).is_some_and(|b| b >= 1 << 30) { shm.to_path_buf() } else { std::env::temp_dir() };
    Ok(tempfile::Builder::new().prefix("overlay-simulate-").tempdir_in(base)?)
}

/// Bytes free to an unprivileged user on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `st` is written by the
    // call before it is read, only when the call succeeds.
    let st = unsafe {
        if libc::statvfs(path.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    // Both are u32 on some targets.
    #[allow(clippy::useless_conversion)]
    Some(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// A seed's report, or the seed and why it failed.
pub type SeedOutcome = Result<SeedReport, (u64, String)>;

/// The outcome of many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub reports: Vec<SeedReport>,
    pub failures: Vec<(u64, String)>,
}

/// Plays `seeds` on `jobs` threads; every seed runs, failures are collected.
pub fn run_seeds(seeds: &[u64], jobs: usize, on_done: &(dyn Fn(&SeedOutcome) + Sync)) -> Result<Summary> {
    let data = MarketData::embedded().context("loading the shipped market data")?;
    let root = scratch()?;
    let next = AtomicU64::new(0);
    let out = Mutex::new(Summary::default());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&seed) = seeds.get(i) else { break };
                let work = root.path().join(seed.to_string());
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_seed(seed, &data, &work)))
                    .unwrap_or_else(|p| {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(anyhow!("panicked: {msg}"))
                    })
                    .map_err(|e| (seed, format!("{e:#}")));
                let _ = std::fs::remove_dir_all(&work);
                on_done(&result);
                let mut o = out.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match result {
                    Ok(r) => o.reports.push(r),
                    Err(f) => o.failures.push(f),
                }
            });
        }
    });
    let mut summary = out.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    summary.reports.sort_by_key(|r| r.seed);
    summary.failures.sort();
    Ok(summary)
}

impl Summary {
    pub fn print(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let sum = |f: fn(&SeedReport) -> u64| self.reports.iter().map(f).sum::<u64>();
        let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &self.reports {
            for (k, n) in &r.faults {
                *faults.entry(k).or_default() += n;
            }
        }
        writeln!(out, "overlay simulate: {} seeds passed, {} failed", self.reports.len(), self.failures.len())?;
        writeln!(
            out,
            "  inputs        {} ({} fills; {} late, {} re-sent, {} swapped, {} bad) in {} chunks",
            sum(|r| r.inputs),
            sum(|r| r.fills),
            sum(|r| r.late),
            sum(|r| r.duplicates),
            sum(|r| r.swapped),
            sum(|r| r.bad),
            sum(|r| r.chunks)
        )?;
        writeln!(
            out,
            "  outputs       {} orders, {} audit records, {} dead letters",
            sum(|r| r.orders),
            sum(|r| r.audit),
            sum(|r| r.dead_letters)
        )?;
        let list = faults.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
        writeln!(
            out,
            "  faults        {} in {} commits ({list}); {} restarts",
            faults.values().sum::<u64>(),
            sum(|r| r.commits),
            sum(|r| r.restarts)
        )?;
        for (seed, why) in &self.failures {
            writeln!(out, "  FAILED seed {seed}: {why}\n    reproduce: overlay simulate --seed {seed}")?;
        }
        Ok(())
    }
}

/// `overlay simulate`: plays the seeds, one line per failure as it happens,
/// then the summary (and, for a single seed, its report); fails if any seed did.
pub fn cli(seeds: &[u64], jobs: Option<usize>, out: &mut dyn std::io::Write) -> Result<()> {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = std::time::Instant::now();
    let done = AtomicU64::new(0);
    let total = seeds.len();
    let summary = run_seeds(seeds, jobs, &|r| {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        match r {
            Err((seed, why)) => eprintln!("seed {seed} FAILED: {why}"),
            Ok(_) if n.is_multiple_of(100) => eprintln!("{n}/{total} seeds"),
            Ok(_) => {}
        }
    })?;
    summary.print(out)?;
    if let [r] = summary.reports.as_slice() {
        writeln!(out, "  seed {}: {r:?}", r.seed)?;
    }
    writeln!(out, "  elapsed       {:.1} s on {jobs} threads", started.elapsed().as_secs_f64())?;
    if !summary.failures.is_empty() {
        bail!("{} of {} seeds failed", summary.failures.len(), seeds.len());
    }
    Ok(())
}
