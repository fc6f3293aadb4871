//! The engine's configuration file (TOML), described by
//! `schemas/config.schema.json`. Every field has a default, so no file is
//! needed to start.

use anyhow::{Context, Result};
use overlay_core::state::EngineSettings;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub engine: EngineConfig,
    /// The Kafka transport (`--kafka`); see docs/kafka.md.
    pub kafka: overlay_kafka::KafkaConfig,
    /// The operations HTTP server of `overlay run`: metrics, health, the lag page.
    pub ops: OpsConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Where `overlay run` serves `/metrics`, `/healthz`, `/readyz` and the lag
    /// page (`host:port`; port 0 picks a free one). None: no server.
    /// Environment override: `OVERLAY_OPS_LISTEN` (empty: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// How often the input partitions' end offsets are polled for the lag figures.
    pub lag_poll_ms: u64,
    /// Ready (`/readyz`) once the inputs behind, all partitions together, are at most this many.
    pub ready_lag_max: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self { listen: None, lag_poll_ms: 1000, ready_lag_max: 1000 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Partitions of the household topic (fixed when the topic is created).
    pub household_partitions: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Most inputs folded into one atomic store write.
    pub batch_inputs_max: usize,
    /// Most records read from one partition at a time.
    pub read_records_max: usize,
    /// How long `run --follow` waits when every input is caught up.
    pub idle_poll_ms: u64,
    /// Threads the Kafka engine folds its shards on (0: one per CPU). Shards
    /// are independent, so this changes speed only, never a byte of output.
    pub fold_threads: usize,
    /// Settings decisions depend on; recorded with the store when it is
    /// created, and kept from then on (replay uses the recorded ones).
    pub settings: EngineSettings,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { household_partitions: 8 }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            batch_inputs_max: 1000,
            read_records_max: 512,
            idle_poll_ms: 100,
            fold_threads: 0,
            settings: EngineSettings::default(),
        }
    }
}

impl Config {
    /// The file (if any), then the `OVERLAY_KAFKA_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut cfg = match path {
            None => Self::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
            }
        };
        cfg.kafka.apply_env(std::env::vars())?;
        if let Ok(listen) = std::env::var("OVERLAY_OPS_LISTEN") {
            cfg.ops.listen = Some(listen).filter(|l| !l.trim().is_empty());
        }
        let origin = path.map_or("the default configuration".to_string(), |p| format!("config {}", p.display()));
        cfg.validate().with_context(|| origin)?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            (1..=1024).contains(&self.log.household_partitions),
            "log.household_partitions must be 1..=1024"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.engine.batch_inputs_max),
            "engine.batch_inputs_max must be 1..=100000"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.engine.read_records_max),
            "engine.read_records_max must be 1..=100000"
        );
        anyhow::ensure!(self.engine.settings.fractional_dp <= 8, "engine.settings.fractional_dp must be at most 8");
        anyhow::ensure!((10..=600_000).contains(&self.ops.lag_poll_ms), "ops.lag_poll_ms must be 10..=600000");
        if let Some(listen) = &self.ops.listen {
            anyhow::ensure!(listen.contains(':'), "ops.listen must be host:port, not {listen:?}");
        }
        self.kafka.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    #[test]
    fn the_example_config_parses_validates_against_its_schema_and_equals_the_defaults_it_spells_out() {
        let path = repo().join("schemas/examples/config.toml");
        let cfg = Config::load(Some(&path)).expect("the example config loads");
        let mut expected = Config::default();
        expected.log.household_partitions = 16;
        assert_eq!(cfg, expected);

        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/config.schema.json")).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let as_json: serde_json::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&as_json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        // The engine's own defaults, serialized, are a valid configuration too.
        let defaults = serde_json::to_value(Config::default()).unwrap();
        assert!(validator.is_valid(&defaults));
        // And a misspelled field is caught by both.
        let bad: serde_json::Value = serde_json::json!({"engine": {"batch_input_max": 10}});
        assert!(!validator.is_valid(&bad));
        assert!(toml::from_str::<Config>("[engine]\nbatch_input_max = 10\n").is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let mut cfg = Config::default();
        cfg.log.household_partitions = 0;
        assert!(cfg.validate().is_err());
    }
}
