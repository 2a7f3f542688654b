//! Refill: a server of a replicated store that came back empty (killed without its memory
//! file, restarted, replaced under the same name) gets back, from the other servers, every item
//! it owns, in the background and at a bounded rate; then its placement record again.
//!
//! A server without its placement record is one that lost its contents: the record is written
//! once a store is created and only a refill writes it back, so a sidecar that dies mid-refill
//! leaves the record missing and the next one (or another sidecar) starts over, skipping what
//! is there already (every copy is an `add`, which also never replaces a newer write, nor the
//! tombstone of a delete made after the copy was read). Until then reads fall back to the
//! other copies and repair what they read.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::record::{self, PLACEMENT_ITEM};
use super::replicas::{MAX_COPY_DELAY, ReplicatedStore};
use crate::items::{ItemError, ItemKey, ItemResult, ItemStore};
use crate::metrics::Metrics;

/// Items copied in one round trip.
const BATCH: usize = 64;
/// How often the servers' placement records are looked at.
const INTERVAL: Duration = Duration::from_secs(2);
/// Listings of the other servers at most, each after the one before found new keys.
const MAX_PASSES: usize = 8;
/// How long a metadump may go quiet before the server counts as unreachable.
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

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
            for target in 0..store.names().len() {
                match needs_refill(&store, target).await {
                    Ok(true) => {
                        if let Err(error) = refill(&store, target, &metrics, rate).await {
                            tracing::warn!(server = %store.names()[target], %error,
                                "refill interrupted; it starts again");
                        }
                    }
                    Ok(false) => {}
                    Err(error) => {
                        tracing::debug!(server = %store.names()[target], %error,
                            "cannot read the placement record");
                    }
                }
            }
            tokio::time::sleep(INTERVAL).await;
        }
    })
}

async fn needs_refill(store: &ReplicatedStore, target: usize) -> ItemResult<bool> {
    let key = ItemKey::new(PLACEMENT_ITEM).map_err(|e| ItemError::Protocol(e.to_string()))?;
    Ok(store.server(target).get(&key).await?.is_none())
}

