use crate::{Entry, Records, Store, StoreError, WriteBatch};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// An in-memory store with the same semantics as the sled one (minus
/// durability): used by replay, tests and benchmarks.
#[derive(Default)]
pub struct MemStore {
    map: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemStore {
    fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut m = self.map.borrow_mut();
        for (k, v) in batch.ops {
            match v {
                Some(v) => m.insert(k, v),
                None => m.remove(&k),
            };
        }
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.borrow().get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>) -> Records<'_> {
        // Snapshot the range: callers may commit while iterating.
        Box::new(range_of(&self.map.borrow(), prefix, start).into_iter().map(Ok))
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(last_of(&self.map.borrow(), prefix))
    }
}

/// Every record of `map` whose key starts with `prefix`, from `start`
/// (inclusive) if given, copied out in key order.
pub(crate) fn range_of(map: &BTreeMap<Vec<u8>, Vec<u8>>, prefix: &[u8], start: Option<&[u8]>) -> Vec<Entry> {
    map.range(start.unwrap_or(prefix).to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The record of `map` with the greatest key starting with `prefix`.
pub(crate) fn last_of(map: &BTreeMap<Vec<u8>, Vec<u8>>, prefix: &[u8]) -> Option<Entry> {
    map.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).last().map(|(k, v)| (k.clone(), v.clone()))
}
