//! The replicated item store: every item on `factor` servers (the first `factor` of the key's
//! rendezvous order over the server names), so that losing a server loses nothing.
//!
//! - Writes go to every owner at once and succeed only when every owner holds them.
//! - Reads ask the owners in order and fall back on a miss or an error; an owner that missed
//!   an item another one holds gets it back (`add`, so a newer write is never overwritten).
//! - Items replaced by compare-and-swap (the ordered store's root records) have one
//!   serialization point, the CAS on their first owner (the primary), and carry a version that
//!   grows with each replacement; a replacement is copied to the other owners only over an
//!   older version, so replicas converge to the newest whatever order copies arrive in, and it
//!   is acknowledged once every owner holds it.
//!
//! - A delete leaves a tombstone on every owner for a while instead of nothing. A copy of the
//!   item read before the delete and written back after it (a read repairing an owner that
//!   missed, a refill) would otherwise bring a deleted item back, for good: its `add` finds the
//!   key taken by the tombstone, and reads take a tombstone for "deleted". Items replaced by
//!   compare-and-swap are never deleted.
//! - CAS tokens handed out carry a tag of the primary's incarnation (its start time and pid):
//!   a server restarted empty counts its tokens from the start again, and a token read before
//!   the restart must never match an item written after it.
//!
//! Every value is stored behind a 9-byte header (a marker byte and the version), which reads
//! take off. Counters (`count`) are kept on the primary alone, unheadered (memcached counts in
//! decimal text): a lost counter only makes commits keep replaced pages a grace period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use memcache::exp::{Rendezvous, Router};

use crate::items::{
    CasOutcome, CasToken, Expiry, ItemError, ItemKey, ItemResult, ItemStore, MemcachedStore,
    StoreStats,
};

/// First byte of every stored value: no item the stores write starts with it unheadered.
const MARKER: u8 = 0xA5;
/// Marker and version.
pub const HEADER: usize = 9;
/// Versions remembered between a `gets` and the `cas` that follows it.
const REMEMBERED: usize = 4096;
/// Attempts of one copy to a replica that keeps changing under it.
const COPY_ATTEMPTS: usize = 64;
/// First byte of a tombstone, which is a header alone.
const TOMBSTONE: u8 = 0xA6;
/// How long a tombstone stays: far longer than a delete takes to reach every owner plus the
/// time between reading a copy and writing it back ([`MAX_COPY_DELAY`]), each step bounded by
/// memcached's I/O timeout.
const TOMBSTONE_LIFE: Duration = Duration::from_secs(60);
/// A copy read longer ago than this is not written back (a repair is skipped, a refill starts
/// its batch over): a tombstone it would have met may be gone.
pub(super) const MAX_COPY_DELAY: Duration = Duration::from_secs(10);
/// Bits of a token that carry memcached's own CAS value; the ones above carry the tag.
const CAS_BITS: u32 = 44;

/// A server's incarnation tag, from its start time and pid (never 0, so that a token with no
/// tag is never taken for one with). Tags are compared within this process only.
fn tag_of(incarnation: (u64, u64)) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    incarnation.hash(&mut hasher);
    (hasher.finish() >> CAS_BITS).max(1)
}

fn header(version: u64) -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER);
    bytes.extend_from_slice(&[MARKER]);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.freeze()
}

/// The version and value of a stored item; counters (no header) read as version 0.
fn open(stored: Bytes) -> (u64, Bytes) {
    if stored.len() >= HEADER && stored[0] == MARKER {
        let mut version = [0u8; 8];
        version.copy_from_slice(&stored[1..HEADER]);
        (u64::from_le_bytes(version), stored.slice(HEADER..))
    } else {
        (0, stored)
    }
}

/// What a delete leaves on each owner.
fn tombstone() -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER);
    bytes.extend_from_slice(&[TOMBSTONE]);
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.freeze()
}

/// Whether a stored value is a tombstone: the item was deleted.
fn is_tombstone(stored: &[u8]) -> bool {
    stored.len() == HEADER && stored[0] == TOMBSTONE
}

