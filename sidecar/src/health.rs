//! Readiness: whether memcached answers and still holds the contents this sidecar started
//! with, watched by a background probe and updated at once by requests that find it
//! unreachable (unless every item has copies: a silent server then leaves the others serving,
//! and the probe, which knows the placement, decides).
//!
//! memcached restarted without its warm-restart memory file comes back empty and answers
//! every get with "not found". Serving from it would be wrong data (buckets and blobs that
//! silently vanished), so the sidecar writes an epoch item (a random value) on every memcached
//! server when it starts and checks them every second and before answering "not found": once
//! one is gone or changed (one server of several restarted empty is enough to lose data),
//! the contents are declared lost, readiness turns false for good and requests are refused with
//! [`CONTENTS_LOST`]. Restarting the sidecar is the operator's way of accepting the memcached
//! contents as they are now (a new epoch), which it logs loudly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::items::{Expiry, ItemError, ItemKey, ItemResult, SharedItemStore};

/// What requests and `/readyz` say once memcached's contents are gone.
pub const CONTENTS_LOST: &str = "memcached lost its contents (restarted without warm restart?)";
/// What `/readyz` says while memcached does not answer.
pub const UNREACHABLE: &str = "memcached unreachable";
/// The epoch item (one per server, see [`crate::items::ItemStore::key_per_server`]); every
/// sidecar sharing the memcached pool adopts the same values.
const EPOCH_ITEM: &str = "zmm:epoch";

#[derive(Default)]
struct State {
    reachable: AtomicBool,
    /// Every item has copies on other servers: a request that found one server unreachable
    /// says nothing of the others, and only the probe decides readiness.
    copies: AtomicBool,
    /// Sticky: only a restart of the sidecar clears it.
    lost: AtomicBool,
    /// The epoch items and values seen at start (more as the placement grows); unset with no
    /// epoch (tests that build services alone).
    epoch: Mutex<Option<Vec<(ItemKey, Bytes)>>>,
    /// Set while the store must not be served from at all (its placement disagrees with the
    /// configuration): why, in one line. `refusing` says whether it is set without a lock.
    refused: Mutex<Option<String>>,
    refusing: AtomicBool,
    /// The store is the embedded in-process one: it starts empty on every start, and its log
    /// lines speak of it rather than of memcached.
    embedded: bool,
}

#[derive(Clone, Default)]
pub struct Health {
    state: Arc<State>,
}

impl Health {
    /// The health of a sidecar on the embedded store (no `--memcached`).
    pub fn embedded() -> Self {
        Health {
            state: Arc::new(State {
                embedded: true,
                ..State::default()
            }),
        }
    }

