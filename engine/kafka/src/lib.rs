//! Kafka as a first-class transport: topic creation, publishing events, and
//! the sharded engine (one shard per household partition) that folds with
//! the same code as the embedded default. See docs/kafka.md.

pub mod admin;
pub mod config;
pub mod engine;

pub use config::KafkaConfig;
pub use engine::{EngineOptions, KafkaEngine, RunStats};
