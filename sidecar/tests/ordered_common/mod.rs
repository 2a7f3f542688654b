//! Helpers shared by the ordered-store tests: stores over a real memcached, small-page
//! configurations that make trees several levels deep, and a counting item store.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use zenko_memcached_sidecar::items::{
    CasOutcome, CasToken, Expiry, ItemKey, ItemResult, ItemStore, MemcachedStore, SharedItemStore,
    StoreStats,
};
use zenko_memcached_sidecar::ordered::{
    KeyRange, MemcachedOrderedStore, OrderedStore, PageCacheConfig, Sublevel, TreeConfig,
};
use zenko_memcached_testkit::Memcached;

/// Pages of 512 bytes: a few hundred keys already make a three-level tree.
pub fn small_pages() -> TreeConfig {
    TreeConfig {
        page_max_bytes: 512,
        root_max_bytes: 1024,
        inline_value_max: 64,
        grace_period: Duration::from_secs(60),
        cache: PageCacheConfig {
            max_bytes: 64 << 10,
        },
        ..TreeConfig::default()
    }
}

pub async fn items(server: &Memcached) -> SharedItemStore {
    Arc::new(MemcachedStore::connect(&[server.address()]).await.unwrap())
}

pub async fn open(server: &Memcached, config: TreeConfig) -> MemcachedOrderedStore {
    MemcachedOrderedStore::open(items(server).await, config)
        .await
        .unwrap()
}

pub fn db(name: &str) -> Sublevel {
    Sublevel::new(vec![name.to_owned()])
}

pub async fn all(store: &dyn OrderedStore, db: &Sublevel) -> Vec<(String, String)> {
    store
        .scan(db, KeyRange::all(), false)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Counts the memcached operations of the store above it.
pub struct Counting {
    pub inner: SharedItemStore,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl Counting {
    pub fn new(inner: SharedItemStore) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })
    }

    pub fn total(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    fn read(&self, n: usize) {
        self.reads.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ItemStore for Counting {
    async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        self.read(1);
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[ItemKey]) -> ItemResult<Vec<Option<Bytes>>> {
        self.read(keys.len());
        self.inner.get_many(keys).await
    }
    async fn get_many_with_expiry(
        &self,
        keys: &[ItemKey],
    ) -> ItemResult<Vec<Option<(Bytes, Expiry)>>> {
        self.read(keys.len());
        self.inner.get_many_with_expiry(keys).await
    }
    async fn gets(&self, key: &ItemKey) -> ItemResult<Option<(Bytes, CasToken)>> {
        self.read(1);
        self.inner.gets(key).await
    }
    async fn token(&self, key: &ItemKey) -> ItemResult<Option<CasToken>> {
        self.read(1);
        self.inner.token(key).await
    }
    async fn set(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<()> {
        self.write();
        self.inner.set(key, value, expiry).await
    }
    async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<bool> {
        self.write();
        self.inner.add(key, value, expiry).await
    }
    async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: CasToken,
        expiry: Expiry,
    ) -> ItemResult<CasOutcome> {
        self.write();
        self.inner.cas(key, value, token, expiry).await
    }
    async fn touch(&self, key: &ItemKey, expiry: Expiry) -> ItemResult<bool> {
        self.write();
        self.inner.touch(key, expiry).await
    }
    async fn touch_many(&self, keys: &[ItemKey], expiry: Expiry) -> ItemResult<Vec<bool>> {
        self.writes.fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.inner.touch_many(keys, expiry).await
    }
    async fn delete(&self, key: &ItemKey) -> ItemResult<bool> {
        self.write();
        self.inner.delete(key).await
    }
    async fn count(&self, key: &ItemKey, change: i64, life: Duration) -> ItemResult<u64> {
        self.write();
        self.inner.count(key, change, life).await
    }
    async fn stats(&self) -> ItemResult<StoreStats> {
        self.inner.stats().await
    }
    async fn ping(&self) -> ItemResult<()> {
        self.inner.ping().await
    }
}
