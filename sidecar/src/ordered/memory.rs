//! An ordered store in process memory: the model for tests, and nothing durable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use futures::stream;

use super::{
    Batch, KeyRange, Mutation, OrderedError, OrderedResult, OrderedStore, ScanStream, Sublevel,
};

#[derive(Default)]
pub struct MemoryOrderedStore {
    databases: Mutex<BTreeMap<Sublevel, BTreeMap<String, String>>>,
}

impl MemoryOrderedStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Sublevel, BTreeMap<String, String>>> {
        self.databases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl OrderedStore for MemoryOrderedStore {
    async fn get(&self, db: &Sublevel, key: &str) -> OrderedResult<Option<String>> {
        Ok(self
            .lock()
            .get(db)
            .and_then(|entries| entries.get(key).cloned()))
    }

    async fn write(&self, db: &Sublevel, batch: Batch) -> OrderedResult<()> {
        let mut databases = self.lock();
        let entries = databases.entry(db.clone()).or_default();
        if batch
            .expect
            .iter()
            .any(|(key, value)| entries.get(key) != value.as_ref())
        {
            return Err(OrderedError::Conflict);
        }
        for mutation in batch.mutations {
            match mutation {
                Mutation::Put { key, value } => {
                    entries.insert(key, value);
                }
                Mutation::Delete { key } => {
                    entries.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn scan(
        &self,
        db: &Sublevel,
        range: KeyRange,
        reverse: bool,
    ) -> OrderedResult<ScanStream> {
        let mut items: Vec<(String, String)> = self
            .lock()
            .get(db)
            .map(|entries| {
                entries
                    .range((range.lower.clone(), range.upper.clone()))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if reverse {
            items.reverse();
        }
        Ok(Box::pin(stream::iter(items.into_iter().map(Ok))))
    }

    async fn databases(&self) -> OrderedResult<Vec<Sublevel>> {
        let names: BTreeSet<Sublevel> = self.lock().keys().cloned().collect();
        Ok(names.into_iter().collect())
    }
}
