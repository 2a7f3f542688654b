//! Checking the store: a read-only walk of the catalog and of every database it lists, from
//! the root record through every page and out-of-line value the root reaches, verifying what
//! the tree's correctness rests on. It is the operator's `check` command and the tests'
//! invariant check of a whole store.
//!
//! Safe next to serving sidecars: it only reads (and counts itself as a scan of the database
//! it walks, so that commits keep what they replace for a grace period), and a database that
//! a commit changes while it is walked is walked again from its new root when the walk found
//! problems.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::Inner;
use super::catalog;
use super::ids::{DbId, PageId, ValueId, chunk_key, page_key, root_key};
use super::node::{Garbage, LeafValue, Node, RootRecord, ValueRef, decode_chunk};
use super::readers;
use crate::items::{Expiry, ItemKey};
use crate::ordered::{OrderedError, OrderedResult, Sublevel};

/// Items read in one round trip, and so the pages held at once per tree level.
const BATCH: usize = 32;
/// Walks of one database before a database that keeps changing is reported as busy.
const ATTEMPTS: usize = 20;

/// What the check of one database found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseReport {
    pub sublevel: Sublevel,
    pub keys: u64,
    pub pages: u64,
    /// Values stored out of line.
    pub values: u64,
    /// Levels of the tree: 1 when the root node is a leaf.
    pub depth: u32,
    /// Bytes of the root record, its pages and value chunks in memcached.
    pub bytes: u64,
    /// What is wrong, one sentence each; empty when the database is sound.
    pub problems: Vec<String>,
    /// Commits changed the database under every walk, each of which met pages they were
    /// replacing: nothing could be confirmed either way (the problems are those of the last
    /// walk). Run the check again at a quieter time.
    pub busy: bool,
}

impl DatabaseReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.busy
    }
}

impl fmt::Display for DatabaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok() {
            "ok  "
        } else if self.busy {
            "BUSY"
        } else {
            "FAIL"
        };
        write!(
            f,
            "{verdict} {} keys={} pages={} values={} depth={} bytes={}",
            self.sublevel, self.keys, self.pages, self.values, self.depth, self.bytes
        )?;
        for problem in &self.problems {
            write!(f, "\n     - {problem}")?;
        }
        Ok(())
    }
}

/// The check of a whole store: the catalog, then each database it lists.
#[derive(Clone, Debug, Default)]
pub struct StoreReport {
    pub catalog: DatabaseReport,
    pub databases: Vec<DatabaseReport>,
}

impl StoreReport {
    pub fn ok(&self) -> bool {
        self.catalog.ok() && self.databases.iter().all(DatabaseReport::ok)
    }

    /// Whether every database that is not sound is only busy (changed under every walk).
    pub fn only_busy(&self) -> bool {
        !self.ok() && self.catalog.ok() && self.databases.iter().all(|db| db.ok() || db.busy)
    }

    /// One line: how many databases, keys and pages, and how many with problems.
    pub fn summary(&self) -> String {
        let busy = self.databases.iter().filter(|db| db.busy).count();
        let failed = self.databases.iter().filter(|db| !db.ok()).count() - busy;
        let keys: u64 = self.databases.iter().map(|db| db.keys).sum();
        let pages: u64 = self.databases.iter().map(|db| db.pages).sum();
        let bytes: u64 = self.databases.iter().map(|db| db.bytes).sum();
        format!(
            "{}: {} databases ({failed} with problems, {busy} too busy to check{}), {keys} keys, \
             {pages} pages, {bytes} bytes",
            if self.ok() {
                "ok"
            } else if self.only_busy() {
                "BUSY"
            } else {
                "FAILED"
            },
            self.databases.len(),
            if self.catalog.ok() {
                ""
            } else {
                "; the catalog itself has problems"
            },
        )
    }
}

