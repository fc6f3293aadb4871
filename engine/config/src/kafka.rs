//! The `[kafka]` section of the configuration file, with its environment
//! overrides. The librdkafka client configurations built from it are
//! `overlay_kafka`'s (`KafkaClientConfig`).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated host:port list.
    pub brokers: String,
    /// The consumer group engine instances share household partitions in.
    pub group_id: String,
    /// Partitions of the household topic and of the output topics (one shard each).
    pub household_partitions: u32,
    pub replication_factor: i16,
    /// Produce outputs and commit input offsets in Kafka transactions (one
    /// transactional id per shard, fencing a zombie owner). Needs a broker
    /// with transactions; consumers of the outputs then read `read_committed`.
    pub transactional: bool,
    /// Start every input fetch at the partition's first record and skip the
    /// ones before the shard's position in the engine. For brokers that do
    /// not serve a fetch from inside a record batch: tansu 0.6.0 answers a
    /// fetch at offset X with the batches that *start* at X or later, which
    /// would silently skip the rest of X's batch (or, inside the last batch,
    /// return nothing at all). Costs a re-read of the inputs on every restart
    /// or hand-off; leave it off for Kafka and other conforming brokers.
    pub fetch_from_log_start: bool,
    /// Passed to librdkafka as they are, for every client the engine makes:
    /// TLS (`security.protocol`, `ssl.ca.location`, …), SASL
    /// (`sasl.mechanism`, `sasl.username`, …), timeouts.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: overlay_proto::topics::ENGINE_GROUP.into(),
            household_partitions: 8,
            replication_factor: 1,
            transactional: false,
            fetch_from_log_start: false,
            properties: BTreeMap::new(),
        }
    }
}

/// Environment variables that override the file: `OVERLAY_KAFKA_BROKERS`,
/// `OVERLAY_KAFKA_GROUP_ID`, `OVERLAY_KAFKA_TRANSACTIONAL` and
/// `OVERLAY_KAFKA_FETCH_FROM_LOG_START` (true/false), and
/// `OVERLAY_KAFKA_PROP_<NAME>` for a librdkafka property, its name upper-cased
/// with dots as underscores (`OVERLAY_KAFKA_PROP_SASL_PASSWORD` sets `sasl.password`).
pub const ENV_PREFIX: &str = "OVERLAY_KAFKA_";

fn flag(name: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => bail!("{name} must be true or false, not {other:?}"),
    }
}

impl KafkaConfig {
    /// Applies overrides from environment variables (given, so tests need not
    /// touch the process environment).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (k, v) in vars {
            match &k[ENV_PREFIX.len()..] {
                "BROKERS" => self.brokers = v,
                "GROUP_ID" => self.group_id = v,
                "TRANSACTIONAL" => self.transactional = flag(&k, &v)?,
                "FETCH_FROM_LOG_START" => self.fetch_from_log_start = flag(&k, &v)?,
                name if name.starts_with("PROP_") && name.len() > 5 => {
                    self.properties.insert(name[5..].to_ascii_lowercase().replace('_', "."), v);
                }
                _ => bail!("unknown environment variable {k} (known: {ENV_PREFIX}BROKERS, GROUP_ID, TRANSACTIONAL, FETCH_FROM_LOG_START, PROP_<NAME>)"),
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            bail!("kafka.brokers is empty");
        }
        if self.group_id.trim().is_empty() {
            bail!("kafka.group_id is empty");
        }
        if !(1..=1024).contains(&self.household_partitions) {
            bail!("kafka.household_partitions must be between 1 and 1024");
        }
        if self.replication_factor < 1 {
            bail!("kafka.replication_factor must be at least 1");
        }
        // librdkafka takes C strings: a NUL would fail every client at its
        // creation, later and far from the file.
        let texts = [("kafka.brokers", &self.brokers), ("kafka.group_id", &self.group_id)].into_iter();
        let properties =
            self.properties.iter().flat_map(|(k, v)| [("a kafka.properties name", k), ("kafka.properties", v)]);
        if let Some((what, _)) = texts.chain(properties).find(|(_, text)| text.contains('\0')) {
            bail!("{what} holds a NUL character, which librdkafka cannot take");
        }
        for key in ["bootstrap.servers", "group.id", "transactional.id", "enable.idempotence", "isolation.level"] {
            if self.properties.contains_key(key) {
                bail!("kafka.properties may not set {key}: the engine sets it (see docs/kafka.md)");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_variables_override_the_file() {
        // given a configuration and overrides
        let mut c = KafkaConfig::default();
        c.apply_env(env(&[
            ("OVERLAY_KAFKA_BROKERS", "broker-1:9093,broker-2:9093"),
            ("OVERLAY_KAFKA_TRANSACTIONAL", "true"),
            ("OVERLAY_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL"),
            ("OVERLAY_KAFKA_PROP_SASL_MECHANISM", "SCRAM-SHA-512"),
            ("PATH", "/usr/bin"),
        ]))
        .unwrap();
        c.validate().unwrap();
        // then they are in force
        assert!(c.transactional);
        assert_eq!(c.brokers, "broker-1:9093,broker-2:9093");
        assert_eq!(c.properties["security.protocol"], "SASL_SSL");
        assert_eq!(c.properties["sasl.mechanism"], "SCRAM-SHA-512");
    }

    #[test]
    fn unknown_variables_and_engine_owned_properties_are_refused() {
        let mut c = KafkaConfig::default();
        assert!(c.apply_env(env(&[("OVERLAY_KAFKA_BROKER", "x:1")])).is_err());
        assert!(c.apply_env(env(&[("OVERLAY_KAFKA_TRANSACTIONAL", "yes")])).is_err());
        c.properties.insert("sasl.username".into(), "a\0b".into());
        assert!(format!("{:#}", c.validate().unwrap_err()).contains("NUL"));
        c.properties.clear();
        c.properties.insert("enable.idempotence".into(), "false".into());
        assert!(c.validate().is_err());
    }
}
