//! The engine's configuration file (TOML), described by
//! `schemas/config.schema.json`, and its environment overrides. Every field
//! has a default, so no file is needed to start.
//!
//! Plain data with no I/O clients (the librdkafka client configurations are
//! built in `overlay_kafka`), so the whole decoder is fuzzed on its own
//! (`fuzz/fuzz_targets/config.rs`).

pub mod kafka;

pub use kafka::KafkaConfig;

use anyhow::{Context, Result};
use overlay_core::state::EngineSettings;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The environment variable that overrides `ops.listen` (empty: no server).
pub const OPS_LISTEN_ENV: &str = "OVERLAY_OPS_LISTEN";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub engine: EngineConfig,
    /// The Kafka transport (`--kafka`); see docs/kafka.md.
    pub kafka: KafkaConfig,
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
    /// The file (if any), then the environment overrides
    /// (`OVERLAY_KAFKA_*`, `OVERLAY_OPS_LISTEN`), then validation.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            None => None,
            Some(path) => {
                Some(std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?)
            }
        };
        let origin = path.map_or("the default configuration".to_string(), |p| format!("config {}", p.display()));
        Self::from_toml_and_env(text.as_deref(), process_env()?).with_context(|| origin)
    }

    /// What [`Config::load`] does once the file is read: parse the text (none:
    /// the defaults), apply the environment overrides given, validate.
    pub fn from_toml_and_env(text: Option<&str>, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut cfg = match text {
            None => Self::default(),
            Some(text) => Self::parse(text)?,
        };
        cfg.apply_env(vars)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The TOML text as a configuration, unvalidated. Unknown fields are refused.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).context("parsing the TOML")
    }

    /// This configuration as TOML that [`Config::parse`] reads back to it.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).context("writing the configuration as TOML")
    }

    /// Applies the overrides among environment variables (given, so tests
    /// need not touch the process environment); others are ignored.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        self.kafka.apply_env(vars.iter().cloned())?;
        if let Some((_, listen)) = vars.iter().rev().find(|(k, _)| k == OPS_LISTEN_ENV) {
            self.ops.listen = Some(listen.clone()).filter(|l| !l.trim().is_empty());
        }
        Ok(())
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
        // Zero or less would hold every move of every price: decisions would keep the first prices forever.
        let jump_max = self.engine.settings.price_jump_max;
        anyhow::ensure!(jump_max > Decimal::ZERO, "engine.settings.price_jump_max must be positive, not {jump_max}");
        anyhow::ensure!((10..=600_000).contains(&self.ops.lag_poll_ms), "ops.lag_poll_ms must be 10..=600000");
        if let Some(listen) = &self.ops.listen {
            anyhow::ensure!(listen.contains(':'), "ops.listen must be host:port, not {listen:?}");
        }
        self.kafka.validate()
    }
}

/// The process's override variables. `std::env::vars` would panic on any
/// variable that is not Unicode, even one the engine does not read; here
/// only an override that is not Unicode is refused, by its name.
fn process_env() -> Result<Vec<(String, String)>> {
    let ours = |k: &str| k.starts_with(kafka::ENV_PREFIX) || k == OPS_LISTEN_ENV;
    let mut vars = Vec::new();
    for (k, v) in std::env::vars_os() {
        let lossy = k.to_string_lossy();
        if !ours(&lossy) {
            continue;
        }
        match (k.to_str(), v.into_string()) {
            (Some(k), Ok(v)) => vars.push((k.to_string(), v)),
            // Not the value: it may be a password.
            _ => anyhow::bail!("the environment variable {lossy} is not Unicode text"),
        }
    }
    Ok(vars)
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
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = Config::from_toml_and_env(Some(&text), []).expect("the example config loads");
        let mut expected = Config::default();
        expected.log.household_partitions = 16;
        assert_eq!(cfg, expected);

        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/config.schema.json")).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("a valid schema");
        let as_json: serde_json::Value = toml::from_str(&text).unwrap();
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
        for jump_max in ["0", "-0.25"] {
            let text = format!("[engine.settings]\nprice_jump_max = \"{jump_max}\"\n");
            let refused = format!("{:#}", Config::from_toml_and_env(Some(&text), []).unwrap_err());
            assert!(refused.contains("price_jump_max must be positive"), "{refused}");
        }
    }

    #[test]
    fn a_configuration_written_as_toml_reads_back_to_itself() {
        // given the example file with overrides from the environment
        let text = std::fs::read_to_string(repo().join("schemas/examples/config.toml")).unwrap();
        let env = [
            ("OVERLAY_KAFKA_PROP_SASL_PASSWORD", "p\"w\n=#"),
            ("OVERLAY_KAFKA_FETCH_FROM_LOG_START", "1"),
            (OPS_LISTEN_ENV, "127.0.0.1:0"),
        ];
        let cfg = Config::from_toml_and_env(Some(&text), env.map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        assert_eq!(cfg.kafka.properties["sasl.password"], "p\"w\n=#");
        assert_eq!(cfg.ops.listen.as_deref(), Some("127.0.0.1:0"));
        // when it is written as TOML, then that reads back to the same configuration
        let written = cfg.to_toml().unwrap();
        assert_eq!(Config::from_toml_and_env(Some(&written), []).unwrap(), cfg);
        assert_eq!(Config::parse(&Config::default().to_toml().unwrap()).unwrap(), Config::default());
    }

    #[test]
    fn an_empty_listen_override_turns_the_server_off_and_a_bad_one_is_refused_by_name() {
        let with = |pairs: &[(&str, &str)]| {
            let cfg = Config::from_toml_and_env(
                Some("[ops]\nlisten = \"0.0.0.0:9898\"\n"),
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            );
            cfg.map(|c| c.ops.listen).map_err(|e| format!("{e:#}"))
        };
        assert_eq!(with(&[]), Ok(Some("0.0.0.0:9898".to_string())));
        assert_eq!(with(&[(OPS_LISTEN_ENV, " ")]), Ok(None));
        let refused = with(&[(OPS_LISTEN_ENV, "9898")]).unwrap_err();
        assert!(refused.contains("ops.listen must be host:port"), "{refused}");
    }
}
