//! Reads that never wait on a silent server. A read asks the owners of its key one after the
//! other, healthy ones first (suspect ones last: see `health`), and waits for each only as long
//! as that server's answers usually take before it asks the next one too; the first owner that
//! holds the item answers. A server that has not answered after its deadline is given up on
//! and becomes suspect, and an attempt still pending when the read is over is left to finish
//! in the background, so that its timeout is seen.
//!
//! "No such item" needs more than one answer: an owner may have lost its contents (restarted
//! empty, not yet refilled) and miss what another owner holds. So a miss is the answer only
//! when every owner asked missed, or when an owner known to hold every item it owns missed: one
//! seen holding its filled mark (`record::FILLED_ITEM`) whose value has not changed when
//! checked after the miss (a restart empties the mark, and a new one never has the same value).
//! Every acknowledged write reached every owner, so such a miss is not hiding anything
//! acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};

use super::layout::{Server, View};
use super::record;
use crate::items::{ItemError, ItemResult, ItemStore};

/// What the owners said of one key.
pub(super) struct Asked<T> {
    /// The first owner that held the item, and what it held.
    pub found: Option<(usize, T)>,
    /// Owners that answered "no such item".
    pub missed: Vec<usize>,
    /// An error of an owner that failed or did not answer in time.
    pub failed: Option<ItemError>,
    /// A complete owner's miss was checked: the item does not exist.
    pub absent: bool,
}

impl<T> Asked<T> {
    /// The item, `None` when it is known not to exist, or the error that kept that from being
    /// known.
    pub fn decided(self) -> ItemResult<Option<(usize, T)>> {
        match (self.found, self.failed) {
            (Some(found), _) => Ok(Some(found)),
            (None, None) => Ok(None),
            (None, Some(_)) if self.absent => Ok(None),
            (None, Some(error)) => Err(error),
        }
    }
}

enum Event<T> {
    Answer(usize, ItemResult<Option<T>>),
    /// Whether a complete owner's miss stands (its marker did not change).
    Checked(bool),
}

/// The order owners are asked in: healthy ones in owner order, then suspect ones.
pub(super) fn healthy_first(view: &View, owners: &[usize]) -> Vec<usize> {
    let (mut healthy, suspect): (Vec<usize>, Vec<usize>) = owners
        .iter()
        .partition(|server| !view.servers[**server].health.is_suspect());
    healthy.extend(suspect);
    healthy
}

/// `work` on `server`, within the time its answers may take; its health learns the outcome.
pub(super) async fn within<T>(
    server: &Server,
    work: impl Future<Output = ItemResult<T>>,
) -> ItemResult<T> {
    within_limit(server, server.health.silent_after(), work).await
}

/// `work` on `server` within `limit`; its health learns the outcome.
async fn within_limit<T>(
    server: &Server,
    limit: Duration,
    work: impl Future<Output = ItemResult<T>>,
) -> ItemResult<T> {
    let started = Instant::now();
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(done)) => {
            server.health.answered(started.elapsed());
            Ok(done)
        }
        Ok(Err(error)) => {
            if matches!(error, ItemError::Unavailable(_)) {
                server.health.timed_out();
            }
            Err(error)
        }
        Err(_) => {
            server.health.timed_out();
            Err(ItemError::Unavailable(format!(
                "{}: no answer within {limit:?}",
                server.name
            )))
        }
    }
}

/// One attempt at one owner of several, [`within`] its time.
fn attempt<T, Fut>(index: usize, server: Arc<Server>, read: Fut) -> BoxFuture<'static, Event<T>>
where
    T: Send + 'static,
    Fut: Future<Output = ItemResult<Option<T>>> + Send + 'static,
{
    Box::pin(async move { Event::Answer(index, within(&server, read).await) })
}

/// Whether `server` still holds the filled mark it held when last seen.
fn check_complete<T: Send + 'static>(server: Arc<Server>) -> Option<BoxFuture<'static, Event<T>>> {
    let expected = server
        .complete
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()?;
    Some(Box::pin(async move {
        let read = async {
            let key = record::key(record::FILLED_ITEM)?;
            server.store.get(&key).await
        };
        let held = tokio::time::timeout(server.health.silent_after(), read).await;
        Event::Checked(matches!(held, Ok(Ok(Some(mark))) if mark == expected))
    }))
}

