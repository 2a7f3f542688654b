//! An in-process item store with memcached's semantics, used when no `--memcached` is given.
//!
//! It keeps memcached's promises that the upper layers rely on: an item size limit, CAS tokens,
//! expiry, and refusal instead of eviction when its memory is full (memcached's `-M`).
//! Nothing in it survives the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{CasOutcome, CasToken, Expiry, ItemError, ItemKey, ItemResult, ItemStore, StoreStats};

/// What memcached spends per item besides key and value (header, CAS, suffix, CRLF).
const ITEM_OVERHEAD: usize = 56;

struct Item {
    value: Bytes,
    cas: u64,
    expires: Option<Instant>,
}

impl Item {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
struct State {
    items: HashMap<ItemKey, Item>,
    used: usize,
    next_cas: u64,
}

pub struct EmbeddedStore {
    limit_bytes: usize,
    item_size_max: usize,
    state: Mutex<State>,
}

fn footprint(key: &ItemKey, value: &[u8]) -> usize {
    ITEM_OVERHEAD + key.as_str().len() + value.len()
}

fn deadline(expiry: Expiry) -> Option<Instant> {
    match expiry {
        Expiry::Never => None,
        Expiry::After(duration) => Some(Instant::now() + duration),
    }
}

impl State {
    fn live(&mut self, key: &ItemKey) -> Option<&Item> {
        let now = Instant::now();
        if self.items.get(key).is_some_and(|item| !item.live(now)) {
            self.remove(key);
        }
        self.items.get(key)
    }

    /// Give a live item a new expiry; `false` when there is none.
    fn touch(&mut self, key: &ItemKey, expiry: Expiry) -> bool {
        if self.live(key).is_none() {
            return false;
        }
        if let Some(item) = self.items.get_mut(key) {
            item.expires = deadline(expiry);
        }
        true
    }

    fn remove(&mut self, key: &ItemKey) -> bool {
        match self.items.remove(key) {
            Some(item) => {
                self.used -= footprint(key, &item.value);
                true
            }
            None => false,
        }
    }

