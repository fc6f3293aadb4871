//! `overlay publish`: events from JSON or NDJSON files onto the input topics.
//! Every event is decoded and validated before anything is written, so a bad
//! file writes nothing.

use anyhow::{bail, Context, Result};
use overlay_core::event::{decode_json, Envelope};
use overlay_log::{EmbeddedLog, Record};

/// Parses a file holding one JSON event, a JSON array of events, or NDJSON
/// (one event per line). Errors name the line (or array index).
pub fn parse_events(text: &str, name: &str, validate: bool) -> Result<Vec<Envelope>> {
    let decode = |bytes: &[u8]| -> std::result::Result<Envelope, String> {
        if validate {
            decode_json(bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(bytes).map_err(|e| format!("malformed: not a valid event: {e}"))
        }
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(text).with_context(|| format!("{name}: not a JSON array of events"))?;
        return items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let bytes = serde_json::to_vec(v).expect("a parsed value serializes");
                decode(&bytes).map_err(|e| anyhow::anyhow!("{name}: event [{i}]: {e}"))
            })
            .collect();
    }
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
    // A pretty-printed single object spans lines: try the whole text first.
    if lines.len() > 1 && trimmed.starts_with('{') && serde_json::from_str::<serde_json::Value>(text).is_ok() {
        return Ok(vec![decode(text.as_bytes()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?]);
    }
    let mut out = Vec::with_capacity(lines.len());
    for (n, line) in lines {
        out.push(decode(line.as_bytes()).map_err(|e| anyhow::anyhow!("{name}: line {n}: {e}"))?);
    }
    if out.is_empty() {
        bail!("{name}: no events");
    }
    Ok(out)
}

/// Appends each non-empty line of `text` verbatim to `topic` (partition by
/// `key` if given). For operators re-injecting records, and for tests that
/// need bytes no valid producer would send.
pub fn publish_raw(log: &EmbeddedLog, topic: &str, key: Option<&str>, text: &str) -> Result<usize> {
    if !crate::topics::INPUTS.contains(&topic) {
        bail!(
            "--raw writes only to the input topics ({}); {topic} is written by the engine alone",
            crate::topics::INPUTS.join(", ")
        );
    }
    let records: Vec<Record> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match key {
            Some(k) => Record::keyed(k.as_bytes().to_vec(), l.as_bytes().to_vec(), 0),
            None => Record::new(l.as_bytes().to_vec(), 0),
        })
        .collect();
    log.append(topic, &records)?;
    Ok(records.len())
}
