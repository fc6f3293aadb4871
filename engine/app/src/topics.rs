//! Topic names, keys and how an event becomes a log record. The embedded log
//! and the Kafka transport use the same names and keys.

use anyhow::Result;
use overlay_core::event::{Envelope, EventKey};
use overlay_log::{EmbeddedLog, Record};

pub use overlay_proto::topics::{AUDIT, DEAD_LETTERS, ENGINE_GROUP, HOUSEHOLDS, INPUTS, ORDERS, REFERENCE};

pub fn ensure_topics(log: &EmbeddedLog, household_partitions: u32) -> Result<()> {
    log.create_topic(REFERENCE, 1)?;
    log.create_topic(HOUSEHOLDS, household_partitions)?;
    // One partition per output keeps each output stream a single ordered log,
    // which the publisher's exactly-once recovery relies on.
    for t in [ORDERS, AUDIT, DEAD_LETTERS] {
        log.create_topic(t, 1)?;
    }
    Ok(())
}

/// The topic and record for an event: household events keyed by household,
/// reference events by their subject.
pub fn record_for(env: &Envelope, value: Vec<u8>) -> (&'static str, Record) {
    let ts = env.event_time.timestamp_millis().max(0) as u64;
    match env.payload.key() {
        EventKey::Household(h) => (HOUSEHOLDS, Record::keyed(h.as_str().as_bytes().to_vec(), value, ts)),
        EventKey::Reference(k) => (REFERENCE, Record::keyed(k.as_bytes().to_vec(), value, ts)),
    }
}

/// Appends events to their topics in protobuf, one append (and fsync) per topic.
pub fn publish_events(log: &EmbeddedLog, events: &[Envelope]) -> Result<usize> {
    let mut reference = Vec::new();
    let mut households = Vec::new();
    for env in events {
        let (topic, rec) = record_for(env, overlay_proto::encode_envelope(env));
        if topic == REFERENCE {
            reference.push(rec);
        } else {
            households.push(rec);
        }
    }
    if !reference.is_empty() {
        log.append(REFERENCE, &reference)?;
    }
    if !households.is_empty() {
        log.append(HOUSEHOLDS, &households)?;
    }
    Ok(events.len())
}

/// Every record of one partition of a topic, front to back.
pub fn read_partition(log: &EmbeddedLog, topic: &str, p: u32) -> Result<Vec<overlay_log::StoredRecord>> {
    let end = log.end_offset(topic, p)?;
    let mut at = log.start_offset(topic, p)?;
    let mut records = Vec::new();
    while at < end {
        let chunk = log.read(topic, p, at, 4096, 64 << 20)?;
        let Some(last) = chunk.last() else { break };
        at = last.offset + 1;
        records.extend(chunk);
    }
    Ok(records)
}

/// Every record of an input topic, its partitions merged in the order the
/// runner folds them: by (event time, partition, offset), each partition
/// read front to back (undecodable records have no time and come first).
/// Copying a topic to one with another partition count keeps, within every
/// destination partition, the order the engine used.
pub fn read_merged(log: &EmbeddedLog, topic: &str) -> Result<Vec<overlay_log::StoredRecord>> {
    use std::collections::VecDeque;
    let time = |r: &overlay_log::StoredRecord| {
        overlay_proto::decode_envelope(&r.value).map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |e| e.event_time)
    };
    let mut parts: Vec<VecDeque<_>> = Vec::new();
    for p in 0..log.partitions(topic)? {
        parts.push(read_partition(log, topic, p)?.into_iter().map(|r| (time(&r), r)).collect());
    }
    let mut out = Vec::new();
    while let Some(p) =
        (0..parts.len()).filter_map(|p| parts[p].front().map(|(t, r)| ((*t, p, r.offset), p))).min().map(|(_, p)| p)
    {
        out.extend(parts[p].pop_front().map(|(_, r)| r));
    }
    Ok(out)
}
