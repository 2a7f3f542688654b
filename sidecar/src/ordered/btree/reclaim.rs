//! Reclaiming what commits replaced, once they are acknowledged: pages and out-of-line values
//! no current root reaches are deleted, or given an expiry of one grace period while scans may
//! still read them. A root record lists what its commit replaced, so that the next commit frees
//! those items if the process that wrote it did not (it died, or memcached refused), and this
//! process remembers which of its own commits it freed so that the next one need not again.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::{StreamExt, stream};
use tokio::sync::watch;

use super::Inner;
use super::commit::PARALLEL;
use super::ids::{DbId, chunk_key, page_key};
use super::node::{Garbage, ValueRef};
use super::readers;
use crate::items::{Expiry, ItemKey};

/// What this process did with the items each database's last commit by it replaced, so that
/// the next commit frees them again only if that did not succeed. The freeing runs after the
/// commit is acknowledged; the next commit waits for its outcome only in its own freeing.
#[derive(Default)]
pub(super) struct Freed(Mutex<HashMap<DbId, FreeOutcome>>);

/// Whether a freeing succeeded, once it is over.
pub(super) type FreeWatch = watch::Receiver<Option<bool>>;

/// The generation of a commit and, once known, whether what it replaced is freed.
type FreeOutcome = (u64, FreeWatch);

impl Freed {
    /// Most databases remembered; past it, forgetting costs only deletes of missing items.
    const MAX: usize = 4096;

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<DbId, FreeOutcome>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A commit of `generation` was written by this process: where to send whether what it
    /// replaced got freed, and how the freeing of the previous generation's went if this
    /// process wrote that one too.
    pub(super) fn begin(
        &self,
        db: DbId,
        generation: u64,
    ) -> (Option<FreeWatch>, watch::Sender<Option<bool>>) {
        let (outcome, receiver) = watch::channel(None);
        let mut map = self.map();
        if map.len() >= Self::MAX && !map.contains_key(&db) {
            map.clear();
        }
        let previous = map
            .insert(db, (generation, receiver))
            .filter(|(known, _)| known + 1 == generation)
            .map(|(_, receiver)| receiver);
        (previous, outcome)
    }

    /// Whether a freeing by this process succeeded (waiting for one still under way).
    pub(super) async fn outcome(receiver: Option<FreeWatch>) -> bool {
        let Some(mut receiver) = receiver else {
            return false;
        };
        match receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.unwrap_or(false),
            // The freeing task ended without a word.
            Err(_) => false,
        }
    }
}

/// What a successful commit leaves to free once it is acknowledged.
pub(super) struct Cleanup {
    pub(super) db: DbId,
    /// Where to tell whether `replaced` is freed; `None` when no root record was written.
    pub(super) outcome: Option<watch::Sender<Option<bool>>>,
    /// Items this commit replaced (listed in its root record, or past what the record holds).
    pub(super) replaced: Vec<Garbage>,
    /// What the previous commit replaced (listed in the root record this one replaced), with
    /// how its freeing by this process went, if this process wrote that record.
    pub(super) previous: Option<(Option<FreeWatch>, Vec<Garbage>)>,
    /// Values staged for batches that did not apply.
    pub(super) unused: Vec<ValueRef>,
}

impl Cleanup {
    /// Only the unused values of a group in which no batch applied.
    pub(super) fn values(db: DbId, unused: Vec<ValueRef>) -> Cleanup {
        Cleanup {
            db,
            outcome: None,
            replaced: Vec::new(),
            previous: None,
            unused,
        }
    }

    pub(super) async fn run(self, inner: &Inner) {
        let mut freeable = self.replaced;
        if let Some((previous_outcome, garbage)) = self.previous
            && !Freed::outcome(previous_outcome).await
        {
            freeable.extend(garbage);
        }
        let freed = free(inner, self.db, &freeable).await;
        if let Some(outcome) = self.outcome {
            let _ = outcome.send(Some(freed));
        }
        delete_values(inner, self.db, &self.unused).await;
    }
}

fn garbage_keys(db: DbId, garbage: &[Garbage]) -> Vec<ItemKey> {
    let mut keys = Vec::new();
    for item in garbage {
        match item {
            Garbage::Page(page) => keys.extend(page_key(db, *page).ok()),
            Garbage::Value { id, chunks } => {
                keys.extend((0..*chunks).filter_map(|i| chunk_key(db, *id, i).ok()))
            }
        }
    }
    keys
}

/// Give replaced items a finite life: memcached drops them after the grace period (touches
/// pipelined). Whether every item could be given its expiry (or was gone already).
async fn expire(inner: &Inner, db: DbId, garbage: &[Garbage]) -> bool {
    let expiry = Expiry::After(inner.limits.grace);
    match inner
        .items
        .touch_many(&garbage_keys(db, garbage), expiry)
        .await
    {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, "could not expire replaced items");
            false
        }
    }
}

/// Reclaim items no current root reaches: at once when no scan is registered on the database,
/// else after the grace period (scans that outlive it end with `SnapshotExpired`). Whether
/// every item was dealt with: if not, the next commit frees them again.
async fn free(inner: &Inner, db: DbId, garbage: &[Garbage]) -> bool {
    if garbage.is_empty() {
        return true;
    }
    match readers::running(inner, db).await {
        Ok(0) => delete_keys(inner, garbage_keys(db, garbage)).await,
        Ok(_) => expire(inner, db, garbage).await,
        Err(error) => {
            tracing::debug!(%error, "could not count the scans; replaced items kept a grace period");
            expire(inner, db, garbage).await;
            false
        }
    }
}

/// Removal of items no root refers to any more; whether every one is gone.
pub(super) async fn delete_keys(inner: &Inner, keys: Vec<ItemKey>) -> bool {
    stream::iter(keys)
        .map(|key| async move {
            match inner.items.delete(&key).await {
                Ok(_) => true,
                Err(error) => {
                    tracing::debug!(%key, %error, "could not delete an unused item");
                    false
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .fold(true, |all, done| async move { all && done })
        .await
}

pub(super) async fn delete_values(inner: &Inner, db: DbId, values: &[ValueRef]) {
    let garbage: Vec<Garbage> = values
        .iter()
        .map(|v| Garbage::Value {
            id: v.id,
            chunks: v.chunks,
        })
        .collect();
    delete_keys(inner, garbage_keys(db, &garbage)).await;
}
