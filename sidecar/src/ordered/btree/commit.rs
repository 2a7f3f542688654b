//! Writes: batches for one database queue up and one task commits them together (group
//! commit), with optimistic concurrency on the root record against other processes.
//!
//! A commit: stage large values out of line; read the root record with its CAS token; check
//! each batch's preconditions against that state plus the batches before it in the group;
//! write the new pages; expire what the previous commit replaced; CAS the new root record.
//! Losing the CAS race deletes this attempt's pages and starts over on the new root.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, stream};
use tokio::sync::oneshot;

use super::Inner;
use super::catalog;
use super::ids::{DbId, chunk_key, page_key, root_key};
use super::node::{Garbage, LeafValue, RootRecord, ValueRef, encode_chunk};
use super::readers;
use super::tree::{Change, TreeWriter};
use crate::items::{CasOutcome, CasToken, Expiry, ItemError, ItemKey};
use crate::ordered::{Batch, Mutation, OrderedError, OrderedResult, Sublevel};

/// Concurrent memcached requests one commit issues.
const PARALLEL: usize = 16;
/// Attempts before a commit gives up against other writers.
const MAX_ATTEMPTS: u32 = 200;

struct Pending {
    batch: Batch,
    done: oneshot::Sender<OrderedResult<()>>,
}

/// The batches waiting for a database's commit task.
#[derive(Default)]
pub struct DbQueue {
    pending: Vec<Pending>,
}

/// Queue `batch` and wait for the commit that includes it.
pub async fn submit(
    inner: &Arc<Inner>,
    db: DbId,
    sublevel: Sublevel,
    batch: Batch,
) -> OrderedResult<()> {
    let (done, result) = oneshot::channel();
    let start = {
        let mut queues = inner
            .queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = !queues.contains_key(&db);
        queues
            .entry(db)
            .or_default()
            .pending
            .push(Pending { batch, done });
        start
    };
    if start {
        // A task of its own, so that a caller giving up cannot strand the others.
        tokio::spawn(run_queue(inner.clone(), db, sublevel));
    }
    result.await.map_err(|_| {
        OrderedError::Items(ItemError::Unavailable("the commit task stopped".into()))
    })?
}

/// Drops a database's queue if its commit task panics, so that the batches in it fail
/// instead of waiting forever and the next write starts a new task.
struct QueueGuard<'a> {
    inner: &'a Inner,
    db: DbId,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.inner
                .queues
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&self.db);
        }
    }
}

async fn run_queue(inner: Arc<Inner>, db: DbId, sublevel: Sublevel) {
    let _guard = QueueGuard { inner: &inner, db };
    loop {
        let group: Vec<Pending> = {
            let mut queues = inner
                .queues
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(queue) = queues.get_mut(&db) else {
                return;
            };
            if queue.pending.is_empty() {
                queues.remove(&db);
                return;
            }
            let take = queue.pending.len().min(inner.limits.max_group);
            queue.pending.drain(..take).collect()
        };
        let (batches, waiters): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|p| (p.batch, p.done)).unzip();
        let results = commit_group(&inner, db, &sublevel, batches).await;
        for (waiter, result) in waiters.into_iter().zip(results) {
            let _ = waiter.send(result);
        }
    }
}

/// A copy of an error for each batch of a failed group.
fn duplicate(error: &OrderedError) -> OrderedError {
    match error {
        OrderedError::Items(item) => OrderedError::Items(match item {
            ItemError::Full => ItemError::Full,
            ItemError::TooLarge { size } => ItemError::TooLarge { size: *size },
            ItemError::Unavailable(m) => ItemError::Unavailable(m.clone()),
            ItemError::Protocol(m) => ItemError::Protocol(m.clone()),
        }),
        OrderedError::Conflict => OrderedError::Conflict,
        OrderedError::Corrupt(s, m) => OrderedError::Corrupt(s.clone(), m.clone()),
        OrderedError::SnapshotExpired(s) => OrderedError::SnapshotExpired(s.clone()),
    }
}

/// One mutation with its value ready for a leaf.
/// A batch ready to apply: its preconditions and staged mutations.
type StagedBatch = (Vec<(String, Option<String>)>, Vec<Staged>);

