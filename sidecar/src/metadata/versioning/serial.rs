//! Writes to one key, one after the other inside this process: callers queue (they do not
//! spin), and one task plans the queued operations in order, each on the master the ones
//! before it leave, and hands their batches to the store together, so that they commit as one.
//! When another process changed the key meanwhile, the operations not yet applied read the
//! master again and are planned again after a jittered pause, until each one's deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::engine::Plan;
use crate::items::ItemError;
use crate::metadata::errors::{MetadataError, MetadataResult};
use crate::ordered::{Batch, Mutation, OrderedError, OrderedStore, Sublevel};

/// Most operations of one key planned into one commit.
const MAX_FOLD: usize = 256;
/// Pauses before planning again after another process changed the key: the first at most,
/// and the longest.
const FIRST_PAUSE: Duration = Duration::from_micros(500);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// Plans an operation on the master it is given (`None`: absent, or not read because no
/// operation of the round needs it).
pub type Planner = Box<dyn FnMut(Option<&str>) -> MetadataResult<Plan> + Send>;

/// One queued operation.
pub struct Op {
    plan: Planner,
    reads_master: bool,
    deadline: Instant,
    done: oneshot::Sender<MetadataResult<Applied>>,
}

/// What an applied operation answers, and whether it left a placeholder master to repair.
pub struct Applied {
    pub result: Option<String>,
    pub placeholder_written: bool,
}

type KeyId = (Sublevel, String);

/// The queues of the keys being written, shared by every call of the service.
#[derive(Default)]
pub struct KeyQueues {
    queues: Mutex<HashMap<KeyId, Vec<Op>>>,
}

impl KeyQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Vec<Op>>> {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue an operation on `key` and wait for it to be applied (or to fail).
    pub async fn run(
        self: &Arc<Self>,
        store: &Arc<dyn OrderedStore>,
        db: &Sublevel,
        key: &str,
        reads_master: bool,
        deadline: Instant,
        plan: Planner,
    ) -> MetadataResult<Applied> {
        let (done, answer) = oneshot::channel();
        let op = Op {
            plan,
            reads_master,
            deadline,
            done,
        };
        let id = (db.clone(), key.to_owned());
        let start = {
            let mut queues = self.lock();
            let start = !queues.contains_key(&id);
            queues.entry(id.clone()).or_default().push(op);
            start
        };
        if start {
            // A task of its own, so that a caller giving up cannot strand the others.
            tokio::spawn(drain(self.clone(), store.clone(), id));
        }
        answer.await.unwrap_or_else(|_| {
            Err(MetadataError::Internal(
                "the task writing this key stopped".into(),
            ))
        })
    }
}

/// Drops a key's queue if its task panics, so that the operations in it fail instead of
/// waiting forever and the next write starts a new task.
struct QueueGuard<'a> {
    queues: &'a KeyQueues,
    id: &'a KeyId,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.queues.lock().remove(self.id);
        }
    }
}

/// Apply the queued operations of one key, a round of them at a time, until none is left.
async fn drain(queues: Arc<KeyQueues>, store: Arc<dyn OrderedStore>, id: KeyId) {
    let _guard = QueueGuard {
        queues: &queues,
        id: &id,
    };
    loop {
        let ops: Vec<Op> = {
            let mut map = queues.lock();
            let Some(queue) = map.get_mut(&id) else {
                return;
            };
            if queue.is_empty() {
                map.remove(&id);
                return;
            }
            let take = queue.len().min(MAX_FOLD);
            queue.drain(..take).collect()
        };
        fold(&*store, &id.0, &id.1, ops).await;
    }
}

/// The master as `batch` leaves it, if it was `master` before.
fn effect(batch: &Batch, key: &str, master: Option<String>) -> Option<String> {
    batch
        .mutations
        .iter()
        .rev()
        .find_map(|mutation| match mutation {
            Mutation::Put { key: k, value } if k == key => Some(Some(value.clone())),
            Mutation::Delete { key: k } if k == key => Some(None),
            _ => None,
        })
        .unwrap_or(master)
}

/// The error of an operation whose deadline passed while other processes kept changing its key.
fn gave_up(key: &str) -> MetadataError {
    MetadataError::Storage(OrderedError::Items(ItemError::Unavailable(format!(
        "other sidecars changed key {key:?} before this write every time until the call's \
         deadline; try again"
    ))))
}

/// Apply `ops` in order: plan all on the master as it is, write them together, and go again
/// with those another process got in the way of.
async fn fold(store: &dyn OrderedStore, db: &Sublevel, key: &str, mut ops: Vec<Op>) {
    let mut attempt = 0;
    while !ops.is_empty() {
        let mut master = None;
        if ops.iter().any(|op| op.reads_master) {
            match store.get(db, key).await {
                Ok(value) => master = value,
                Err(error) => {
                    let message = error.to_string();
                    for op in ops {
                        let error = ItemError::Unavailable(message.clone());
                        let _ = op.done.send(Err(OrderedError::Items(error).into()));
                    }
                    return;
                }
            }
        }
        let mut batches = Vec::with_capacity(ops.len());
        let mut planned = Vec::with_capacity(ops.len());
        for mut op in ops {
            match (op.plan)(master.as_deref()) {
                Ok(plan) => {
                    master = effect(&plan.batch, key, master);
                    batches.push(plan.batch.until(op.deadline));
                    planned.push((op, plan.result, plan.placeholder_written));
                }
                Err(error) => {
                    let _ = op.done.send(Err(error));
                }
            }
        }
        let results = store.write_many(db, batches).await;
        let mut again = Vec::new();
        for ((op, result, placeholder_written), written) in planned.into_iter().zip(results) {
            match written {
                Ok(()) => {
                    let _ = op.done.send(Ok(Applied {
                        result,
                        placeholder_written,
                    }));
                }
                Err(OrderedError::Conflict) if Instant::now() < op.deadline => again.push(op),
                Err(OrderedError::Conflict) => {
                    let _ = op.done.send(Err(gave_up(key)));
                }
                Err(error) => {
                    let _ = op.done.send(Err(error.into()));
                }
            }
        }
        ops = again;
        if !ops.is_empty() {
            tracing::debug!(
                attempt,
                key,
                waiting = ops.len(),
                "key changed by another writer, planning again"
            );
            let until = ops.iter().map(|op| op.deadline).max();
            let pause = crate::ordered::backoff(attempt, FIRST_PAUSE, MAX_PAUSE).min(
                until.map_or(Duration::ZERO, |u| {
                    u.saturating_duration_since(Instant::now())
                }),
            );
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}
