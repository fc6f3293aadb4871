//! Generates the default demo and prints its summary and timings:
//! `cargo run --release -p overlay-scenario --example demo_summary [households] [price_days] [seed]`.

use overlay_scenario::{demo, DemoSpec, MarketData};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut spec = DemoSpec::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(h) = args.first() {
        spec.households = h.parse()?;
    }
    if let Some(d) = args.get(1) {
        spec.price_days = d.parse()?;
    }
    if let Some(s) = args.get(2) {
        spec.seed = s.parse()?;
    }
    let t = Instant::now();
    let data = MarketData::embedded()?;
    let loaded = t.elapsed();
    let t = Instant::now();
    let demo = demo(&spec, &data)?;
    let generated = t.elapsed();
    println!("{:#?}", demo.info);
    for day in &demo.days {
        let mut counts = std::collections::BTreeMap::new();
        for e in &day.events {
            *counts.entry(e.payload.type_name()).or_insert(0usize) += 1;
        }
        println!("day {:>2} {}: {counts:?}", day.day, day.date);
    }
    println!("load embedded data: {loaded:?}; generate: {generated:?}");
    Ok(())
}
