//! The in-process page cache: decoded pages by id, least recently used evicted first, its
//! size capped in bytes. Pages never change once written, so an entry is never stale.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::ids::{DbId, PageId};
use super::node::Node;

/// How much memory the page cache may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageCacheConfig {
    /// Cap on the encoded size of the cached pages.
    pub max_bytes: usize,
}

impl Default for PageCacheConfig {
    fn default() -> PageCacheConfig {
        PageCacheConfig {
            max_bytes: 256 << 20,
        }
    }
}

/// What the cache holds now, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCacheStats {
    pub bytes: usize,
    pub pages: usize,
    pub max_bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

type Slot = (DbId, PageId);

struct Entry {
    node: Arc<Node>,
    bytes: usize,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<Slot, Entry>,
    by_age: BTreeMap<u64, Slot>,
    bytes: usize,
    tick: u64,
    hits: u64,
    misses: u64,
}

pub struct PageCache {
    max_bytes: usize,
    lru: Mutex<Lru>,
}

impl PageCache {
    pub fn new(config: PageCacheConfig) -> PageCache {
        PageCache {
            max_bytes: config.max_bytes,
            lru: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, db: DbId, page: PageId) -> Option<Arc<Node>> {
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        let Some(entry) = lru.entries.get_mut(&(db, page)) else {
            lru.misses += 1;
            return None;
        };
        let old = std::mem::replace(&mut entry.tick, tick);
        let node = entry.node.clone();
        lru.by_age.remove(&old);
        lru.by_age.insert(tick, (db, page));
        lru.hits += 1;
        Some(node)
    }

    /// Keep a page; `bytes` is its encoded size. Pages larger than the whole cache are skipped.
    pub fn insert(&self, db: DbId, page: PageId, node: Arc<Node>, bytes: usize) {
        if bytes > self.max_bytes {
            return;
        }
        let mut lru = self.lock();
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(old) = lru.entries.insert((db, page), Entry { node, bytes, tick }) {
            lru.by_age.remove(&old.tick);
            lru.bytes -= old.bytes;
        }
        lru.by_age.insert(tick, (db, page));
        lru.bytes += bytes;
        while lru.bytes > self.max_bytes {
            let Some((_, slot)) = lru.by_age.pop_first() else {
                break;
            };
            if let Some(evicted) = lru.entries.remove(&slot) {
                lru.bytes -= evicted.bytes;
            }
        }
    }

    /// Forget a page a commit replaced: only scans of older snapshots may still want it, and
    /// keeping it would push current pages out.
    pub fn remove(&self, db: DbId, page: PageId) {
        let mut lru = self.lock();
        if let Some(entry) = lru.entries.remove(&(db, page)) {
            lru.by_age.remove(&entry.tick);
            lru.bytes -= entry.bytes;
        }
    }

    pub fn stats(&self) -> PageCacheStats {
        let lru = self.lock();
        PageCacheStats {
            bytes: lru.bytes,
            pages: lru.entries.len(),
            max_bytes: self.max_bytes,
            hits: lru.hits,
            misses: lru.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_the_cap() {
        let cache = PageCache::new(PageCacheConfig { max_bytes: 100 });
        let db = DbId::catalog();
        let node = Arc::new(Node::Leaf(Vec::new()));
        cache.insert(db, PageId(1), node.clone(), 40);
        cache.insert(db, PageId(2), node.clone(), 40);
        assert!(cache.get(db, PageId(1)).is_some());
        cache.insert(db, PageId(3), node.clone(), 40);
        assert!(cache.get(db, PageId(2)).is_none());
        assert!(cache.get(db, PageId(1)).is_some());
        assert!(cache.stats().bytes <= 100);
        cache.insert(db, PageId(4), node, 1000);
        assert!(cache.get(db, PageId(4)).is_none());
    }
}
