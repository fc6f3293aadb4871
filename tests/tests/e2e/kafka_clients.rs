//! A third-party client on the Kafka wire contract: Python's confluent-kafka
//! (PyPI, with its own librdkafka) and the official protobuf runtime, in
//! `tests/python/kafka_client.py`, converts the example events to protobuf
//! field by field, publishes them, and reads the engine's orders back. The
//! records decode to the JSON events, the engine refuses none, and the orders
//! are the ones the same day gives on the embedded log. Debian's kcat, on
//! librdkafka's mock cluster, feeds a bad record and reads orders (keys and
//! headers) and the dead letter.
//!
//! The interpreter is `$OVERLAY_PYTHON` (set by `scripts/test`; installed by
//! `bash scripts/setup-kafka`), else `python3` on the PATH.

use overlay_core::event::Envelope;
use overlay_proto::topics::{HEADER_CONTENT_TYPE, HEADER_EVENT_TYPE, HEADER_SCHEMA_VERSION};
use overlay_tests::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const HOUSEHOLD_PARTITIONS: u32 = 4;

/// The Python interpreter with confluent-kafka, protobuf and grpcio-tools,
/// failing with the way to install them when it cannot import them.
fn python() -> PathBuf {
    let python = std::env::var_os("OVERLAY_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("python3"));
    let check = Command::new(&python).args(["-c", "import confluent_kafka, google.protobuf, grpc_tools"]).output();
    match check {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "{} cannot import confluent_kafka, google.protobuf and grpc_tools: run `bash scripts/setup-kafka`, \
             then set OVERLAY_PYTHON=$(bash scripts/setup-kafka-python) (scripts/test does both)\n{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "no Python interpreter at {} ({e}): run `bash scripts/setup-kafka`, then set \
             OVERLAY_PYTHON=$(bash scripts/setup-kafka-python) (scripts/test does both)",
            python.display()
        ),
    }
}

/// Runs `kafka_client.py <args>` to the end.
fn client(python: &Path, args: &[&str]) -> Output {
    let script = workspace_root().join("tests/python/kafka_client.py");
    Command::new(python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} {}: {e}", python.display(), script.display()))
}

/// Runs `kafka_client.py <args>`, failing with what it said unless it exited 0; its stdout lines as JSON.
#[track_caller]
fn client_ok(python: &Path, args: &[&str]) -> Vec<Value> {
    let out = client(python, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`kafka_client.py {}` failed ({})\n{stderr}", args.join(" "), out.status);
    if !stderr.trim().is_empty() {
        eprintln!("[kafka-clients] {}", stderr.trim());
    }
    json_lines(&String::from_utf8_lossy(&out.stdout))
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd-length hex");
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits")).collect()
}

/// Checks one record a Python client produced (as `encode` or `read` print it)
/// against the JSON event it came from: the bytes decode, in the engine's own
/// decoder, to that very event; topic, key and headers are the ones
/// `overlay publish` gives it.
#[track_caller]
fn check_record(record: &Value, event: &Value) {
    let want: Envelope = serde_json::from_value(event.clone()).expect("an example event the engine reads");
    let bytes = from_hex(record["value_hex"].as_str().unwrap_or_else(|| panic!("no value_hex in {record}")));
    let got = overlay_proto::decode_envelope(&bytes)
        .unwrap_or_else(|e| panic!("the engine refuses Python's protobuf of {}: {e}", want.event_id));
    assert_eq!(got, want, "Python's protobuf of {} decodes to another event", want.event_id);
    let (topic, engine_record) = overlay_app::topics::record_for(&want, Vec::new());
    let key = String::from_utf8(engine_record.key.expect("input records are keyed")).expect("a UTF-8 key");
    assert_eq!(record["topic"], topic, "topic of {}", want.event_id);
    assert_eq!(record["key"], key.as_str(), "key of {}", want.event_id);
    let headers = &record["headers"];
    assert_eq!(headers[HEADER_SCHEMA_VERSION], want.schema_version.to_string().as_str(), "{record}");
    assert_eq!(headers[HEADER_EVENT_TYPE], want.payload.type_name(), "{record}");
    assert_eq!(headers[HEADER_CONTENT_TYPE], "application/x-protobuf", "{record}");
}

fn day_ndjson() -> PathBuf {
    workspace_root().join("schemas/examples/day.ndjson")
}

/// Orders by id without `seq` (a position in the embedded engine's one
/// stream, or in a Kafka shard's), failing on a repeated id.
#[track_caller]
fn by_id(orders: &[Value]) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for o in orders {
        let id = o["order_id"].as_str().unwrap_or_else(|| panic!("an order without an id: {o}")).to_string();
        let mut o = o.clone();
        o.as_object_mut().expect("an order is an object").remove("seq");
        assert!(m.insert(id.clone(), o).is_none(), "order {id} appears twice");
    }
    m
}

