//! The engine's configuration file (TOML), described by
//! `schemas/config.schema.json`. Every field has a default, so no file is
//! needed to start.

use anyhow::{Context, Result};
use overlay_core::state::EngineSettings;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub engine: EngineConfig,
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
    /// Settings decisions depend on; recorded with the store when it is
    /// created, and kept from then on (replay uses the recorded ones).
    pub settings: EngineSettings,
}

impl Default for Config {
    fn default() -> Self {
        Self { log: LogConfig::default(), engine: EngineConfig::default() }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { household_partitions: 8 }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { batch_inputs_max: 1000, read_records_max: 512, idle_poll_ms: 100, settings: EngineSettings::default() }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let cfg: Config = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        cfg.validate().with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!((1..=1024).contains(&self.log.household_partitions), "log.household_partitions must be 1..=1024");
        anyhow::ensure!((1..=100_000).contains(&self.engine.batch_inputs_max), "engine.batch_inputs_max must be 1..=100000");
        anyhow::ensure!((1..=100_000).contains(&self.engine.read_records_max), "engine.read_records_max must be 1..=100000");
        anyhow::ensure!(self.engine.settings.fractional_dp <= 8, "engine.settings.fractional_dp must be at most 8");
        Ok(())
    }
}
