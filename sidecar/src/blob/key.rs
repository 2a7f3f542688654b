//! Blob keys: the 40-lowercase-hex names the data API hands out, the item keys derived from
//! them, and the hint one bit of a key gives about how its blob is stored.

use std::fmt;
use std::str::FromStr;

use crate::items::ItemKey;

/// The name of one stored blob: 20 random bytes, written as 40 lowercase hex characters as
/// CloudServer's data client expects (it re-parses the key and crashes on anything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobKey([u8; 20]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a blob key is 40 lowercase hex characters")]
pub struct BadBlobKey;

/// How a blob is stored: whole in its head item, or in chunks that a manifest lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Inline,
    Chunked,
}

/// The bit of the key's last byte that says [`Layout::Inline`] when set.
const INLINE_BIT: u8 = 1;

impl BlobKey {
    /// A new key for a blob stored with `layout`, which the key then hints at: 159 random
    /// bits name the blob, one tells a reader what to ask memcached for first.
    pub fn random(layout: Layout) -> BlobKey {
        let mut bytes: [u8; 20] = rand::random();
        match layout {
            Layout::Inline => bytes[19] |= INLINE_BIT,
            Layout::Chunked => bytes[19] &= !INLINE_BIT,
        }
        BlobKey(bytes)
    }

    /// The layout the key hints at. Only a hint: the head item says what the blob is, and keys
    /// issued before the hint existed carry a random bit.
    pub fn layout(&self) -> Layout {
        if self.0[19] & INLINE_BIT != 0 {
            Layout::Inline
        } else {
            Layout::Chunked
        }
    }

    /// The item that publishes the blob: its manifest, or the whole blob when it is small.
    pub fn head_item(&self) -> ItemKey {
        self.item(format_args!("b:{self}"))
    }

    /// The item holding chunk `index` of the blob.
    pub fn chunk_item(&self, index: u64) -> ItemKey {
        self.item(format_args!("b:{self}:{index}"))
    }

    fn item(&self, name: fmt::Arguments<'_>) -> ItemKey {
        // Hex and decimal digits behind a short prefix are always a valid memcached key.
        match ItemKey::new(name.to_string()) {
            Ok(key) => key,
            Err(error) => unreachable!("blob item key {name}: {error}"),
        }
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for BlobKey {
    type Err = BadBlobKey;

    fn from_str(text: &str) -> Result<BlobKey, BadBlobKey> {
        if text.len() != 40 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadBlobKey);
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| BadBlobKey)?;
        Ok(BlobKey(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_are_40_lowercase_hex_and_parse_back() {
        let key = BlobKey::random(Layout::Chunked);
        let text = key.to_string();
        assert_eq!(text.len(), 40);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(text.parse::<BlobKey>(), Ok(key));
        assert_ne!(BlobKey::random(Layout::Chunked), key);
    }

    #[test]
    fn keys_hint_at_their_layout() {
        for layout in [Layout::Inline, Layout::Chunked] {
            for _ in 0..64 {
                let key = BlobKey::random(layout);
                assert_eq!(key.layout(), layout);
                assert_eq!(key.to_string().parse::<BlobKey>().unwrap().layout(), layout);
            }
        }
    }

    #[test]
    fn only_lowercase_hex_of_length_40_parses() {
        assert_eq!(
            "ABCDEF0123456789abcdef0123456789abcdef01".parse::<BlobKey>(),
            Err(BadBlobKey)
        );
        assert_eq!("abc".parse::<BlobKey>(), Err(BadBlobKey));
        assert_eq!("g".repeat(40).parse::<BlobKey>(), Err(BadBlobKey));
    }

    #[test]
    fn item_keys_name_the_blob() {
        let key: BlobKey = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        assert_eq!(
            key.head_item().as_str(),
            "b:0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            key.chunk_item(3).as_str(),
            "b:0123456789abcdef0123456789abcdef01234567:3"
        );
    }
}