fn sealed(version: u64, value: &Bytes) -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER + value.len());
    bytes.extend_from_slice(&header(version));
    bytes.extend_from_slice(value);
    bytes.freeze()
}

pub struct ReplicatedStore {
    names: Vec<String>,
    servers: Vec<Arc<MemcachedStore>>,
    factor: usize,
    /// The version of the item a CAS token was read from, for the `cas` that follows.
    versions: Mutex<HashMap<(ItemKey, u64), u64>>,
    /// Each server's incarnation tag, read at start and by every ping.
    tags: Vec<AtomicU64>,
}

impl ReplicatedStore {
    /// One connection set per server; `factor` at most the number of servers.
    pub async fn connect(names: &[String], factor: usize) -> ItemResult<ReplicatedStore> {
        if factor == 0 || factor > names.len() {
            return Err(ItemError::Protocol(format!(
                "replication factor {factor} needs between 1 and {} servers",
                names.len()
            )));
        }
        let mut servers = Vec::with_capacity(names.len());
        for name in names {
            servers.push(Arc::new(
                MemcachedStore::connect(std::slice::from_ref(name)).await?,
            ));
        }
        let store = ReplicatedStore {
            names: names.to_vec(),
            tags: names.iter().map(|_| AtomicU64::new(0)).collect(),
            servers,
            factor,
            versions: Mutex::new(HashMap::new()),
        };
        for server in 0..store.servers.len() {
            store.read_tag(server).await?;
        }
        Ok(store)
    }

    async fn read_tag(&self, server: usize) -> ItemResult<()> {
        let incarnation = self.servers[server]
            .incarnations()
            .await?
            .pop()
            .ok_or_else(|| ItemError::Protocol("no stats from a server".into()))?;
        self.tags[server].store(tag_of(incarnation), Ordering::Release);
        Ok(())
    }

    /// A token as handed out: memcached's value under the server's incarnation tag.
    fn tagged(&self, server: usize, token: CasToken) -> CasToken {
        let tag = self.tags[server].load(Ordering::Acquire);
        CasToken((tag << CAS_BITS) | (token.0 & ((1 << CAS_BITS) - 1)))
    }

    /// memcached's value of a token handed out, if it is of the server's incarnation now.
    fn untagged(&self, server: usize, token: CasToken) -> Option<CasToken> {
        let tag = self.tags[server].load(Ordering::Acquire);
        (token.0 >> CAS_BITS == tag).then_some(CasToken(token.0 & ((1 << CAS_BITS) - 1)))
    }

    /// The server names, in configuration order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// One server alone.
    pub fn server(&self, index: usize) -> &MemcachedStore {
        &self.servers[index]
    }

    /// The servers that hold `key`, primary first: its rendezvous order over the names,
    /// whose first is where a single-copy store keeps it.
    pub fn owners(&self, key: &ItemKey) -> Vec<usize> {
        let router = Rendezvous::new();
        let mut left: Vec<usize> = (0..self.names.len()).collect();
        let mut owners = Vec::with_capacity(self.factor);
        while owners.len() < self.factor && !left.is_empty() {
            let names: Vec<String> = left.iter().map(|i| self.names[*i].clone()).collect();
            let pick = router
                .route(key.as_str().as_bytes(), &names)
                .min(left.len() - 1);
            owners.push(left.remove(pick));
        }
        owners
    }

    fn remember(&self, key: &ItemKey, token: CasToken, version: u64) {
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if versions.len() >= REMEMBERED {
            versions.clear();
        }
        versions.insert((key.clone(), token.0), version);
    }

