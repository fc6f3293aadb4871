//! Operations: what the engine did and where it stands, for the people who
//! keep it running.
//!
//! - `metrics`: the registry (counts once durable, decision latency, lag per
//!   input partition, outbox depth, store size) and its Prometheus text;
//! - `lag`: the poller of the input partitions' end offsets (embedded log or Kafka);
//! - `server`: the HTTP server (`/metrics`, `/healthz`, `/readyz`, the lag page);
//! - `observe`: the registry as the Kafka engine's shard observer.
//!
//! Nothing here reaches state or outputs: metrics may use clocks and floats.

pub mod lag;
pub mod metrics;
pub mod observe;
pub mod server;

pub use metrics::Metrics;
