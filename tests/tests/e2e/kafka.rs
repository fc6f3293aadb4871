//! The engine on a real Kafka-protocol broker (tansu on loopback): the demo
//! scenario gives the same orders as on the embedded log.

use overlay_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Orders by id: (account, security, side, quantity, lots), failing on a repeated id.
fn by_id(orders: &[Value]) -> BTreeMap<String, (Value, Value, Value, Value, Value)> {
    let mut m = BTreeMap::new();
    for o in orders {
        let id = o["order_id"].as_str().expect("an order id").to_string();
        let v =
            (o["account"].clone(), o["security"].clone(), o["side"].clone(), o["quantity"].clone(), o["lots"].clone());
        assert!(m.insert(id.clone(), v).is_none(), "order {id} appears twice");
    }
    m
}

#[test]
fn the_demo_on_kafka_yields_the_same_orders_as_on_the_embedded_log() {
    // given the demo run on the embedded log (its inputs include the custodian's fills)
    let tmp = tempdir("overlay-kafka-demo-");
    let embedded = tmp.path().join("embedded");
    overlay(&embedded, &["demo", "--households", "40", "--days", "3", "--quiet"]).ok();
    let want = by_id(&orders(&embedded));
    assert!(want.len() > 100, "the demo made {} orders", want.len());
    // and a broker with the engine's topics, holding the same inputs
    let broker = Broker::start();
    let kafka = tmp.path().join("kafka");
    overlay_kafka(&kafka, &broker, 4, &["kafka", "create-topics"]).ok();
    overlay_kafka(&embedded, &broker, 4, &["kafka", "copy-inputs"]).ok();
    // when the engine folds them from Kafka, one shard per household partition
    let run = overlay_kafka(&kafka, &broker, 4, &["run", "--kafka"]).ok();
    eprintln!("[kafka] {}", run.stderr.trim());
    // then the orders are the same: ids, quantities, lots; none twice
    let got = overlay_kafka(&kafka, &broker, 4, &["kafka", "read", "overlay.orders"]).ok();
    let got = by_id(&got.json_lines());
    assert_eq!(got.len(), want.len(), "order counts differ");
    for (id, o) in &want {
        assert_eq!(got.get(id), Some(o), "order {id} differs");
    }
    // and running again publishes nothing more
    overlay_kafka(&kafka, &broker, 4, &["run", "--kafka"]).ok();
    let again = overlay_kafka(&kafka, &broker, 4, &["kafka", "read", "overlay.orders"]).ok();
    assert_eq!(again.json_lines().len(), want.len(), "a second run published orders again");
}
