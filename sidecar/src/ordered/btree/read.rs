//! Reading a database: its root record, pages through the cache, out-of-line values, and
//! point lookups.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::Inner;
use super::codec::DecodeError;
use super::ids::{DbId, PageId, chunk_key, page_key, root_key};
use super::node::{LeafValue, Node, RootRecord, ValueRef, decode_chunk};
use crate::items::CasToken;
use crate::ordered::{OrderedError, OrderedResult, Sublevel};

/// Index of the child whose subtree may hold `key`.
pub fn child_index(children: &[(String, PageId)], key: &str) -> usize {
    children
        .partition_point(|(separator, _)| separator.as_str() <= key)
        .saturating_sub(1)
}

/// Reads of one get while commits keep replacing the pages it reads.
const MAX_READ_ATTEMPTS: usize = 16;

fn corrupt(sublevel: &Sublevel, what: &str, error: DecodeError) -> OrderedError {
    OrderedError::Corrupt(sublevel.clone(), format!("{what}: {error}"))
}

impl Inner {
    fn decode_root(&self, sublevel: &Sublevel, item: &[u8]) -> OrderedResult<RootRecord> {
        let record = RootRecord::decode(item).map_err(|e| corrupt(sublevel, "root record", e))?;
        if &record.sublevel != sublevel {
            return Err(OrderedError::Corrupt(
                sublevel.clone(),
                format!("root record belongs to database {}", record.sublevel),
            ));
        }
        Ok(record)
    }

    /// The current root record (an empty tree if the database never held a key).
    pub(super) async fn read_root(
        &self,
        db: DbId,
        sublevel: &Sublevel,
    ) -> OrderedResult<Arc<RootRecord>> {
        match self.current_root(db, sublevel).await? {
            Some((record, _)) => Ok(record),
            None => Ok(Arc::new(RootRecord::empty(sublevel.clone()))),
        }
    }

    /// The current root record with its CAS token, `None` if it does not exist yet.
    ///
    /// The root record holds the root node, which grows with the database (tens of KiB for
    /// 100,000 keys), and every get starts from it. So the last record decoded for each
    /// database is kept with the CAS token it was read under, and a read first asks memcached
    /// for the item's token alone (a few bytes): the same token is the same item version,
    /// since every change gives the item a new one. Only a changed record is read again.
    pub(super) async fn current_root(
        &self,
        db: DbId,
        sublevel: &Sublevel,
    ) -> OrderedResult<Option<(Arc<RootRecord>, CasToken)>> {
        let key = root_key(db)?;
        if let Some((token, record)) = self.cached_root(db, sublevel) {
            match self.items.token(&key).await? {
                Some(now) if now == token => return Ok(Some((record, token))),
                Some(_) => {}
                None => {
                    self.forget_root(db);
                    return Ok(None);
                }
            }
        }
        match self.items.gets(&key).await? {
            Some((item, token)) => {
                let record = Arc::new(self.decode_root(sublevel, &item)?);
                self.remember_root(db, token, record.clone());
                Ok(Some((record, token)))
            }
            None => Ok(None),
        }
    }

    fn roots(&self) -> std::sync::MutexGuard<'_, HashMap<DbId, (CasToken, Arc<RootRecord>)>> {
        self.roots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached_root(&self, db: DbId, sublevel: &Sublevel) -> Option<(CasToken, Arc<RootRecord>)> {
        self.roots()
            .get(&db)
            .filter(|(_, record)| &record.sublevel == sublevel)
            .cloned()
    }

    /// Keep `record` as the version of `db`'s root record that has CAS token `token`. Racing
    /// reads may store an older version after a newer one: harmless, as the token tells.
    fn remember_root(&self, db: DbId, token: CasToken, record: Arc<RootRecord>) {
        let mut roots = self.roots();
        if roots.len() >= super::ROOT_CACHE_ENTRIES
            && !roots.contains_key(&db)
            && let Some(victim) = roots.keys().next().copied()
        {
            roots.remove(&victim);
        }
        roots.insert(db, (token, record));
    }

    /// Drop what is kept of `db`'s root record: after this process replaced it (memcached's
    /// `cas` does not say the new token), the next read takes the whole record at once
    /// rather than a token that cannot match first.
    pub(super) fn forget_root(&self, db: DbId) {
        self.roots().remove(&db);
    }

    fn decode_page(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        page: PageId,
        item: &Bytes,
    ) -> OrderedResult<Arc<Node>> {
        let node =
            Arc::new(Node::decode_page(item, page).map_err(|e| corrupt(sublevel, "page", e))?);
        self.cache.insert(db, page, node.clone(), item.len());
        Ok(node)
    }

