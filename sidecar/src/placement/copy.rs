//! Copying items between servers, for refills and placement changes: at a bounded rate, and
//! never bringing back a deleted item nor an older version of a replaced one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::layout::View;
use super::replicas::{MAX_COPY_DELAY, converge};
use super::value::version_of;
use crate::items::{Expiry, ItemError, ItemKey, ItemResult, ItemStore};

/// Items copied in one round trip.
pub(super) const BATCH: usize = 64;
/// How long a metadump may go quiet before the server counts as unreachable.
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// One item as memcached's key listing gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    pub key: ItemKey,
    /// Whether the item expires (memcached's `exp` is not -1).
    pub expires: bool,
    /// memcached's CAS value of the item: the server's counter when the item was last
    /// written, so it tells items written before a point from those written after.
    pub cas: u64,
}

/// Keeps copies at most `rate` bytes per second since the start.
pub(super) struct Pacer {
    started: Instant,
    rate: u64,
    pub items: u64,
    pub bytes: u64,
}

impl Pacer {
    pub fn new(rate: u64) -> Pacer {
        Pacer {
            started: Instant::now(),
            rate: rate.max(1),
            items: 0,
            bytes: 0,
        }
    }

    /// Wait until the bytes copied so far are within the rate.
    pub async fn pace(&self) {
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Copy one item read from a replica to `target`: an item replaced by compare-and-swap only
/// over an older version; any other only where the key is free (`add`), so that a newer
/// write, or the tombstone of a delete made since, stays. `true` when something was written.
async fn copy_item(
    view: &View,
    target: usize,
    key: &ItemKey,
    stored: Bytes,
    expiry: Expiry,
) -> ItemResult<bool> {
    let server = &view.servers[target];
    match version_of(&stored) {
        Some(version) if version >= 1 => {
            converge(server, key, version, &stored, expiry).await?;
            Ok(true)
        }
        _ => server.store.add(key, stored, expiry).await,
    }
}

/// Copy each key from `source` to the servers its entry names. Keys gone from the source
/// (deleted, expired) are skipped. The pacer counts what was written.
pub(super) async fn copy_batch(
    view: &View,
    source: usize,
    batch: &[(ItemKey, Vec<usize>)],
    pacer: &mut Pacer,
) -> ItemResult<()> {
    let mut rest = batch;
    while !rest.is_empty() {
        let keys: Vec<ItemKey> = rest.iter().map(|(key, _)| key.clone()).collect();
        let found = view.servers[source]
            .store
            .get_many_with_expiry(&keys)
            .await?;
        let read_at = Instant::now();
        let mut done = 0;
        for ((key, targets), item) in rest.iter().zip(found) {
            // A copy read too long ago might outlive the tombstone of a delete since, and
            // bring the item back: read the rest again.
            if read_at.elapsed() > MAX_COPY_DELAY {
                break;
            }
            done += 1;
            let Some((stored, expiry)) = item else {
                continue;
            };
            for target in targets {
                if copy_item(view, *target, key, stored.clone(), expiry).await? {
                    pacer.items += 1;
                    pacer.bytes += stored.len() as u64;
                }
            }
        }
        rest = &rest[done..];
    }
    pacer.pace().await;
    Ok(())
}

/// Every key a server holds, from memcached's `lru_crawler metadump all` (keys come
/// URL-encoded; `BUSY` while its crawler is running: asked again).
/// Also what an export enumerates blobs with.
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
            let text = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
            let expires = field("exp=").is_some_and(|exp| exp != "-1");
            let cas = field("cas=")
                .and_then(|cas| cas.parse().ok())
                .unwrap_or(u64::MAX);
            if let Ok(key) = ItemKey::new(text.into_owned()) {
                keys.push(Dumped { key, expires, cas });
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
