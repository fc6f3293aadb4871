//! Input partitions' high watermarks, for the operations lag figures (lag =
//! high watermark − the engine's durable position). A group-less consumer of
//! its own, asked from the lag poller's thread, never from the engine loop.
//!
//! The figure is the broker's answer to ListOffsets (latest, read_committed:
//! the last stable offset, which is the high watermark for records not in a
//! transaction). tansu 0.6.0 answers it with the start of the partition's
//! last record batch, so there lag can read low by up to one batch.

use crate::admin::ReaderContext;
use crate::config::KafkaConfig;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// How long one watermark request may take.
pub const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Watermarks {
    consumer: BaseConsumer<ReaderContext>,
}

impl Watermarks {
    pub fn new(cfg: &KafkaConfig) -> Result<Self> {
        let mut c = cfg.client();
        // Never subscribes or commits: the group id only names the client.
        c.set("group.id", format!("{}-lag", cfg.group_id))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let consumer = c.create_with_context(ReaderContext).context("creating the watermark reader")?;
        Ok(Self { consumer })
    }

    /// The partition's high watermark: the offset its next record will get.
    pub fn high(&self, topic: &str, partition: u32) -> Result<u64> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(topic, partition as i32, WATERMARK_TIMEOUT)
            .with_context(|| format!("the high watermark of {topic}/{partition}"))?;
        Ok(high.max(0) as u64)
    }
}