/// Copy to `target` every item it owns that another server holds, then write its record.
pub async fn refill(
    store: &ReplicatedStore,
    target: usize,
    metrics: &Metrics,
    rate: RefillRate,
) -> ItemResult<()> {
    let name = &store.names()[target];
    let started = Instant::now();
    tracing::warn!(server = %name, "a server lost its contents: refilling it from the others");
    metrics.refill_running.set(1);
    let placement_key =
        ItemKey::new(PLACEMENT_ITEM).map_err(|e| ItemError::Protocol(e.to_string()))?;
    let mut seen = HashSet::new();
    let (mut items, mut bytes) = (0u64, 0u64);
    let mut last_log = Instant::now();
    let result: ItemResult<()> = async {
        // memcached's crawler walks its LRUs while items move between them, so one listing
        // can miss a few: list again until a whole pass finds no key not seen before.
        for pass in 1..=MAX_PASSES {
            let mut found_new = false;
            for source in (0..store.names().len()).filter(|s| *s != target) {
                let keys: Vec<ItemKey> = dump_keys(&store.names()[source])
                    .await?
                    .into_iter()
                    .filter(|key| *key != placement_key && store.owners(key).contains(&target))
                    .filter(|key| seen.insert(key.clone()))
                    .collect();
                found_new |= !keys.is_empty();
                metrics
                    .refill_remaining
                    .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
                for batch in keys.chunks(BATCH) {
                    let mut rest = batch;
                    while !rest.is_empty() {
                        let found = store.server(source).get_many_with_expiry(rest).await?;
                        let read_at = Instant::now();
                        let mut copied = 0;
                        for (key, item) in rest.iter().zip(found) {
                            // A copy read too long ago might outlive the tombstone of a delete
                            // since, and bring the item back: read the rest again.
                            if read_at.elapsed() > MAX_COPY_DELAY {
                                break;
                            }
                            copied += 1;
                            // Gone meanwhile (deleted, expired): nothing to copy.
                            let Some((value, expiry)) = item else {
                                continue;
                            };
                            let size = value.len() as u64;
                            // An `add`: a newer write or a tombstone there stays.
                            if store.server(target).add(key, value, expiry).await? {
                                items += 1;
                                bytes += size;
                                metrics.refill_items.inc();
                                metrics.refill_bytes.inc_by(size);
                            }
                        }
                        rest = &rest[copied..];
                    }
                    metrics.refill_remaining.dec_by(batch.len() as i64);
                    // Bounded rate: never ahead of `rate` bytes per second since the start.
                    let due = Duration::from_secs_f64(bytes as f64 / rate.0.max(1) as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                    if last_log.elapsed() > Duration::from_secs(10) {
                        last_log = Instant::now();
                        tracing::info!(server = %name, pass, items, bytes, "refilling");
                    }
                }
            }
            if !found_new {
                break;
            }
        }
        // The placement the other servers record (one of them at least holds it).
        let mut recorded = None;
        for other in (0..store.names().len()).filter(|s| *s != target) {
            if let Some(placement) = record::read_record(&store.names()[other]).await? {
                recorded = Some(placement);
                break;
            }
        }
        let placement = recorded.ok_or_else(|| {
            ItemError::Unavailable("no other server holds the placement record".into())
        })?;
        record::write_record(name, &placement).await?;
        Ok(())
    }
    .await;
    metrics.refill_running.set(0);
    metrics.refill_remaining.set(0);
    result?;
    tracing::warn!(server = %name, items, bytes, seconds = started.elapsed().as_secs_f64(),
        "refill done: the server holds its share again");
    Ok(())
}

/// Every key a server holds, from memcached's `lru_crawler metadump all`.
async fn dump_keys(server: &str) -> ItemResult<Vec<ItemKey>> {
    Ok(dump(server)
        .await?
        .into_iter()
        .map(|item| item.key)
        .collect())
}

/// One item as memcached's key listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    pub key: ItemKey,
    /// memcached's CAS value of the item: the server's counter when the item was last
    /// written, so it tells items written before a point from those written after.
    pub cas: u64,
}

/// Every item a server holds, from memcached's `lru_crawler metadump all` (keys come
/// URL-encoded; `BUSY` while its crawler is running: asked again). Also what an export
/// enumerates blobs with.
pub async fn dump(server: &str) -> ItemResult<Vec<Dumped>> {
    let unavailable = |error: std::io::Error| ItemError::Unavailable(format!("{server}: {error}"));
    for _ in 0..100 {
        let mut stream = TcpStream::connect(server).await.map_err(unavailable)?;
        stream
            .write_all(b"lru_crawler metadump all\r\n")
            .await
            .map_err(unavailable)?;
        let mut lines = BufReader::new(stream).lines();
        let mut keys = Vec::new();
        let mut busy = false;
        loop {
            let line = tokio::time::timeout(DUMP_TIMEOUT, lines.next_line())
                .await
                .map_err(|_| ItemError::Unavailable(format!("{server}: metadump timed out")))?
                .map_err(unavailable)?;
            let Some(line) = line else {
                return Err(ItemError::Unavailable(format!(
                    "{server}: metadump cut short"
                )));
            };
            if line.starts_with("BUSY") {
                busy = true;
                break;
            }
            if line == "END" {
                break;
            }
            let field = |name: &str| line.split(' ').find_map(|field| field.strip_prefix(name));
            let Some(encoded) = field("key=") else {
                return Err(ItemError::Protocol(format!(
                    "{server}: metadump answered {line:?}"
                )));
            };
            let cas = field("cas=")
                .and_then(|cas| cas.parse().ok())
                .unwrap_or(u64::MAX);
            let text = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
            if let Ok(key) = ItemKey::new(text.into_owned()) {
                keys.push(Dumped { key, cas });
            }
        }
        if !busy {
            return Ok(keys);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ItemError::Unavailable(format!(
        "{server}: its crawler stayed busy"
    )))
}
