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
        let from = start.unwrap_or(prefix).to_vec();
        // Snapshot the range: callers may commit while iterating.
        let items: Vec<_> = self
            .map
            .borrow()
            .range(from..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Ok((k.clone(), v.clone())))
            .collect();
        Box::new(items.into_iter())
    }

    fn last(&self, prefix: &[u8]) -> Result<Option<Entry>, StoreError> {
        let m = self.map.borrow();
        Ok(m.range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .last()
            .map(|(k, v)| (k.clone(), v.clone())))
    }
}
