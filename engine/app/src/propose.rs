//! `overlay propose --household FILE`: what the engine would decide for a
//! household snapshot (see `overlay_core::snapshot`), printed for people or
//! as JSON. No store is opened and nothing is published.

use anyhow::{Context, Result};
use chrono::NaiveDate;
use overlay_core::event::Side;
use overlay_core::ids::{AccountId, HouseholdId, OrderId, SecurityId};
use overlay_core::output::{AuditBody, LotRelief, Order, OrderReason};
use overlay_core::snapshot::{HouseholdSnapshot, Proposal};
use rust_decimal::Decimal;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Reads a snapshot ("-" for standard input) and decides on it.
pub fn propose_file(path: &Path) -> Result<(HouseholdSnapshot, Proposal)> {
    let bytes = if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).context("reading standard input")?;
        v
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let snapshot = HouseholdSnapshot::from_json(&bytes).with_context(|| format!("{}", path.display()))?;
    let proposal = snapshot.propose().with_context(|| format!("{}", path.display()))?;
    Ok((snapshot, proposal))
}

/// The proposal as one JSON document: `orders` (without a stream position:
/// a proposal's orders are never sent) and `decisions`, one per account.
pub fn to_json(p: &Proposal) -> Result<String> {
    #[derive(Serialize)]
    struct Doc<'a> {
        household: &'a HouseholdId,
        trade_date: NaiveDate,
        orders: Vec<Proposed<'a>>,
        decisions: &'a [AuditBody],
    }
    #[derive(Serialize)]
    struct Proposed<'a> {
        order_id: &'a OrderId,
        account: &'a AccountId,
        security: &'a SecurityId,
        side: Side,
        quantity: Decimal,
        ref_price: Decimal,
        reason: OrderReason,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        lots: &'a [LotRelief],
    }
    let orders = p
        .orders
        .iter()
        .map(|o| Proposed {
            order_id: &o.order_id,
            account: &o.account,
            security: &o.security,
            side: o.side,
            quantity: o.quantity,
            ref_price: o.ref_price,
            reason: o.reason,
            lots: &o.lots,
        })
        .collect();
    let doc = Doc { household: &p.household, trade_date: p.trade_date, orders, decisions: &p.decisions };
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// The proposal for people: per account, the rules that fired, the orders
/// with their lots and estimated tax, and the trades skipped with reasons.
pub fn print_text(s: &HouseholdSnapshot, p: &Proposal, out: &mut dyn Write) -> Result<()> {
    let clock = match s.clock {
        overlay_core::event::ClockKind::MarketClose => "market close (drift and loss harvesting)",
        overlay_core::event::ClockKind::Review => "review (drift)",
    };
    writeln!(out, "Proposal for household {}: {clock}, trade date {}, as of {}", p.household, p.trade_date, s.as_of)?;
    let (mut short, mut long) = (Decimal::ZERO, Decimal::ZERO);
    for body in &p.decisions {
        let AuditBody::Decision { account, rules, inputs, orders, skipped } = body else { continue };
        let models: Vec<String> = inputs.models.iter().map(|(m, v)| format!("{m} v{v}")).collect();
        writeln!(out)?;
        writeln!(
            out,
            "Account {account}: value {}, cash {}; following {}",
            usd(inputs.account_value_usd),
            usd(inputs.cash_usd),
            if models.is_empty() { "no model".to_string() } else { models.join(", ") }
        )?;
        if !inputs.restrictions.is_empty() {
            let r: Vec<String> = inputs.restrictions.iter().map(|(id, v)| format!("{id} v{v}")).collect();
            writeln!(out, "  restrictions in force: {}", r.join(", "))?;
        }
        if !rules.is_empty() {
            writeln!(out, "  rules:")?;
            for r in rules {
                writeln!(out, "    {r}")?;
            }
        }
        let mine: Vec<&Order> = orders.iter().filter_map(|id| p.orders.iter().find(|o| &o.order_id == id)).collect();
        writeln!(out, "  orders:{}", if mine.is_empty() { " none" } else { "" })?;
        for o in mine {
            writeln!(
                out,
                "    {:<4} {:>10} {:<8} @ {:>10} {:>15}  {}  ({})",
                o.side.as_str().to_uppercase(),
                o.quantity.normalize(),
                o.security.as_str(),
                o.ref_price.normalize(),
                usd(o.quantity * o.ref_price),
                o.reason.as_str(),
                o.order_id
            )?;
            for l in &o.lots {
                let term = if l.long_term { "long-term" } else { "short-term" };
                writeln!(
                    out,
                    "           lot {}: {} shares at ${} basis, est. {} {} ({term})",
                    l.lot_id,
                    l.quantity.normalize(),
                    l.cost_per_share.normalize(),
                    if l.est_gain_usd < Decimal::ZERO { "loss" } else { "gain" },
                    usd(l.est_gain_usd.abs())
                )?;
                if l.long_term {
                    long += l.est_gain_usd;
                } else {
                    short += l.est_gain_usd;
                }
            }
        }
        if !skipped.is_empty() {
            writeln!(out, "  skipped:")?;
            for k in skipped {
                writeln!(
                    out,
                    "    {:<4} {:<8} {:<20} {}",
                    k.side.as_str(),
                    k.security.as_str(),
                    k.reason.as_str(),
                    k.detail
                )?;
            }
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "{} orders; estimated realized gain {} (short-term {}, long-term {}). Nothing was sent.",
        p.orders.len(),
        usd(short + long),
        usd(short),
        usd(long)
    )?;
    Ok(())
}

/// Dollars for people: "$1,234.50", "-$80.00".
fn usd(d: Decimal) -> String {
    let text = d.abs().round_dp(2).to_string();
    let (whole, cents) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if d < Decimal::ZERO { "-" } else { "" };
    format!("{sign}${grouped}.{cents:0<2}")
}

#[cfg(test)]
mod tests {
    use super::usd;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn dollars_are_grouped_and_shown_to_the_cent() {
        for (v, want) in [
            ("0", "$0.00"),
            ("88100", "$88,100.00"),
            ("1234567.891", "$1,234,567.89"),
            ("-80.5", "-$80.50"),
            ("999", "$999.00"),
        ] {
            assert_eq!(usd(Decimal::from_str(v).unwrap()), want);
        }
    }
}

#[cfg(test)]
mod schema_tests {
    use overlay_core::snapshot::HouseholdSnapshot;
    use serde_json::{json, Value};
    use std::path::PathBuf;

    fn schemas() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
    }

    fn read(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(schemas().join(name)).unwrap()).unwrap()
    }

    /// Resolves the other schemas' ids to the files in `schemas/` (nothing is fetched).
    struct Local;

    impl jsonschema::Retrieve for Local {
        fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
            let file = match uri.as_str() {
                "urn:overlay:schemas:v1:event" => "event.schema.json",
                "urn:overlay:schemas:v1:order" => "order.schema.json",
                "https://overlay.example/schemas/config.schema.json" => "config.schema.json",
                other => return Err(format!("no local schema for {other}").into()),
            };
            Ok(read(file))
        }
    }

    fn validator() -> jsonschema::Validator {
        let schema = read("household_snapshot.schema.json");
        jsonschema::meta::validate(&schema).expect("a valid 2020-12 schema");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_retriever(Local)
            .build(&schema)
            .expect("the snapshot schema compiles with the schemas it references")
    }

    fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
        v.iter_errors(doc).map(|e| format!("{e} at {}", e.instance_path())).collect()
    }

    #[test]
    fn the_example_snapshot_and_the_engines_own_form_match_the_schema() {
        // given the schema and the example
        let v = validator();
        let example = read("examples/household_snapshot.json");
        // then the example validates, decodes, and its re-serialization validates too
        assert_eq!(errors(&v, &example), Vec::<String>::new());
        let decoded = HouseholdSnapshot::from_json(example.to_string().as_bytes()).expect("the example decodes");
        let mut own = serde_json::to_value(&decoded).unwrap();
        assert_eq!(errors(&v, &own), Vec::<String>::new());
        // and so does a snapshot with every optional part filled in
        own["trade_date"] = json!("2026-06-19");
        own["settings"] = serde_json::to_value(overlay_core::state::EngineSettings::default()).unwrap();
        own["accounts"][0]["pending"] = json!([{"order_id": "o-1", "security": "XOM", "side": "sell", "quantity": "10",
            "ref_price": "110", "reason": "drift", "lots": [{"lot_id": 2, "quantity": "10", "cost_per_share": "80",
            "est_gain_usd": "300", "long_term": false}]}]);
        own["accounts"][0]["withdrawal_due"] = json!("1000");
        own["accounts"][0]["lots"][0]["holding_start"] = json!("2025-06-01");
        own["recent_trades"][0]["matched"] = json!("10");
        assert_eq!(errors(&v, &own), Vec::<String>::new());
        HouseholdSnapshot::from_json(own.to_string().as_bytes()).expect("the filled-in snapshot decodes");
    }

    /// A way to spoil a snapshot.
    type Spoil = Box<dyn Fn(&mut Value)>;

    #[test]
    fn the_schema_refuses_what_the_engine_refuses() {
        let v = validator();
        let example = read("examples/household_snapshot.json");
        let cases: Vec<(&str, Spoil)> = vec![
            ("an unknown top-level field", Box::new(|d| d["colour"] = json!("red"))),
            ("a price as a JSON number", Box::new(|d| d["prices"]["XOM"] = json!(110))),
            ("no securities", Box::new(|d| drop(d.as_object_mut().unwrap().remove("securities")))),
            (
                "a security with an event's type tag",
                Box::new(|d| d["securities"][0]["type"] = json!("security_upserted")),
            ),
            ("a model without weights", Box::new(|d| drop(d["models"][0].as_object_mut().unwrap().remove("weights")))),
            ("an unknown clock", Box::new(|d| d["clock"] = json!("hourly"))),
            (
                "a lot without its date",
                Box::new(|d| drop(d["accounts"][0]["lots"][0].as_object_mut().unwrap().remove("acquired"))),
            ),
            ("a restriction version 0", Box::new(|d| d["restrictions"][1]["version"] = json!(0))),
            ("a trade with a bad date", Box::new(|d| d["recent_trades"][0]["trade_date"] = json!("2026-13-01"))),
        ];
        for (name, edit) in cases {
            // given the example with one defect
            let mut doc = example.clone();
            edit(&mut doc);
            // then the schema refuses it, and so does the engine
            assert!(!errors(&v, &doc).is_empty(), "the schema accepts {name}");
            let engine = HouseholdSnapshot::from_json(doc.to_string().as_bytes()).and_then(|s| s.propose());
            assert!(engine.is_err(), "the engine accepts {name}");
        }
    }
}
