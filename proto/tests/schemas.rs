//! The JSON Schemas in `schemas/` against the serde (canonical JSON) form of
//! `overlay_core`: every example validates and decodes, the engine's own
//! serialization validates, and broken documents are refused.

use chrono::{DateTime, Utc};
use jsonschema::{Draft, Validator};
use overlay_core::event::{decode_json, InputErrorKind, Side};
use overlay_core::output::{
    AuditBody, AuditRecord, DeadLetter, DecisionInputs, LotRelief, Order, OrderReason, RealizedLot, Skip, SkipReason,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Examples the engine cannot decode today because of a known engine/core bug.
/// The test fails once the bug is fixed, so the entry gets removed.
const KNOWN_CORE_BUGS: &[(&str, &str)] = &[];

const PAYLOAD_TYPES: [&str; 13] = [
    "security_upserted",
    "model_published",
    "price_tick",
    "esg_score_changed",
    "household_upserted",
    "restriction_edited",
    "cash_flow",
    "fill",
    "clock",
    "corporate_action",
    "tax_objective_set",
    "withdrawal_scheduled",
    "transition_set",
];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn parse(text: &str, origin: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{origin} is not JSON: {e}"))
}

/// Compiles a schema file after checking it against the 2020-12 meta-schema.
/// Formats (`date`, `date-time`) are asserted, not just annotated.
fn validator(file: &str) -> Validator {
    let schema = parse(&read(&schemas_dir().join(file)), file);
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("{file} is not a valid JSON Schema: {e} at {}", e.instance_path());
    }
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file} does not compile: {e}"))
}

fn errors(v: &Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn assert_valid(v: &Validator, doc: &Value, origin: &str) {
    let errs = errors(v, doc);
    assert!(errs.is_empty(), "{origin} does not match its schema:\n  {}", errs.join("\n  "));
}

/// Every example document: (origin, text).
fn examples() -> Vec<(String, String)> {
    let dir = schemas_dir().join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    paths.sort();
    let mut docs = Vec::new();
    for path in paths {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            // The household snapshot is `overlay propose`'s input, not an event; checked by engine/app's tests.
            Some("json") if name.starts_with("household_snapshot") => {}
            Some("json") => docs.push((name, read(&path))),
            Some("ndjson") => {
                for (i, line) in read(&path).lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    docs.push((format!("{name}:{}", i + 1), line.to_string()));
                }
            }
            // The config example is TOML, checked against config.schema.json by engine/app's tests.
            Some("toml") if name == "config.toml" => {}
            _ => panic!("unexpected file in schemas/examples: {name}"),
        }
    }
    docs
}

#[test]
fn every_example_validates_against_the_schema_and_decodes() {
    // given the event schema and every example
    let schema = validator("event.schema.json");
    let docs = examples();
    let mut types = BTreeSet::new();
    let mut known_bugs_seen = BTreeSet::new();
    for (origin, text) in &docs {
        // when it is validated
        let doc = parse(text, origin);
        assert_valid(&schema, &doc, origin);
        types.insert(doc["payload"]["type"].as_str().unwrap_or_default().to_string());
        // then it also decodes (and passes decode-time validation)
        let decoded = decode_json(text.as_bytes());
        if let Some((_, why)) = KNOWN_CORE_BUGS.iter().find(|(file, _)| origin == file) {
            assert!(decoded.is_err(), "{origin} decodes now: remove it from KNOWN_CORE_BUGS ({why})");
            eprintln!("known engine/core bug, {origin} does not decode: {why}");
            known_bugs_seen.insert(origin.as_str());
            continue;
        }
        let env = decoded.unwrap_or_else(|e| panic!("{origin} does not decode: {e}"));
        // and the engine's own serialization of it matches the schema too
        let canonical = serde_json::to_value(&env).expect("an envelope serializes");
        assert_valid(&schema, &canonical, &format!("{origin} (re-serialized)"));
    }
    assert_eq!(known_bugs_seen.len(), KNOWN_CORE_BUGS.len(), "every known bug names an existing example");
    let expected: BTreeSet<String> = PAYLOAD_TYPES.iter().map(|t| t.to_string()).collect();
    assert_eq!(types, expected, "one example per payload type at least");
    for t in PAYLOAD_TYPES {
        assert!(schemas_dir().join(format!("examples/{t}.json")).exists(), "examples/{t}.json is missing");
    }
    assert!(docs.iter().filter(|(o, _)| o.starts_with("day.ndjson:")).count() >= 10, "day.ndjson has a day of events");
}

