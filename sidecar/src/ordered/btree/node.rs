//! The tree's nodes and root record, and their binary form.
//!
//! A leaf holds keys with their values (inline, or a reference to chunks stored out of line);
//! an internal node holds, for each child, the smallest key that may be found under it (its
//! separator) and the child's page id. The first separator of an internal node routes
//! nothing: keys below the second separator go to the first child, whose range starts where
//! the parent's separator for the node says. Commits write it as that separator; pages from
//! earlier releases may hold a larger key there (once the subtree that held the smallest keys
//! had emptied and gone), which nothing reads. The root node is
//! not a page: it lives inside the root record, the one item updated in place (with CAS).

use std::sync::Arc;

use super::codec::{DecodeError, DecodeResult, Reader, Writer, varint_len};
use super::ids::{PageId, ValueId};
use crate::ordered::Sublevel;

const PAGE_MAGIC: u8 = 0xB7;
const ROOT_MAGIC: u8 = 0xB8;
const CHUNK_MAGIC: u8 = 0xB9;
const FORMAT: u8 = 1;

const TAG_LEAF: u8 = 1;
const TAG_INTERNAL: u8 = 2;
const TAG_INLINE: u8 = 0;
const TAG_OUT_OF_LINE: u8 = 1;
const TAG_GARBAGE_PAGE: u8 = 0;
const TAG_GARBAGE_VALUE: u8 = 1;

/// A value too large for a leaf, split over `chunks` items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueRef {
    pub id: ValueId,
    pub len: u64,
    pub chunks: u32,
    pub crc: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafValue {
    Inline(String),
    OutOfLine(ValueRef),
}

impl LeafValue {
    fn encoded_len(&self) -> usize {
        match self {
            LeafValue::Inline(value) => 1 + varint_len(value.len() as u64) + value.len(),
            LeafValue::OutOfLine(_) => 1 + 8 + 10 + 5 + 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Leaf(Vec<(String, LeafValue)>),
    Internal(Vec<(String, PageId)>),
}

/// Bytes one leaf entry adds to its page.
pub fn leaf_entry_len(key: &str, value: &LeafValue) -> usize {
    varint_len(key.len() as u64) + key.len() + value.encoded_len()
}

/// Bytes one internal entry adds to its page.
pub fn internal_entry_len(separator: &str) -> usize {
    varint_len(separator.len() as u64) + separator.len() + 8
}

/// Page header and trailer, besides the entries.
pub const NODE_OVERHEAD: usize = 2 + 8 + 1 + 5 + 4;

impl Node {
    /// Bytes of the encoded node, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        NODE_OVERHEAD
            + match self {
                Node::Leaf(entries) => entries
                    .iter()
                    .map(|(k, v)| leaf_entry_len(k, v))
                    .sum::<usize>(),
                Node::Internal(children) => children
                    .iter()
                    .map(|(s, _)| internal_entry_len(s))
                    .sum::<usize>(),
            }
    }

    /// Whether reading this node's keys and values needs other items: its children, or
    /// values stored out of line.
    pub fn reaches_items(&self) -> bool {
        match self {
            Node::Leaf(entries) => entries
                .iter()
                .any(|(_, value)| matches!(value, LeafValue::OutOfLine(_))),
            Node::Internal(_) => true,
        }
    }

    /// The smallest key this node may hold, as its parent's separator should say.
    pub fn first_key(&self) -> Option<&str> {
        match self {
            Node::Leaf(entries) => entries.first().map(|(key, _)| key.as_str()),
            Node::Internal(children) => children.first().map(|(sep, _)| sep.as_str()),
        }
    }

    fn write(&self, writer: &mut Writer) {
        match self {
            Node::Leaf(entries) => {
                writer.u8(TAG_LEAF);
                writer.varint(entries.len() as u64);
                for (key, value) in entries {
                    writer.bytes(key.as_bytes());
                    match value {
                        LeafValue::Inline(value) => {
                            writer.u8(TAG_INLINE);
                            writer.bytes(value.as_bytes());
                        }
                        LeafValue::OutOfLine(value) => {
                            writer.u8(TAG_OUT_OF_LINE);
                            writer.u64(value.id.0);
                            writer.varint(value.len);
                            writer.varint(u64::from(value.chunks));
                            writer.u32(value.crc);
                        }
                    }
                }
            }
            Node::Internal(children) => {
                writer.u8(TAG_INTERNAL);
                writer.varint(children.len() as u64);
                for (separator, page) in children {
                    writer.bytes(separator.as_bytes());
                    writer.u64(page.0);
                }
            }
        }
    }

    fn read(reader: &mut Reader<'_>) -> DecodeResult<Node> {
        let tag = reader.u8()?;
        let count = reader.len()?;
        match tag {
            TAG_LEAF => {
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = reader.string()?;
                    let value = match reader.u8()? {
                        TAG_INLINE => LeafValue::Inline(reader.string()?),
                        TAG_OUT_OF_LINE => LeafValue::OutOfLine(ValueRef {
                            id: ValueId(reader.u64()?),
                            len: reader.varint()?,
                            chunks: u32::try_from(reader.varint()?)
                                .map_err(|_| DecodeError::Invalid("chunk count"))?,
                            crc: reader.u32()?,
                        }),
                        tag => return Err(DecodeError::Tag(tag)),
                    };
                    entries.push((key, value));
                }
                check_sorted(entries.iter().map(|(key, _)| key))?;
                Ok(Node::Leaf(entries))
            }
            TAG_INTERNAL => {
                let mut children = Vec::with_capacity(count);
                for _ in 0..count {
                    let separator = reader.string()?;
                    children.push((separator, PageId(reader.u64()?)));
                }
                // The first separator routes nothing, and earlier releases could leave it
                // larger than the second: only the others must be in order.
                check_sorted(children.iter().skip(1).map(|(sep, _)| sep))?;
                Ok(Node::Internal(children))
            }
            tag => Err(DecodeError::Tag(tag)),
        }
    }

