//! Blob keys: the 40-lowercase-hex names the data API hands out, and the item keys derived
//! from them.

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

impl BlobKey {
    pub fn random() -> BlobKey {
        BlobKey(rand::random())
    }

    /// The item that publishes the blob.
    pub fn manifest_item(&self) -> ItemKey {
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
        let key = BlobKey::random();
        let text = key.to_string();
        assert_eq!(text.len(), 40);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_eq!(text.parse::<BlobKey>(), Ok(key));
        assert_ne!(BlobKey::random(), key);
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
            key.manifest_item().as_str(),
            "b:0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(
            key.chunk_item(3).as_str(),
            "b:0123456789abcdef0123456789abcdef01234567:3"
        );
    }
}
