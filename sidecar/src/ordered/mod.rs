//! The ordered store: one LevelDB-like key/value database per sublevel, kept in memcached.
//!
//! This module holds the contract (types and the [`OrderedStore`] trait) shared by the
//! metadata service and the implementations: [`MemoryOrderedStore`], a plain in-process map that
//! is also the model the real store is tested against.

pub mod btree;
mod memory;

use std::fmt;
use std::ops::Bound;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::items::ItemError;

pub use btree::{
    DatabaseReport, MemcachedOrderedStore, PageCacheConfig, PageCacheStats, StoreReport,
    TreeConfig, catalog_root_item,
};
pub use memory::MemoryOrderedStore;

/// The path of one database: `[]` is the root, `["bucket"]` a bucket's database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sublevel(Vec<String>);

impl Sublevel {
    pub fn root() -> Sublevel {
        Sublevel(Vec::new())
    }

    pub fn new(path: Vec<String>) -> Sublevel {
        Sublevel(path)
    }

    pub fn path(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Sublevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.0.join(", "))
    }
}

/// A key range with LevelDB's bounds; keys compare byte-wise on their UTF-8 encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub lower: Bound<String>,
    pub upper: Bound<String>,
}

impl KeyRange {
    pub fn all() -> KeyRange {
        KeyRange {
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        let above = match &self.lower {
            Bound::Unbounded => true,
            Bound::Included(lower) => key >= lower.as_str(),
            Bound::Excluded(lower) => key > lower.as_str(),
        };
        let below = match &self.upper {
            Bound::Unbounded => true,
            Bound::Included(upper) => key <= upper.as_str(),
            Bound::Excluded(upper) => key < upper.as_str(),
        };
        above && below
    }
}

/// One change inside an atomic write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put { key: String, value: String },
    Delete { key: String },
}

/// A write: its checks and its changes, applied all together or not at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Each key must hold exactly this value (`None`: be absent) when the batch applies,
    /// otherwise the write fails with [`OrderedError::Conflict`] and changes nothing.
    pub expect: Vec<(String, Option<String>)>,
    pub mutations: Vec<Mutation>,
}

impl Batch {
    pub fn put(mut self, key: impl Into<String>, value: impl Into<String>) -> Batch {
        self.mutations.push(Mutation::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Batch {
        self.mutations.push(Mutation::Delete { key: key.into() });
        self
    }

    pub fn expect(mut self, key: impl Into<String>, value: Option<String>) -> Batch {
        self.expect.push((key.into(), value));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OrderedError {
    #[error(transparent)]
    Items(#[from] ItemError),
    /// A precondition of the batch did not hold; nothing was written.
    #[error("the database changed under this write")]
    Conflict,
    #[error("database {0} is corrupt: {1}")]
    Corrupt(Sublevel, String),
    /// A scan outlived the grace period after its snapshot was replaced, and the pages it
    /// still needed have been reclaimed.
    #[error(
        "the snapshot of database {0} this scan reads has been reclaimed; start the scan again"
    )]
    SnapshotExpired(Sublevel),
}

pub type OrderedResult<T> = Result<T, OrderedError>;

/// The items of a scan, in order, from one consistent snapshot.
pub type ScanStream = BoxStream<'static, OrderedResult<(String, String)>>;

#[async_trait]
pub trait OrderedStore: Send + Sync + 'static {
    async fn get(&self, db: &Sublevel, key: &str) -> OrderedResult<Option<String>>;

    /// Apply the batch atomically: on success every mutation is durable, on error none is.
    async fn write(&self, db: &Sublevel, batch: Batch) -> OrderedResult<()>;

    /// Items of `range` in ascending (or, with `reverse`, descending) key order, read lazily
    /// from a snapshot taken when the scan starts: later writes do not show.
    async fn scan(
        &self,
        db: &Sublevel,
        range: KeyRange,
        reverse: bool,
    ) -> OrderedResult<ScanStream>;

    /// Every database that has ever held a key, for listings across sublevels.
    async fn databases(&self) -> OrderedResult<Vec<Sublevel>>;
}
