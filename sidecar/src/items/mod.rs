//! The item store: the part of memcached's API that the blob and ordered stores build on.
//!
//! Two implementations share these semantics: [`MemcachedStore`] (real servers) and
//! [`EmbeddedStore`] (in-process, for a sidecar started with nothing installed). Both refuse
//! rather than evict when memory is full, and both enforce an item size limit.

mod connection;
mod embedded;
mod key;
mod memcached;
mod route;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::EmbeddedStore;
pub use key::{ItemKey, ItemKeyError};
pub use memcached::MemcachedStore;
pub use route::{Rendezvous, SCHEME as ROUTING_SCHEME};

/// How long an item lives. Blob chunks are written with a finite expiry until their blob is
/// published, so that a crash mid-upload cannot leak them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    After(Duration),
}

/// memcached's compare-and-swap token of one item version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CasToken(pub u64);

/// What a compare-and-swap did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    Stored,
    /// Someone else changed the item since the token was read.
    Conflict,
    /// The item is gone.
    NotFound,
}

/// Store-wide figures, summed over every server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Memory the servers may use for items (`limit_maxbytes`).
    pub limit_bytes: u64,
    /// Memory the items use now (`bytes`).
    pub used_bytes: u64,
    /// The smallest item size limit among the servers (`item_size_max`).
    pub item_size_max: u64,
    pub items: u64,
    pub evictions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// memcached runs with evictions off (`-M`) and has no room left.
    #[error("storage full: memcached has no memory left and evictions are off")]
    Full,
    #[error("item of {size} bytes is larger than memcached's item size limit")]
    TooLarge { size: usize },
    #[error("memcached unavailable: {0}")]
    Unavailable(String),
    #[error("memcached answered unexpectedly: {0}")]
    Protocol(String),
}

impl ItemError {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ItemError::Full => "full",
            ItemError::TooLarge { .. } => "too_large",
            ItemError::Unavailable(_) => "unavailable",
            ItemError::Protocol(_) => "protocol",
        }
    }
}

pub type ItemResult<T> = Result<T, ItemError>;

/// The operations every item store offers. Missing items are `None`/`false`, never errors.
#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>>;

    /// Several gets in one round trip where the backend can; results in input order.
    async fn get_many(&self, keys: &[ItemKey]) -> ItemResult<Vec<Option<Bytes>>>;

    /// Several gets that also say how long each item has left to live, for checks that a
    /// live item will not expire (`Expiry::After` holds the time left).
    async fn get_many_with_expiry(
        &self,
        keys: &[ItemKey],
    ) -> ItemResult<Vec<Option<(Bytes, Expiry)>>>;

    /// A get that also returns the CAS token of the version read.
    async fn gets(&self, key: &ItemKey) -> ItemResult<Option<(Bytes, CasToken)>>;

    /// The CAS token of the item's current version, without its value: tells a reader
    /// whether the version it holds (read with [`ItemStore::gets`]) is still current. Every
    /// change of an item gives it a token it never had before (memcached's tokens count up
    /// and survive a warm restart).
    async fn token(&self, key: &ItemKey) -> ItemResult<Option<CasToken>>;

    async fn set(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<()>;
    /// [`ItemStore::set`] of the value made of `parts` one after the other, for values that
    /// arrive in pieces (blob chunks, as slices of the request body): a store that can write
    /// them without joining them does.
    async fn set_parts(&self, key: &ItemKey, parts: Vec<Bytes>, expiry: Expiry) -> ItemResult<()> {
        self.set(key, Bytes::from(parts.concat()), expiry).await
    }

    /// Store only if absent; `false` when the key exists. A refusal (`Full`, `TooLarge`)
    /// leaves an existing item as it was.
    async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<bool>;

    /// Replace the item if it is still the version `token` was read from. A refusal (`Full`,
    /// `TooLarge`) leaves the item as it was: the ordered store's root record relies on it.
    async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: CasToken,
        expiry: Expiry,
    ) -> ItemResult<CasOutcome>;

    /// Change an item's expiry; `false` when the key is absent.
    async fn touch(&self, key: &ItemKey, expiry: Expiry) -> ItemResult<bool>;

    /// [`ItemStore::touch`] of several keys, pipelined (one batch per server) where the
    /// backend can; results in input order.
    async fn touch_many(&self, keys: &[ItemKey], expiry: Expiry) -> ItemResult<Vec<bool>>;

    /// `false` when the key was absent.
    async fn delete(&self, key: &ItemKey) -> ItemResult<bool>;

    /// Add `change` to the counter under `key` (going down stops at 0, as memcached's
    /// counters do) and let it live `life` from now (a counter always expires); a missing counter is created at `change` (at 0 when
    /// `change` is negative). The counter's new value.
    async fn count(&self, key: &ItemKey, change: i64, life: Duration) -> ItemResult<u64>;

    async fn stats(&self) -> ItemResult<StoreStats>;

    /// One cheap round trip to every server.
    async fn ping(&self) -> ItemResult<()>;

    /// One key per server, each held by its server: `base` itself for the first server that
    /// holds it, `base:1`, `base:2`... for the others. A marker item under each tells whether
    /// that server lost its contents, which a single item on one server cannot.
    fn key_per_server(&self, base: &ItemKey) -> Vec<ItemKey> {
        vec![base.clone()]
    }
}

pub type SharedItemStore = Arc<dyn ItemStore>;
