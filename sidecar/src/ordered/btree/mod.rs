//! [`MemcachedOrderedStore`]: the ordered store kept in memcached as one copy-on-write B+tree
//! per database.
//!
//! Layout in memcached, per database (see [`ids`]): a root record (`o:<db>:r`, the only item
//! ever replaced, always by CAS: the commit point) that holds the root node inline; immutable
//! pages (`o:<db>:p:<id>`) written with `add` under fresh random ids; large values in chunks
//! (`o:<db>:v:<id>:<n>`). A commit writes new pages, then swaps the root record. Pages a
//! commit replaces are listed in the new root record, and the next commit gives them an expiry
//! of one grace period, so memcached itself reclaims them even if this process dies; scans
//! older than that fail with [`OrderedError::SnapshotExpired`].
//!
//! Nothing is kept in the process that is not also in memcached, apart from a capped cache of
//! immutable pages and the last root record read of a few databases, used only while memcached
//! reports the same CAS token for it (see `Inner::current_root`).

mod cache;
mod catalog;
mod check;
mod codec;
mod commit;
mod ids;
mod node;
mod read;
mod readers;
mod scan;
mod tree;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::items::SharedItemStore;
use crate::ordered::{
    Batch, KeyRange, Mutation, OrderedError, OrderedResult, OrderedStore, ScanStream, Sublevel,
};

pub use cache::{PageCacheConfig, PageCacheStats};
pub use check::{DatabaseReport, StoreReport};

use cache::PageCache;
use commit::DbQueue;
use ids::DbId;

/// The memcached key of the catalog's root record, one of the few items whose name is fixed.
pub fn catalog_root_item() -> Option<String> {
    ids::root_key(DbId::catalog())
        .ok()
        .map(|key| key.as_str().to_owned())
}

/// Tuning of the tree. Sizes are capped at open time by memcached's item size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeConfig {
    /// Largest encoded page (leaf or internal node).
    pub page_max_bytes: usize,
    /// Largest root node, kept inline in the root record (one `get` reads it).
    pub root_max_bytes: usize,
    /// Values longer than this are stored out of line, in chunks.
    pub inline_value_max: usize,
    /// Longest key accepted.
    pub key_max_bytes: usize,
    /// How long replaced pages stay readable for scans that started before the replacement.
    pub grace_period: Duration,
    /// Most batches coalesced into one commit.
    pub max_group: usize,
    pub cache: PageCacheConfig,
}

impl Default for TreeConfig {
    fn default() -> TreeConfig {
        TreeConfig {
            page_max_bytes: 64 << 10,
            root_max_bytes: 256 << 10,
            inline_value_max: 4 << 10,
            key_max_bytes: 8 << 10,
            grace_period: Duration::from_secs(300),
            max_group: 512,
            cache: PageCacheConfig::default(),
        }
    }
}

/// Room kept in every item for memcached's own header and key.
const ITEM_HEADROOM: usize = 1024;
/// Most replaced items a root record lists; more are expired right after the commit.
const MAX_ROOT_GARBAGE: usize = 2048;
/// Room in the root record for its header and garbage list.
const ROOT_HEADROOM: usize = 64 + MAX_ROOT_GARBAGE * 18;

/// Databases whose last decoded root record is kept (each at most a root node in size).
const ROOT_CACHE_ENTRIES: usize = 16;

/// The configuration made to fit the memcached servers' item limit.
#[derive(Clone, Copy, Debug)]
struct Limits {
    page_max: usize,
    root_max: usize,
    inline_max: usize,
    key_max: usize,
    chunk_size: usize,
    grace: Duration,
    max_group: usize,
}

impl Limits {
    fn new(config: &TreeConfig, item_size_max: u64) -> OrderedResult<Limits> {
        let item_max = usize::try_from(item_size_max).unwrap_or(usize::MAX);
        let budget = item_max.saturating_sub(ITEM_HEADROOM);
        let page_max = config.page_max_bytes.min(budget);
        let root_max = config
            .root_max_bytes
            .max(page_max)
            .min(budget.saturating_sub(ROOT_HEADROOM));
        // A page must hold a few entries of the largest kind for splits to make progress.
        let key_max = config.key_max_bytes.min(page_max / 4);
        let inline_max = config.inline_value_max.min(page_max / 4);
        let chunk_size = budget.saturating_sub(node::CHUNK_OVERHEAD);
        if page_max < 256 || root_max < page_max || chunk_size < 256 {
            return Err(OrderedError::Corrupt(
                Sublevel::root(),
                format!("memcached's item size limit ({item_size_max} bytes) is too small"),
            ));
        }
        Ok(Limits {
            page_max,
            root_max,
            inline_max,
            key_max,
            chunk_size,
            grace: config.grace_period,
            max_group: config.max_group.max(1),
        })
    }
}

