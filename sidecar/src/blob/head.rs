//! The head item `b:<key>`, whose presence publishes a blob. Its first byte tells its format:
//!
//! - format 1, a JSON manifest (its first byte is `{`): the blob is in chunk items;
//! - format 2, a small blob whole: the byte 2, then the blob's bytes sealed as a chunk is
//!   (a CRC32C over the item key and the bytes). One `set` writes and publishes it, so a
//!   reader sees all of it or nothing.
//!
//! Blobs written before format 2 existed keep their format-1 manifests and stay readable.

use bytes::Bytes;

use super::chunk;
use super::manifest::Manifest;
use crate::items::ItemKey;

/// The first byte of a format-2 (inline) head item.
const INLINE: u8 = 2;

/// Bytes an inline head item adds to the blob's: the format byte and the seal. Its key is
/// shorter than a chunk's (no `:<n>`), so a blob of up to a chunk's size fits an item that a
/// chunk fits.
pub const INLINE_OVERHEAD: usize = 1 + chunk::SEAL_LEN;

/// What a head item says about its blob.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// The blob's bytes, checked against their seal.
    Inline(Bytes),
    Chunked(Manifest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadHead {
    #[error("{0}")]
    Manifest(String),
    #[error("the small blob fails its checksum")]
    Checksum,
    #[error("unknown blob format (first byte {0})")]
    Format(u8),
    #[error("empty head item")]
    Empty,
}

/// The parts of a format-2 head item holding `parts` (the blob's bytes in order): nothing is
/// copied, the format byte and the seal go in front as pieces of their own.
pub fn seal_inline(item: &ItemKey, parts: Vec<Bytes>) -> Vec<Bytes> {
    let mut sealed = Vec::with_capacity(parts.len() + 2);
    sealed.push(Bytes::from_static(&[INLINE]));
    sealed.extend(chunk::seal(item, parts));
    sealed
}

/// Read the head item stored under `item`.
pub fn decode(item: &ItemKey, bytes: Bytes) -> Result<Head, BadHead> {
    match bytes.first() {
        None => Err(BadHead::Empty),
        Some(&INLINE) => chunk::open(item, bytes.slice(1..))
            .map(Head::Inline)
            .ok_or(BadHead::Checksum),
        Some(b'{') => Manifest::decode(&bytes)
            .map(Head::Chunked)
            .map_err(|error| BadHead::Manifest(error.to_string())),
        Some(&other) => Err(BadHead::Format(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(parts: Vec<Bytes>) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn inline_heads_open_only_intact_and_under_their_own_key() {
        let here = ItemKey::new("b:k").unwrap();
        let there = ItemKey::new("b:j").unwrap();
        let sealed = joined(seal_inline(
            &here,
            vec![Bytes::from_static(b"sm"), Bytes::from_static(b"all")],
        ));
        assert_eq!(sealed.len(), 5 + INLINE_OVERHEAD);
        assert_eq!(
            decode(&here, sealed.clone()),
            Ok(Head::Inline(Bytes::from_static(b"small")))
        );
        assert_eq!(decode(&there, sealed.clone()), Err(BadHead::Checksum));
        let mut flipped = sealed.to_vec();
        flipped[7] ^= 1;
        assert_eq!(decode(&here, Bytes::from(flipped)), Err(BadHead::Checksum));
        // Cut short: the seal no longer matches.
        assert_eq!(decode(&here, sealed.slice(..8)), Err(BadHead::Checksum));
        assert_eq!(
            decode(&here, joined(seal_inline(&here, Vec::new()))),
            Ok(Head::Inline(Bytes::new()))
        );
    }

    #[test]
    fn format_one_manifests_still_read_and_other_bytes_do_not() {
        let item = ItemKey::new("b:k").unwrap();
        let manifest = Manifest::new(10, 4);
        assert_eq!(
            decode(&item, manifest.encode()),
            Ok(Head::Chunked(manifest))
        );
        // A manifest as format 1 wrote it, byte for byte.
        let stored = Bytes::from_static(br#"{"format":1,"size":10,"chunk_size":4,"chunks":3}"#);
        assert_eq!(decode(&item, stored), Ok(Head::Chunked(manifest)));
        assert_eq!(decode(&item, Bytes::new()), Err(BadHead::Empty));
        assert_eq!(
            decode(&item, Bytes::from_static(b"\x03abc")),
            Err(BadHead::Format(3))
        );
        assert!(matches!(
            decode(&item, Bytes::from_static(b"{}")),
            Err(BadHead::Manifest(_))
        ));
    }
}
