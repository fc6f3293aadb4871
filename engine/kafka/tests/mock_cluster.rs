//! The sharded engine on librdkafka's mock cluster, which (unlike tansu)
//! offers transactions: outputs published in transactions, a restart
//! publishes nothing twice, and a new instance restores every shard from the
//! inputs to the same outputs.

use overlay_core::event::{decode_json, Envelope};
use overlay_kafka::admin::{publish_events, read_topic, topic_specs};
use overlay_kafka::{EngineOptions, KafkaConfig, KafkaEngine};
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use std::collections::BTreeSet;

fn day() -> Vec<Envelope> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/examples/day.ndjson")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| decode_json(l.as_bytes()).unwrap()).collect()
}

fn orders(cfg: &KafkaConfig) -> Vec<Value> {
    read_topic(cfg, "overlay.orders")
        .unwrap()
        .into_iter()
        .map(|(_, _, v)| serde_json::from_slice(&v).unwrap())
        .collect()
}

fn run(dir: &std::path::Path, cfg: &KafkaConfig) -> overlay_kafka::RunStats {
    let mut engine = KafkaEngine::open(dir, cfg, EngineOptions::default()).expect("the engine opens");
    engine.run(&mut |_, _| {}).expect("the engine runs")
}

#[test]
fn transactional_shards_publish_once_and_a_new_instance_restores_them() {
    // given a mock cluster with the engine's topics and the example day published
    let cluster = MockCluster::new(1).expect("a mock cluster");
    let cfg = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        household_partitions: 2,
        transactional: true,
        ..KafkaConfig::default()
    };
    // (the mock cluster does not serve CreateTopics: its own call makes them)
    for t in topic_specs(&cfg) {
        cluster.create_topic(t.name, t.partitions as i32, 1).expect("a topic");
    }
    publish_events(&cfg, &day()).expect("published");
    // when an engine folds it, publishing in transactions
    let tmp = tempfile::tempdir().unwrap();
    let first = run(&tmp.path().join("a"), &cfg);
    // then it made orders, each once
    let published = orders(&cfg);
    assert!(first.orders > 0, "{first:?}");
    assert_eq!(published.len() as u64, first.orders);
    let ids: BTreeSet<&str> = published.iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), published.len(), "an order id repeats");
    // when the same instance runs again, nothing new is folded or published
    let again = run(&tmp.path().join("a"), &cfg);
    assert_eq!(again.inputs, 0, "{again:?}");
    assert_eq!(orders(&cfg).len(), published.len());
    // when a new instance (no state of its own) takes the partitions over
    let other = run(&tmp.path().join("b"), &cfg);
    // then it restores every shard from the inputs and publishes nothing twice
    assert_eq!(other.restores.len(), 2, "{other:?}");
    assert_eq!(other.orders, first.orders, "the restored shards made the same orders");
    assert_eq!(orders(&cfg), published, "the restore published orders again");
}