/// The number before `what` in a summary such as "folded 57 inputs in 5 batches: 11 orders, …".
#[track_caller]
fn count_before(summary: &str, what: &str) -> u64 {
    let head = &summary[..summary.find(what).unwrap_or_else(|| panic!("no {what:?} in: {summary}"))];
    let digits = head.rsplit(|c: char| !c.is_ascii_digit()).next().unwrap_or_default();
    digits.parse().unwrap_or_else(|_| panic!("no count before {what:?} in: {summary}"))
}

#[test]
fn python_encodes_every_example_event_as_the_engine_decodes_it() {
    let python = python();
    // given every example event, one of each payload type at least
    let examples = workspace_root().join("schemas/examples");
    let mut events = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("schemas/examples")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("household_snapshot"))
        })
        .collect();
    files.sort();
    for f in &files {
        events.push(serde_json::from_str::<Value>(&std::fs::read_to_string(f).expect("an example")).expect("JSON"));
    }
    events.extend(json_lines(&std::fs::read_to_string(day_ndjson()).expect("day.ndjson")));
    let types: BTreeSet<&str> = events.iter().filter_map(|e| e["payload"]["type"].as_str()).collect();
    assert_eq!(types.len(), 13, "the examples cover {types:?}, not every payload type");
    let tmp = tempdir("overlay-py-encode-");
    let file = tmp.path().join("events.ndjson");
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&file, text).expect("writing the events");

    // when the Python client converts them to protobuf records
    let records = client_ok(&python, &["encode", file.to_str().expect("a UTF-8 path")]);

    // then each decodes in the engine to its JSON event, with its topic, key and headers
    assert_eq!(records.len(), events.len(), "one record per event");
    for (record, event) in records.iter().zip(&events) {
        check_record(record, event);
    }

    // and a decimal given as a JSON number is refused, naming the field (it could not be exact)
    let price_tick = events.iter().find(|e| e["payload"]["type"] == "price_tick").expect("a price tick");
    let mut bad = price_tick.clone();
    bad["payload"]["price"] = serde_json::json!(213.49);
    std::fs::write(&file, format!("{bad}\n")).expect("writing the bad event");
    let out = client(&python, &["encode", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a float price was encoded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("payload.price is not a decimal string"), "{stderr}");
}

#[test]
fn a_python_client_publishes_the_day_and_reads_back_the_orders_of_the_embedded_log() {
    let python = python();
    let day = day_ndjson();
    let day_path = day.to_str().expect("a UTF-8 path");
    let events = json_lines(&std::fs::read_to_string(&day).expect("day.ndjson"));
    // given the example day on the embedded log
    let tmp = tempdir("overlay-kafka-clients-");
    let embedded = tmp.path().join("embedded");
    publish_file(&embedded, &day).ok();
    overlay(&embedded, &["run"]).ok();
    let want = by_id(&orders(&embedded));
    assert!(!want.is_empty(), "the example day made no orders on the embedded log");
    // and a broker with the engine's topics
    let broker = Broker::start();
    let brokers = broker.brokers();
    let kafka = tmp.path().join("kafka");
    overlay_kafka(&kafka, &broker, HOUSEHOLD_PARTITIONS, &["kafka", "create-topics"]).ok();

    // when the Python client publishes the same day, converted to protobuf by itself
    let delivered = client_ok(&python, &["publish", "--brokers", &brokers, day_path]);
    let ids: Vec<&Value> = delivered.iter().map(|d| &d["event_id"]).collect();
    assert_eq!(ids, events.iter().map(|e| &e["event_id"]).collect::<Vec<_>>(), "the broker acknowledged other events");
    // and the engine folds it from Kafka
    let run = overlay_kafka(&kafka, &broker, HOUSEHOLD_PARTITIONS, &["run", "--kafka"]).ok();
    let summary = run.stderr.trim();
    eprintln!("[kafka-clients] {summary}");

    // then the records on the broker are the day's events, as the engine decodes them
    let mut inputs = Vec::new();
    for topic in topics::INPUTS {
        inputs.extend(client_ok(&python, &["read", "--brokers", &brokers, topic]));
    }
    assert_eq!(inputs.len(), events.len(), "input records on the broker");
    let inputs: BTreeMap<&str, &Value> =
        inputs.iter().map(|r| (r["value"]["event_id"].as_str().expect("an event id"), r)).collect();
    for e in &events {
        let id = e["event_id"].as_str().expect("an event id");
        check_record(inputs.get(id).unwrap_or_else(|| panic!("{id} is not on the broker")), e);
    }
    // and the engine refused none of them: every event applied, no rejections, no dead letters
    assert_eq!(count_before(summary, " dead letters"), 0, "{summary}");
    let audit = client_ok(&python, &["read", "--brokers", &brokers, topics::AUDIT]);
    let refused: Vec<&Value> = audit
        .iter()
        .filter(|r| matches!(r["value"]["body"]["kind"].as_str(), Some("rejected" | "duplicate")))
        .collect();
    assert!(refused.is_empty(), "the engine refused Python's records: {refused:?}");
    let applied: BTreeSet<&str> = audit
        .iter()
        .filter(|r| r["value"]["body"]["kind"] == "applied")
        .filter_map(|r| r["value"]["event_id"].as_str())
        .collect();
    let all: BTreeSet<&str> = events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert_eq!(applied, all, "events applied by the engine");
    let dead = client_ok(&python, &["read", "--brokers", &brokers, topics::DEAD_LETTERS]);
    assert!(dead.is_empty(), "dead letters: {dead:?}");

    // and Python reads back exactly the orders the engine says it made, keyed by account
    let records = client_ok(&python, &["read", "--brokers", &brokers, topics::ORDERS]);
    for r in &records {
        assert_eq!(r["key"], r["value"]["account"], "an order not keyed by its account: {r}");
        assert_eq!(r["headers"][HEADER_CONTENT_TYPE], "application/json", "{r}");
        assert_eq!(r["headers"][HEADER_EVENT_TYPE], "orders", "{r}");
    }
    let got_values: Vec<Value> = records.iter().map(|r| r["value"].clone()).collect();
    let got = by_id(&got_values);
    assert_eq!(got.len() as u64, count_before(summary, " orders"), "orders read vs made: {summary}");
    let engine_read = overlay_kafka(&kafka, &broker, HOUSEHOLD_PARTITIONS, &["kafka", "read", topics::ORDERS]).ok();
    assert_eq!(by_id(&engine_read.json_lines()), got, "Python and the engine read different orders");
    // and they are the embedded log's: ids, accounts, securities, sides, quantities, lots, causes
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "order ids differ");
    for (id, o) in &want {
        assert_eq!(&got[id], o, "order {id} differs");
    }
}