    fn recall(&self, key: &ItemKey, token: CasToken) -> Option<u64> {
        self.versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(key.clone(), token.0))
    }

    /// Make `server` hold `key` at `version` or newer; a newer one already there stays.
    async fn converge(
        &self,
        server: usize,
        key: &ItemKey,
        version: u64,
        stored: &Bytes,
        expiry: Expiry,
    ) -> ItemResult<()> {
        let store = &self.servers[server];
        for _ in 0..COPY_ATTEMPTS {
            match store.gets(key).await? {
                None => {
                    if store.add(key, stored.clone(), expiry).await? {
                        return Ok(());
                    }
                }
                Some((held, token)) => {
                    if open(held).0 >= version {
                        return Ok(());
                    }
                    if store.cas(key, stored.clone(), token, expiry).await? == CasOutcome::Stored {
                        return Ok(());
                    }
                }
            }
        }
        Err(ItemError::Unavailable(format!(
            "could not copy {key} to {}: it kept changing",
            self.names[server]
        )))
    }

    /// Copy to every owner but the primary; all must succeed.
    async fn converge_replicas(
        &self,
        owners: &[usize],
        key: &ItemKey,
        version: u64,
        stored: &Bytes,
        expiry: Expiry,
    ) -> ItemResult<()> {
        let copies = owners
            .iter()
            .skip(1)
            .map(|server| self.converge(*server, key, version, stored, expiry));
        futures::future::try_join_all(copies).await.map(|_| ())
    }

    /// Run `op` on every owner; every one must succeed. The results in owner order.
    async fn on_all<'a, T, F, Fut>(&'a self, key: &ItemKey, op: F) -> ItemResult<Vec<T>>
    where
        F: Fn(&'a MemcachedStore) -> Fut,
        Fut: std::future::Future<Output = ItemResult<T>>,
    {
        let owners = self.owners(key);
        futures::future::try_join_all(owners.iter().map(|server| op(&self.servers[*server]))).await
    }

    /// Read from the owners in order; give an owner that missed what a later one holds.
    async fn read(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        let owners = self.owners(key);
        let mut missed: Vec<usize> = Vec::new();
        let mut failure = None;
        for server in owners {
            let store = &self.servers[server];
            let found: ItemResult<Option<(Bytes, Option<Expiry>)>> =
                if missed.is_empty() && failure.is_none() {
                    store.get(key).await.map(|item| item.map(|v| (v, None)))
                } else {
                    // A fallback read learns the expiry too, to repair with it.
                    store
                        .get_many_with_expiry(std::slice::from_ref(key))
                        .await
                        .map(|mut items| items.pop().flatten().map(|(v, e)| (v, Some(e))))
                };
            let read_at = Instant::now();
            match found {
                // Deleted (or being deleted): nothing to fall back on or repair with.
                Ok(Some((stored, _))) if is_tombstone(&stored) => return Ok(None),
                Ok(Some((stored, expiry))) => {
                    for missing in &missed {
                        if read_at.elapsed() > MAX_COPY_DELAY {
                            break;
                        }
                        let repair = self.servers[*missing]
                            .add(key, stored.clone(), expiry.unwrap_or(Expiry::Never))
                            .await;
                        if let Err(error) = repair {
                            tracing::debug!(%key, server = %self.names[*missing], %error,
                                "could not repair a replica");
                        }
                    }
                    return Ok(Some(open(stored).1));
                }
                Ok(None) => missed.push(server),
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            // A miss everywhere reachable is a miss only when every owner answered.
            Some(error) => Err(error),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl ItemStore for ReplicatedStore {
    async fn get(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        self.read(key).await
    }

    async fn get_many(&self, keys: &[ItemKey]) -> ItemResult<Vec<Option<Bytes>>> {
        futures::future::try_join_all(keys.iter().map(|key| self.read(key))).await
    }

    async fn get_many_with_expiry(
        &self,
        keys: &[ItemKey],
    ) -> ItemResult<Vec<Option<(Bytes, Expiry)>>> {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            let mut found = None;
            for server in self.owners(key) {
                let mut items = self.servers[server]
                    .get_many_with_expiry(std::slice::from_ref(key))
                    .await?;
                if let Some((stored, expiry)) = items.pop().flatten() {
                    found = (!is_tombstone(&stored)).then(|| (open(stored).1, expiry));
                    break;
                }
            }
            results.push(found);
        }
        Ok(results)
    }

    async fn gets(&self, key: &ItemKey) -> ItemResult<Option<(Bytes, CasToken)>> {
        let owners = self.owners(key);
        let primary = &self.servers[owners[0]];
        for _ in 0..2 {
            if let Some((stored, token)) = primary.gets(key).await? {
                let (version, value) = open(stored);
                let token = self.tagged(owners[0], token);
                self.remember(key, token, version);
                return Ok(Some((value, token)));
            }
            // The primary lost it (restarted empty): the newest replica's copy goes back first,
            // or a writer would start the item anew over acknowledged versions.
            let mut newest: Option<(u64, Bytes, Expiry)> = None;
            for server in owners.iter().skip(1) {
                let mut items = self.servers[*server]
                    .get_many_with_expiry(std::slice::from_ref(key))
                    .await?;
                if let Some((stored, expiry)) = items.pop().flatten() {
                    let version = open(stored.clone()).0;
                    if newest.as_ref().is_none_or(|(v, _, _)| version > *v) {
                        newest = Some((version, stored, expiry));
                    }
                }
            }
            let Some((version, stored, expiry)) = newest else {
                return Ok(None);
            };
            self.converge(owners[0], key, version, &stored, expiry)
                .await?;
        }
        Err(ItemError::Unavailable(format!(
            "{key} could not be restored on {}",
            self.names[owners[0]]
        )))
    }

    async fn token(&self, key: &ItemKey) -> ItemResult<Option<CasToken>> {
        let primary = self.owners(key)[0];
        match self.servers[primary].token(key).await? {
            Some(token) => Ok(Some(self.tagged(primary, token))),
            // The primary lost it: `gets` puts the newest copy back first, or finds none.
            None => Ok(self.gets(key).await?.map(|(_, token)| token)),
        }
    }

    async fn set(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<()> {
        self.set_parts(key, vec![value], expiry).await
    }

    async fn set_parts(&self, key: &ItemKey, parts: Vec<Bytes>, expiry: Expiry) -> ItemResult<()> {
        let mut sealed_parts = Vec::with_capacity(parts.len() + 1);
        sealed_parts.push(header(0));
        sealed_parts.extend(parts);
        self.on_all(key, |store| {
            let parts = sealed_parts.clone();
            async move { store.set_parts(key, parts, expiry).await }
        })
        .await
        .map(|_| ())
    }

    async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<bool> {
        let owners = self.owners(key);
        let stored = sealed(1, &value);
        if !self.servers[owners[0]]
            .add(key, stored.clone(), expiry)
            .await?
        {
            return Ok(false);
        }
        // A replica that already holds the key holds this first version or a later one
        // (copied there by a replacement that went faster): either way it is no older.
        let copies = owners
            .iter()
            .skip(1)
            .map(|server| self.servers[*server].add(key, stored.clone(), expiry));
        futures::future::try_join_all(copies).await?;
        Ok(true)
    }

    async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: CasToken,
        expiry: Expiry,
    ) -> ItemResult<CasOutcome> {
        let owners = self.owners(key);
        let primary = &self.servers[owners[0]];
        // A token from before the primary restarted: the item is not that version any more.
        let Some(raw) = self.untagged(owners[0], token) else {
            return Ok(CasOutcome::Conflict);
        };
        let version = match self.recall(key, token) {
            Some(version) => version,
            // Forgotten: read it again; the token says whether it is still that item.
            None => match primary.gets(key).await? {
                Some((stored, now)) if now == raw => open(stored).0,
                Some(_) => return Ok(CasOutcome::Conflict),
                None => return Ok(CasOutcome::NotFound),
            },
        };
        let next = version + 1;
        let stored = sealed(next, &value);
        let outcome = primary.cas(key, stored.clone(), raw, expiry).await?;
        if outcome == CasOutcome::Stored {
            self.converge_replicas(&owners, key, next, &stored, expiry)
                .await?;
        }
        Ok(outcome)
    }

    async fn touch(&self, key: &ItemKey, expiry: Expiry) -> ItemResult<bool> {
        let touched = self
            .on_all(key, |store| async move { store.touch(key, expiry).await })
            .await?;
        Ok(touched.into_iter().any(|t| t))
    }

    async fn touch_many(&self, keys: &[ItemKey], expiry: Expiry) -> ItemResult<Vec<bool>> {
        // One pipelined batch per server, of the keys it owns.
        let mut batches: Vec<Vec<usize>> = vec![Vec::new(); self.servers.len()];
        for (index, key) in keys.iter().enumerate() {
            for server in self.owners(key) {
                batches[server].push(index);
            }
        }
        let touches = batches
            .iter()
            .enumerate()
            .map(|(server, indices)| async move {
                let batch: Vec<ItemKey> = indices.iter().map(|i| keys[*i].clone()).collect();
                let touched = if batch.is_empty() {
                    Vec::new()
                } else {
                    self.servers[server].touch_many(&batch, expiry).await?
                };
                Ok::<_, ItemError>(indices.iter().copied().zip(touched).collect::<Vec<_>>())
            });
        let mut any = vec![false; keys.len()];
        for results in futures::future::try_join_all(touches).await? {
            for (index, touched) in results {
                any[index] |= touched;
            }
        }
        Ok(any)
    }

    async fn delete(&self, key: &ItemKey) -> ItemResult<bool> {
        let deleted = self
            .on_all(key, |store| async move {
                let existed = store.delete(key).await?;
                // A set, not an add: it also replaces a copy written back since the delete.
                match store
                    .set(key, tombstone(), Expiry::After(TOMBSTONE_LIFE))
                    .await
                {
                    Ok(()) => {}
                    // No room even for a tombstone (memcached full, evictions off): the item
                    // is gone all the same, unguarded against a copy written back.
                    Err(ItemError::Full) => {
                        tracing::debug!(%key, "no room for a tombstone");
                    }
                    Err(error) => return Err(error),
                }
                Ok(existed)
            })
            .await?;
        Ok(deleted.into_iter().any(|d| d))
    }

    async fn count(&self, key: &ItemKey, change: i64, life: Duration) -> ItemResult<u64> {
        let primary = self.owners(key)[0];
        self.servers[primary].count(key, change, life).await
    }

    async fn stats(&self) -> ItemResult<StoreStats> {
        let mut total = StoreStats {
            item_size_max: u64::MAX,
            ..StoreStats::default()
        };
        for server in &self.servers {
            let stats = server.stats().await?;
            total.limit_bytes += stats.limit_bytes;
            total.used_bytes += stats.used_bytes;
            total.items += stats.items;
            total.evictions += stats.evictions;
            total.item_size_max = total.item_size_max.min(stats.item_size_max);
        }
        // Room for the header in every item.
        total.item_size_max = total.item_size_max.saturating_sub(HEADER as u64);
        Ok(total)
    }

    async fn ping(&self) -> ItemResult<()> {
        futures::future::try_join_all(self.servers.iter().map(|server| server.ping())).await?;
        // Every second (the health watcher pings): a restarted server is seen within one.
        for server in 0..self.servers.len() {
            self.read_tag(server).await?;
        }
        Ok(())
    }

    fn key_per_server(&self, base: &ItemKey) -> Vec<ItemKey> {
        // One key whose primary is each server: with copies elsewhere, a server restarted
        // empty no longer loses the epoch, and reads repair it.
        let mut keys: Vec<Option<ItemKey>> = vec![None; self.names.len()];
        let candidates = std::iter::once(Some(base.clone()))
            .chain((1..100_000).map(|n| ItemKey::new(format!("{base}:{n}")).ok()));
        for candidate in candidates.flatten() {
            let slot = &mut keys[self.owners(&candidate)[0]];
            if slot.is_none() {
                *slot = Some(candidate);
                if keys.iter().all(Option::is_some) {
                    break;
                }
            }
        }
        keys.into_iter().flatten().collect()
    }
}
