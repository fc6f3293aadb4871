//! The registry as the Kafka engine's shard observer: each shard's durable
//! positions (household partition and reference) and outbox read from its
//! store when it settles.

use crate::metrics::Metrics;
use overlay_kafka::observe::ShardObserver;
use overlay_store::{Prepared, Store};

impl ShardObserver for Metrics {
    fn settled(&self, shard: u32, done: Option<&Prepared>, store: &dyn Store) {
        if let Some(done) = done {
            self.durable(shard, done.outputs.inputs);
        }
        let household = format!("{}/{shard}", overlay_proto::topics::HOUSEHOLDS);
        let reference = format!("{}/0", overlay_proto::topics::REFERENCE);
        let mut positions = Vec::new();
        for key in [&household, &reference] {
            match overlay_store::position(store, key) {
                Ok(p) => positions.push((key.as_str(), p.unwrap_or(0))),
                Err(e) => tracing::warn!(shard, error = %e, "reading a shard's position for the metrics"),
            }
        }
        self.positions(shard, positions);
        if let Err(e) = self.outbox_from_store(shard, store) {
            tracing::warn!(shard, error = %e, "reading a shard's outbox for the metrics");
        }
    }

    fn published(&self, shard: u32) {
        Metrics::published(self, shard);
    }

    fn revoked(&self) {
        self.forget_shards();
    }
}
