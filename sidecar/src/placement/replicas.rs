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
//! - A delete leaves a tombstone on every owner for a while instead of nothing (unless the
//!   store keeps one copy and no placement change is under way). A copy of the
//!   item read before the delete and written back after it (a read repairing an owner that
//!   missed, a refill) would otherwise bring a deleted item back, for good: its `add` finds the
//!   key taken by the tombstone, and reads take a tombstone for "deleted". Items replaced by
//!   compare-and-swap are never deleted.
//! - CAS tokens handed out carry a tag of the primary's incarnation (its start time and pid):
//!   a server restarted empty counts its tokens from the start again, and a token read before
//!   the restart must never match an item written after it.
//! - A commit with copies is acknowledged only if its primary still holds the incarnation
//!   marker it held before the swap: a primary restarted empty in between lost the commit,
//!   and another one built since on an older copy may have been copied over it.
//!
//! Every value is stored behind a 9-byte header (a marker byte and the version), which reads
//! take off. Counters (`count`) are kept on the primary alone, unheadered (memcached counts in
//! decimal text): a lost counter only makes commits keep replaced pages a grace period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::health::ServerHealth;
use super::hedged;
use super::incarnation::{CAS_BITS, marker, marker_still, read_tag};
use super::layout::{Primary, Server, View};
use super::record::Placement;
use super::value::{HEADER, header, is_tombstone, open, sealed, tombstone};

use crate::items::{
    CasOutcome, CasToken, Expiry, ItemError, ItemKey, ItemResult, ItemStore, MemcachedStore,
    StoreStats,
};

/// Versions remembered between a `gets` and the `cas` that follows it.
const REMEMBERED: usize = 4096;
/// Attempts of one copy to a replica that keeps changing under it.
const COPY_ATTEMPTS: usize = 64;
/// How long a tombstone stays: far longer than a delete takes to reach every owner plus the
/// time between reading a copy and writing it back ([`MAX_COPY_DELAY`]), each step bounded by
/// memcached's I/O timeout.
const TOMBSTONE_LIFE: Duration = Duration::from_secs(60);
/// A copy read longer ago than this is not written back (a repair is skipped, a refill starts
/// its batch over): a tombstone it would have met may be gone.
pub(super) const MAX_COPY_DELAY: Duration = Duration::from_secs(10);
/// What a `gets` handed a token out for: the version read and, for a token of another owner
/// than the primary (which did not answer in time), a digest of what that owner held, so that
/// `cas` finds the same item on the primary.
#[derive(Clone, Copy, Debug)]
struct Handed {
    version: u64,
    digest: Option<u64>,
}

/// A digest of a stored value, compared within this process only.
fn digest(stored: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    hasher.write(stored);
    hasher.finish()
}

pub struct ReplicatedStore {
    /// Every server known, in the order they became known: a view's indices stay valid.
    known: Mutex<Vec<Arc<Server>>>,
    /// The view operations start under; each holds its view until it ends, so that a view no
    /// operation holds any more is one this sidecar has finished with.
    view: RwLock<Arc<View>>,
    /// The version of the item a CAS token was read from, for the `cas` that follows.
    versions: Mutex<HashMap<(ItemKey, u64), Handed>>,
    /// When the follower last confirmed the view (`None`: no follower, the view is fixed).
    confirmed: Mutex<Option<Instant>>,
    /// Tells CAS writers waiting on a frozen item that the view changed.
    changed: tokio::sync::Notify,
}

/// How long a view stays usable without the follower confirming it: well under the life of a
/// sidecar's report (`follow`), so that a change never goes on while this sidecar may still
/// use a view it has not reported leaving.
pub(super) const FENCE: Duration = Duration::from_secs(10);
/// How long a CAS on a frozen item waits for the next generation before answering "conflict".
const FROZEN_WAIT: Duration = Duration::from_secs(30);