struct Staged {
    key: String,
    value: Option<LeafValue>,
    /// The text of an out-of-line value, to check later preconditions in the same group.
    text: Option<String>,
}

pub(super) async fn commit_group(
    inner: &Inner,
    db: DbId,
    sublevel: &Sublevel,
    batches: Vec<Batch>,
) -> Vec<OrderedResult<()>> {
    let count = batches.len();
    let mut staged_values = Vec::new();
    let staged = match stage(inner, db, batches, &mut staged_values).await {
        Ok(staged) => staged,
        Err(error) => {
            delete_values(inner, db, &staged_values).await;
            return (0..count).map(|_| Err(duplicate(&error))).collect();
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_commit(inner, db, sublevel, &staged, &staged_values).await {
            Ok(Some(results)) => return results,
            Ok(None) | Err(Failure::Retry) if attempt < MAX_ATTEMPTS => {
                let pause = rand::random::<u64>() % (u64::from(attempt.min(20)) * 500 + 1);
                tokio::time::sleep(Duration::from_micros(pause)).await;
            }
            Ok(None) | Err(Failure::Retry) => {
                delete_values(inner, db, &staged_values).await;
                let error = OrderedError::Items(ItemError::Unavailable(
                    "too many concurrent writers, gave up".into(),
                ));
                return (0..count).map(|_| Err(duplicate(&error))).collect();
            }
            Err(Failure::Failed { error, ambiguous }) => {
                if !ambiguous {
                    delete_values(inner, db, &staged_values).await;
                }
                tracing::warn!(db = %sublevel, %error, ambiguous, "commit failed");
                return (0..count).map(|_| Err(duplicate(&error))).collect();
            }
        }
    }
}

/// Write large values out of line (kept across attempts) and turn batches into staged form.
async fn stage(
    inner: &Inner,
    db: DbId,
    batches: Vec<Batch>,
    written: &mut Vec<ValueRef>,
) -> OrderedResult<Vec<StagedBatch>> {
    let mut staged = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut mutations = Vec::with_capacity(batch.mutations.len());
        for mutation in batch.mutations {
            mutations.push(match mutation {
                Mutation::Delete { key } => Staged {
                    key,
                    value: None,
                    text: None,
                },
                Mutation::Put { key, value } if value.len() <= inner.limits.inline_max => Staged {
                    key,
                    value: Some(LeafValue::Inline(value)),
                    text: None,
                },
                Mutation::Put { key, value } => {
                    let reference = write_value(inner, db, value.as_bytes(), written).await?;
                    Staged {
                        key,
                        value: Some(LeafValue::OutOfLine(reference)),
                        text: Some(value),
                    }
                }
            });
        }
        staged.push((batch.expect, mutations));
    }
    Ok(staged)
}

async fn write_value(
    inner: &Inner,
    db: DbId,
    bytes: &[u8],
    written: &mut Vec<ValueRef>,
) -> OrderedResult<ValueRef> {
    let chunk_size = inner.limits.chunk_size;
    let chunks = u32::try_from(bytes.len().div_ceil(chunk_size))
        .map_err(|_| OrderedError::Items(ItemError::TooLarge { size: bytes.len() }))?;
    let reference = ValueRef {
        id: super::ids::ValueId::fresh(),
        len: bytes.len() as u64,
        chunks,
        crc: crc32c::crc32c(bytes),
    };
    // Recorded before writing, so that a failure part-way deletes what did get written.
    written.push(reference);
    let items: Vec<(ItemKey, Bytes)> = bytes
        .chunks(chunk_size)
        .enumerate()
        .map(|(index, data)| {
            let index = index as u32;
            Ok((
                chunk_key(db, reference.id, index)?,
                Bytes::from(encode_chunk(reference.id, index, data)),
            ))
        })
        .collect::<OrderedResult<_>>()?;
    add_all(inner, items).await?;
    Ok(reference)
}