    /// What the log calls the store.
    fn store_name(&self) -> &'static str {
        if self.state.embedded {
            "the embedded store"
        } else {
            "memcached"
        }
    }

    pub fn is_ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why the sidecar is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        if let Some(why) = self.refusal() {
            Some(why)
        } else if !self.state.reachable.load(Ordering::Relaxed) {
            Some(UNREACHABLE.to_owned())
        } else {
            None
        }
    }

    /// Why every request must be refused (the contents are lost, or the store's placement
    /// disagrees with the configuration), or `None` while they may be served.
    pub fn refusal(&self) -> Option<String> {
        if self.state.refusing.load(Ordering::Acquire)
            && let Some(why) = lock(&self.state.refused).clone()
        {
            Some(why)
        } else if self.contents_lost() {
            Some(CONTENTS_LOST.to_owned())
        } else {
            None
        }
    }

    /// Refuse every request from now on, saying why, until [`Health::serve`].
    pub fn refuse(&self, why: String) {
        tracing::error!("refusing every request: {why}");
        *lock(&self.state.refused) = Some(why);
        self.state.refusing.store(true, Ordering::Release);
    }

    /// Serve again: the reason for refusing is gone (the placement now admits this sidecar).
    pub fn serve(&self) {
        if self.state.refusing.swap(false, Ordering::AcqRel) {
            tracing::warn!("the store's placement now admits this sidecar: serving");
        }
        *lock(&self.state.refused) = None;
    }

    /// Whether memcached lost the contents this sidecar started with.
    pub fn contents_lost(&self) -> bool {
        self.state.lost.load(Ordering::Relaxed)
    }

    /// Every item has copies on other servers from now on (see `State::copies`).
    pub fn has_copies(&self) {
        self.state.copies.store(true, Ordering::Relaxed);
    }

    /// A request found memcached unreachable: not ready at once, unless other copies may
    /// serve (the probe decides then).
    pub fn request_found_unreachable(&self) {
        if !self.state.copies.load(Ordering::Relaxed) {
            self.set_ready(false);
        }
    }

    /// Record whether memcached answers.
    pub fn set_ready(&self, ready: bool) {
        let was = self.state.reachable.swap(ready, Ordering::Relaxed);
        if was != ready {
            let store = self.store_name();
            if ready {
                tracing::info!("{store} reachable");
            } else {
                tracing::warn!("{store} unreachable: not ready");
            }
        }
    }

    pub(crate) fn declare_lost(&self) {
        if !self.state.lost.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "{CONTENTS_LOST}: the epoch item is gone; refusing every request until an \
                 operator restores memcached's memory file or restarts this sidecar to accept \
                 the current contents as a new epoch"
            );
        }
    }

    fn epoch_key() -> ItemResult<ItemKey> {
        ItemKey::new(EPOCH_ITEM).map_err(|error| ItemError::Protocol(error.to_string()))
    }

    /// At start: adopt the epoch item each server holds, or create one where there is none (a
    /// fresh memcached, or one that lost its contents: restarting the sidecar accepts them).
    /// Again once a placement change adds servers: only the new servers' items are added.
    pub async fn establish_epoch(&self, items: &SharedItemStore) -> ItemResult<()> {
        let base = Self::epoch_key()?;
        let known: Vec<ItemKey> = lock(&self.state.epoch)
            .iter()
            .flatten()
            .map(|(key, _)| key.clone())
            .collect();
        let mut epoch = Vec::new();
        for key in items.key_per_server(&base) {
            if known.contains(&key) {
                continue;
            }
            let value = self.adopt_or_create(items, &key).await?;
            epoch.push((key, value));
        }
        lock(&self.state.epoch)
            .get_or_insert_with(Vec::new)
            .extend(epoch);
        Ok(())
    }

    async fn adopt_or_create(&self, items: &SharedItemStore, key: &ItemKey) -> ItemResult<Bytes> {
        // Read first: memcached allocates an `add`'s item before it looks for the key, so on a
        // full memcached an `add` is refused even when the item exists, and a sidecar
        // restarting then could not adopt the epoch it shares with the others.
        if let Some(value) = items.get(key).await? {
            return Ok(value);
        }
        let fresh = Bytes::from(hex::encode(rand::random::<[u8; 16]>()));
        if items.add(key, fresh.clone(), Expiry::Never).await? {
            if self.state.embedded {
                // The embedded store lives and dies with the process: it is always fresh.
                tracing::info!(
                    epoch = %String::from_utf8_lossy(&fresh),
                    "the embedded store starts empty: new epoch"
                );
                return Ok(fresh);
            }
            tracing::warn!(
                item = %key,
                epoch = %String::from_utf8_lossy(&fresh),
                "a memcached server had no epoch item: starting a NEW EPOCH there. This is \
                 expected on a fresh memcached; otherwise it lost its contents and they are now \
                 accepted as they are"
            );
            return Ok(fresh);
        }
        // Another sidecar, or our previous run, created it: the contents are the same.
        items
            .get(key)
            .await?
            .ok_or_else(|| ItemError::Protocol("the epoch item vanished right after add".into()))
    }

    /// Check the epoch items now; `true` when the contents are lost (also recorded). A failed
    /// check leaves the state as it was: an unreachable memcached is not a lost one.
    pub async fn verify(&self, items: &SharedItemStore) -> bool {
        let Some(epoch) = lock(&self.state.epoch).clone() else {
            return self.contents_lost();
        };
        // All servers at once: this check also runs before every "not found" answer. A server
        // that does not answer says nothing about the others.
        let reads = futures::future::join_all(epoch.iter().map(|(key, _)| items.get(key))).await;
        for (read, (_, expected)) in reads.into_iter().zip(&epoch) {
            match read {
                Ok(Some(value)) if value == expected => {}
                Ok(_) => self.declare_lost(),
                Err(_) => {}
            }
        }
        self.contents_lost()
    }

    /// Probe memcached, and its epoch item, every `interval` until the runtime stops.
    pub fn watch(&self, items: SharedItemStore, interval: Duration) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                let reachable = items.ping().await.is_ok();
                // The epoch first, so that a memcached back empty never looks ready, not even
                // between the two steps.
                if reachable {
                    health.verify(&items).await;
                }
                health.set_ready(reachable);
                tokio::time::sleep(interval).await;
            }
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