/// Applies `edit` to a copy of an example.
fn mutated(example: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut doc = parse(&read(&schemas_dir().join("examples").join(example)), example);
    edit(&mut doc);
    doc
}

fn remove(doc: &mut Value, pointer: &str, key: &str) {
    doc.pointer_mut(pointer).and_then(Value::as_object_mut).expect("object").remove(key);
}

/// Sets (or adds) the member a JSON pointer names.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer to a member");
    match doc.pointer_mut(parent).expect("parent exists") {
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().expect("an index")] = value,
        other => panic!("{parent} is {other}, not a container"),
    }
}

#[test]
fn broken_events_fail_the_schema_and_the_decoder() {
    // given documents that break the contract, each in one way
    let schema = validator("event.schema.json");
    let cases: Vec<(&str, Value)> = vec![
        ("missing required envelope field", mutated("price_tick.json", |d| remove(d, "", "producer"))),
        ("missing required payload field", mutated("price_tick.json", |d| remove(d, "/payload", "price"))),
        ("unknown envelope field", mutated("price_tick.json", |d| set(d, "/trace_id", json!("abc")))),
        ("unknown payload field", mutated("price_tick.json", |d| set(d, "/payload/currency", json!("USD")))),
        ("number instead of decimal string", mutated("price_tick.json", |d| set(d, "/payload/price", json!(213.49)))),
        ("decimal string that is not a number", mutated("price_tick.json", |d| set(d, "/payload/price", json!("n/a")))),
        ("wrong payload type", mutated("price_tick.json", |d| set(d, "/payload/type", json!("price_ticks")))),
        ("payload without a type", mutated("price_tick.json", |d| remove(d, "/payload", "type"))),
        ("unknown enum value", mutated("clock.json", |d| set(d, "/payload/kind", json!("market_open")))),
        ("impossible date", mutated("clock.json", |d| set(d, "/payload/trade_date", json!("2025-02-30")))),
        ("time without offset", mutated("clock.json", |d| set(d, "/event_time", json!("2025-03-14T20:15:00")))),
        ("unknown rule kind", mutated("restriction_edited.json", |d| set(d, "/payload/rule/kind", json!("max_score")))),
        ("unknown rule field", mutated("restriction_edited.json", |d| set(d, "/payload/rule/security", json!("XOM")))),
        (
            "unknown lot field",
            mutated("household_upserted.json", |d| set(d, "/payload/accounts/0/opening_lots/0/lot_id", json!(1))),
        ),
        ("null where a default applies", mutated("household_upserted.json", |d| set(d, "/payload/tax", Value::Null))),
        ("id with a slash", mutated("cash_flow.json", |d| set(d, "/payload/account", json!("HH/1")))),
        ("split as a string", mutated("corporate_action.json", |d| set(d, "/payload/numerator", json!("10")))),
        ("schema version 2", mutated("clock.json", |d| set(d, "/schema_version", json!(2)))),
    ];
    for (what, doc) in cases {
        // when / then: the schema refuses it
        assert!(!schema.is_valid(&doc), "schema accepts a document with {what}: {doc}");
        // and so does the engine
        let bytes = serde_json::to_vec(&doc).expect("serializes");
        assert!(decode_json(&bytes).is_err(), "decode_json accepts a document with {what}");
    }
}

fn day(s: &str) -> chrono::NaiveDate {
    s.parse().expect("test date")
}

fn d(s: &str) -> Decimal {
    Decimal::from_str_exact(s).expect("test decimal")
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("test time").with_timezone(&Utc)
}

fn sample_order(lots: Vec<LotRelief>) -> Order {
    Order {
        order_id: "o-5f1c9a02be7d43e8a1c06d27".into(),
        seq: 17,
        household: "HH-20417".into(),
        account: "HH-20417-TAXABLE".into(),
        security: "MSFT".into(),
        side: if lots.is_empty() { Side::Buy } else { Side::Sell },
        quantity: d("25"),
        ref_price: d("388.47"),
        reason: OrderReason::Harvest,
        lots,
        cause_event_id: "clock-market-close-2025-03-14".into(),
        decided_at: at("2025-03-14T20:15:00Z"),
    }
}