/// `kcat` with `args`, failing with the way to install it when it is missing.
fn kcat(args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("no kcat ({e}): run `bash scripts/setup-kafka` (it installs Debian's kcat)"));
    std::io::Write::write_all(&mut child.stdin.take().expect("piped"), stdin).expect("kcat's input");
    let out = child.wait_with_output().expect("kcat ran");
    assert!(out.status.success(), "kcat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("kcat's output is text")
}

/// kcat (Debian's, librdkafka 2.0.2) cannot complete tansu's handshake; it
/// talks to librdkafka's mock cluster, served by `overlay kafka mock-cluster`.
#[test]
fn kcat_feeds_a_bad_record_and_reads_the_orders_with_their_headers_and_the_dead_letter() {
    // given the example day on the mock cluster
    let broker = Broker::mock(HOUSEHOLD_PARTITIONS);
    let tmp = tempdir("overlay-kcat-");
    let dir = tmp.path().join("engine");
    let day = workspace_root().join("schemas/examples/day.ndjson");
    overlay_kafka(&dir, &broker, HOUSEHOLD_PARTITIONS, &["publish", "--kafka", day.to_str().unwrap()]).ok();
    // and a record kcat produces that is no protobuf, keyed by the day's household
    let brokers = broker.brokers();
    kcat(&["-P", "-b", &brokers, "-t", "overlay.households", "-k", "HH-30562"], b"kcat says hello");
    // when the engine folds them
    let run = overlay_kafka(&dir, &broker, HOUSEHOLD_PARTITIONS, &["run", "--kafka"]).ok();
    // then kcat reads every order, keyed by account, its overlay-seq header its seq
    let read = ["-C", "-b", &brokers, "-e", "-q", "-X", "isolation.level=read_committed"];
    let text = kcat(&[&read[..], &["-t", "overlay.orders", "-f", "%k\t%h\t%s\n"]].concat(), b"");
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        let mut f = line.splitn(3, '\t');
        let (key, headers, value) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let order: Value = serde_json::from_str(value).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(key, order["account"].as_str().unwrap(), "{line}");
        assert!(headers.contains(&format!("overlay-seq={}", order["seq"])), "{line}");
        assert!(ids.insert(order["order_id"].as_str().unwrap().to_string()), "an order twice: {line}");
    }
    assert!(run.stderr.contains(&format!("{} orders", ids.len())), "kcat read {} orders:\n{}", ids.len(), run.stderr);
    assert!(!ids.is_empty());
    // and the record it produced is a dead letter, its bytes kept
    let dls = kcat(&[&read[..], &["-t", "overlay.dead-letters"]].concat(), b"");
    let dls: Vec<Value> = dls.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dls.len(), 1, "{dls:#?}");
    assert_eq!(dls[0]["error"], "malformed");
    let hex: String = b"kcat says hello".iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(dls[0]["raw_hex"], hex.as_str());
}
