//! Names of the items a database is made of: database ids derived from the sublevel, random
//! page and value ids, and the memcached keys built from them (never from user keys).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::items::ItemKey;
use crate::ordered::{OrderedError, Sublevel};

/// Every item key of the ordered store starts with this, apart from other users of memcached.
const PREFIX: &str = "o";

/// A database: the first 128 bits of SHA-256 over the sublevel's canonical encoding, so
/// that any name (any length, any byte) maps to a short printable key. The root record keeps
/// the full sublevel, so a collision is detected as corruption instead of mixing databases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbId([u8; 16]);

impl DbId {
    pub fn of(sublevel: &Sublevel) -> DbId {
        let mut hasher = Sha256::new();
        hasher.update(b"db");
        for part in sublevel.path() {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        DbId::from_digest(&hasher.finalize())
    }

    /// The catalog lives in a database no sublevel can hash to (different domain prefix).
    pub fn catalog() -> DbId {
        let mut hasher = Sha256::new();
        hasher.update(b"catalog");
        DbId::from_digest(&hasher.finalize())
    }

    fn from_digest(digest: &[u8]) -> DbId {
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        DbId(id)
    }
}

impl fmt::Display for DbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An immutable tree page, written once under a fresh random id and never overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageId(pub u64);

/// A value stored out of line, in chunks, written once under a fresh random id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u64);

impl PageId {
    pub fn fresh() -> PageId {
        PageId(rand::random())
    }
}

impl ValueId {
    pub fn fresh() -> ValueId {
        ValueId(rand::random())
    }
}

fn item_key(text: String) -> Result<ItemKey, OrderedError> {
    // Built from hex ids only, so this cannot fail; still an error rather than a panic.
    ItemKey::new(text)
        .map_err(|error| OrderedError::Corrupt(Sublevel::root(), format!("item key: {error}")))
}

pub fn root_key(db: DbId) -> Result<ItemKey, OrderedError> {
    item_key(format!("{PREFIX}:{db}:r"))
}

pub fn page_key(db: DbId, page: PageId) -> Result<ItemKey, OrderedError> {
    item_key(format!("{PREFIX}:{db}:p:{:016x}", page.0))
}

/// The count of scans of a database registered in one time slot (see `readers`).
pub fn reader_key(db: DbId, slot: u64) -> Result<ItemKey, OrderedError> {
    item_key(format!("{PREFIX}:{db}:s:{slot}"))
}

pub fn chunk_key(db: DbId, value: ValueId, index: u32) -> Result<ItemKey, OrderedError> {
    item_key(format!("{PREFIX}:{db}:v:{:016x}:{index}", value.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = Sublevel::new(vec!["a".into(), "b".into()]);
        let b = Sublevel::new(vec!["ab".into()]);
        assert_eq!(DbId::of(&a), DbId::of(&a.clone()));
        assert_ne!(DbId::of(&a), DbId::of(&b));
        assert_ne!(DbId::of(&Sublevel::root()), DbId::catalog());
        let key = page_key(DbId::of(&a), PageId(1)).unwrap();
        assert!(key.as_str().len() < 64);
    }
}