fn sample_audit(body: AuditBody) -> AuditRecord {
    AuditRecord {
        seq: 40,
        stream: "household/HH-20417".into(),
        stream_seq: 1,
        event_id: Some("clock-market-close-2025-03-14".into()),
        at: Some(at("2025-03-14T20:15:00Z")),
        household: Some("HH-20417".into()),
        body,
        prev_hash: String::new(),
        hash: "9f".repeat(32),
    }
}

fn every_audit_body() -> Vec<AuditBody> {
    vec![
        AuditBody::Applied { event_type: "price_tick".into(), summary: "AAPL 213.49".into() },
        AuditBody::Rejected {
            event_type: None,
            error: InputErrorKind::Malformed,
            reason: "not a valid event: expected value".into(),
        },
        AuditBody::Duplicate { event_type: "fill".into(), first_seq: 31 },
        AuditBody::Decision {
            account: "HH-20417-TAXABLE".into(),
            rules: vec!["esg_minimum R-ESG-MIN".into()],
            inputs: DecisionInputs {
                state_version: 212,
                account_value_usd: d("402318.77"),
                cash_usd: d("18250.00"),
                models: BTreeMap::from([("US-CORE-EQUITY".into(), 12)]),
                restrictions: BTreeMap::from([("R-ESG-MIN".into(), 1)]),
                prices: BTreeMap::from([("MSFT".into(), d("388.47")), ("XOM".into(), d("111.43"))]),
            },
            orders: vec!["o-5f1c9a02be7d43e8a1c06d27".into()],
            skipped: vec![Skip {
                security: "XOM".into(),
                side: Side::Buy,
                reason: SkipReason::Restricted,
                detail: "ESG score 38.5 below minimum 40".into(),
            }],
        },
        AuditBody::Tax {
            account: "HH-20417-TAXABLE".into(),
            security: "XOM".into(),
            trade_date: day("2025-03-14"),
            quantity: d("40"),
            price: d("111.43"),
            lots: vec![RealizedLot {
                lot_id: 3,
                quantity: d("40"),
                cost_per_share: d("127.245"),
                acquired: day("2024-11-02"),
                holding_start: day("2024-11-02"),
                gain_usd: d("-632.60"),
                long_term: false,
            }],
            short_term_usd: d("-632.60"),
            long_term_usd: d("0"),
            realized_usd: d("-632.60"),
            reportable: true,
            detail: "lot 3 sold at a loss".into(),
        },
        AuditBody::WashSale {
            sale_event_id: "fill-o-1-1".into(),
            sale_account: "HH-20417-TAXABLE".into(),
            security: "XOM".into(),
            sale_date: day("2025-03-14"),
            sold_lot_id: 3,
            replacement_account: "HH-20417-IRA".into(),
            replacement_security: "XOM".into(),
            replacement_lot_id: 7,
            replacement_date: day("2025-03-28"),
            shares: d("40"),
            disallowed_usd: d("632.60"),
            basis_added: false,
            holding_start: day("2025-03-28"),
            detail: "replacement in an IRA: the loss is lost for good".into(),
        },
        AuditBody::IncomeRaised {
            account: "HH-20417-TAXABLE".into(),
            payments: vec![overlay_core::output::ScheduledPayment {
                schedule_id: "monthly-income".into(),
                payment_date: day("2025-04-01"),
                amount_usd: d("6500.00"),
            }],
            shortfall_usd: d("6810.40"),
            sources: vec![overlay_core::output::IncomeSource {
                order_id: "o-1".into(),
                security: "XOM".into(),
                quantity: d("60"),
                ref_price: d("113.50"),
                lots: vec![LotRelief {
                    lot_id: 3,
                    quantity: d("60"),
                    cost_per_share: d("120.00"),
                    est_gain_usd: d("-390.00"),
                    long_term: true,
                }],
                est_tax_usd: d("-78.00"),
            }],
            est_tax_usd: d("-78.00"),
            detail: "raised".into(),
        },
        AuditBody::TransitionPeriod {
            account: "HH-30112-TAXABLE".into(),
            period: 2,
            periods: 8,
            period_start: day("2025-06-14"),
            drift: d("0.312500"),
            allowance_usd: d("15000.00"),
            budget_usd: Some(d("120000")),
            yearly_budget_usd: None,
            used_usd: d("14870.20"),
            planned_gain_usd: d("14990.00"),
            kept: vec!["AAPL".into()],
            detail: "period 2".into(),
        },
        AuditBody::IncomePaid {
            account: "HH-20417-TAXABLE".into(),
            schedule_id: "monthly-income".into(),
            payment_date: day("2025-04-01"),
            amount_usd: d("6500.00"),
            paid_usd: d("6500.00"),
            detail: "paid".into(),
        },
    ]
}

