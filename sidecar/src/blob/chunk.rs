//! Chunk items: a slice of a blob sealed with a CRC32C over its item key and bytes, so that a
//! corrupt or misplaced chunk is detected on read instead of served.

use bytes::Bytes;

use crate::items::ItemKey;

/// The seal in front of the bytes.
pub const SEAL_LEN: usize = 4;

/// The CRC32C of the item key followed by the chunk's bytes, in as many pieces as they come.
fn checksum<'a>(item: &ItemKey, data: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    data.into_iter()
        .fold(crc32c::crc32c(item.as_ref()), crc32c::crc32c_append)
}

/// Seal a chunk that arrived in pieces (slices of the request body): the seal goes in front as
/// a piece of its own, so that no byte of the chunk is copied on its way to memcached.
pub fn seal(item: &ItemKey, parts: Vec<Bytes>) -> Vec<Bytes> {
    let sum = checksum(item, parts.iter().map(|part| &part[..]));
    let mut sealed = Vec::with_capacity(parts.len() + 1);
    sealed.push(Bytes::copy_from_slice(&sum.to_le_bytes()));
    sealed.extend(parts);
    sealed
}

/// The chunk's bytes, or `None` when the seal does not match.
pub fn open(item: &ItemKey, mut sealed: Bytes) -> Option<Bytes> {
    if sealed.len() < SEAL_LEN {
        return None;
    }
    let data = sealed.split_off(SEAL_LEN);
    let stored = u32::from_le_bytes([sealed[0], sealed[1], sealed[2], sealed[3]]);
    (stored == checksum(item, [&data[..]])).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(parts: Vec<Bytes>) -> Bytes {
        Bytes::from(parts.concat())
    }

    #[test]
    fn a_sealed_chunk_opens_only_under_its_own_key_and_intact() {
        let here = ItemKey::new("b:k:0").unwrap();
        let there = ItemKey::new("b:k:1").unwrap();
        let sealed = joined(seal(
            &here,
            vec![Bytes::from_static(b"hel"), Bytes::from_static(b"lo")],
        ));
        assert_eq!(open(&here, sealed.clone()).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open(&there, sealed.clone()), None);
        let mut flipped = sealed.to_vec();
        flipped[6] ^= 1;
        assert_eq!(open(&here, Bytes::from(flipped)), None);
        assert_eq!(open(&here, Bytes::from_static(b"ab")), None);
    }
}
