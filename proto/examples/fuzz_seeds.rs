//! Writes the fuzzing seed corpus (`fuzz/corpus/`): every example event of
//! `schemas/examples/` (and each line of its `day.ndjson`) as the JSON it is
//! and as its protobuf encoding, the household snapshot examples, and every
//! configuration file the repository shows (the example, the Kubernetes
//! ConfigMap's, the TOML blocks of `docs/kafka.md`), one with environment
//! overrides. Files named `regression-*` are findings, kept as they are.
//!
//! `cargo run -p overlay-proto --example fuzz_seeds` (from the repository root).

use std::fs;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let examples = Path::new("schemas/examples");
    let corpus = Path::new("fuzz/corpus");
    for target in ["envelope", "json_event", "snapshot"] {
        fs::create_dir_all(corpus.join(target))?;
    }
    let mut entries: Vec<_> = fs::read_dir(examples)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    let mut events: Vec<(String, Vec<u8>)> = Vec::new();
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(e.path())?;
        if name.starts_with("household_snapshot") {
            fs::write(corpus.join("snapshot").join(&name), &bytes)?;
        } else if name == "day.ndjson" {
            for (i, line) in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).enumerate() {
                events.push((format!("day-{:02}", i + 1), line.to_vec()));
            }
        } else if name.ends_with(".json") {
            events.push((name.trim_end_matches(".json").to_string(), bytes));
        }
    }
    for (name, json) in &events {
        let env = overlay_core::event::decode_json(json).map_err(|e| format!("{name}: {e}"))?;
        fs::write(corpus.join("json_event").join(format!("{name}.json")), json)?;
        fs::write(corpus.join("envelope").join(format!("{name}.pb")), overlay_proto::encode_envelope(&env))?;
    }
    let configs = config_seeds(&corpus.join("config"))?;
    eprintln!(
        "fuzz seeds: {} events (JSON and protobuf), snapshots from {}, {configs} configuration files",
        events.len(),
        examples.display()
    );
    Ok(())
}

/// Seeds of the `config` target, whose input is a configuration file, then
/// (after a NUL byte) one `NAME=value` environment override per line.
fn config_seeds(dir: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    fs::create_dir_all(dir)?;
    let example = fs::read_to_string("schemas/examples/config.toml")?;
    let mut seeds = vec![("example".to_string(), example.clone())];
    seeds.push((
        "example-with-env".to_string(),
        format!(
            "{example}\0OVERLAY_KAFKA_BROKERS=broker-1:9093,broker-2:9093\nOVERLAY_KAFKA_TRANSACTIONAL=true\n\
             OVERLAY_KAFKA_FETCH_FROM_LOG_START=0\nOVERLAY_KAFKA_PROP_SASL_PASSWORD=secret\nOVERLAY_OPS_LISTEN=127.0.0.1:9898\n"
        ),
    ));
    let configmap = fs::read_to_string("deploy/k8s/configmap.yaml")?;
    seeds.push((
        "k8s-configmap".to_string(),
        yaml_block(&configmap, "config.toml: |").ok_or("no config.toml in the ConfigMap")?,
    ));
    let doc = fs::read_to_string("docs/kafka.md")?;
    for (i, block) in doc.split("```toml\n").skip(1).enumerate() {
        let end = block.find("```").ok_or("an unclosed TOML block in docs/kafka.md")?;
        seeds.push((format!("docs-kafka-{}", i + 1), block[..end].to_string()));
    }
    for (name, text) in &seeds {
        fs::write(dir.join(format!("{name}.toml")), text)?;
    }
    Ok(seeds.len())
}

/// The literal block scalar that follows `key` (`key: |`) in a YAML text,
/// de-indented.
fn yaml_block(yaml: &str, key: &str) -> Option<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != key);
    let key_indent = lines.next()?.find(key)?;
    let body: Vec<&str> =
        lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent).collect();
    let indent = body.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min()?;
    let text: Vec<&str> = body.iter().map(|l| l.get(indent..).unwrap_or("")).collect();
    Some(text.join("\n").trim_end().to_string() + "\n")
}