/// Check the catalog and every database it lists.
pub async fn store(inner: &Arc<Inner>) -> OrderedResult<StoreReport> {
    let catalog_sublevel = catalog::catalog_sublevel();
    let mut catalog_report = database(inner, DbId::catalog(), &catalog_sublevel).await?;
    // Its stored name is one no client can send; the report shows it plainly.
    catalog_report.sublevel = Sublevel::new(vec!["(catalog)".into()]);
    let mut databases = Vec::new();
    match catalog::list(inner).await {
        Ok(listed) => {
            for sublevel in listed {
                databases.push(database(inner, DbId::of(&sublevel), &sublevel).await?);
            }
        }
        // A catalog that cannot be read (its own problems say why) lists nothing more.
        Err(OrderedError::Corrupt(_, problem)) => catalog_report.problems.push(problem),
        Err(OrderedError::SnapshotExpired(_)) => catalog_report
            .problems
            .push("the catalog changed under every attempt to list it".into()),
        Err(error) => return Err(error),
    }
    Ok(StoreReport {
        catalog: catalog_report,
        databases,
    })
}

/// Check one database; an error only when memcached cannot be read at all.
pub async fn database(
    inner: &Arc<Inner>,
    db: DbId,
    sublevel: &Sublevel,
) -> OrderedResult<DatabaseReport> {
    let key = root_key(db)?;
    let mut last = None;
    // Counted as a scan, so that commits keep the pages they replace for the walk.
    let _registration = readers::register(inner, db).await;
    for _ in 0..ATTEMPTS {
        let root = read_one(inner, &key).await?;
        let report = walk(inner, db, sublevel, root.clone()).await?;
        if report.ok() {
            return Ok(report);
        }
        // Problems on a root that has since been replaced may only be the walk meeting
        // pages a commit replaced meanwhile: look again at the new tree.
        let now = read_one(inner, &key).await?;
        if now.as_ref().map(|(item, _)| item) == root.as_ref().map(|(item, _)| item) {
            return Ok(report);
        }
        last = Some(report);
    }
    let mut report = last.unwrap_or_default();
    report.problems.insert(
        0,
        format!(
            "the database changed under each of {ATTEMPTS} walks, each of which found problems"
        ),
    );
    Ok(report)
}

async fn read_one(inner: &Inner, key: &ItemKey) -> OrderedResult<Option<(Bytes, Expiry)>> {
    let mut items = inner
        .items
        .get_many_with_expiry(std::slice::from_ref(key))
        .await?;
    Ok(items.pop().flatten())
}

/// A node to check, with the keys its parent lets it hold.
struct Bounds {
    /// Smallest key allowed (inclusive); "" allows every key.
    lower: String,
    /// First key not allowed, if any.
    upper: Option<String>,
    /// What the node is, for messages.
    name: String,
}

struct Walk<'a> {
    inner: &'a Inner,
    db: DbId,
    report: DatabaseReport,
    seen: HashSet<PageId>,
    replaced_pages: HashSet<PageId>,
    replaced_values: HashSet<ValueId>,
    leaf_depth: Option<u32>,
}

async fn walk(
    inner: &Inner,
    db: DbId,
    sublevel: &Sublevel,
    root: Option<(Bytes, Expiry)>,
) -> OrderedResult<DatabaseReport> {
    let mut walk = Walk {
        inner,
        db,
        report: DatabaseReport {
            sublevel: sublevel.clone(),
            ..DatabaseReport::default()
        },
        seen: HashSet::new(),
        replaced_pages: HashSet::new(),
        replaced_values: HashSet::new(),
        leaf_depth: None,
    };
    let Some((item, expiry)) = root else {
        // Listed before its first commit landed: an empty database.
        return Ok(walk.report);
    };
    walk.report.bytes += item.len() as u64;
    if let Expiry::After(left) = expiry {
        walk.problem(format!("the root record expires in {} s", left.as_secs()));
    }
    let record = match RootRecord::decode(&item) {
        Ok(record) => record,
        Err(error) => {
            walk.problem(format!("the root record cannot be read: {error}"));
            return Ok(walk.report);
        }
    };
    if &record.sublevel != sublevel {
        walk.problem(format!(
            "the root record belongs to database {}",
            record.sublevel
        ));
        return Ok(walk.report);
    }
    if record.root.encoded_len() > inner.limits.root_max {
        walk.problem(format!(
            "the root node is {} bytes, over the {}-byte limit",
            record.root.encoded_len(),
            inner.limits.root_max
        ));
    }
    for garbage in &record.garbage {
        match garbage {
            Garbage::Page(page) => walk.replaced_pages.insert(*page),
            Garbage::Value { id, .. } => walk.replaced_values.insert(*id),
        };
    }
    let bounds = Bounds {
        lower: String::new(),
        upper: None,
        name: "the root node".into(),
    };
    walk.node(Node::clone(&record.root), bounds, 1).await?;
    Ok(walk.report)
}

