//! Chunk items: a slice of a blob sealed with a CRC32C over its item key and bytes, so that a
//! corrupt or misplaced chunk is detected on read instead of served.

use bytes::{BufMut, Bytes, BytesMut};

use crate::items::ItemKey;

/// The seal in front of the bytes.
pub const SEAL_LEN: usize = 4;

fn checksum(item: &ItemKey, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(item.as_ref()), data)
}

/// A buffer to collect the bytes of one chunk in, with room for the seal in front, so that
/// sealing does not copy the chunk.
pub fn unsealed(capacity: usize) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(SEAL_LEN + capacity);
    buffer.put_u32_le(0);
    buffer
}

/// Seal a buffer made by [`unsealed`] and filled with the chunk's bytes.
pub fn seal_in_place(item: &ItemKey, mut buffer: BytesMut) -> Bytes {
    let sum = checksum(item, &buffer[SEAL_LEN..]);
    buffer[..SEAL_LEN].copy_from_slice(&sum.to_le_bytes());
    buffer.freeze()
}

#[cfg(test)]
fn seal(item: &ItemKey, data: &[u8]) -> Bytes {
    let mut buffer = unsealed(data.len());
    buffer.put_slice(data);
    seal_in_place(item, buffer)
}

/// The chunk's bytes, or `None` when the seal does not match.
pub fn open(item: &ItemKey, mut sealed: Bytes) -> Option<Bytes> {
    if sealed.len() < SEAL_LEN {
        return None;
    }
    let data = sealed.split_off(SEAL_LEN);
    let stored = u32::from_le_bytes([sealed[0], sealed[1], sealed[2], sealed[3]]);
    (stored == checksum(item, &data)).then_some(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_chunk_opens_only_under_its_own_key_and_intact() {
        let here = ItemKey::new("b:k:0").unwrap();
        let there = ItemKey::new("b:k:1").unwrap();
        let sealed = seal(&here, b"hello");
        assert_eq!(open(&here, sealed.clone()).as_deref(), Some(&b"hello"[..]));
        assert_eq!(open(&there, sealed.clone()), None);
        let mut flipped = sealed.to_vec();
        flipped[6] ^= 1;
        assert_eq!(open(&here, Bytes::from(flipped)), None);
        assert_eq!(open(&here, Bytes::from_static(b"ab")), None);
    }
}
