//! Real market data shipped with the project, and deterministic scenario
//! generators for the demo, tests and benchmarks.
//!
//! - [`data`]: loaders for the files in the repository's `data/sp500/`
//!   (embedded in the binary, or read from disk), and for any price file in
//!   the same wide layout.
//! - [`rng`]: a seeded SplitMix64, for scenario generation only.
//! - [`demo`](mod@demo): the demo scenario, as one [`DemoDay`] of input
//!   events per trading day. Quick start:
//!
//! ```no_run
//! use overlay_scenario::{demo, DemoSpec, MarketData};
//!
//! let data = MarketData::embedded()?; // or MarketData::load_dir(path)
//! let scenario = demo(&DemoSpec::default(), &data)?;
//! for day in &scenario.days {
//!     for event in &day.events {
//!         // feed `event` to the engine
//!     }
//!     // then, optionally, the custodian fills for the orders of `day.date`
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything here is pure and deterministic: no clock, no randomness from
//! the operating system, no hash-map iteration. The same data, spec and seed
//! give the same events.

pub mod data;
pub mod demo;
pub mod rng;

pub use data::{DataError, MarketData, PricePanel};
pub use demo::{demo, demo_events, DatasetInfo, Demo, DemoDay, DemoError, DemoSpec};
pub use rng::SplitMix64;
