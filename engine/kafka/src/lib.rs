//! Kafka as a first-class transport: topic creation, publishing events, and
//! the sharded engine (one shard per household partition) that folds with
//! the same code as the embedded default. See docs/kafka.md. `bench` holds
//! the Kafka benchmark's broker-side pieces (BENCHMARKS.md); `observe` and
//! `watermarks` what the operations metrics read.

pub mod admin;
pub mod bench;
pub mod config;
pub mod engine;
pub mod mock;
pub mod observe;
mod output_key;
pub mod watermarks;
mod workers;

pub use config::{KafkaClientConfig, KafkaConfig};
pub use engine::{EngineOptions, KafkaEngine, RunStats};
