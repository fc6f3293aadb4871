//! What the engine tells an observer about each shard, beyond the folds its
//! `run` callback sees: when a batch is durable, when its outputs are
//! published, when the instance lets go of its partitions. For metrics: an
//! observer reads, and changes nothing the shard decides.

use overlay_store::{Prepared, Store};

pub trait ShardObserver: Send + Sync + std::fmt::Debug {
    /// `shard`'s batch in flight is durable (`done`; None when there was
    /// none): `store` is the shard's store, holding that batch and the
    /// outputs it has not published yet.
    fn settled(&self, shard: u32, done: Option<&Prepared>, store: &dyn Store);
    /// `shard`'s durable outputs are published.
    fn published(&self, shard: u32);
    /// The instance let go of every shard (a rebalance revoked its partitions).
    fn revoked(&self);
}
