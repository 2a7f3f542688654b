//! Range scans: a cursor over the tree of one root record (the snapshot), moving leaf to leaf
//! with a stack of internal nodes, reading sibling pages ahead in growing windows.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use futures::stream;

use super::Inner;
use super::ids::{DbId, PageId};
use super::node::Node;
use super::read::child_index;
use super::readers;
use crate::ordered::{KeyRange, OrderedResult, ScanStream, Sublevel};

/// Most sibling pages one read-ahead fetches.
const MAX_WINDOW: usize = 8;

struct Cursor {
    inner: Arc<Inner>,
    db: DbId,
    sublevel: Sublevel,
    range: KeyRange,
    reverse: bool,
    /// Internal nodes from the root down, with the index of the child being visited.
    stack: Vec<(Arc<Node>, usize)>,
    /// The current leaf and the position of the next entry (reverse: one past it).
    leaf: Option<(Arc<Node>, usize)>,
    ahead: HashMap<PageId, Arc<Node>>,
    window: usize,
    done: bool,
    /// Keeps the pages of the snapshot from being freed while the scan runs.
    registration: Option<readers::Registration>,
}

pub async fn open(
    inner: Arc<Inner>,
    db: DbId,
    sublevel: Sublevel,
    range: KeyRange,
    reverse: bool,
) -> OrderedResult<ScanStream> {
    let mut root = inner.read_root(db, &sublevel).await?;
    // A root that reaches no other item (a leaf without out-of-line values) is a whole
    // snapshot already; otherwise register first, then read the root the scan will walk.
    let registration = if root.root.reaches_items() {
        let registration = readers::register(&inner, db).await;
        root = inner.read_root(db, &sublevel).await?;
        registration
    } else {
        None
    };
    let mut cursor = Cursor {
        inner,
        db,
        sublevel,
        range,
        reverse,
        stack: Vec::new(),
        leaf: None,
        ahead: HashMap::new(),
        window: 1,
        done: false,
        registration,
    };
    if cursor.empty_range() {
        cursor.done = true;
    } else {
        cursor.descend(root.root.clone(), true).await?;
    }
    Ok(Box::pin(stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        match cursor.next_item().await {
            Ok(Some(item)) => Some((Ok(item), cursor)),
            Ok(None) => None,
            Err(error) => {
                cursor.done = true;
                cursor.registration = None;
                Some((Err(error), cursor))
            }
        }
    })))
}