fn sample_dead_letter() -> DeadLetter {
    DeadLetter {
        seq: 5,
        event_id: None,
        error: InputErrorKind::Malformed,
        reason: "not a valid event: expected value at line 1 column 1".into(),
        source: "overlay.events/3/1200".into(),
        raw_hex: "6e6f74206a736f6e".into(),
    }
}

#[test]
fn outputs_serialize_to_their_schemas() {
    // given the output schemas
    let (orders, audit, dead) =
        (validator("order.schema.json"), validator("audit.schema.json"), validator("dead_letter.schema.json"));
    let relief = LotRelief {
        lot_id: 3,
        quantity: d("25"),
        cost_per_share: d("413.77"),
        est_gain_usd: d("-632.50"),
        long_term: false,
    };
    // when the engine's outputs are serialized, then they match
    for order in [sample_order(vec![]), sample_order(vec![relief])] {
        assert_valid(&orders, &serde_json::to_value(&order).expect("serializes"), "order");
    }
    for body in every_audit_body() {
        let record = sample_audit(body);
        assert_valid(&audit, &serde_json::to_value(&record).expect("serializes"), &format!("{:?}", record.body));
    }
    let reference =
        AuditRecord { household: None, stream: "reference".into(), ..sample_audit(every_audit_body().remove(0)) };
    assert_valid(&audit, &serde_json::to_value(&reference).expect("serializes"), "reference audit record");
    assert_valid(&dead, &serde_json::to_value(sample_dead_letter()).expect("serializes"), "dead letter");
}

#[test]
fn broken_outputs_fail_their_schemas() {
    let (orders, audit, dead) =
        (validator("order.schema.json"), validator("audit.schema.json"), validator("dead_letter.schema.json"));
    let order = serde_json::to_value(sample_order(vec![])).expect("serializes");
    let record = serde_json::to_value(sample_audit(every_audit_body().remove(3))).expect("serializes");
    let letter = serde_json::to_value(sample_dead_letter()).expect("serializes");
    let edit = |v: &Value, f: &dyn Fn(&mut Value)| {
        let mut v = v.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, &Validator, Value)> = vec![
        ("order quantity as a number", &orders, edit(&order, &|v| set(v, "/quantity", json!(25)))),
        ("order without a side", &orders, edit(&order, &|v| remove(v, "", "side"))),
        ("order with an unknown reason", &orders, edit(&order, &|v| set(v, "/reason", json!("whim")))),
        ("audit body of an unknown kind", &audit, edit(&record, &|v| set(v, "/body/kind", json!("decided")))),
        ("audit price as a number", &audit, edit(&record, &|v| set(v, "/body/inputs/prices/MSFT", json!(388.47)))),
        ("audit without event_id", &audit, edit(&record, &|v| remove(v, "", "event_id"))),
        ("audit with a short hash", &audit, edit(&record, &|v| set(v, "/hash", json!("abc")))),
        ("dead letter with an unknown error", &dead, edit(&letter, &|v| set(v, "/error", json!("oops")))),
        ("dead letter with odd hex", &dead, edit(&letter, &|v| set(v, "/raw_hex", json!("abc")))),
    ];
    for (what, schema, doc) in cases {
        assert!(!schema.is_valid(&doc), "schema accepts {what}: {doc}");
    }
}
