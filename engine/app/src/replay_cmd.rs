//! `overlay replay verify|state|explain|what-if`: opening the recorded
//! store (or reading the Kafka topics), progress on standard error, and
//! printing. The logic is in the `overlay-replay` crate.

use crate::config::Config;
use crate::runner;
use crate::topics::{AUDIT, DEAD_LETTERS, HOUSEHOLDS, ORDERS, REFERENCE};
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use overlay_core::ids::{HouseholdId, OrderId, SecurityId};
use overlay_replay::verify::{Recorded, RecordedOutputs};
use overlay_replay::whatif::{Change, Override, WhatIfReport};
use overlay_replay::{DayEdge, Point, VerifyRange};
use overlay_store::SledStore;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// A progress bar on standard error, when it is a terminal and not `--quiet`.
pub struct Progress(indicatif::ProgressBar);

impl Progress {
    pub fn new(quiet: bool, what: &'static str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} inputs ({per_sec}, {eta} left)")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(what);
        Self(bar)
    }

    pub fn update(&self, done: u64, total: u64) {
        self.0.set_length(total.max(done));
        self.0.set_position(done);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn open_store(data_dir: &Path) -> Result<SledStore> {
    let dir = runner::store_dir(data_dir);
    if !dir.exists() {
        bail!("{} has no state store: nothing was folded there", data_dir.display());
    }
    SledStore::open(&dir).context("opening the state store (stop the engine first)")
}

/// `--from`/`--to`/`--at` text to a point.
pub fn point(text: &str, edge: DayEdge) -> Result<Point> {
    Point::parse(text, edge).map_err(|e| anyhow!(e))
}

pub fn verify(data_dir: &Path, from: Option<&str>, to: Option<&str>, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let store = open_store(data_dir)?;
    let range = VerifyRange {
        from: from.map(|t| point(t, DayEdge::Start)).transpose()?,
        to: to.map(|t| point(t, DayEdge::End)).transpose()?,
    };
    let bar = Progress::new(quiet, "replay verify");
    // The whole journal is checked in segments, side by side, from the
    // checkpoints `state --at` keeps, if there are any (none are built here).
    let report = if range == VerifyRange::default() {
        let checkpoints = store.tree(overlay_replay::checkpoint::TREE)?;
        overlay_replay::verify_checkpointed(&store, &checkpoints, &mut |d, t| bar.update(d, t))
    } else {
        overlay_replay::verify_range_threaded(&store, range, &mut |d, t| bar.update(d, t))
    };
    drop(bar);
    let r = report.map_err(|e| anyhow!("replay verify FAILED: {e}"))?;
    match &r.state_hash {
        Some(hash) if r.checked_first == 1 => writeln!(
            out,
            "replay verify OK: {} inputs re-folded; {} orders, {} audit records, {} dead letters identical; state hash {hash}",
            r.inputs, r.orders, r.audit, r.dead_letters
        )?,
        hash => writeln!(
            out,
            "replay verify OK: inputs {}..={} checked ({} re-folded); {} orders, {} audit records, {} dead letters identical; {}",
            r.checked_first,
            r.checked_last,
            r.inputs,
            r.orders,
            r.audit,
            r.dead_letters,
            match hash {
                Some(h) => format!("state hash {h}"),
                None => "state not compared (the store holds the state at the journal's end only)".into(),
            }
        )?,
    }
    Ok(())
}

/// An output topic's records by partition: (offset, value).
type ByPartition = BTreeMap<u32, Vec<(u64, Vec<u8>)>>;

/// A record read back from Kafka: (partition, offset, value).
type KafkaRecord = (u32, u64, Vec<u8>);

fn time_of(raw: &[u8]) -> DateTime<Utc> {
    overlay_proto::decode_envelope(raw).map_or(DateTime::<Utc>::MIN_UTC, |e| e.event_time)
}

/// A shard's inputs in the engine's merge order: the heads of the reference
/// partition and household partition `p` (each read front to back) compared
/// by (event time, topic rank, offset); bytes that do not decode have no
/// time and come first.
fn shard_inputs(reference: &[KafkaRecord], households: &[KafkaRecord], p: u32) -> Vec<(String, Vec<u8>)> {
    let mut a = reference.iter().map(|(_, o, v)| (time_of(v), *o, v)).peekable();
    let mut b = households.iter().filter(|r| r.0 == p).map(|(_, o, v)| (time_of(v), *o, v)).peekable();
    let mut out = Vec::new();
    loop {
        let take_reference = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => (x.0, 0, x.1) <= (y.0, 1, y.1),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        if take_reference {
            let (_, o, v) = a.next().expect("a reference head");
            out.push((format!("{REFERENCE}/0/{o}"), v.clone()));
        } else {
            let (_, o, v) = b.next().expect("a household head");
            out.push((format!("{HOUSEHOLDS}/{p}/{o}"), v.clone()));
        }
    }
}

/// Re-derives every shard's outputs from the Kafka input topics and compares
/// them with the output topics' partitions, byte for byte.
pub fn verify_kafka(cfg: &Config, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let k = &cfg.kafka;
    let shards = overlay_kafka::admin::partitions(k, HOUSEHOLDS)?
        .ok_or_else(|| anyhow!("topic {HOUSEHOLDS} does not exist on {}", k.brokers))?;
    let reference = overlay_kafka::admin::read_topic(k, REFERENCE)?;
    let households = overlay_kafka::admin::read_topic(k, HOUSEHOLDS)?;
    if reference.is_empty() && households.is_empty() {
        bail!("replay verify FAILED: the input topics are empty: nothing to replay");
    }
    let mut outputs: BTreeMap<&str, ByPartition> = BTreeMap::new();
    for topic in [ORDERS, AUDIT, DEAD_LETTERS] {
        let by_partition = outputs.entry(topic).or_default();
        for (p, offset, v) in overlay_kafka::admin::read_topic(k, topic)? {
            by_partition.entry(p).or_default().push((offset, v));
        }
    }
    let (mut inputs, mut orders, mut audit, mut dead, mut repeats) = (0, 0, 0, 0, 0);
    for p in 0..shards {
        let shard = shard_inputs(&reference, &households, p);
        let n = shard.len() as u64;
        let stream = |topic: &'static str| -> Recorded<'static> {
            let records = outputs.get(topic).and_then(|m| m.get(&p)).cloned().unwrap_or_default();
            Box::new(records.into_iter().map(move |(offset, v)| Ok((format!("{topic}/{p}/{offset}"), v))))
        };
        let published = RecordedOutputs {
            orders: stream(ORDERS),
            audit: stream(AUDIT),
            dead_letters: stream(DEAD_LETTERS),
            skip_reference_dead_letters: p != 0,
            tolerate_repeats: true,
        };
        let bar = Progress::new(quiet, "replay verify (Kafka shard)");
        let report =
            overlay_replay::verify_stream(shard, cfg.engine.settings.clone(), published, &mut |d| bar.update(d, n));
        drop(bar);
        let r = report.map_err(|e| anyhow!("replay verify FAILED: shard {p}: {e}"))?;
        (inputs, orders, audit, dead, repeats) =
            (inputs + r.inputs, orders + r.orders, audit + r.audit, dead + r.dead_letters, repeats + r.repeats);
    }
    writeln!(
        out,
        "replay verify OK: {shards} Kafka shards, {inputs} shard inputs re-folded; {orders} orders, {audit} audit records, {dead} dead letters identical to the published ones{}",
        if repeats > 0 { format!(" ({repeats} records published twice, identical)") } else { String::new() }
    )?;
    Ok(())
}

pub fn state(data_dir: &Path, household: &str, at: Option<&str>, quiet: bool, out: &mut dyn Write) -> Result<()> {
    let store = open_store(data_dir)?;
    let h = HouseholdId::new(household);
    let view = match at {
        None => overlay_replay::state_now(&store, &h)?,
        Some(at) => {
            let bar = Progress::new(quiet, "replay state");
            // Checkpoints live in a tree of their own, never the engine's.
            let checkpoints = store.tree(overlay_replay::checkpoint::TREE)?;
            let at = point(at, DayEdge::End)?;
            overlay_replay::state_at_checkpointed(&store, &checkpoints, &h, at, &mut |d, t| bar.update(d, t))?
        }
    };
    writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
    Ok(())
}

pub fn explain(
    data_dir: &Path,
    order: Option<&str>,
    household: Option<&str>,
    at: Option<&str>,
    security: Option<&str>,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let store = open_store(data_dir)?;
    let bar = Progress::new(quiet, "replay explain");
    let mut progress = |d, t| bar.update(d, t);
    let json = match (order, household) {
        (Some(id), _) => {
            serde_json::to_value(overlay_replay::explain::explain_order(&store, &OrderId::new(id), &mut progress)?)?
        }
        (None, Some(h)) => {
            let at = point(at.ok_or_else(|| anyhow!("--household needs --at"))?, DayEdge::End)?;
            let security = security.map(SecurityId::new);
            serde_json::to_value(overlay_replay::explain::explain_household(
                &store,
                &HouseholdId::new(h),
                at,
                security.as_ref(),
                &mut progress,
            )?)?
        }
        (None, None) => bail!("give --order ID, or --household H --at POINT"),
    };
    drop(bar);
    writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    Ok(())
}

pub struct WhatIfArgs<'a> {
    pub models: &'a [PathBuf],
    pub sets: &'a [String],
    pub household: Option<&'a str>,
    pub json: bool,
    pub quiet: bool,
}

pub fn what_if(data_dir: &Path, args: &WhatIfArgs<'_>, out: &mut dyn Write) -> Result<()> {
    let mut change = Change::default();
    for f in args.models {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        change.events.extend(crate::publish::parse_events(&text, &f.display().to_string(), true)?);
    }
    for s in args.sets {
        change.overrides.push(Override::parse(s, args.household.map(HouseholdId::new))?);
    }
    if change.is_empty() {
        eprintln!("what-if: no change given (--model FILE, --set PATH=VALUE): comparing the history with itself");
    }
    let store = open_store(data_dir)?;
    let bar = Progress::new(args.quiet, "replay what-if");
    let report = overlay_replay::whatif::what_if(&store, &change, &mut |d, t| bar.update(d, t))?;
    drop(bar);
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_what_if(&report, out)?;
    }
    Ok(())
}