    /// A page item: the node, stamped with its own id so a misplaced item is noticed.
    pub fn encode_page(&self, id: PageId) -> Vec<u8> {
        let mut writer = Writer::with_capacity(self.encoded_len());
        writer.u8(PAGE_MAGIC);
        writer.u8(FORMAT);
        writer.u64(id.0);
        self.write(&mut writer);
        writer.finish()
    }

    pub fn decode_page(item: &[u8], id: PageId) -> DecodeResult<Node> {
        let mut reader = Reader::open(item)?;
        if reader.u8()? != PAGE_MAGIC || reader.u8()? != FORMAT {
            return Err(DecodeError::Invalid("not a page"));
        }
        if reader.u64()? != id.0 {
            return Err(DecodeError::Invalid("page stored under another id"));
        }
        let node = Node::read(&mut reader)?;
        reader.end()?;
        Ok(node)
    }
}

fn check_sorted<'a>(mut keys: impl Iterator<Item = &'a String>) -> DecodeResult<()> {
    let Some(mut previous) = keys.next() else {
        return Ok(());
    };
    for key in keys {
        if key <= previous {
            return Err(DecodeError::Invalid("keys out of order"));
        }
        previous = key;
    }
    Ok(())
}

/// Items that a commit made unreachable; the next commit gives them a finite expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Garbage {
    Page(PageId),
    Value { id: ValueId, chunks: u32 },
}

/// The one mutable item of a database: its current root node and commit history marks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootRecord {
    pub sublevel: Sublevel,
    /// Counts commits; tells cached decodings apart.
    pub generation: u64,
    pub root: Arc<Node>,
    /// Pages and values the commit that wrote this record replaced.
    pub garbage: Vec<Garbage>,
}