/// The generation of each database whose predecessor's garbage this process freed, so that
/// the next commit need not free it again.
#[derive(Default)]
struct Freed(Mutex<HashMap<DbId, u64>>);

impl Freed {
    /// Most databases remembered; past it, forgetting costs only deletes of missing items.
    const MAX: usize = 4096;

    /// Whether this process freed what the commit of `generation` replaced.
    fn knows(&self, db: DbId, generation: u64) -> bool {
        let map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&db) == Some(&generation)
    }

    /// Record whether what the commit of `generation` replaced is freed (only then may the
    /// next commit skip it).
    fn record(&self, db: DbId, generation: u64, freed: bool) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !freed {
            map.remove(&db);
            return;
        }
        if map.len() >= Self::MAX && !map.contains_key(&db) {
            map.clear();
        }
        map.insert(db, generation);
    }
}

struct Inner {
    items: SharedItemStore,
    freed: Freed,
    limits: Limits,
    cache: PageCache,
    /// The last root record read of a few databases, with its CAS token (see
    /// `Inner::current_root`).
    roots: Mutex<HashMap<DbId, (crate::items::CasToken, Arc<node::RootRecord>)>>,
    queues: Mutex<HashMap<DbId, DbQueue>>,
}

/// The ordered store over any item store (real memcached in production).
#[derive(Clone)]
pub struct MemcachedOrderedStore {
    inner: Arc<Inner>,
}

impl MemcachedOrderedStore {
    /// Open the store; reads memcached's item size limit once to size pages and chunks.
    pub async fn open(
        items: SharedItemStore,
        config: TreeConfig,
    ) -> OrderedResult<MemcachedOrderedStore> {
        let stats = items.stats().await?;
        let limits = Limits::new(&config, stats.item_size_max)?;
        tracing::debug!(?limits, "ordered store opened");
        Ok(MemcachedOrderedStore {
            inner: Arc::new(Inner {
                items,
                limits,
                cache: PageCache::new(config.cache),
                freed: Freed::default(),
                roots: Mutex::new(HashMap::new()),
                queues: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Walk every database and check what its correctness rests on; read-only.
    pub async fn check(&self) -> OrderedResult<StoreReport> {
        check::store(&self.inner).await
    }

    /// [`MemcachedOrderedStore::check`] of one database.
    pub async fn check_database(&self, db: &Sublevel) -> OrderedResult<DatabaseReport> {
        check::database(&self.inner, DbId::of(db), db).await
    }

    pub fn cache_stats(&self) -> PageCacheStats {
        self.inner.cache.stats()
    }

    fn check_key(&self, key: &str) -> OrderedResult<()> {
        if key.len() > self.inner.limits.key_max {
            return Err(OrderedError::Items(crate::items::ItemError::TooLarge {
                size: key.len(),
            }));
        }
        Ok(())
    }
}

#[async_trait]
impl OrderedStore for MemcachedOrderedStore {
    async fn get(&self, db: &Sublevel, key: &str) -> OrderedResult<Option<String>> {
        if key.len() > self.inner.limits.key_max {
            return Ok(None);
        }
        self.inner.get(DbId::of(db), db, key).await
    }

    async fn write(&self, db: &Sublevel, batch: Batch) -> OrderedResult<()> {
        for mutation in &batch.mutations {
            match mutation {
                Mutation::Put { key, .. } | Mutation::Delete { key } => self.check_key(key)?,
            }
        }
        for (key, _) in &batch.expect {
            self.check_key(key)?;
        }
        if batch.mutations.is_empty() && batch.expect.is_empty() {
            return Ok(());
        }
        commit::submit(&self.inner, DbId::of(db), db.clone(), batch).await
    }

    async fn scan(
        &self,
        db: &Sublevel,
        range: KeyRange,
        reverse: bool,
    ) -> OrderedResult<ScanStream> {
        scan::open(self.inner.clone(), DbId::of(db), db.clone(), range, reverse).await
    }

    async fn databases(&self) -> OrderedResult<Vec<Sublevel>> {
        catalog::list(&self.inner).await
    }
}