    fn purge_expired(&mut self) {
        let now = Instant::now();
        let dead: Vec<ItemKey> = self
            .items
            .iter()
            .filter(|(_, item)| !item.live(now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in dead {
            self.remove(&key);
        }
    }
}

impl EmbeddedStore {
    pub fn new(limit_bytes: usize, item_size_max: usize) -> EmbeddedStore {
        EmbeddedStore {
            limit_bytes,
            item_size_max,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // breaks its invariants worse than losing the process would, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Store `value` under `key`, replacing what is there, if it fits.
    fn store(
        &self,
        state: &mut State,
        key: &ItemKey,
        value: Bytes,
        expiry: Expiry,
    ) -> ItemResult<u64> {
        let size = footprint(key, &value);
        if size > self.item_size_max {
            return Err(ItemError::TooLarge { size: value.len() });
        }
        let old = state
            .items
            .get(key)
            .map_or(0, |item| footprint(key, &item.value));
        if state.used - old + size > self.limit_bytes {
            state.purge_expired();
            let old = state
                .items
                .get(key)
                .map_or(0, |item| footprint(key, &item.value));
            if state.used - old + size > self.limit_bytes {
                return Err(ItemError::Full);
            }
        }
        state.remove(key);
        state.next_cas += 1;
        let cas = state.next_cas;
        state.used += size;
        state.items.insert(
            key.clone(),
            Item {
                value,
                cas,
                expires: deadline(expiry),
            },
        );
        Ok(cas)
    }
}

#[async_trait]
impl ItemStore for EmbeddedStore {
    async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        Ok(self.state().live(key).map(|item| item.value.clone()))
    }

    async fn get_many(&self, keys: &[ItemKey]) -> ItemResult<Vec<Option<Bytes>>> {
        let mut state = self.state();
        Ok(keys
            .iter()
            .map(|key| state.live(key).map(|item| item.value.clone()))
            .collect())
    }

    async fn get_many_with_expiry(
        &self,
        keys: &[ItemKey],
    ) -> ItemResult<Vec<Option<(Bytes, Expiry)>>> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(keys
            .iter()
            .map(|key| {
                state.live(key).map(|item| {
                    let expiry = match item.expires {
                        None => Expiry::Never,
                        Some(at) => Expiry::After(at.saturating_duration_since(now)),
                    };
                    (item.value.clone(), expiry)
                })
            })
            .collect())
    }

    async fn gets(&self, key: &ItemKey) -> ItemResult<Option<(Bytes, CasToken)>> {
        Ok(self
            .state()
            .live(key)
            .map(|item| (item.value.clone(), CasToken(item.cas))))
    }

    async fn token(&self, key: &ItemKey) -> ItemResult<Option<CasToken>> {
        Ok(self.state().live(key).map(|item| CasToken(item.cas)))
    }

    async fn set(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<()> {
        let mut state = self.state();
        self.store(&mut state, key, value, expiry).map(|_| ())
    }

    async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<bool> {
        let mut state = self.state();
        if state.live(key).is_some() {
            return Ok(false);
        }
        self.store(&mut state, key, value, expiry).map(|_| true)
    }

    async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: CasToken,
        expiry: Expiry,
    ) -> ItemResult<CasOutcome> {
        let mut state = self.state();
        match state.live(key) {
            None => Ok(CasOutcome::NotFound),
            Some(item) if item.cas != token.0 => Ok(CasOutcome::Conflict),
            Some(_) => self
                .store(&mut state, key, value, expiry)
                .map(|_| CasOutcome::Stored),
        }
    }

    async fn touch(&self, key: &ItemKey, expiry: Expiry) -> ItemResult<bool> {
        Ok(self.state().touch(key, expiry))
    }

    async fn touch_many(&self, keys: &[ItemKey], expiry: Expiry) -> ItemResult<Vec<bool>> {
        let mut state = self.state();
        Ok(keys.iter().map(|key| state.touch(key, expiry)).collect())
    }

    async fn count(&self, key: &ItemKey, change: i64, life: Duration) -> ItemResult<u64> {
        let mut state = self.state();
        let value = match state.live(key) {
            None => change.max(0).unsigned_abs(),
            Some(item) => {
                let current: u64 = std::str::from_utf8(&item.value)
                    .ok()
                    .and_then(|text| text.trim().parse().ok())
                    .ok_or_else(|| {
                        ItemError::Protocol("a counter that does not hold a number".into())
                    })?;
                current.saturating_add_signed(change)
            }
        };
        self.store(
            &mut state,
            key,
            Bytes::from(value.to_string()),
            Expiry::After(life),
        )?;
        Ok(value)
    }

    async fn delete(&self, key: &ItemKey) -> ItemResult<bool> {
        let mut state = self.state();
        Ok(state.live(key).is_some() && state.remove(key))
    }

    async fn stats(&self) -> ItemResult<StoreStats> {
        let state = self.state();
        Ok(StoreStats {
            limit_bytes: self.limit_bytes as u64,
            used_bytes: state.used as u64,
            item_size_max: self.item_size_max as u64,
            items: state.items.len() as u64,
            evictions: 0,
        })
    }

    async fn ping(&self) -> ItemResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(name: &str) -> ItemKey {
        ItemKey::new(name).unwrap()
    }

    #[tokio::test]
    async fn refuses_items_over_the_size_limit() {
        let store = EmbeddedStore::new(1 << 20, 1024);
        let fits = Bytes::from(vec![0u8; 1024 - ITEM_OVERHEAD - 1]);
        store.set(&key("a"), fits, Expiry::Never).await.unwrap();
        let too_big = Bytes::from(vec![0u8; 1024]);
        let refused = store.set(&key("b"), too_big, Expiry::Never).await;
        assert!(matches!(refused, Err(ItemError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn refuses_instead_of_evicting_when_full() {
        let store = EmbeddedStore::new(1000, 1000);
        let value = Bytes::from(vec![1u8; 400]);
        store
            .set(&key("a"), value.clone(), Expiry::Never)
            .await
            .unwrap();
        store
            .set(&key("b"), value.clone(), Expiry::Never)
            .await
            .unwrap();
        let refused = store.set(&key("c"), value.clone(), Expiry::Never).await;
        assert!(matches!(refused, Err(ItemError::Full)));
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(value.clone()));
        assert!(store.delete(&key("a")).await.unwrap());
        store.set(&key("c"), value, Expiry::Never).await.unwrap();
    }

    #[tokio::test]
    async fn cas_detects_a_concurrent_change() {
        let store = EmbeddedStore::new(1 << 20, 1 << 20);
        let value = |text: &'static str| Bytes::from_static(text.as_bytes());
        store
            .set(&key("a"), value("1"), Expiry::Never)
            .await
            .unwrap();
        let (_, stale) = store.gets(&key("a")).await.unwrap().unwrap();
        store
            .set(&key("a"), value("2"), Expiry::Never)
            .await
            .unwrap();
        let outcome = store
            .cas(&key("a"), value("3"), stale, Expiry::Never)
            .await
            .unwrap();
        assert_eq!(outcome, CasOutcome::Conflict);
        let (_, fresh) = store.gets(&key("a")).await.unwrap().unwrap();
        let outcome = store
            .cas(&key("a"), value("3"), fresh, Expiry::Never)
            .await
            .unwrap();
        assert_eq!(outcome, CasOutcome::Stored);
        let outcome = store
            .cas(&key("zz"), value("3"), fresh, Expiry::Never)
            .await
            .unwrap();
        assert_eq!(outcome, CasOutcome::NotFound);
    }

    #[tokio::test]
    async fn expired_items_vanish_and_touch_keeps_them() {
        let store = EmbeddedStore::new(1 << 20, 1 << 20);
        let short = Expiry::After(Duration::from_millis(30));
        store
            .set(&key("a"), Bytes::from_static(b"x"), short)
            .await
            .unwrap();
        store
            .set(&key("b"), Bytes::from_static(b"y"), short)
            .await
            .unwrap();
        assert!(store.touch(&key("b"), Expiry::Never).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.get(&key("a")).await.unwrap(), None);
        assert!(store.get(&key("b")).await.unwrap().is_some());
        assert!(
            !store
                .add(&key("b"), Bytes::from_static(b"z"), Expiry::Never)
                .await
                .unwrap()
        );
        assert!(
            store
                .add(&key("a"), Bytes::from_static(b"z"), Expiry::Never)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn tokens_name_versions_and_touch_many_says_which_keys_were_there() {
        let store = EmbeddedStore::new(1 << 20, 1 << 20);
        let item = key("a");
        assert_eq!(store.token(&item).await.unwrap(), None);
        store
            .set(&item, Bytes::from_static(b"1"), Expiry::Never)
            .await
            .unwrap();
        let (_, first) = store.gets(&item).await.unwrap().unwrap();
        assert_eq!(store.token(&item).await.unwrap(), Some(first));
        store
            .set(&item, Bytes::from_static(b"1"), Expiry::Never)
            .await
            .unwrap();
        assert_ne!(store.token(&item).await.unwrap(), Some(first));
        let short = Expiry::After(Duration::from_millis(30));
        store
            .set(&key("b"), Bytes::from_static(b"x"), short)
            .await
            .unwrap();
        let touched = store
            .touch_many(&[key("b"), key("zz"), item.clone()], Expiry::Never)
            .await
            .unwrap();
        assert_eq!(touched, vec![true, false, true]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(store.get(&key("b")).await.unwrap().is_some());
        assert!(store.delete(&item).await.unwrap());
        assert_eq!(store.token(&item).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_refused_cas_or_add_keeps_the_existing_item() {
        let store = EmbeddedStore::new(1000, 1000);
        let old = Bytes::from(vec![1u8; 400]);
        store
            .set(&key("a"), old.clone(), Expiry::Never)
            .await
            .unwrap();
        store
            .set(&key("b"), Bytes::from(vec![2u8; 400]), Expiry::Never)
            .await
            .unwrap();
        let (_, token) = store.gets(&key("a")).await.unwrap().unwrap();
        let larger = Bytes::from(vec![3u8; 600]);
        let refused = store
            .cas(&key("a"), larger.clone(), token, Expiry::Never)
            .await;
        assert!(matches!(refused, Err(ItemError::Full)), "{refused:?}");
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(old.clone()));
        // An existing key answers "exists" even when the new value would not fit.
        assert!(!store.add(&key("a"), larger, Expiry::Never).await.unwrap());
        assert_eq!(store.get(&key("a")).await.unwrap(), Some(old));
        let outcome = store
            .cas(&key("a"), Bytes::from(vec![4u8; 400]), token, Expiry::Never)
            .await
            .unwrap();
        assert_eq!(outcome, CasOutcome::Stored);
    }
}