impl Walk<'_> {
    fn problem(&mut self, problem: String) {
        // A broken tree can repeat one fault thousands of times; the first ones say enough.
        const MAX_PROBLEMS: usize = 20;
        if self.report.problems.len() < MAX_PROBLEMS {
            self.report.problems.push(problem);
        } else if self.report.problems.len() == MAX_PROBLEMS {
            self.report.problems.push("more problems not shown".into());
        }
    }

    fn node(&mut self, node: Node, bounds: Bounds, depth: u32) -> BoxFuture<'_, OrderedResult<()>> {
        Box::pin(async move {
            self.report.depth = self.report.depth.max(depth);
            match node {
                Node::Leaf(entries) => {
                    self.leaf(entries, &bounds, depth).await?;
                }
                Node::Internal(children) => {
                    self.internal(children, bounds, depth).await?;
                }
            }
            Ok(())
        })
    }

    fn in_bounds(key: &str, bounds: &Bounds) -> bool {
        key >= bounds.lower.as_str() && bounds.upper.as_deref().is_none_or(|upper| key < upper)
    }

    async fn leaf(
        &mut self,
        entries: Vec<(String, LeafValue)>,
        bounds: &Bounds,
        depth: u32,
    ) -> OrderedResult<()> {
        match self.leaf_depth {
            None => self.leaf_depth = Some(depth),
            Some(first) if first != depth => self.problem(format!(
                "{} is a leaf at depth {depth}, others are at depth {first}",
                bounds.name
            )),
            Some(_) => {}
        }
        if entries.is_empty() && depth > 1 {
            self.problem(format!("{} is an empty leaf", bounds.name));
        }
        let mut values = Vec::new();
        for (key, value) in &entries {
            if !Self::in_bounds(key, bounds) {
                self.problem(format!(
                    "key {key:?} in {} is outside the range its parent gives it ({:?} to {:?})",
                    bounds.name, bounds.lower, bounds.upper
                ));
            }
            if key.len() > self.inner.limits.key_max {
                self.problem(format!("key {key:?} is longer than the key limit"));
            }
            if let LeafValue::OutOfLine(reference) = value {
                values.push((key.clone(), *reference));
            }
        }
        self.report.keys += entries.len() as u64;
        for (key, reference) in values {
            self.value(&key, reference).await?;
        }
        Ok(())
    }

    async fn internal(
        &mut self,
        children: Vec<(String, PageId)>,
        bounds: Bounds,
        depth: u32,
    ) -> OrderedResult<()> {
        if children.is_empty() {
            self.problem(format!(
                "{} is an internal node without children",
                bounds.name
            ));
            return Ok(());
        }
        let mut slots = Vec::with_capacity(children.len());
        for (index, (separator, page)) in children.iter().enumerate() {
            // The first separator routes nothing (keys below the second go to the first
            // child): the first child's range starts where this node's does.
            let lower = if index == 0 {
                bounds.lower.clone()
            } else {
                separator.clone()
            };
            if index > 0 && !Self::in_bounds(separator, &bounds) {
                self.problem(format!(
                    "separator {separator:?} in {} is outside its range",
                    bounds.name
                ));
            }
            if !self.seen.insert(*page) {
                self.problem(format!("page {:016x} is referenced twice", page.0));
                continue;
            }
            if self.replaced_pages.contains(page) {
                self.problem(format!(
                    "page {:016x} of the current tree is listed as replaced (it will expire)",
                    page.0
                ));
            }
            let upper = children
                .get(index + 1)
                .map(|(next, _)| next.clone())
                .or_else(|| bounds.upper.clone());
            slots.push((
                *page,
                Bounds {
                    lower,
                    upper,
                    name: format!("page {:016x}", page.0),
                },
            ));
        }
        for batch in chunked(slots) {
            let keys = batch
                .iter()
                .map(|(page, _)| page_key(self.db, *page))
                .collect::<OrderedResult<Vec<_>>>()?;
            let items = self.inner.items.get_many_with_expiry(&keys).await?;
            let mut nodes = Vec::with_capacity(batch.len());
            for ((page, bounds), item) in batch.into_iter().zip(items) {
                if let Some(node) = self.page(page, &bounds, item) {
                    nodes.push((node, bounds));
                }
            }
            for (node, bounds) in nodes {
                self.node(node, bounds, depth + 1).await?;
            }
        }
        Ok(())
    }

    /// Decode and check one page item; the node when it can be walked further.
    fn page(
        &mut self,
        page: PageId,
        bounds: &Bounds,
        item: Option<(Bytes, Expiry)>,
    ) -> Option<Node> {
        let Some((item, expiry)) = item else {
            self.problem(format!("{} is missing from memcached", bounds.name));
            return None;
        };
        self.report.pages += 1;
        self.report.bytes += item.len() as u64;
        if let Expiry::After(left) = expiry {
            self.problem(format!(
                "{} of the current tree expires in {} s",
                bounds.name,
                left.as_secs()
            ));
        }
        let node = match Node::decode_page(&item, page) {
            Ok(node) => node,
            Err(error) => {
                self.problem(format!("{} cannot be read: {error}", bounds.name));
                return None;
            }
        };
        // Earlier releases wrote internal pages up to the root's size when the root split.
        let limit = match node {
            Node::Leaf(_) => self.inner.limits.page_max,
            Node::Internal(_) => self.inner.limits.root_max,
        };
        if node.encoded_len() > limit {
            self.problem(format!(
                "{} is {} bytes, over the {limit}-byte limit",
                bounds.name,
                node.encoded_len(),
            ));
        }
        Some(node)
    }

    /// Every chunk of an out-of-line value: present, permanent, in order, matching the
    /// length and checksum its leaf records.
    async fn value(&mut self, key: &str, reference: ValueRef) -> OrderedResult<()> {
        self.report.values += 1;
        if self.replaced_values.contains(&reference.id) {
            self.problem(format!(
                "the value of key {key:?} is listed as replaced (it will expire)"
            ));
        }
        let keys = (0..reference.chunks)
            .map(|index| chunk_key(self.db, reference.id, index))
            .collect::<OrderedResult<Vec<_>>>()?;
        let mut crc = 0u32;
        let mut len = 0u64;
        let mut index = 0u32;
        for batch in chunked(keys) {
            for item in self.inner.items.get_many_with_expiry(&batch).await? {
                let Some((item, expiry)) = item else {
                    self.problem(format!(
                        "chunk {index} of the value of key {key:?} is missing from memcached"
                    ));
                    return Ok(());
                };
                self.report.bytes += item.len() as u64;
                if let Expiry::After(left) = expiry {
                    self.problem(format!(
                        "chunk {index} of the value of key {key:?} expires in {} s",
                        left.as_secs()
                    ));
                }
                match decode_chunk(&item, reference.id, index) {
                    Ok(data) => {
                        crc = crc32c::crc32c_append(crc, data);
                        len += data.len() as u64;
                    }
                    Err(error) => {
                        self.problem(format!(
                            "chunk {index} of the value of key {key:?} cannot be read: {error}"
                        ));
                        return Ok(());
                    }
                }
                index += 1;
            }
        }
        if len != reference.len || crc != reference.crc {
            self.problem(format!(
                "the value of key {key:?} does not match its length or checksum"
            ));
        }
        Ok(())
    }
}

fn chunked<T>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut batches = Vec::with_capacity(items.len().div_ceil(BATCH));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        batches.push(items.by_ref().take(BATCH).collect());
    }
    batches
}
