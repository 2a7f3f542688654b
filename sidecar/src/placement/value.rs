//! Values as the replicated store keeps them: every value behind a 9-byte header (a marker
//! byte and a version that grows with each compare-and-swap replacement), and tombstones, a
//! header alone, that deletes leave so that a copy written back after a delete does not bring
//! the item back. Counters stay unheadered (memcached counts in decimal text).

use bytes::{Bytes, BytesMut};

/// First byte of every stored value: no item the stores write starts with it unheadered.
pub(super) const MARKER: u8 = 0xA5;
/// Marker and version.
pub const HEADER: usize = 9;
/// First byte of a tombstone, which is a header alone.
const TOMBSTONE: u8 = 0xA6;
pub(super) fn header(version: u64) -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER);
    bytes.extend_from_slice(&[MARKER]);
    bytes.extend_from_slice(&version.to_le_bytes());
    bytes.freeze()
}

/// The version and value of a stored item; counters (no header) read as version 0.
pub(super) fn open(stored: Bytes) -> (u64, Bytes) {
    match version_of(&stored) {
        Some(version) => (version, stored.slice(HEADER..)),
        None => (0, stored),
    }
}

/// The version of a stored value, `None` for one without the header (counters, tombstones).
pub(super) fn version_of(stored: &[u8]) -> Option<u64> {
    (stored.len() >= HEADER && stored[0] == MARKER).then(|| {
        let mut version = [0u8; 8];
        version.copy_from_slice(&stored[1..HEADER]);
        u64::from_le_bytes(version)
    })
}

/// What a delete leaves on each owner.
pub(super) fn tombstone() -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER);
    bytes.extend_from_slice(&[TOMBSTONE]);
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.freeze()
}

/// Whether a stored value is a tombstone: the item was deleted.
pub(super) fn is_tombstone(stored: &[u8]) -> bool {
    stored.len() == HEADER && stored[0] == TOMBSTONE
}

pub(super) fn sealed(version: u64, value: &Bytes) -> Bytes {
    let mut bytes = BytesMut::with_capacity(HEADER + value.len());
    bytes.extend_from_slice(&header(version));
    bytes.extend_from_slice(value);
    bytes.freeze()
}
