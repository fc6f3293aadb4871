//! librdkafka's built-in mock cluster as a stand-alone broker: a Kafka
//! protocol endpoint on loopback, in memory, with the engine's topics made.
//! It offers what tansu lacks (transactions, consumer-group session expiry)
//! and needs nothing installed, so it serves for trying the Kafka transport,
//! for third-party clients, and for multi-process tests. Not for production:
//! nothing is persisted and the process holding it is the broker.

use crate::admin::topic_specs;
use crate::config::KafkaConfig;
use anyhow::{anyhow, Result};
use rdkafka::mocking::MockCluster;

/// A running mock cluster with the engine's topics (partition counts from `cfg`).
pub struct MockBroker {
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl MockBroker {
    pub fn start(cfg: &KafkaConfig, brokers: i32) -> Result<Self> {
        let cluster = MockCluster::new(brokers).map_err(|e| anyhow!("starting the mock cluster: {e}"))?;
        // The mock cluster does not serve CreateTopics: topics are made here.
        for t in topic_specs(cfg) {
            cluster
                .create_topic(t.name, t.partitions as i32, 1)
                .map_err(|e| anyhow!("creating {} on the mock cluster: {e}", t.name))?;
        }
        Ok(Self { cluster })
    }

    /// The bootstrap servers (`host:port,…`) clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}
