//! From-scratch computation of node values and children: the oracle of the tests.
//!
//! Everything here sums the leaf digests of the matching items directly, with no incremental
//! state, in O(n) per question. [`ScratchTree`] answers as a [`ChildrenSource`] that splits
//! every path node to a fixed bucket depth, so it also stands for a store whose bucketing
//! differs from [`crate::MemTree`]'s.

use std::collections::BTreeMap;
use std::future::Future;

use crate::diff::ChildrenSource;
use crate::key::{nibble, segment_hash, Children, Entry, NodeKey};
use crate::types::{Digest, NodeValue};

/// The entry of `id` directly under path `path`: `(segment, is_leaf)`, None when `id` is not
/// strictly beneath `path`.
fn entry_of<'a>(path: &str, id: &'a str) -> Option<(&'a str, bool)> {
    let rest = if path.is_empty() { id } else { id.strip_prefix(path)?.strip_prefix('.')? };
    Some(match rest.find('.') {
        Some(i) => (&rest[..i], false),
        None => (rest, true),
    })
}

fn in_bucket(segment: &str, bucket: &[u8]) -> bool {
    let h = segment_hash(segment);
    bucket.len() <= 64 && bucket.iter().enumerate().all(|(i, &n)| nibble(&h, i) == n)
}

/// The value of node `key` over `items` (the sum of every matching leaf; EMPTY if none).
pub fn node_value<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a Digest)>,
    key: &NodeKey,
) -> NodeValue {
    let mut v = NodeValue::EMPTY;
    for (id, d) in items {
        if let Some((seg, _)) = entry_of(&key.path, id) {
            if in_bucket(seg, &key.bucket) {
                v = v.plus(NodeValue::leaf(d));
            }
        }
    }
    v
}

/// Every entry of node `key` over `items`, sorted by (segment, leaf before path).
pub fn entries<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a Digest)>,
    key: &NodeKey,
) -> Vec<Entry> {
    let mut leaves: BTreeMap<&str, Digest> = BTreeMap::new();
    let mut paths: BTreeMap<&str, NodeValue> = BTreeMap::new();
    for (id, d) in items {
        if let Some((seg, is_leaf)) = entry_of(&key.path, id) {
            if !in_bucket(seg, &key.bucket) {
                continue;
            }
            if is_leaf {
                leaves.insert(seg, *d);
            } else {
                let v = paths.entry(seg).or_insert(NodeValue::EMPTY);
                *v = v.plus(NodeValue::leaf(d));
            }
        }
    }
    let mut out: Vec<Entry> = leaves
        .into_iter()
        .map(|(s, d)| Entry::Leaf { segment: s.to_owned(), digest: d })
        .chain(paths.into_iter().map(|(s, v)| Entry::Path { segment: s.to_owned(), value: v }))
        .collect();
    out.sort_by(|x, y| {
        (x.segment(), matches!(x, Entry::Path { .. }))
            .cmp(&(y.segment(), matches!(y, Entry::Path { .. })))
    });
    out
}

/// A set of items answering node and children questions from scratch, splitting every path
/// node into buckets down to `depth` nibbles (0: never split).
#[derive(Clone, Debug, Default)]
pub struct ScratchTree {
    items: BTreeMap<String, Digest>,
    depth: usize,
}

impl ScratchTree {
    /// The items (later duplicates of an id win), split to `depth` bucket nibbles.
    pub fn new(items: impl IntoIterator<Item = (String, Digest)>, depth: usize) -> ScratchTree {
        ScratchTree { items: items.into_iter().collect(), depth: depth.min(64) }
    }

    /// The items, sorted by id.
    pub fn items(&self) -> &BTreeMap<String, Digest> {
        &self.items
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Digest)> + '_ {
        self.items.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key` (EMPTY when nothing is beneath it).
    pub fn value(&self, key: &NodeKey) -> NodeValue {
        node_value(self.iter(), key)
    }

    /// The root value.
    pub fn root_value(&self) -> NodeValue {
        self.value(&NodeKey::root())
    }

    /// The children of `key`: buckets above `depth`, entries at or below it.
    pub fn children(&self, key: &NodeKey) -> Children {
        if key.bucket.len() < self.depth {
            let mut sums = [NodeValue::EMPTY; 16];
            for (n, sum) in sums.iter_mut().enumerate() {
                *sum = self.value(&key.child_bucket(n as u8));
            }
            Children::Buckets(
                sums.into_iter()
                    .enumerate()
                    .filter(|(_, v)| v.count != 0)
                    .map(|(n, v)| (n as u8, v))
                    .collect(),
            )
        } else {
            Children::Entries(entries(self.iter(), key))
        }
    }
}

impl ChildrenSource for ScratchTree {
    type Error = std::convert::Infallible;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, Self::Error>> + Send {
        let v = self.value(key);
        std::future::ready(Ok((v.count != 0).then_some(v)))
    }

    fn children(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Children, Self::Error>> + Send {
        std::future::ready(Ok(ScratchTree::children(self, key)))
    }
}
