//! Refill: a server of a replicated store that came back empty (killed without its memory
//! file, restarted, replaced under the same name) gets back, from the other servers, every item
//! it owns, in the background and at a bounded rate; then its placement record again.
//!
//! A server without its placement record is one that lost its contents: the record is written
//! once a store is created and only a refill writes it back, so a sidecar that dies mid-refill
//! leaves the record missing and the next one (or another sidecar) starts over, skipping what
//! is there already (`copy`: a copy never replaces a newer write, nor the tombstone of a delete
//! made after the copy was read). Until then reads fall back to the
//! other copies and repair what they read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::copy::{BATCH, Pacer, copy_batch, dump};
use super::layout::View;
use super::record::{self, PLACEMENT_ITEM, is_server_local};
use super::replicas::ReplicatedStore;
use crate::items::{ItemError, ItemKey, ItemResult, ItemStore};
use crate::metrics::Metrics;

/// How often the servers' placement records are looked at.
const INTERVAL: Duration = Duration::from_secs(2);
/// Listings of the other servers at most, each after the one before found new keys.
const MAX_PASSES: usize = 8;

/// How fast a refill copies, in bytes per second.
#[derive(Clone, Copy, Debug)]
pub struct RefillRate(pub u64);

/// Look for emptied servers every few seconds and refill them, until the runtime stops.
pub fn watch(
    store: Arc<ReplicatedStore>,
    metrics: Metrics,
    rate: RefillRate,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // With one copy of each item an emptied server has nothing to get back: its loss
            // is the epoch's and the follower's to report, never a refill's to paper over.
            if let Some(view) = store
                .view()
                .ok()
                .and_then(|view| view.detached().ok())
                .filter(|view| view.min_factor() >= 2)
            {
                for target in view.members() {
                    let name = &view.servers[target].name;
                    match needs_refill(&view, target).await {
                        Ok(true) => {
                            if let Err(error) = refill_view(&view, target, &metrics, rate).await {
                                tracing::warn!(server = %name, %error,
                                    "refill interrupted; it starts again");
                            }
                        }
                        Ok(false) => {}
                        Err(error) => {
                            tracing::debug!(server = %name, %error,
                                "cannot read the placement record");
                        }
                    }
                }
            }
            tokio::time::sleep(INTERVAL).await;
        }
    })
}

async fn needs_refill(view: &View, target: usize) -> ItemResult<bool> {
    let key = record::key(PLACEMENT_ITEM)?;
    Ok(view.servers[target].store.get(&key).await?.is_none())
}

/// Copy to `target` (an index of [`ReplicatedStore::owners`]) every item it owns that another
/// server holds, then write its record.
pub async fn refill(
    store: &ReplicatedStore,
    target: usize,
    metrics: &Metrics,
    rate: RefillRate,
) -> ItemResult<()> {
    let view = store.view()?.detached()?;
    refill_view(&view, target, metrics, rate).await
}

async fn refill_view(
    view: &View,
    target: usize,
    metrics: &Metrics,
    rate: RefillRate,
) -> ItemResult<()> {
    let name = &view.servers[target].name;
    let started = Instant::now();
    tracing::warn!(server = %name, "a server lost its contents: refilling it from the others");
    metrics.refill_running.set(1);
    let mut seen = HashSet::new();
    let mut pacer = Pacer::new(rate.0);
    let mut last_log = Instant::now();
    let result: ItemResult<()> = async {
        // memcached's crawler walks its LRUs while items move between them, so one listing
        // can miss a few: list again until a whole pass finds no key not seen before.
        for pass in 1..=MAX_PASSES {
            let mut found_new = false;
            for source in view.members().into_iter().filter(|s| *s != target) {
                let keys: Vec<(ItemKey, Vec<usize>)> = dump(&view.servers[source].name)
                    .await?
                    .into_iter()
                    .map(|dumped| dumped.key)
                    .filter(|key| !is_server_local(key) && view.write_owners(key).contains(&target))
                    .filter(|key| seen.insert(key.clone()))
                    .map(|key| (key, vec![target]))
                    .collect();
                found_new |= !keys.is_empty();
                metrics
                    .refill_remaining
                    .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
                for batch in keys.chunks(BATCH) {
                    let (items, bytes) = (pacer.items, pacer.bytes);
                    copy_batch(view, source, batch, &mut pacer).await?;
                    metrics.refill_items.inc_by(pacer.items - items);
                    metrics.refill_bytes.inc_by(pacer.bytes - bytes);
                    metrics.refill_remaining.dec_by(batch.len() as i64);
                    if last_log.elapsed() > Duration::from_secs(10) {
                        last_log = Instant::now();
                        tracing::info!(server = %name, pass, items = pacer.items,
                            bytes = pacer.bytes, "refilling");
                    }
                }
            }
            if !found_new {
                break;
            }
        }
        // The placement the other servers record (one of them at least holds it).
        let others: Vec<String> = view
            .members()
            .into_iter()
            .filter(|s| *s != target)
            .map(|s| view.servers[s].name.clone())
            .collect();
        let placement = record::recorded(&others).await?.ok_or_else(|| {
            ItemError::Unavailable("no other server holds the placement record".into())
        })?;
        record::mark_filled(name, true).await?;
        record::write_record(name, &placement).await?;
        Ok(())
    }
    .await;
    metrics.refill_running.set(0);
    metrics.refill_remaining.set(0);
    result?;
    tracing::warn!(server = %name, items = pacer.items, bytes = pacer.bytes, seconds = started.elapsed().as_secs_f64(),
        "refill done: the server holds its share again");
    Ok(())
}