    /// A page, from the cache or memcached. A missing page means the snapshot that refers
    /// to it has been replaced (and its pages freed) since it was read.
    pub(super) async fn page(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        page: PageId,
    ) -> OrderedResult<Arc<Node>> {
        if let Some(node) = self.cache.get(db, page) {
            return Ok(node);
        }
        match self.items.get(&page_key(db, page)?).await? {
            Some(item) => self.decode_page(db, sublevel, page, &item),
            None => Err(OrderedError::SnapshotExpired(sublevel.clone())),
        }
    }

    /// Several pages in one round trip for those not cached; results in input order.
    pub(super) async fn pages(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        ids: &[PageId],
    ) -> OrderedResult<Vec<Arc<Node>>> {
        let mut found: Vec<Option<Arc<Node>>> =
            ids.iter().map(|id| self.cache.get(db, *id)).collect();
        let missing: Vec<usize> = (0..ids.len()).filter(|i| found[*i].is_none()).collect();
        if !missing.is_empty() {
            let keys = missing
                .iter()
                .map(|i| page_key(db, ids[*i]))
                .collect::<OrderedResult<Vec<_>>>()?;
            let items = self.items.get_many(&keys).await?;
            for (i, item) in missing.into_iter().zip(items) {
                let item = item.ok_or_else(|| OrderedError::SnapshotExpired(sublevel.clone()))?;
                found[i] = Some(self.decode_page(db, sublevel, ids[i], &item)?);
            }
        }
        found
            .into_iter()
            .map(|node| node.ok_or_else(|| OrderedError::SnapshotExpired(sublevel.clone())))
            .collect()
    }

    /// An out-of-line value, checked against the length and checksum in its leaf.
    pub(super) async fn value(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        value: &ValueRef,
    ) -> OrderedResult<String> {
        let keys = (0..value.chunks)
            .map(|index| chunk_key(db, value.id, index))
            .collect::<OrderedResult<Vec<_>>>()?;
        let items = self.items.get_many(&keys).await?;
        let mut bytes = Vec::with_capacity(usize::try_from(value.len).unwrap_or(0));
        for (index, item) in (0..value.chunks).zip(items) {
            let item = item.ok_or_else(|| OrderedError::SnapshotExpired(sublevel.clone()))?;
            bytes.extend_from_slice(
                decode_chunk(&item, value.id, index)
                    .map_err(|e| corrupt(sublevel, "value chunk", e))?,
            );
        }
        if bytes.len() as u64 != value.len || crc32c::crc32c(&bytes) != value.crc {
            return Err(OrderedError::Corrupt(
                sublevel.clone(),
                "value does not match its checksum".into(),
            ));
        }
        String::from_utf8(bytes).map_err(|_| corrupt(sublevel, "value", DecodeError::Utf8))
    }

    pub(super) async fn resolve(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        value: LeafValue,
    ) -> OrderedResult<String> {
        match value {
            LeafValue::Inline(text) => Ok(text),
            LeafValue::OutOfLine(reference) => self.value(db, sublevel, &reference).await,
        }
    }

    /// The leaf entry of `key` in the tree under `root`.
    pub(super) async fn lookup(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        root: &Arc<Node>,
        key: &str,
    ) -> OrderedResult<Option<LeafValue>> {
        let mut node = root.clone();
        loop {
            let child = match node.as_ref() {
                Node::Leaf(entries) => {
                    return Ok(entries
                        .binary_search_by(|(entry, _)| entry.as_str().cmp(key))
                        .ok()
                        .map(|i| entries[i].1.clone()));
                }
                Node::Internal(children) => match children.get(child_index(children, key)) {
                    Some((_, page)) => *page,
                    None => return Ok(None),
                },
            };
            node = self.page(db, sublevel, child).await?;
        }
    }

    pub(super) async fn get(
        &self,
        db: DbId,
        sublevel: &Sublevel,
        key: &str,
    ) -> OrderedResult<Option<String>> {
        // Commits free the pages they replace at once when no scan is registered, so a page
        // can vanish between reading the root and the page; the root has then changed, and
        // the get reads again. A page missing under a root that has not changed is lost.
        let mut root = self.read_root(db, sublevel).await?;
        for _ in 0..MAX_READ_ATTEMPTS {
            let found = match self.lookup(db, sublevel, &root.root, key).await {
                Ok(None) => return Ok(None),
                Ok(Some(value)) => self.resolve(db, sublevel, value).await.map(Some),
                Err(error) => Err(error),
            };
            match found {
                Err(OrderedError::SnapshotExpired(_)) => {
                    let now = self.read_root(db, sublevel).await?;
                    if now.generation == root.generation {
                        return Err(OrderedError::Corrupt(
                            sublevel.clone(),
                            "a page of the current tree is missing from memcached".into(),
                        ));
                    }
                    root = now;
                }
                other => return other,
            }
        }
        Err(OrderedError::Items(crate::items::ItemError::Unavailable(
            format!("database {sublevel} changed under {MAX_READ_ATTEMPTS} reads in a row"),
        )))
    }
}
