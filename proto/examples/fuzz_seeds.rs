//! Writes the fuzzing seed corpus (`fuzz/corpus/`): every example event of
//! `schemas/examples/` (and each line of its `day.ndjson`) as the JSON it is
//! and as its protobuf encoding, and the household snapshot examples.
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
    eprintln!("fuzz seeds: {} events (JSON and protobuf), snapshots from {}", events.len(), examples.display());
    Ok(())
}