impl Cursor {
    fn empty_range(&self) -> bool {
        match (&self.range.lower, &self.range.upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u))
            | (Bound::Excluded(l), Bound::Included(u)) => l >= u,
            _ => false,
        }
    }

    fn below(&self, key: &str) -> bool {
        match &self.range.lower {
            Bound::Unbounded => false,
            Bound::Included(lower) => key < lower.as_str(),
            Bound::Excluded(lower) => key <= lower.as_str(),
        }
    }

    fn above(&self, key: &str) -> bool {
        match &self.range.upper {
            Bound::Unbounded => false,
            Bound::Included(upper) => key > upper.as_str(),
            Bound::Excluded(upper) => key >= upper.as_str(),
        }
    }

    /// The key the scan starts from, if bounded on that side.
    fn start_key(&self) -> Option<&str> {
        let bound = if self.reverse {
            &self.range.upper
        } else {
            &self.range.lower
        };
        match bound {
            Bound::Included(key) | Bound::Excluded(key) => Some(key),
            Bound::Unbounded => None,
        }
    }

    /// Whether child `index` of `children` may hold keys of the range still ahead.
    fn worth_visiting(&self, children: &[(String, PageId)], index: usize) -> bool {
        if self.reverse {
            // Keys under child `index` are below the next child's separator.
            match children.get(index + 1) {
                Some((next, _)) => match &self.range.lower {
                    Bound::Unbounded => true,
                    Bound::Included(lower) | Bound::Excluded(lower) => next > lower,
                },
                None => true,
            }
        } else {
            !self.above(&children[index].0)
        }
    }

    /// Walk down from `node` to a leaf: by the start key on the first descent, else to the
    /// leftmost (rightmost when reversed) leaf.
    async fn descend(&mut self, mut node: Arc<Node>, seek: bool) -> OrderedResult<()> {
        loop {
            let index = match node.as_ref() {
                Node::Leaf(entries) => {
                    let position = match (seek, self.start_key(), self.reverse) {
                        (true, Some(start), false) => {
                            entries.partition_point(|(key, _)| key.as_str() < start)
                        }
                        (true, Some(start), true) => {
                            entries.partition_point(|(key, _)| key.as_str() <= start)
                        }
                        (_, _, false) => 0,
                        (_, _, true) => entries.len(),
                    };
                    self.leaf = Some((node, position));
                    return Ok(());
                }
                Node::Internal(children) if children.is_empty() => return Ok(()),
                Node::Internal(children) => match (seek, self.start_key()) {
                    (true, Some(start)) => child_index(children, start),
                    _ if self.reverse => children.len() - 1,
                    _ => 0,
                },
            };
            let child = self.child(&node, index).await?;
            self.stack.push((node, index));
            node = child;
        }
    }

    /// Load child `index` of the internal `node`, reading a window of its next siblings too.
    async fn child(&mut self, node: &Arc<Node>, index: usize) -> OrderedResult<Arc<Node>> {
        let Node::Internal(children) = node.as_ref() else {
            return Err(crate::ordered::OrderedError::Corrupt(
                self.sublevel.clone(),
                "leaf where an internal node was expected".into(),
            ));
        };
        let page = children[index].1;
        if let Some(found) = self.ahead.remove(&page) {
            return Ok(found);
        }
        if let Some(found) = self.inner.cache.get(self.db, page) {
            return Ok(found);
        }
        let mut wanted = vec![page];
        let mut next = index;
        while wanted.len() < self.window {
            next = match self.reverse {
                false if next + 1 < children.len() => next + 1,
                true if next > 0 => next - 1,
                _ => break,
            };
            if !self.worth_visiting(children, next) {
                break;
            }
            wanted.push(children[next].1);
        }
        self.window = (self.window * 2).min(MAX_WINDOW);
        let mut loaded = self.inner.pages(self.db, &self.sublevel, &wanted).await?;
        let first = loaded.remove(0);
        self.ahead.clear();
        for (id, node) in wanted.into_iter().skip(1).zip(loaded) {
            self.ahead.insert(id, node);
        }
        Ok(first)
    }

    /// Move to the next leaf; `false` when the range holds no more.
    async fn next_leaf(&mut self) -> OrderedResult<bool> {
        while let Some((node, index)) = self.stack.pop() {
            let Node::Internal(children) = node.as_ref() else {
                continue;
            };
            let next = match self.reverse {
                false if index + 1 < children.len() => index + 1,
                true if index > 0 => index - 1,
                _ => continue,
            };
            if !self.worth_visiting(children, next) {
                return Ok(false);
            }
            let child = self.child(&node, next).await?;
            self.stack.push((node, next));
            self.descend(child, false).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn next_item(&mut self) -> OrderedResult<Option<(String, String)>> {
        loop {
            if let Some((leaf, position)) = &mut self.leaf {
                let Node::Leaf(entries) = leaf.as_ref() else {
                    self.leaf = None;
                    continue;
                };
                let found = if self.reverse {
                    if *position == 0 {
                        None
                    } else {
                        *position -= 1;
                        Some(&entries[*position])
                    }
                } else {
                    let entry = entries.get(*position);
                    *position += 1;
                    entry
                };
                match found {
                    Some((key, value)) => {
                        let (key, value) = (key.clone(), value.clone());
                        let skip = if self.reverse {
                            self.above(&key)
                        } else {
                            self.below(&key)
                        };
                        let past = if self.reverse {
                            self.below(&key)
                        } else {
                            self.above(&key)
                        };
                        if past {
                            self.done = true;
                            return Ok(None);
                        }
                        if skip {
                            continue;
                        }
                        let value = self.inner.resolve(self.db, &self.sublevel, value).await?;
                        return Ok(Some((key, value)));
                    }
                    None => self.leaf = None,
                }
            }
            if !self.next_leaf().await? {
                self.done = true;
                return Ok(None);
            }
        }
    }
}