impl ReplicatedStore {
    /// The store on `names` with `factor` copies of every item, not following any record (for
    /// tools and tests); `factor` at most the number of servers.
    pub async fn connect(names: &[String], factor: usize) -> ItemResult<ReplicatedStore> {
        let placement = Placement {
            generation: 0,
            servers: names.iter().cloned().collect(),
            replication_factor: u32::try_from(factor).unwrap_or(u32::MAX),
            change: None,
            versioned: Some(true),
            routing: None,
        };
        if factor == 0 || factor > placement.servers.len() {
            return Err(ItemError::Protocol(format!(
                "replication factor {factor} needs between 1 and {} servers",
                names.len()
            )));
        }
        // Server indices in the order given (tests and tools address servers by them).
        let known = Self::connect_all(&[], names.iter().cloned()).await?;
        Self::open_on(known, &placement).await
    }

    /// The store as `placement` lays it out.
    pub async fn open(placement: &Placement) -> ItemResult<ReplicatedStore> {
        Self::open_on(Vec::new(), placement).await
    }

    async fn open_on(
        known: Vec<Arc<Server>>,
        placement: &Placement,
    ) -> ItemResult<ReplicatedStore> {
        let known = Self::connect_all(&known, placement.all_servers()).await?;
        let view = View::new(known.clone(), placement)?;
        Ok(ReplicatedStore {
            known: Mutex::new(known),
            view: RwLock::new(Arc::new(view)),
            versions: Mutex::new(HashMap::new()),
            confirmed: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// `known` and a connection to every server of `names` not among them.
    async fn connect_all(
        known: &[Arc<Server>],
        names: impl IntoIterator<Item = String>,
    ) -> ItemResult<Vec<Arc<Server>>> {
        let mut servers = known.to_vec();
        for name in names {
            if servers.iter().any(|server| server.name == name) {
                continue;
            }
            let server = Arc::new(Server {
                store: MemcachedStore::connect(std::slice::from_ref(&name)).await?,
                name,
                tag: AtomicU64::new(0),
                marker: Mutex::new(None),
                health: ServerHealth::default(),
                complete: Mutex::new(None),
            });
            read_tag(&server).await?;
            servers.push(server);
        }
        Ok(servers)
    }

    /// Start new operations under `placement`; the view left behind, which the caller watches
    /// drain.
    pub(super) async fn adopt(&self, placement: &Placement) -> ItemResult<Weak<View>> {
        let known = self.known_servers();
        let servers = Self::connect_all(&known, placement.all_servers()).await?;
        let view = View::new(servers.clone(), placement)?;
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = servers;
        let old = std::mem::replace(
            &mut *self.view.write().unwrap_or_else(|p| p.into_inner()),
            Arc::new(view),
        );
        self.changed.notify_waiters();
        Ok(Arc::downgrade(&old))
    }

    fn known_servers(&self) -> Vec<Arc<Server>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// From now on the view must be confirmed (`confirm`) at least every [`FENCE`].
    pub(super) fn fence(&self) {
        self.confirm();
    }

    pub(super) fn confirm(&self) {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// The view an operation starts under, unless it went unconfirmed too long.
    pub fn view(&self) -> ItemResult<Arc<View>> {
        let confirmed = *self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = confirmed
            && at.elapsed() > FENCE
        {
            return Err(ItemError::Unavailable(format!(
                "the placement has not been confirmed for {} s: serving waits until the servers \
                 answer again",
                at.elapsed().as_secs()
            )));
        }
        Ok(self
            .view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone())
    }

    /// The servers that hold `key` under the current view, primary first (indices for
    /// [`ReplicatedStore::server`]).
    pub fn owners(&self, key: &ItemKey) -> Vec<usize> {
        self.view_unfenced().read_owners(key)
    }

    /// One server alone.
    pub fn server(&self, index: usize) -> Arc<Server> {
        self.view_unfenced().servers[index].clone()
    }

    /// The record the current view is of.
    pub fn placement(&self) -> Placement {
        self.view_unfenced().placement.clone()
    }

    /// The current view, confirmed or not (for the follower itself).
    pub(super) fn view_unfenced(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The generation operations start under.
    pub fn generation(&self) -> u64 {
        self.view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .generation
    }

    /// Wait for a view other than `generation`, at most [`FROZEN_WAIT`].
    async fn next_view(&self, generation: u64) {
        let deadline = Instant::now() + FROZEN_WAIT;
        while self.generation() == generation && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(200), self.changed.notified()).await;
        }
    }

    /// A token as handed out: memcached's value under the server's incarnation tag.
    fn tagged(view: &View, server: usize, token: CasToken) -> CasToken {
        let tag = view.servers[server].tag.load(Ordering::Acquire);
        CasToken((tag << CAS_BITS) | (token.0 & ((1 << CAS_BITS) - 1)))
    }

    /// memcached's value of a token handed out, if it is of the server's incarnation now.
    fn untagged(view: &View, server: usize, token: CasToken) -> Option<CasToken> {
        let tag = view.servers[server].tag.load(Ordering::Acquire);
        (token.0 >> CAS_BITS == tag).then_some(CasToken(token.0 & ((1 << CAS_BITS) - 1)))
    }

    /// How each server of the current view has been answering, for the metrics.
    pub fn server_figures(&self) -> Vec<crate::metrics::ServerFigures> {
        let view = self.view_unfenced();
        view.members()
            .into_iter()
            .map(|server| {
                let server = &view.servers[server];
                let figures = server.health.figures();
                crate::metrics::ServerFigures {
                    server: server.name.clone(),
                    suspect: figures.suspect,
                    timeouts: figures.timeouts,
                    suspect_seconds: figures.suspect_seconds,
                    latency_seconds: figures.latency.as_secs_f64(),
                }
            })
            .collect()
    }

    /// The server names of the current layout, in name order.
    pub fn names(&self) -> Vec<String> {
        self.view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .read
            .names()
            .to_vec()
    }

    fn remember(&self, key: &ItemKey, token: CasToken, elsewhere: bool, stored: &Bytes) {
        let handed = Handed {
            version: open(stored.clone()).0,
            digest: elsewhere.then(|| digest(stored)),
        };
        let mut versions = self
            .versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if versions.len() >= REMEMBERED {
            versions.clear();
        }
        versions.insert((key.clone(), token.0), handed);
    }

    fn recall(&self, key: &ItemKey, token: CasToken) -> Option<Handed> {
        self.versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&(key.clone(), token.0))
    }

    /// Run `op` on every server of `owners`; every one must succeed. The results in owner
    /// order. A write waits for memcached's own timeout: it needs every owner anyway.
    async fn on_all<'a, T, F, Fut>(
        &self,
        view: &'a View,
        owners: Vec<usize>,
        op: F,
    ) -> ItemResult<Vec<T>>
    where
        F: Fn(&'a MemcachedStore) -> Fut,
        Fut: std::future::Future<Output = ItemResult<T>>,
    {
        futures::future::try_join_all(owners.iter().map(|server| op(&view.servers[*server].store)))
            .await
    }

    /// Read from the owners (`hedged`); give an owner that missed what another one holds.
    async fn read(&self, key: &ItemKey) -> ItemResult<Option<Bytes>> {
        let view = self.view()?;
        let asked = hedged::ask(&view, &view.read_owners(key), hedged::read::value(key)).await;
        let missed = asked.missed.clone();
        let Some((source, stored)) = asked.decided()? else {
            return Ok(None);
        };
        // Deleted (or being deleted): nothing to repair with.
        if is_tombstone(&stored) {
            return Ok(None);
        }
        if !missed.is_empty() {
            repair(&view, key, source, &missed).await;
        }
        Ok(Some(open(stored).1))
    }

    /// The primary of a CAS item under `view`; a frozen item waits for the next view.
    async fn primary(&self, view: &View, key: &ItemKey) -> Option<usize> {
        match view.primary(key) {
            Primary::Server(server) => Some(server),
            Primary::Frozen => {
                self.next_view(view.generation).await;
                None
            }
        }
    }
}

/// Give the owners that missed an item what `source` holds, with its expiry (read again with
/// it: repairs are rare). A copy read longer ago than [`MAX_COPY_DELAY`] is not written back.
async fn repair(view: &View, key: &ItemKey, source: usize, missed: &[usize]) {
    let read_at = Instant::now();
    let read = hedged::within(&view.servers[source], async {
        view.servers[source]
            .store
            .get_many_with_expiry(std::slice::from_ref(key))
            .await
    })
    .await;
    let Ok(Some((stored, expiry))) = read.map(|mut items| items.pop().flatten()) else {
        return;
    };
    if is_tombstone(&stored) {
        return;
    }
    for missing in missed {
        if read_at.elapsed() > MAX_COPY_DELAY {
            break;
        }
        let server = &view.servers[*missing];
        let repaired = hedged::within(server, server.store.add(key, stored.clone(), expiry)).await;
        if let Err(error) = repaired {
            tracing::debug!(%key, server = %server.name, %error, "could not repair a replica");
        }
    }
}

/// Make `server` hold `key` at `version` or newer; a newer one already there stays.
pub(super) async fn converge(
    server: &Server,
    key: &ItemKey,
    version: u64,
    stored: &Bytes,
    expiry: Expiry,
) -> ItemResult<()> {
    let store = &server.store;
    for _ in 0..COPY_ATTEMPTS {
        match store.gets(key).await? {
            None => {
                if store.add(key, stored.clone(), expiry).await? {
                    return Ok(());
                }
            }
            Some((held, token)) => {
                let held_version = open(held.clone()).0;
                // The same version with other contents: another commit took this one's place
                // (its primary restarted empty after the swap): this one is lost, and must not
                // be acknowledged.
                if held_version == version && held != *stored {
                    return Err(ItemError::Unavailable(format!(
                        "{key} version {version} on {} is another commit's: this one is lost",
                        server.name
                    )));
                }
                if held_version >= version {
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
        server.name
    )))
}

/// Copy a CAS item to every server a write goes to but `primary`; all must succeed.
async fn converge_others(
    view: &View,
    primary: usize,
    key: &ItemKey,
    version: u64,
    stored: &Bytes,
    expiry: Expiry,
) -> ItemResult<()> {
    let copies = view
        .write_owners(key)
        .into_iter()
        .filter(|server| *server != primary)
        .map(|server| converge(&view.servers[server], key, version, stored, expiry));
    futures::future::try_join_all(copies).await.map(|_| ())
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
        let view = self.view()?;
        let view = &view;
        futures::future::try_join_all(keys.iter().map(|key| async move {
            let asked =
                hedged::ask(view, &view.read_owners(key), hedged::read::with_expiry(key)).await;
            Ok(asked
                .decided()?
                .filter(|(_, (stored, _))| !is_tombstone(stored))
                .map(|(_, (stored, expiry))| (open(stored).1, expiry)))
        }))
        .await
    }

    async fn gets(&self, key: &ItemKey) -> ItemResult<Option<(Bytes, CasToken)>> {
        let view = self.view()?;
        let owners = view.read_owners(key);
        // Switching, a frozen item is read from the target's primary, which holds every
        // acknowledged version; its CAS waits for the next generation anyway.
        let primary = owners[0];
        for _ in 0..2 {
            // Any owner answers (every acknowledged version is on each); a token read from
            // another than the primary is taken to the primary by its version (`cas`).
            let asked = hedged::ask(&view, &owners, hedged::read::with_token(key)).await;
            let primary_lost = asked.missed.contains(&primary);
            match asked.decided()? {
                None => return Ok(None),
                Some((server, (stored, token))) if !primary_lost => {
                    let token = Self::tagged(&view, server, token);
                    self.remember(key, token, server != primary, &stored);
                    return Ok(Some((open(stored).1, token)));
                }
                Some(_) => {}
            }
            // The primary lost it (restarted empty): the newest replica's copy goes back first,
            // or a writer would start the item anew over acknowledged versions. Every
            // acknowledged version is on each replica that answers.
            let mut newest: Option<(u64, Bytes, Expiry)> = None;
            let mut answered = false;
            for server in view.write_owners(key).into_iter().skip(1) {
                let read = hedged::within(
                    &view.servers[server],
                    view.servers[server]
                        .store
                        .get_many_with_expiry(std::slice::from_ref(key)),
                )
                .await;
                let Ok(mut items) = read else { continue };
                answered = true;
                if let Some((stored, expiry)) = items.pop().flatten() {
                    let version = open(stored.clone()).0;
                    if newest.as_ref().is_none_or(|(v, _, _)| version > *v) {
                        newest = Some((version, stored, expiry));
                    }
                }
            }
            if !answered {
                return Err(ItemError::Unavailable(format!(
                    "{key}: its primary lost it and no other owner answers"
                )));
            }
            let Some((version, stored, expiry)) = newest else {
                return Ok(None);
            };
            converge(&view.servers[primary], key, version, &stored, expiry).await?;
        }
        Err(ItemError::Unavailable(format!(
            "{key} could not be restored on {}",
            view.servers[primary].name
        )))
    }

    async fn token(&self, key: &ItemKey) -> ItemResult<Option<CasToken>> {
        let view = self.view()?;
        let owners = view.read_owners(key);
        let primary = owners[0];
        let asked = hedged::ask(&view, &owners, hedged::read::token(key)).await;
        if !asked.missed.contains(&primary)
            && let Some((server, token)) = asked.decided()?
        {
            return Ok(Some(Self::tagged(&view, server, token)));
        }
        // None anywhere, or the primary lost it: `gets` puts the newest copy back first, or
        // finds none.
        drop(view);
        Ok(self.gets(key).await?.map(|(_, token)| token))
    }

    async fn set(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<()> {
        self.set_parts(key, vec![value], expiry).await
    }

    async fn set_parts(&self, key: &ItemKey, parts: Vec<Bytes>, expiry: Expiry) -> ItemResult<()> {
        let view = self.view()?;
        let mut sealed_parts = Vec::with_capacity(parts.len() + 1);
        sealed_parts.push(header(0));
        sealed_parts.extend(parts);
        self.on_all(&view, view.write_owners(key), |store| {
            let parts = sealed_parts.clone();
            async move { store.set_parts(key, parts, expiry).await }
        })
        .await
        .map(|_| ())
    }

    async fn add(&self, key: &ItemKey, value: Bytes, expiry: Expiry) -> ItemResult<bool> {
        let stored = sealed(1, &value);
        for _ in 0..2 {
            let view = self.view()?;
            // An `add` creates an item that may be replaced by CAS later: one serialization
            // point, as for the CAS.
            let Some(primary) = self.primary(&view, key).await else {
                continue;
            };
            if !view.servers[primary]
                .store
                .add(key, stored.clone(), expiry)
                .await?
            {
                return Ok(false);
            }
            // A replica that already holds the key holds this first version or a later one
            // (copied there by a replacement that went faster): either way it is no older.
            let copies = view
                .write_owners(key)
                .into_iter()
                .filter(|server| *server != primary)
                .map(|server| view.servers[server].store.add(key, stored.clone(), expiry));
            futures::future::try_join_all(copies).await?;
            return Ok(true);
        }
        Err(ItemError::Unavailable(format!(
            "{key} is moving to another server and the placement change did not go on"
        )))
    }

    async fn cas(
        &self,
        key: &ItemKey,
        value: Bytes,
        token: CasToken,
        expiry: Expiry,
    ) -> ItemResult<CasOutcome> {
        let view = self.view()?;
        let Some(primary) = self.primary(&view, key).await else {
            // The item is moving to another primary: whatever the token was read from, the
            // writer reads the item again under the next generation.
            return Ok(CasOutcome::Conflict);
        };
        let store = &view.servers[primary].store;
        let (raw, version) = match Self::untagged(&view, primary, token) {
            Some(raw) => match self.recall(key, token) {
                Some(handed) => (raw, handed.version),
                // Forgotten: read it again; the token says whether it is still that item.
                None => match store.gets(key).await? {
                    Some((stored, now)) if now == raw => (raw, open(stored).0),
                    Some(_) => return Ok(CasOutcome::Conflict),
                    None => return Ok(CasOutcome::NotFound),
                },
            },
            // Read from another owner while the primary was slow: the same version with the
            // same contents on the primary is the same item. A token of any other server, or
            // of the primary before it restarted, is of an item that is not that version any
            // more.
            None => {
                let Some(Handed {
                    version,
                    digest: Some(read),
                }) = self.recall(key, token)
                else {
                    return Ok(CasOutcome::Conflict);
                };
                match store.gets(key).await? {
                    Some((stored, now))
                        if open(stored.clone()).0 == version && digest(&stored) == read =>
                    {
                        (now, version)
                    }
                    Some(_) => return Ok(CasOutcome::Conflict),
                    None => return Ok(CasOutcome::NotFound),
                }
            }
        };
        let next = version + 1;
        let stored = sealed(next, &value);
        let copied = view.write_owners(key).len() > 1;
        let marker = if copied {
            Some(marker(&view.servers[primary]).await?)
        } else {
            None
        };
        let outcome = store.cas(key, stored.clone(), raw, expiry).await?;
        if outcome == CasOutcome::Stored {
            #[cfg(test)]
            tests::after_swap().await;
            converge_others(&view, primary, key, next, &stored, expiry).await?;
            // Restarted empty since the swap, the primary lost this version, and another
            // commit may have been built since on an older copy and copied over this one's
            // (the model check's finding 2): this commit is then not acknowledged. An error,
            // not a conflict: the commit may or may not stand, so nothing is cleaned up.
            // A marker that changed before the swap (a restart this process had not seen yet)
            // is told apart by the primary holding this very version now.
            if let Some(marker) = marker
                && !marker_still(&view.servers[primary], &marker).await?
                && store.get(key).await?.as_ref() != Some(&stored)
            {
                return Err(ItemError::Unavailable(format!(
                    "{} restarted during a commit of {key}: it is not acknowledged",
                    view.servers[primary].name
                )));
            }
        }
        Ok(outcome)
    }

    async fn touch(&self, key: &ItemKey, expiry: Expiry) -> ItemResult<bool> {
        let view = self.view()?;
        let touched = self
            .on_all(&view, view.removal_owners(key), |store| async move {
                store.touch(key, expiry).await
            })
            .await?;
        Ok(touched.into_iter().any(|t| t))
    }

    async fn touch_many(&self, keys: &[ItemKey], expiry: Expiry) -> ItemResult<Vec<bool>> {
        let view = self.view()?;
        // One pipelined batch per server, of the keys it owns.
        let mut batches: Vec<Vec<usize>> = vec![Vec::new(); view.servers.len()];
        for (index, key) in keys.iter().enumerate() {
            for server in view.removal_owners(key) {
                batches[server].push(index);
            }
        }
        let view = &view;
        let touches = batches
            .iter()
            .enumerate()
            .map(|(server, indices)| async move {
                let batch: Vec<ItemKey> = indices.iter().map(|i| keys[*i].clone()).collect();
                let touched = if batch.is_empty() {
                    Vec::new()
                } else {
                    view.servers[server]
                        .store
                        .touch_many(&batch, expiry)
                        .await?
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
        let view = self.view()?;
        // One copy and no change under way: no copy is ever written back (no refill, no read
        // repair, no change's copy), so no tombstone is needed.
        if view.min_factor() == 1 && view.phase.is_none() {
            let owners = view.write_owners(key);
            return view.servers[owners[0]].store.delete(key).await;
        }
        let deleted = self
            .on_all(&view, view.removal_owners(key), |store| async move {
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
        let view = self.view()?;
        let counts = futures::future::try_join_all(
            view.counter_servers(key)
                .into_iter()
                .map(|server| view.servers[server].store.count(key, change, life)),
        )
        .await?;
        Ok(counts.into_iter().max().unwrap_or(0))
    }

    async fn stats(&self) -> ItemResult<StoreStats> {
        let view = self.view()?;
        let mut total = StoreStats {
            item_size_max: u64::MAX,
            ..StoreStats::default()
        };
        for server in view.members() {
            let stats = view.servers[server].store.stats().await?;
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

    /// The probe of every server (the health watcher runs it every second): whether it
    /// answers in time (which alone clears a suspect server), its incarnation (a restarted
    /// server is seen within a second) and whether it is complete (`hedged`). Serving needs an
    /// owner that answers for every key, not every server: an error only when as many servers
    /// of the read layout as its factor are silent.
    async fn ping(&self) -> ItemResult<()> {
        let view = self.view()?;
        let members = view.members();
        // With one copy, a miss has nothing to be checked against: no marker is needed.
        let copies = view.min_factor() >= 2;
        let answered = futures::future::join_all(members.iter().map(|server| {
            let server = &view.servers[*server];
            async move {
                let started = Instant::now();
                let limit = server.health.silent_after();
                let pinged = tokio::time::timeout(limit, server.store.ping()).await;
                let answered = matches!(pinged, Ok(Ok(())));
                server.health.probed(answered.then(|| started.elapsed()));
                if answered {
                    let observed = hedged::within(server, async {
                        read_tag(server).await?;
                        if copies {
                            hedged::observe_complete(server).await?;
                        }
                        Ok(())
                    })
                    .await;
                    if let Err(error) = observed {
                        tracing::debug!(server = %server.name, %error, "probe");
                    }
                }
                answered
            }
        }))
        .await;
        let readers = view.read.members_indices();
        let silent: Vec<&str> = members
            .iter()
            .zip(&answered)
            .filter(|(server, answered)| !**answered && readers.contains(server))
            .map(|(server, _)| view.servers[*server].name.as_str())
            .collect();
        if silent.len() >= view.read.factor() {
            return Err(ItemError::Unavailable(format!(
                "servers {} do not answer: some items have no copy that answers",
                silent.join(",")
            )));
        }
        Ok(())
    }

    fn key_per_server(&self, base: &ItemKey) -> Vec<ItemKey> {
        // One key whose primary is each server of the current layout: with copies elsewhere,
        // a server restarted empty no longer loses the epoch, and reads repair it.
        let view = self
            .view
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let members = view.read.names().len();
        let mut keys: Vec<(usize, ItemKey)> = Vec::with_capacity(members);
        let candidates = std::iter::once(Some(base.clone()))
            .chain((1..100_000).map(|n| ItemKey::new(format!("{base}:{n}")).ok()));
        for candidate in candidates.flatten() {
            let primary = view.read_owners(&candidate)[0];
            if !keys.iter().any(|(server, _)| *server == primary) {
                keys.push((primary, candidate));
                if keys.len() == members {
                    break;
                }
            }
        }
        keys.into_iter().map(|(_, key)| key).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use futures::future::BoxFuture;
    use zenko_memcached_testkit::Memcached;

    use super::*;

    type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

    /// Run once right after the next successful swap, before its copies: what a test makes
    /// happen in that window.
    static AFTER_SWAP: StdMutex<Option<Hook>> = StdMutex::new(None);

    pub(super) async fn after_swap() {
        let hook = AFTER_SWAP
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(hook) = hook {
            hook().await;
        }
    }

    /// The model check's finding 2: a commit swaps its root record on the primary, the primary
    /// restarts empty before the copies, another sidecar commits twice over the older copy;
    /// the first commit must not be acknowledged (its version is gone), and reads must show
    /// the other's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_whose_primary_restarts_before_its_copies_is_not_acknowledged() {
        let servers = [Memcached::start(&[]), Memcached::start(&[])];
        let names: Vec<String> = servers.iter().map(Memcached::address).collect();
        let first = ReplicatedStore::connect(&names, 2).await.unwrap();
        let key = ItemKey::new("o:db:r").unwrap();
        assert!(
            first
                .add(&key, Bytes::from("v1"), Expiry::Never)
                .await
                .unwrap()
        );
        let primary = first.owners(&key)[0];
        let (_, token) = first.gets(&key).await.unwrap().unwrap();

        let servers = Arc::new(StdMutex::new(servers));
        // The hook's copy goes with it; this one keeps the servers running to the end.
        let running = servers.clone();
        let names_for_hook = names.clone();
        let key_for_hook = key.clone();
        *AFTER_SWAP.lock().unwrap() = Some(Box::new(move || {
            Box::pin(async move {
                tokio::task::block_in_place(|| servers.lock().unwrap()[primary].restart());
                // Another sidecar, which knows nothing of the first's swap.
                let second = ReplicatedStore::connect(&names_for_hook, 2).await.unwrap();
                for value in ["other v2", "other v3"] {
                    let (_, token) = second.gets(&key_for_hook).await.unwrap().unwrap();
                    let outcome = second
                        .cas(&key_for_hook, Bytes::from(value), token, Expiry::Never)
                        .await
                        .unwrap();
                    assert_eq!(outcome, CasOutcome::Stored);
                }
            })
        }));

        let outcome = first
            .cas(&key, Bytes::from("mine"), token, Expiry::Never)
            .await;
        assert!(
            matches!(outcome, Err(ItemError::Unavailable(_))),
            "a commit lost with its primary was answered {outcome:?}"
        );
        let read = first.get(&key).await.unwrap().unwrap();
        assert_eq!(read, Bytes::from("other v3"));
        drop(running);
    }
}
