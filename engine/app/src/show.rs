//! `overlay orders`, `overlay audit`, `overlay dead-letters`: print published
//! outputs as JSON lines, read from the output topics (so they work while an
//! engine is running).

use anyhow::{Context, Result};
use overlay_log::EmbeddedLog;
use std::io::Write;

/// Most records read per call while scanning a topic.
const READ_CHUNK_MAX: usize = 4096;

/// Writes every record of `topic` (one partition) whose `household` field
/// equals `household` (all records if none), one per line. Returns the count.
pub fn print_topic(log: &EmbeddedLog, topic: &str, household: Option<&str>, out: &mut dyn Write) -> Result<u64> {
    let end = log.end_offset(topic, 0)?;
    let mut offset = log.start_offset(topic, 0)?;
    let mut count = 0;
    while offset < end {
        let records = log.read(topic, 0, offset, READ_CHUNK_MAX, 64 << 20)?;
        if records.is_empty() {
            break;
        }
        for r in &records {
            offset = r.offset + 1;
            if let Some(h) = household {
                let v: serde_json::Value = serde_json::from_slice(&r.value).context("an output record is not JSON")?;
                if v.get("household").and_then(|x| x.as_str()) != Some(h) {
                    continue;
                }
            }
            out.write_all(&r.value)?;
            out.write_all(b"\n")?;
            count += 1;
        }
    }
    Ok(count)
}
