//! Incarnations of a memcached server, as a commit with copies and a token must know them: a
//! server restarted (warm or empty) counts its CAS tokens from the start again, and one
//! restarted empty lost the versions it held.
//!
//! - A token handed out carries a tag of the server's incarnation (its name, start time and
//!   pid), so that a token read before a restart never matches an item written after it.
//! - The incarnation marker (`zmm:incarnation`, a random value on each server) is gone once the
//!   server restarted empty: a commit checks it before it is acknowledged.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::layout::Server;
use crate::items::{Expiry, ItemError, ItemResult, ItemStore};

/// Bits of a token that carry memcached's own CAS value; the ones above carry the tag.
pub(super) const CAS_BITS: u32 = 44;

/// A server's incarnation tag, from its name, start time and pid (never 0, so that a token
/// with no tag is never taken for one with): a token read from one server never passes on
/// another, nor on the same one restarted. Tags are compared within this process only.
fn tag_of(name: &str, incarnation: (u64, u64)) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    incarnation.hash(&mut hasher);
    (hasher.finish() >> CAS_BITS).max(1)
}

/// The server's incarnation marker as this process knows it, read (or created) the first time.
pub(super) async fn marker(server: &Server) -> ItemResult<Bytes> {
    if let Some(known) = server
        .marker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
    {
        return Ok(known);
    }
    let current = current_marker(server).await?;
    *server
        .marker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(current.clone());
    Ok(current)
}

/// The marker the server holds now, created if it holds none.
pub(super) async fn current_marker(server: &Server) -> ItemResult<Bytes> {
    let key = super::record::key(super::record::INCARNATION_ITEM)?;
    for _ in 0..3 {
        if let Some(held) = server.store.get(&key).await? {
            return Ok(held);
        }
        let fresh = Bytes::from(hex::encode(rand::random::<[u8; 16]>()));
        if server.store.add(&key, fresh.clone(), Expiry::Never).await? {
            return Ok(fresh);
        }
    }
    Err(ItemError::Unavailable(format!(
        "{}: its incarnation marker keeps changing",
        server.name
    )))
}

/// Whether the server still holds `marker` (it did not restart since it was read).
pub(super) async fn marker_still(server: &Server, marker: &Bytes) -> ItemResult<bool> {
    let held = server
        .store
        .get(&super::record::key(super::record::INCARNATION_ITEM)?)
        .await?;
    if held.as_ref() != Some(marker) {
        // Known from now on as what it holds (or will hold) now.
        *server
            .marker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        return Ok(false);
    }
    Ok(true)
}

/// Read a server's incarnation tag.
pub(super) async fn read_tag(server: &Server) -> ItemResult<()> {
    let incarnation = server
        .store
        .incarnations()
        .await?
        .pop()
        .ok_or_else(|| ItemError::Protocol("no stats from a server".into()))?;
    let tag = tag_of(&server.name, incarnation);
    if server.tag.swap(tag, Ordering::AcqRel) != tag {
        // Restarted (or first seen): its marker is read again when a commit needs it, and
        // nothing is known of its completeness until the probe looks again.
        *server
            .marker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        *server
            .complete
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
    Ok(())
}
