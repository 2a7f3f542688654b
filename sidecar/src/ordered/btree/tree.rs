//! Copy-on-write update of a tree: a sorted set of changes applied to a root node gives a new
//! root node, new pages to write, and the pages and values it made unreachable.
//!
//! Nodes larger than a page split into even pieces; a rewritten node smaller than a quarter
//! page merges with a neighbour, so deletes do not leave a trail of tiny pages.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::Inner;
use super::ids::{DbId, PageId};
use super::node::{Garbage, LeafValue, NODE_OVERHEAD, Node, internal_entry_len, leaf_entry_len};
use crate::ordered::{OrderedError, OrderedResult, Sublevel};

/// A change to one key: the new value, or `None` to delete it.
pub type Change = (String, Option<LeafValue>);

/// What a commit produces besides its root.
#[derive(Default)]
pub struct Build {
    /// New pages: id, encoded item, and the node (cached once the commit succeeds).
    pub pages: Vec<(PageId, Bytes, Arc<Node>)>,
    pub garbage: Vec<Garbage>,
}

impl Build {
    fn write(&mut self, node: Node) -> PageId {
        let id = PageId::fresh();
        let item = Bytes::from(node.encode_page(id));
        self.pages.push((id, item, Arc::new(node)));
        id
    }
}

/// Cut `items` into pieces of at most `max` encoded bytes, as even as possible.
fn split<T>(items: Vec<T>, size: impl Fn(&T) -> usize, max: usize) -> Vec<Vec<T>> {
    let total: usize = NODE_OVERHEAD + items.iter().map(&size).sum::<usize>();
    if items.is_empty() {
        return Vec::new();
    }
    if total <= max {
        return vec![items];
    }
    let target = total / total.div_ceil(max);
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    let mut bytes = NODE_OVERHEAD;
    for item in items {
        let item_size = size(&item);
        if !piece.is_empty() && (bytes + item_size > max || bytes >= target) {
            pieces.push(std::mem::take(&mut piece));
            bytes = NODE_OVERHEAD;
        }
        bytes += item_size;
        piece.push(item);
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

fn split_node(node: Node, max: usize) -> Vec<Node> {
    match node {
        Node::Leaf(entries) => split(entries, |(k, v)| leaf_entry_len(k, v), max)
            .into_iter()
            .map(Node::Leaf)
            .collect(),
        Node::Internal(children) => split(children, |(s, _)| internal_entry_len(s), max)
            .into_iter()
            .map(Node::Internal)
            .collect(),
    }
}

/// A child slot while an internal node is rebuilt.
enum Child {
    Kept(String, PageId),
    Rebuilt(String, Node),
}

impl Child {
    fn set_separator(&mut self, new: String) {
        match self {
            Child::Kept(separator, _) | Child::Rebuilt(separator, _) => *separator = new,
        }
    }
}

fn concat(left: Node, right: Node, right_separator: &str) -> OrderedResult<Node> {
    match (left, right) {
        (Node::Leaf(mut left), Node::Leaf(right)) => {
            left.extend(right);
            Ok(Node::Leaf(left))
        }
        (Node::Internal(mut left), Node::Internal(mut right)) => {
            if let Some(first) = right.first_mut() {
                first.0 = right_separator.to_owned();
            }
            left.extend(right);
            Ok(Node::Internal(left))
        }
        _ => Err(OrderedError::Corrupt(
            Sublevel::root(),
            "siblings of different kinds".into(),
        )),
    }
}

pub struct TreeWriter<'a> {
    pub inner: &'a Inner,
    pub db: DbId,
    pub sublevel: &'a Sublevel,
    pub build: Build,
}

impl TreeWriter<'_> {
    /// A page of the tree the commit starts from; `SnapshotExpired` when another writer's
    /// commit has replaced it since (the caller tells that from a lost page).
    async fn load(&self, page: PageId) -> OrderedResult<Node> {
        let node = self.inner.page(self.db, self.sublevel, page).await?;
        Ok(Node::clone(&node))
    }

    /// Apply `changes` (sorted by key, distinct) to the root node; returns the new root node.
    pub async fn apply_root(&mut self, root: &Node, changes: &[Change]) -> OrderedResult<Node> {
        let limits = self.inner.limits;
        // The root's children may fill the whole inline root, not just a page: the tree stays
        // one level shallower, and a put then writes one page fewer.
        let mut pieces = self
            .apply(root.clone(), changes, limits.root_max, "")
            .await?;
        loop {
            match pieces.len() {
                0 => return Ok(Node::Leaf(Vec::new())),
                1 if pieces[0].encoded_len() <= limits.root_max => break,
                1 => {
                    let single = pieces.pop().unwrap_or(Node::Leaf(Vec::new()));
                    pieces = split_node(single, limits.page_max);
                    if pieces.len() < 2 {
                        return Err(OrderedError::Corrupt(
                            self.sublevel.clone(),
                            "root node cannot be split".into(),
                        ));
                    }
                }
                _ => {
                    // Pieces of the root may be as large as the root; pages may not.
                    let mut children = Vec::with_capacity(pieces.len());
                    for (index, piece) in std::mem::take(&mut pieces).into_iter().enumerate() {
                        for (n, part) in split_node(piece, limits.page_max).into_iter().enumerate()
                        {
                            let separator = if index == 0 && n == 0 {
                                String::new()
                            } else {
                                part.first_key().unwrap_or_default().to_owned()
                            };
                            children.push((separator, self.build.write(part)));
                        }
                    }
                    pieces = vec![Node::Internal(children)];
                }
            }
        }
        let mut root = pieces.pop().unwrap_or(Node::Leaf(Vec::new()));
        // A root with one child is that child: keeps the tree as shallow as its content.
        while let Node::Internal(children) = &root {
            if children.len() != 1 {
                break;
            }
            let page = children[0].1;
            // The only child is often a page this commit has just built (two children merged
            // into one): it is not in memcached yet, so it is taken back from the build.
            if let Some(fresh) = self.build.pages.iter().position(|(id, _, _)| *id == page) {
                if self.build.pages[fresh].2.encoded_len() > limits.root_max {
                    break;
                }
                let (_, _, node) = self.build.pages.swap_remove(fresh);
                root = Arc::unwrap_or_clone(node);
                continue;
            }
            let child = self.load(page).await?;
            if child.encoded_len() > limits.root_max {
                break;
            }
            self.build.garbage.push(Garbage::Page(page));
            root = child;
        }
        Ok(root)
    }

    /// The pieces (unwritten, at most a page each; an internal node at most `internal_max`)
    /// that replace `node` once `changes` apply. `lower` is where the node's range starts, as
    /// its parent says (the node's own first separator may be larger: see [`Node`]).
    fn apply<'s>(
        &'s mut self,
        node: Node,
        changes: &'s [Change],
        internal_max: usize,
        lower: &'s str,
    ) -> BoxFuture<'s, OrderedResult<Vec<Node>>> {
        Box::pin(async move {
            match node {
                Node::Leaf(entries) => Ok(self.apply_leaf(entries, changes)),
                Node::Internal(children) => {
                    self.apply_internal(children, changes, internal_max, lower)
                        .await
                }
            }
        })
    }

    fn apply_leaf(&mut self, entries: Vec<(String, LeafValue)>, changes: &[Change]) -> Vec<Node> {
        let mut merged = Vec::with_capacity(entries.len() + changes.len());
        let mut old = entries.into_iter().peekable();
        for (key, change) in changes {
            while let Some(entry) = old.next_if(|(k, _)| k < key) {
                merged.push(entry);
            }
            if let Some((_, replaced)) = old.next_if(|(k, _)| k == key)
                && let LeafValue::OutOfLine(value) = replaced
            {
                self.build.garbage.push(Garbage::Value {
                    id: value.id,
                    chunks: value.chunks,
                });
            }
            if let Some(value) = change {
                merged.push((key.clone(), value.clone()));
            }
        }
        merged.extend(old);
        split_node(Node::Leaf(merged), self.inner.limits.page_max)
    }

    async fn apply_internal(
        &mut self,
        children: Vec<(String, PageId)>,
        changes: &[Change],
        internal_max: usize,
        lower: &str,
    ) -> OrderedResult<Vec<Node>> {
        let page_max = self.inner.limits.page_max;
        let mut rest = changes;
        // Route changes child by child on the separators.
        let separators: Vec<String> = children.iter().map(|(s, _)| s.clone()).collect();
        let mut out: Vec<Child> = Vec::with_capacity(children.len() + 2);
        for (index, (separator, page)) in children.into_iter().enumerate() {
            // The first child's range starts where this node's does, whatever its stored
            // separator says: that one may have been left larger than the keys below it.
            let separator = if index == 0 {
                lower.to_owned()
            } else {
                separator
            };
            let end = match separators.get(index + 1) {
                Some(next) => rest.partition_point(|(key, _)| key < next),
                None => rest.len(),
            };
            let (mine, later) = rest.split_at(end);
            rest = later;
            if mine.is_empty() {
                out.push(Child::Kept(separator, page));
                continue;
            }
            let node = self.load(page).await?;
            self.build.garbage.push(Garbage::Page(page));
            let pieces = self.apply(node, mine, page_max, &separator).await?;
            for (n, piece) in pieces.into_iter().enumerate() {
                let piece_separator = if n == 0 {
                    separator.clone()
                } else {
                    piece.first_key().unwrap_or_default().to_owned()
                };
                out.push(Child::Rebuilt(piece_separator, piece));
            }
        }
        if out.is_empty() {
            return Ok(Vec::new());
        }
        out[0].set_separator(lower.to_owned());
        let out = self.merge_small(out, page_max / 4).await?;
        let mut written = Vec::with_capacity(out.len());
        for child in out {
            match child {
                Child::Kept(separator, page) => written.push((separator, page)),
                Child::Rebuilt(separator, node) => {
                    let page = self.build.write(node);
                    written.push((separator, page));
                }
            }
        }
        Ok(split_node(Node::Internal(written), internal_max))
    }

    /// Merge each rebuilt child under `min` bytes into a neighbour, then re-split the pair.
    async fn merge_small(
        &mut self,
        mut children: Vec<Child>,
        min: usize,
    ) -> OrderedResult<Vec<Child>> {
        let page_max = self.inner.limits.page_max;
        let mut index = 0;
        while index < children.len() {
            let small =
                matches!(&children[index], Child::Rebuilt(_, node) if node.encoded_len() < min);
            if !small || children.len() < 2 {
                index += 1;
                continue;
            }
            let left_index = if index + 1 < children.len() {
                index
            } else {
                index - 1
            };
            let right = children.remove(left_index + 1);
            let left = children.remove(left_index);
            let (left_separator, left_node) = self.take_node(left).await?;
            let (right_separator, right_node) = self.take_node(right).await?;
            let merged = concat(left_node, right_node, &right_separator)?;
            let pieces = split_node(merged, page_max);
            let placed = pieces.len();
            for (n, piece) in pieces.into_iter().enumerate().rev() {
                let separator = if n == 0 {
                    left_separator.clone()
                } else {
                    piece.first_key().unwrap_or_default().to_owned()
                };
                children.insert(left_index, Child::Rebuilt(separator, piece));
            }
            index = left_index + placed;
        }
        Ok(children)
    }

    async fn take_node(&mut self, child: Child) -> OrderedResult<(String, Node)> {
        match child {
            Child::Rebuilt(separator, node) => Ok((separator, node)),
            Child::Kept(separator, page) => {
                let node = self.load(page).await?;
                self.build.garbage.push(Garbage::Page(page));
                Ok((separator, node))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_pieces_under_the_limit() {
        let items: Vec<usize> = vec![10; 100];
        let pieces = split(items, |s| *s, 200);
        assert!(
            pieces
                .iter()
                .all(|p| NODE_OVERHEAD + p.iter().sum::<usize>() <= 200)
        );
        assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), 100);
        assert!(split(Vec::<usize>::new(), |s| *s, 200).is_empty());
    }
}
