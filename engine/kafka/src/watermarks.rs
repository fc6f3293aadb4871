//! Input partitions' high watermarks, for the operations lag figures (lag =
//! high watermark − the engine's durable position). A group-less consumer of
//! its own, asked from the lag poller's thread, never from the engine loop.
//!
//! The figure is the broker's answer to ListOffsets (latest, read_committed:
//! the last stable offset, which is the high watermark for records not in a
//! transaction). tansu 0.6.0 answers it with the start of the partition's
//! last record batch, so there lag can read low by up to one batch.

use crate::admin::ReaderContext;
use crate::config::{KafkaClientConfig, KafkaConfig};
use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one poll of the end offsets may take.
pub const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

/// The "timestamp" ListOffsets answers with a partition's end offset (−1,
/// which rdkafka spells `Offset::End`).
const LATEST: Offset = Offset::End;

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

    /// The high watermarks of `partitions` (topic, partition): the offsets
    /// their next records will get. One ListOffsets request per leader
    /// (librdkafka's offsets-for-times with timestamp −1, "latest").
    pub fn highs(&self, partitions: &[(String, u32)]) -> Result<BTreeMap<(String, u32), u64>> {
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in partitions {
            tpl.add_partition_offset(topic, *p as i32, LATEST)?;
        }
        let answered = self.consumer.offsets_for_times(tpl, WATERMARK_TIMEOUT).context("listing end offsets")?;
        let mut out = BTreeMap::new();
        for e in answered.elements() {
            e.error().with_context(|| format!("the end offset of {}/{}", e.topic(), e.partition()))?;
            let Offset::Offset(end) = e.offset() else {
                bail!("no end offset for {}/{} ({:?})", e.topic(), e.partition(), e.offset());
            };
            out.insert((e.topic().to_string(), e.partition() as u32), end.max(0) as u64);
        }
        Ok(out)
    }
}