fn print_what_if(r: &WhatIfReport, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "what-if: {} recorded inputs replayed twice in memory ({} added); nothing published",
        r.inputs, r.added
    )?;
    for h in &r.households {
        writeln!(
            out,
            "{}: realized ${} -> ${}, harvested losses ${} -> ${}",
            h.household,
            h.baseline.realized_usd,
            h.what_if.realized_usd,
            h.baseline.harvested_loss_usd,
            h.what_if.harvested_loss_usd
        )?;
        for (mark, orders) in [("-", &h.only_baseline), ("+", &h.only_what_if)] {
            for o in orders {
                writeln!(
                    out,
                    "  {mark} {} {} {} {} {} ({}, {})",
                    o.decided_at.format("%Y-%m-%d %H:%M"),
                    o.account,
                    o.side.as_str(),
                    o.quantity,
                    o.security,
                    o.reason.as_str(),
                    o.order_id
                )?;
            }
        }
    }
    let t = &r.total;
    writeln!(
        out,
        "total: {} household(s) differ; {} trade(s) only recorded (-), {} only with the change (+); realized ${} -> ${}; harvested losses ${} -> ${}; {} fill(s) simulated, {} recorded fill(s) left out",
        t.households,
        t.only_baseline,
        t.only_what_if,
        t.baseline.realized_usd,
        t.what_if.realized_usd,
        t.baseline.harvested_loss_usd,
        t.what_if.harvested_loss_usd,
        r.simulated_fills,
        r.dropped_fills
    )?;
    Ok(())
}