/// Ask `owners` (see the module's documentation) what `read` reads from one server.
pub(super) async fn ask<T, F, Fut>(view: &View, owners: &[usize], read: F) -> Asked<T>
where
    T: Send + 'static,
    F: Fn(Arc<Server>) -> Fut,
    Fut: Future<Output = ItemResult<Option<T>>> + Send + 'static,
{
    let order = healthy_first(view, owners);
    let mut asked = Asked {
        found: None,
        missed: Vec::new(),
        failed: None,
        absent: false,
    };
    let mut pending: FuturesUnordered<BoxFuture<'static, Event<T>>> = FuturesUnordered::new();
    let mut next = 0;
    let launch = |pending: &mut FuturesUnordered<_>, next: &mut usize| {
        let index = order[*next];
        let server = view.servers[index].clone();
        pending.push(attempt(index, server.clone(), read(server)));
        *next += 1;
    };
    match order.as_slice() {
        [] => return asked,
        // One owner (a store of one copy): nothing to hedge with, no task to spawn.
        [index] => {
            let server = view.servers[*index].clone();
            match within_limit(&server, super::health::SILENT_MAX, read(server.clone())).await {
                Ok(Some(found)) => asked.found = Some((*index, found)),
                Ok(None) => asked.missed.push(*index),
                Err(error) => asked.failed = Some(error),
            }
            return asked;
        }
        _ => launch(&mut pending, &mut next),
    }
    loop {
        let hedge = view.servers[order[next - 1]].health.hedge_after();
        let event = tokio::select! {
            event = pending.next() => event,
            () = tokio::time::sleep(hedge), if next < order.len() => {
                launch(&mut pending, &mut next);
                continue;
            }
        };
        match event {
            None => break,
            Some(Event::Answer(server, Ok(Some(found)))) => {
                asked.found = Some((server, found));
                break;
            }
            Some(Event::Answer(server, Ok(None))) => {
                asked.missed.push(server);
                if asked.missed.len() == order.len() {
                    break;
                }
                if let Some(check) = check_complete(view.servers[server].clone()) {
                    pending.push(check);
                }
            }
            Some(Event::Answer(_, Err(error))) => asked.failed = Some(error),
            Some(Event::Checked(stands)) => {
                if stands {
                    asked.absent = true;
                    break;
                }
                continue;
            }
        }
        // No answer yet: the next owner at once.
        if next < order.len() {
            launch(&mut pending, &mut next);
        }
    }
    if !pending.is_empty() {
        // Left to finish, so that a server that never answers is seen to time out.
        tokio::spawn(async move { while pending.next().await.is_some() {} });
    }
    asked
}

/// Refresh what is known of `server`'s completeness: the filled mark it holds, if any.
pub(super) async fn observe_complete(server: &Server) -> ItemResult<()> {
    let mark = server.store.get(&record::key(record::FILLED_ITEM)?).await?;
    *server
        .complete
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = mark;
    Ok(())
}

/// Readers of one server, for [`ask`].
pub(super) mod read {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::future::BoxFuture;

    use super::Server;
    use crate::items::{CasToken, Expiry, ItemKey, ItemResult, ItemStore};

    type Read<T> = BoxFuture<'static, ItemResult<Option<T>>>;

    /// The value, as [`ItemStore::get`] reads it.
    pub fn value(key: &ItemKey) -> impl Fn(Arc<Server>) -> Read<Bytes> + use<> {
        let key = key.clone();
        move |server| {
            let key = key.clone();
            Box::pin(async move { server.store.get(&key).await })
        }
    }

    /// The value with the time it has left to live.
    pub fn with_expiry(key: &ItemKey) -> impl Fn(Arc<Server>) -> Read<(Bytes, Expiry)> + use<> {
        let key = key.clone();
        move |server| {
            let key = key.clone();
            Box::pin(async move {
                let mut items = server
                    .store
                    .get_many_with_expiry(std::slice::from_ref(&key))
                    .await?;
                Ok(items.pop().flatten())
            })
        }
    }

    /// The value with its CAS token (memcached's, untagged).
    pub fn with_token(key: &ItemKey) -> impl Fn(Arc<Server>) -> Read<(Bytes, CasToken)> + use<> {
        let key = key.clone();
        move |server| {
            let key = key.clone();
            Box::pin(async move { server.store.gets(&key).await })
        }
    }

    /// The CAS token alone.
    pub fn token(key: &ItemKey) -> impl Fn(Arc<Server>) -> Read<CasToken> + use<> {
        let key = key.clone();
        move |server| {
            let key = key.clone();
            Box::pin(async move { server.store.token(&key).await })
        }
    }
}
