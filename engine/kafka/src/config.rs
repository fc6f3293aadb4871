//! The librdkafka client configurations built from the `[kafka]` section of
//! the configuration file. The section itself (its fields, environment
//! overrides and validation) is plain data in `overlay_config`.

use rdkafka::ClientConfig;

pub use overlay_config::kafka::{KafkaConfig, ENV_PREFIX};

/// What every librdkafka client the engine makes starts from.
pub trait KafkaClientConfig {
    /// A client configuration: the brokers, then the pass-through properties.
    fn client(&self) -> ClientConfig;
}

impl KafkaClientConfig for KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_reach_librdkafka() {
        // given a configuration with overrides
        let mut c = KafkaConfig::default();
        let env = [
            ("OVERLAY_KAFKA_BROKERS", "broker-1:9093,broker-2:9093"),
            ("OVERLAY_KAFKA_PROP_SECURITY_PROTOCOL", "SASL_SSL"),
            ("OVERLAY_KAFKA_PROP_SASL_MECHANISM", "SCRAM-SHA-512"),
        ];
        c.apply_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        c.validate().unwrap();
        // then they are passed through to every client
        let client = c.client();
        assert_eq!(client.get("bootstrap.servers"), Some("broker-1:9093,broker-2:9093"));
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    }
}
