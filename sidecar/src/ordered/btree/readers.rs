//! Registered readers: which databases have scans running, in any sidecar, so that a commit
//! frees the pages it replaced at once when no scan can still read them, and gives them a
//! grace period only while one may.
//!
//! A scan adds itself to a counter in memcached before it reads the root record it will walk,
//! and a commit reads the counters after its root record is in place. So either the commit
//! sees the scan (and keeps the replaced pages for the grace period), or the scan started
//! after the commit and reads the new root, which does not reach them. Point reads (gets, the
//! commit's own reads) do not register: they see the root change and read again.
//!
//! Counters are kept per time slot of one minute (`o:<db>:s:<slot>`, the same length in every
//! sidecar and tool whatever their grace period, so that they all count in the same items),
//! expire a few slots later, and a running scan moves its count to the current slot now and
//! then, so that the count of a sidecar that died mid-scan is gone within minutes instead of
//! keeping every later commit of the database on the slow path. Commits read the slots around
//! their own clock's, which covers sidecar clocks up to half a minute apart.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Inner;
use super::ids::{DbId, reader_key};
use crate::items::{ItemKey, ItemResult};

/// Length of a counter's time slot.
const SLOT: Duration = Duration::from_secs(60);

/// The time slot of now.
fn slot() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    now / SLOT.as_secs()
}

/// How long a slot's counter lives after its last change: past the slot, the refresh that
/// moves its scans out, and the slots commits look at.
const COUNTER_LIFE: Duration = Duration::from_secs(4 * 60);

/// Scans of `db` running now (an upper bound: counts of dead sidecars linger a few slots).
pub async fn running(inner: &Inner, db: DbId) -> ItemResult<u64> {
    let now = slot();
    let keys: Vec<ItemKey> = [now.saturating_sub(1), now, now + 1]
        .into_iter()
        .filter_map(|slot| reader_key(db, slot).ok())
        .collect();
    let counts = inner.items.get_many(&keys).await?;
    Ok(counts
        .into_iter()
        .flatten()
        // A count that cannot be read might be a running scan: count it as one.
        .map(|count| {
            std::str::from_utf8(&count)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(1)
        })
        .sum())
}

/// A scan's place in its database's reader count; dropping it takes the scan out.
pub struct Registration {
    refresh: tokio::task::JoinHandle<()>,
    /// The slot the scan is counted in now, shared with the refresh task.
    slot: Arc<std::sync::atomic::AtomicU64>,
    inner: Arc<Inner>,
    db: DbId,
}

/// Count a scan of `db` in; `None` when memcached refused (the scan then runs unprotected
/// and ends with `SnapshotExpired` if a commit frees a page it still needed).
pub async fn register(inner: &Arc<Inner>, db: DbId) -> Option<Registration> {
    let now = slot();
    let key = reader_key(db, now).ok()?;
    if let Err(error) = inner.items.count(&key, 1, COUNTER_LIFE).await {
        tracing::debug!(%error, "a scan could not register; it runs unprotected");
        return None;
    }
    let current = Arc::new(std::sync::atomic::AtomicU64::new(now));
    let refresh = tokio::spawn(refresh(inner.clone(), db, current.clone()));
    Some(Registration {
        refresh,
        slot: current,
        inner: inner.clone(),
        db,
    })
}

/// Keep a long scan counted: into each new slot (in first, then out of the old one, so it is
/// never uncounted), and the counter alive.
async fn refresh(inner: Arc<Inner>, db: DbId, current: Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(SLOT / 3).await;
        let was = current.load(Ordering::Acquire);
        let now = slot();
        let (Ok(new_key), Ok(old_key)) = (reader_key(db, now), reader_key(db, was)) else {
            return;
        };
        let moved = if now == was {
            inner.items.count(&new_key, 0, COUNTER_LIFE).await
        } else {
            match inner.items.count(&new_key, 1, COUNTER_LIFE).await {
                Ok(count) => {
                    current.store(now, Ordering::Release);
                    inner
                        .items
                        .count(&old_key, -1, COUNTER_LIFE)
                        .await
                        .map(|_| count)
                }
                Err(error) => Err(error),
            }
        };
        if let Err(error) = moved {
            tracing::debug!(%error, "a scan could not renew its registration");
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.refresh.abort();
        let Ok(key) = reader_key(
            self.db,
            self.slot.load(std::sync::atomic::Ordering::Acquire),
        ) else {
            return;
        };
        let inner = self.inner.clone();
        // Outside a runtime the count lingers until its slot expires, which is safe.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = inner.items.count(&key, -1, COUNTER_LIFE).await {
                    tracing::debug!(%error, "a scan could not unregister");
                }
            });
        }
    }
}
