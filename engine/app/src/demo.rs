//! `overlay demo`: the whole flow on real prices, on the embedded log, with
//! a simulated custodian answering every order. Day by day: publish the day's
//! events, fold them, let the custodian fill the new orders, fold the fills.

use crate::config::Config;
use crate::runner::{Engine, RunOptions};
use crate::topics;
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use overlay_core::event::{Envelope, Fill, FillStatus, Payload, PriceTick};
use overlay_core::fold::Applied;
use overlay_core::output::{AuditBody, Order};
use overlay_log::EmbeddedLog;
use overlay_scenario::data::MarketData;
use overlay_scenario::demo::{close_time_utc, demo, DemoSpec};
use rust_decimal::{Decimal, RoundingStrategy};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// A file the demo leaves in its data directory, so a later demo knows the
/// directory is its own to replace.
const MARKER: &str = "demo.json";

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub spec: DemoSpec,
    pub progress: bool,
}

#[derive(Debug, Default)]
pub struct DemoSummary {
    pub households: usize,
    pub accounts: usize,
    pub securities: usize,
    pub models: usize,
    pub days: usize,
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    pub events: u64,
    pub fills: u64,
    pub orders_by_reason: BTreeMap<String, u64>,
    pub skips_by_reason: BTreeMap<String, u64>,
    pub dead_letters_by_kind: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    /// A household of the scenario, for the hints printed after the summary.
    pub example_household: Option<String>,
}

impl DemoSummary {
    fn observe(&mut self, a: &Applied) {
        for o in &a.orders {
            *self.orders_by_reason.entry(o.reason.as_str().to_string()).or_default() += 1;
        }
        for r in &a.audit {
            if let AuditBody::Decision { skipped, .. } = &r.body {
                for s in skipped {
                    *self.skips_by_reason.entry(s.reason.as_str().to_string()).or_default() += 1;
                }
            }
        }
        if let Some((_, e)) = &a.rejection {
            *self.dead_letters_by_kind.entry(e.kind.to_string()).or_default() += 1;
        }
    }

    pub fn print(&self, data_dir: &Path, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        let list = |m: &BTreeMap<String, u64>| {
            let mut v: Vec<_> = m.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        };
        writeln!(
            out,
            "overlay demo: {} households, {} accounts, {} securities, {} models",
            self.households, self.accounts, self.securities, self.models
        )?;
        if let (Some(a), Some(b)) = (self.first_day, self.last_day) {
            writeln!(out, "  days          {} trading days, {a} .. {b} (real closes)", self.days)?;
        }
        writeln!(out, "  events in     {} ({} of them fills from the simulated custodian)", self.events, self.fills)?;
        writeln!(out, "  orders        {}  ({})", total(&self.orders_by_reason), list(&self.orders_by_reason))?;
        writeln!(out, "  skipped       {}  ({})", total(&self.skips_by_reason), list(&self.skips_by_reason))?;
        writeln!(out, "  dead letters  {}  ({})", total(&self.dead_letters_by_kind), list(&self.dead_letters_by_kind))?;
        let rate = if self.elapsed_s > 0.0 { self.events as f64 / self.elapsed_s } else { 0.0 };
        writeln!(
            out,
            "  elapsed       {:.1} s, {:.0} events/s (durable: every batch flushed to sled)",
            self.elapsed_s, rate
        )?;
        writeln!(out, "  data dir      {}", data_dir.display())?;
        let h = self.example_household.as_deref().unwrap_or("HOUSEHOLD");
        writeln!(out, "next: overlay orders --household {h} | head   ·   overlay audit --household {h} | head   ·   overlay replay verify")?;
        Ok(())
    }
}

/// Makes `data_dir` ready for a demo: creates it, or replaces an earlier
/// demo's; refuses a directory holding anything else.
fn prepare_dir(data_dir: &Path) -> Result<()> {
    if data_dir.exists() {
        let empty = std::fs::read_dir(data_dir)?.next().is_none();
        if !empty {
            if !data_dir.join(MARKER).exists() {
                bail!(
                    "{} holds data the demo did not make; choose another --data-dir or remove it",
                    data_dir.display()
                );
            }
            std::fs::remove_dir_all(data_dir)
                .with_context(|| format!("removing the previous demo in {}", data_dir.display()))?;
        }
    }
    std::fs::create_dir_all(data_dir)?;
    Ok(())
}

