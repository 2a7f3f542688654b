//! Item keys: the names the sidecar gives memcached items, checked once at construction.

use std::fmt;

/// memcached's own limit on key length.
pub const MAX_KEY_LEN: usize = 250;

/// A key memcached accepts: 1 to 250 bytes of printable ASCII without spaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemKey(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemKeyError {
    #[error("item key is empty")]
    Empty,
    #[error("item key is {0} bytes, longer than memcached's 250")]
    TooLong(usize),
    #[error("item key contains a byte memcached does not accept in keys")]
    BadByte,
}

impl ItemKey {
    pub fn new(key: impl Into<String>) -> Result<ItemKey, ItemKeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(ItemKeyError::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(ItemKeyError::TooLong(key.len()));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ItemKeyError::BadByte);
        }
        Ok(ItemKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for ItemKey {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ascii_up_to_250_bytes() {
        assert!(ItemKey::new("d:abc:1").is_ok());
        assert!(ItemKey::new("x".repeat(250)).is_ok());
    }

    #[test]
    fn rejects_what_memcached_rejects() {
        assert_eq!(ItemKey::new(""), Err(ItemKeyError::Empty));
        assert_eq!(
            ItemKey::new("x".repeat(251)),
            Err(ItemKeyError::TooLong(251))
        );
        assert_eq!(ItemKey::new("a b"), Err(ItemKeyError::BadByte));
        assert_eq!(ItemKey::new("a\0b"), Err(ItemKeyError::BadByte));
        assert_eq!(ItemKey::new("é"), Err(ItemKeyError::BadByte));
    }
}