/// `add` every item (fresh random ids: an existing one means an id collision).
async fn add_all(inner: &Inner, items: Vec<(ItemKey, Bytes)>) -> OrderedResult<()> {
    let results: Vec<OrderedResult<()>> = stream::iter(items)
        .map(|(key, value)| async move {
            if inner.items.add(&key, value, Expiry::Never).await? {
                Ok(())
            } else {
                Err(OrderedError::Corrupt(
                    Sublevel::root(),
                    format!("item {key} already exists"),
                ))
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
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
async fn delete_keys(inner: &Inner, keys: Vec<ItemKey>) -> bool {
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

async fn delete_values(inner: &Inner, db: DbId, values: &[ValueRef]) {
    let garbage: Vec<Garbage> = values
        .iter()
        .map(|v| Garbage::Value {
            id: v.id,
            chunks: v.chunks,
        })
        .collect();
    delete_keys(inner, garbage_keys(db, &garbage)).await;
}

/// What an attempt read from the tree of the root it started from. A page or value of that
/// tree is missing when another writer's commit replaced the root and freed them (the attempt
/// is then lost: `Retry`), or, under a root that has not changed, when they are lost.
async fn reread<T>(
    inner: &Inner,
    db: DbId,
    sublevel: &Sublevel,
    current: &Option<(Arc<RootRecord>, CasToken)>,
    read: OrderedResult<T>,
) -> Result<T, Failure> {
    match read {
        Err(OrderedError::SnapshotExpired(_)) => {
            let now = inner.current_root(db, sublevel).await?;
            if now.map(|(_, token)| token) != current.as_ref().map(|(_, token)| *token) {
                return Err(Failure::Retry);
            }
            Err(OrderedError::Corrupt(
                sublevel.clone(),
                "a page of the current tree is missing from memcached".into(),
            )
            .into())
        }
        other => other.map_err(Failure::from),
    }
}

enum Failure {
    /// Another writer's commit freed what this attempt was reading: try again.
    Retry,
    Failed {
        error: OrderedError,
        /// The root record may or may not have been replaced: nothing may be cleaned up.
        ambiguous: bool,
    },
}

impl From<OrderedError> for Failure {
    fn from(error: OrderedError) -> Failure {
        Failure::Failed {
            error,
            ambiguous: false,
        }
    }
}

impl From<ItemError> for Failure {
    fn from(error: ItemError) -> Failure {
        Failure::from(OrderedError::from(error))
    }
}

/// One attempt: `Ok(None)` when another writer committed first.
async fn try_commit(
    inner: &Inner,
    db: DbId,
    sublevel: &Sublevel,
    staged: &[StagedBatch],
    staged_values: &[ValueRef],
) -> Result<Option<Vec<OrderedResult<()>>>, Failure> {
    let current = inner.current_root(db, sublevel).await?;
    let base = match &current {
        Some((record, _)) => record.clone(),
        None => Arc::new(RootRecord::empty(sublevel.clone())),
    };

    // The group's net effect, checking each batch on the state the batches before it leave.
    let mut overlay: BTreeMap<&str, (&Option<LeafValue>, Option<&str>)> = BTreeMap::new();
    let mut results = Vec::with_capacity(staged.len());
    for (expect, mutations) in staged {
        let mut holds = true;
        for (key, wanted) in expect {
            let matches = match overlay.get(key.as_str()) {
                Some((None, _)) => wanted.is_none(),
                Some((Some(LeafValue::Inline(text)), _)) => wanted.as_deref() == Some(text),
                Some((Some(LeafValue::OutOfLine(_)), text)) => wanted.as_deref() == *text,
                None => match reread(
                    inner,
                    db,
                    sublevel,
                    &current,
                    inner.lookup(db, sublevel, &base.root, key).await,
                )
                .await?
                {
                    None => wanted.is_none(),
                    Some(LeafValue::Inline(text)) => wanted.as_deref() == Some(text.as_str()),
                    Some(LeafValue::OutOfLine(reference)) => match wanted {
                        Some(wanted) if wanted.len() as u64 == reference.len => {
                            reread(
                                inner,
                                db,
                                sublevel,
                                &current,
                                inner.value(db, sublevel, &reference).await,
                            )
                            .await?
                                == *wanted
                        }
                        _ => false,
                    },
                },
            };
            if !matches {
                holds = false;
                break;
            }
        }
        if holds {
            for mutation in mutations {
                overlay.insert(&mutation.key, (&mutation.value, mutation.text.as_deref()));
            }
            results.push(Ok(()));
        } else {
            results.push(Err(OrderedError::Conflict));
        }
    }
    // Out-of-line values of this group that no surviving mutation uses.
    let used: std::collections::HashSet<_> = overlay
        .values()
        .filter_map(|(value, _)| match value {
            Some(LeafValue::OutOfLine(reference)) => Some(reference.id),
            _ => None,
        })
        .collect();
    let unused: Vec<ValueRef> = staged_values
        .iter()
        .filter(|v| !used.contains(&v.id))
        .copied()
        .collect();
    if overlay.is_empty() {
        delete_values(inner, db, &unused).await;
        return Ok(Some(results));
    }
    if current.is_none() && db != DbId::catalog() {
        // Listed before its first key lands, so a database is never missing from the catalog.
        catalog::register(inner, sublevel).await?;
    }

    let changes: Vec<Change> = overlay
        .into_iter()
        .map(|(key, (value, _))| (key.to_owned(), value.clone()))
        .collect();
    let mut writer = TreeWriter {
        inner,
        db,
        sublevel,
        build: Default::default(),
    };
    let root = reread(
        inner,
        db,
        sublevel,
        &current,
        writer.apply_root(&base.root, &changes).await,
    )
    .await?;
    let build = writer.build;
    let page_keys: Vec<ItemKey> = build
        .pages
        .iter()
        .filter_map(|(page, _, _)| page_key(db, *page).ok())
        .collect();
    let written = async {
        let items = build
            .pages
            .iter()
            .map(|(page, item, _)| Ok((page_key(db, *page)?, item.clone())))
            .collect::<OrderedResult<Vec<_>>>()?;
        add_all(inner, items).await
    }
    .await;
    if let Err(error) = written {
        delete_keys(inner, page_keys).await;
        return Err(error.into());
    }

    let mut garbage = build.garbage;
    let overflow = if garbage.len() > super::MAX_ROOT_GARBAGE {
        garbage.split_off(super::MAX_ROOT_GARBAGE)
    } else {
        Vec::new()
    };
    let record = RootRecord {
        sublevel: sublevel.clone(),
        generation: base.generation + 1,
        root: Arc::new(root),
        garbage,
    };
    let item = Bytes::from(record.encode());
    let record_garbage = record.garbage;
    let key = root_key(db)?;
    let outcome = match &current {
        Some((_, token)) => inner.items.cas(&key, item, *token, Expiry::Never).await,
        None => inner
            .items
            .add(&key, item, Expiry::Never)
            .await
            .map(|added| {
                if added {
                    CasOutcome::Stored
                } else {
                    CasOutcome::Conflict
                }
            }),
    };
    match outcome {
        Ok(CasOutcome::Stored) => {
            inner.forget_root(db);
            // The new pages are the current ones: the next reads will want them.
            for (page, item, node) in build.pages {
                inner.cache.insert(db, page, node, item.len());
            }
            for replaced in record_garbage.iter().chain(&overflow) {
                if let Garbage::Page(page) = replaced {
                    inner.cache.remove(db, *page);
                }
            }
            // What the previous commit replaced is listed in its root record, in case its
            // writer died before freeing it; this process knows when that writer was itself.
            let mut freeable = record_garbage;
            freeable.extend(overflow);
            if !inner.freed.knows(db, base.generation) {
                freeable.extend(base.garbage.iter().copied());
            }
            let freed = free(inner, db, &freeable).await;
            inner.freed.record(db, base.generation + 1, freed);
            delete_values(inner, db, &unused).await;
            Ok(Some(results))
        }
        Ok(CasOutcome::Conflict | CasOutcome::NotFound) => {
            delete_keys(inner, page_keys).await;
            Ok(None)
        }
        Err(error) => {
            // A refused `cas` leaves the current root record in place (the item store
            // guarantees it), so the database stays as the previous commit left it.
            // memcached refusing the item is a clear "not stored"; a lost connection is not.
            let ambiguous = !matches!(error, ItemError::Full | ItemError::TooLarge { .. });
            if !ambiguous {
                delete_keys(inner, page_keys).await;
            }
            Err(Failure::Failed {
                error: error.into(),
                ambiguous,
            })
        }
    }
}