impl RootRecord {
    pub fn empty(sublevel: Sublevel) -> RootRecord {
        RootRecord {
            sublevel,
            generation: 0,
            root: Arc::new(Node::Leaf(Vec::new())),
            garbage: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut writer =
            Writer::with_capacity(self.root.encoded_len() + 64 + 16 * self.garbage.len());
        writer.u8(ROOT_MAGIC);
        writer.u8(FORMAT);
        writer.varint(self.sublevel.path().len() as u64);
        for part in self.sublevel.path() {
            writer.bytes(part.as_bytes());
        }
        writer.u64(self.generation);
        writer.varint(self.garbage.len() as u64);
        for garbage in &self.garbage {
            match garbage {
                Garbage::Page(page) => {
                    writer.u8(TAG_GARBAGE_PAGE);
                    writer.u64(page.0);
                }
                Garbage::Value { id, chunks } => {
                    writer.u8(TAG_GARBAGE_VALUE);
                    writer.u64(id.0);
                    writer.varint(u64::from(*chunks));
                }
            }
        }
        self.root.write(&mut writer);
        writer.finish()
    }

    pub fn decode(item: &[u8]) -> DecodeResult<RootRecord> {
        let mut reader = Reader::open(item)?;
        if reader.u8()? != ROOT_MAGIC || reader.u8()? != FORMAT {
            return Err(DecodeError::Invalid("not a root record"));
        }
        let parts = reader.len()?;
        let mut path = Vec::with_capacity(parts);
        for _ in 0..parts {
            path.push(reader.string()?);
        }
        let generation = reader.u64()?;
        let count = reader.len()?;
        let mut garbage = Vec::with_capacity(count);
        for _ in 0..count {
            garbage.push(match reader.u8()? {
                TAG_GARBAGE_PAGE => Garbage::Page(PageId(reader.u64()?)),
                TAG_GARBAGE_VALUE => Garbage::Value {
                    id: ValueId(reader.u64()?),
                    chunks: u32::try_from(reader.varint()?)
                        .map_err(|_| DecodeError::Invalid("chunk count"))?,
                },
                tag => return Err(DecodeError::Tag(tag)),
            });
        }
        let root = Node::read(&mut reader)?;
        reader.end()?;
        Ok(RootRecord {
            sublevel: Sublevel::new(path),
            generation,
            root: Arc::new(root),
            garbage,
        })
    }
}

/// One chunk of an out-of-line value, stamped with its value id and index.
pub fn encode_chunk(id: ValueId, index: u32, data: &[u8]) -> Vec<u8> {
    let mut writer = Writer::with_capacity(data.len() + 16);
    writer.u8(CHUNK_MAGIC);
    writer.u64(id.0);
    writer.u32(index);
    writer.raw(data);
    writer.finish()
}

pub fn decode_chunk(item: &[u8], id: ValueId, index: u32) -> DecodeResult<&[u8]> {
    let mut reader = Reader::open(item)?;
    if reader.u8()? != CHUNK_MAGIC || reader.u64()? != id.0 || reader.u32()? != index {
        return Err(DecodeError::Invalid("chunk stored under another id"));
    }
    Ok(reader.rest())
}

/// Bytes a chunk item adds around its data.
pub const CHUNK_OVERHEAD: usize = 1 + 8 + 4 + 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_roots_round_trip() {
        let leaf = Node::Leaf(vec![
            ("a".into(), LeafValue::Inline("1".into())),
            (
                "b\0x".into(),
                LeafValue::OutOfLine(ValueRef {
                    id: ValueId(9),
                    len: 10_000_000,
                    chunks: 10,
                    crc: 5,
                }),
            ),
        ]);
        let item = leaf.encode_page(PageId(3));
        assert!(item.len() <= leaf.encoded_len());
        assert_eq!(Node::decode_page(&item, PageId(3)).unwrap(), leaf);
        assert!(Node::decode_page(&item, PageId(4)).is_err());
        let root = RootRecord {
            sublevel: Sublevel::new(vec!["bucket".into()]),
            generation: 7,
            root: Arc::new(Node::Internal(vec![
                ("".into(), PageId(1)),
                ("m".into(), PageId(2)),
            ])),
            garbage: vec![
                Garbage::Page(PageId(5)),
                Garbage::Value {
                    id: ValueId(6),
                    chunks: 2,
                },
            ],
        };
        assert_eq!(RootRecord::decode(&root.encode()).unwrap(), root);
        let chunk = encode_chunk(ValueId(1), 2, b"data");
        assert_eq!(decode_chunk(&chunk, ValueId(1), 2).unwrap(), b"data");
        assert!(decode_chunk(&chunk, ValueId(1), 3).is_err());
    }
}