pub fn run_demo(data_dir: &Path, cfg: &Config, opts: &DemoOptions) -> Result<DemoSummary> {
    let started = Instant::now();
    let data = MarketData::embedded().context("loading the shipped market data")?;
    let scenario = demo(&opts.spec, &data).context("building the demo scenario")?;
    prepare_dir(data_dir)?;
    std::fs::write(
        data_dir.join(MARKER),
        serde_json::to_vec_pretty(&serde_json::json!({
            "households": opts.spec.households,
            "price_days": opts.spec.price_days,
            "seed": opts.spec.seed,
            "start_date": opts.spec.start_date.to_string(),
        }))?,
    )?;
    let mut engine = Engine::open(data_dir, cfg)?;
    let mut custodian = Custodian::default();
    let mut summary = DemoSummary {
        households: scenario.info.households,
        accounts: scenario.info.accounts,
        securities: scenario.info.securities,
        models: scenario.info.models,
        days: scenario.days.len(),
        first_day: scenario.days.first().map(|d| d.date),
        last_day: scenario.days.last().map(|d| d.date),
        example_household: scenario.events().find_map(|e| match &e.payload {
            Payload::HouseholdUpserted(h) => Some(h.household.to_string()),
            _ => None,
        }),
        ..DemoSummary::default()
    };
    let bar = if opts.progress { ProgressBar::new(scenario.info.events as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events  {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let run = RunOptions::default();
    for day in &scenario.days {
        bar.set_message(format!("{}", day.date));
        let mut events = day.events.clone();
        if day.day == 1 {
            events.extend(bad_inputs(day.date, &events));
            bar.inc_length(2);
        }
        topics::publish_events(engine.log(), &events)?;
        summary.events += events.len() as u64;
        engine.run(&run, &mut |a| {
            summary.observe(a);
            bar.inc(1);
        })?;
        let fills = custodian.fills(engine.log(), day.date)?;
        bar.inc_length(fills.len() as u64);
        topics::publish_events(engine.log(), &fills)?;
        summary.events += fills.len() as u64;
        summary.fills += fills.len() as u64;
        engine.run(&run, &mut |a| {
            summary.observe(a);
            bar.inc(1);
        })?;
    }
    bar.finish_and_clear();
    summary.elapsed_s = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Real feeds carry bad input: a price for a symbol nobody listed, and a
/// stale tick. The engine must dead-letter both and go on.
fn bad_inputs(date: NaiveDate, day_events: &[Envelope]) -> Vec<Envelope> {
    let at = day_events.last().map_or_else(|| close_time_utc(date), |e| e.event_time);
    let stale = day_events.iter().find_map(|e| match &e.payload {
        Payload::PriceTick(p) => Some(p.clone()),
        _ => None,
    });
    let mut out = vec![Envelope {
        event_id: format!("demo-bad-{date}-unknown-symbol"),
        producer: "price-feed".into(),
        event_time: at,
        schema_version: 1,
        payload: Payload::PriceTick(PriceTick { security: "ZZZZ".into(), price: Decimal::new(1234, 2), as_of: at }),
    }];
    if let Some(mut p) = stale {
        p.as_of -= Duration::days(3);
        out.push(Envelope {
            event_id: format!("demo-bad-{date}-stale-tick"),
            producer: "price-feed".into(),
            event_time: at,
            schema_version: 1,
            payload: Payload::PriceTick(p),
        });
    }
    out
}

/// A custodian that executes every order at the price the engine sized it
/// with, rejecting about one in a hundred and filling about one in thirty in
/// two parts. Deterministic: it decides by order sequence number.
#[derive(Default)]
pub struct Custodian {
    next_offset: u64,
}

impl Custodian {
    pub fn fills(&mut self, log: &EmbeddedLog, date: NaiveDate) -> Result<Vec<Envelope>> {
        let end = log.end_offset(topics::ORDERS, 0)?;
        let mut out = Vec::new();
        let at = fill_time(date);
        while self.next_offset < end {
            let records = log.read(topics::ORDERS, 0, self.next_offset, 4096, 64 << 20)?;
            for r in &records {
                self.next_offset = r.offset + 1;
                let order: Order = serde_json::from_slice(&r.value).context("an order record is not an order")?;
                out.extend(fills_for(&order, date, at));
            }
            if records.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

/// When the custodian reports the fills of a day's orders: half an hour after the close.
fn fill_time(date: NaiveDate) -> DateTime<Utc> {
    close_time_utc(date) + Duration::minutes(30)
}

/// The custodian's fills of `orders` however they were read (the Kafka
/// transport's, say): the same as [`Custodian::fills`] gives for them.
pub fn fills_of<'a>(orders: impl IntoIterator<Item = &'a Order>, date: NaiveDate) -> Vec<Envelope> {
    let at = fill_time(date);
    orders.into_iter().flat_map(|o| fills_for(o, date, at)).collect()
}

pub fn fills_for(o: &Order, date: NaiveDate, at: DateTime<Utc>) -> Vec<Envelope> {
    let fill = |n: u32, status: FillStatus, quantity: Decimal, reason: Option<&str>| Envelope {
        event_id: format!("fill-{}-{n}", o.order_id),
        producer: "custodian".into(),
        event_time: at,
        schema_version: 1,
        payload: Payload::Fill(Fill {
            status,
            quantity,
            reason: reason.map(str::to_string),
            ..Fill::of_order(o, o.ref_price, date)
        }),
    };
    if o.seq.is_multiple_of(97) {
        return vec![fill(1, FillStatus::Rejected, Decimal::ZERO, Some("simulated: rejected by the custodian"))];
    }
    let half = (o.quantity / Decimal::TWO).round_dp_with_strategy(0, RoundingStrategy::ToZero);
    if o.seq.is_multiple_of(31) && half > Decimal::ZERO {
        return vec![fill(1, FillStatus::Partial, half, None), fill(2, FillStatus::Filled, o.quantity - half, None)];
    }
    vec![fill(1, FillStatus::Filled, o.quantity, None)]
}
