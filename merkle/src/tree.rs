//! [`MemTree`]: the whole Merkle tree in memory, with adaptive hash buckets.
//!
//! One entry per path node in a hash map keyed by the dotted path; inside each path node a
//! bucket tree whose flat buckets hold at most `cap` segments (default
//! [`DEFAULT_CAP`]) and split 16 ways by the next nibble of the segment hash beyond that.
//! A leaf change walks the id's ancestors (one hash-map lookup each, no allocation unless a path
//! node is created) and, inside each, one chain of buckets: O(depth) work whatever the number
//! of siblings.

use std::collections::HashMap;

use crate::bucket::{hash_prefix, heap_size, Bucket, Flat, Node, SlotOp};
use crate::change::{ApplyError, ChangeSet};
use crate::key::{split_id, Children, Entry, IdError, NodeKey};
use crate::types::{Digest, NodeValue};

/// Default capacity of a flat bucket. Listing one flat bucket of up to 32 entries costs a diff
/// about what one more level of 16 sub-buckets would, and a million siblings sit four bucket
/// levels deep in buckets of ~15; with 16, a third of those buckets split once more into 16
/// near-empty ones (the bench's sweep: 0.34 instead of 0.07 nodes per item, more bytes, the same
/// diff work per difference).
pub const DEFAULT_CAP: usize = 32;

/// One path node: its bucket tree (the root bucket's value is the path node's value).
#[derive(Clone, Debug)]
struct PathNode {
    root: Bucket,
    /// `hash_prefix` of the path's last segment (0 for the root), so that carrying a change
    /// to the parent path node costs no SHA-256.
    hash: u64,
}

impl PathNode {
    fn new(path: &str) -> PathNode {
        let hash = match path.rfind('.') {
            _ if path.is_empty() => 0,
            Some(i) => hash_prefix(&path[i + 1..]),
            None => hash_prefix(path),
        };
        PathNode { root: Bucket::default(), hash }
    }
}

/// An in-memory Merkle tree over live items (see the crate documentation for the shape).
///
/// Node values are sums, so any two `MemTree`s holding the same live leaves have equal node
/// values and hashes for every path node, whatever their `cap`, history or insertion order.
#[derive(Clone, Debug)]
pub struct MemTree {
    paths: HashMap<Box<str>, PathNode>,
    leaves: usize,
    cap: usize,
}

/// Size figures of a [`MemTree`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Live leaves.
    pub leaves: usize,
    /// Path nodes (the root included).
    pub path_nodes: usize,
    /// Buckets below path nodes (split and flat), not counting each path node's own top bucket.
    pub bucket_nodes: usize,
    /// Segment slots (a segment that is both a leaf and a path counts once).
    pub slots: usize,
    /// Approximate heap bytes: map table, keys, buckets, slot vectors and segment strings.
    pub approx_bytes: usize,
}

impl TreeStats {
    /// Every node a store would keep a value for: path nodes plus buckets.
    pub fn nodes(&self) -> usize {
        self.path_nodes + self.bucket_nodes
    }
}

impl Default for MemTree {
    fn default() -> Self {
        MemTree::new()
    }
}

impl MemTree {
    /// An empty tree with flat buckets of at most [`DEFAULT_CAP`] segments.
    pub fn new() -> MemTree {
        MemTree::with_cap(DEFAULT_CAP)
    }

    /// An empty tree whose flat buckets split beyond `cap` segments (`cap` of 0 counts as 1).
    pub fn with_cap(cap: usize) -> MemTree {
        let mut paths = HashMap::new();
        paths.insert(Box::<str>::from(""), PathNode::new(""));
        MemTree { paths, leaves: 0, cap: cap.max(1) }
    }

    /// A tree holding `items` (later duplicates of an id win).
    pub fn from_items<'a>(
        items: impl IntoIterator<Item = (&'a str, Digest)>,
    ) -> Result<MemTree, IdError> {
        let mut t = MemTree::new();
        for (id, d) in items {
            t.upsert(id, d)?;
        }
        Ok(t)
    }

    /// The flat-bucket capacity this tree splits at.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Number of live leaves.
    pub fn len(&self) -> usize {
        self.leaves
    }

    /// True when the tree holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// Insert or replace the leaf `id`; returns the digest it replaced. Refuses malformed ids
    /// (empty, or with an empty segment) without changing anything.
    pub fn upsert(&mut self, id: &str, digest: Digest) -> Result<Option<Digest>, IdError> {
        self.set(id, Some(digest))
    }

    /// Remove the leaf `id`; returns the digest it had (None, and no change, when absent).
    pub fn remove(&mut self, id: &str) -> Result<Option<Digest>, IdError> {
        self.set(id, None)
    }

    /// Apply a batch: every change's `old` must match this tree (checked for the whole batch
    /// before anything changes), then every leaf takes its `new` digest or is removed.
    pub fn apply(&mut self, changes: &ChangeSet) -> Result<(), ApplyError> {
        for c in changes.iter() {
            let current = self.get_leaf(&c.id);
            if current != c.old {
                return Err(ApplyError::StaleOld { id: c.id.clone(), expected: c.old, current });
            }
        }
        for c in changes.iter() {
            self.set(&c.id, c.new).map_err(ApplyError::Id)?;
        }
        Ok(())
    }

    /// The digest of leaf `id`, if live (None for malformed ids too).
    pub fn get_leaf(&self, id: &str) -> Option<Digest> {
        let (parent, seg) = split_id(id).ok()?;
        self.paths.get(parent)?.root.leaf(seg, hash_prefix(seg))
    }

    /// The value of a node; None when no live leaf is beneath it (empty nodes are not kept).
    /// A key below one of this tree's flat buckets is answered by summing the matching entries.
    pub fn node(&self, key: &NodeKey) -> Option<NodeValue> {
        let (n, v, depth) = self.paths.get(key.path.as_str())?.root.find(&key.bucket)?;
        let v = match n {
            Node::Flat(flat) if depth < key.bucket.len() => flat_entries(flat, &key.bucket, depth)
                .iter()
                .fold(NodeValue::EMPTY, |v, e| v.plus(e.value())),
            _ => v,
        };
        (v.count != 0).then_some(v)
    }

    /// The children of a node: the non-empty sub-buckets of a split bucket, else every entry of
    /// the flat bucket (filtered by the remaining nibbles when `key` lies below it). An absent
    /// node has no entries.
    pub fn children(&self, key: &NodeKey) -> Children {
        let Some((n, _, depth)) =
            self.paths.get(key.path.as_str()).and_then(|p| p.root.find(&key.bucket))
        else {
            return Children::Entries(Vec::new());
        };
        match n {
            Node::Split(split) => Children::Buckets(
                (0u8..16).zip(split.values).filter(|(_, v)| v.count != 0).collect(),
            ),
            Node::Flat(flat) => Children::Entries(flat_entries(flat, &key.bucket, depth)),
            Node::Empty => Children::Entries(Vec::new()),
        }
    }

    /// The root's value.
    pub fn root_value(&self) -> NodeValue {
        self.paths.get("").map(|p| p.root.value).unwrap_or(NodeValue::EMPTY)
    }

    /// The root hash two trees compare.
    pub fn root_hash(&self) -> Digest {
        self.root_value().hash()
    }

    /// Every live leaf as `(id, digest)`, in no particular order.
    pub fn leaves(&self) -> impl Iterator<Item = (String, Digest)> + '_ {
        self.paths.iter().flat_map(|(path, node)| {
            let mut out = Vec::new();
            collect_leaves(&node.root.node, path, &mut out);
            out
        })
    }

    /// Node counts and approximate memory.
    pub fn stats(&self) -> TreeStats {
        let mut s = TreeStats { leaves: self.leaves, ..TreeStats::default() };
        let entry = std::mem::size_of::<(Box<str>, PathNode)>() + 1;
        s.approx_bytes = self.paths.capacity() * entry;
        for (path, node) in &self.paths {
            s.path_nodes += 1;
            s.approx_bytes += heap_size(path.len());
            let mut buckets = 0;
            node.root.node.stats(&mut buckets, &mut s.slots, &mut s.approx_bytes);
            s.bucket_nodes += buckets.saturating_sub(1);
        }
        s
    }

    /// Set or clear one leaf, then carry the change up through every ancestor path node.
    fn set(&mut self, id: &str, digest: Option<Digest>) -> Result<Option<Digest>, IdError> {
        let (parent, seg) = split_id(id)?;
        let hash = hash_prefix(seg);
        let old = self.paths.get(parent).and_then(|p| p.root.leaf(seg, hash));
        if old == digest {
            return Ok(old);
        }
        let delta = leaf_value(digest).minus(leaf_value(old));
        let mut hash = self.update(parent, seg, hash, SlotOp::SetLeaf(digest), delta);
        // Ancestors: `parent` is entry `seg` (a path) of its own parent, up to the root.
        let mut child = parent;
        while !child.is_empty() {
            let (grand, seg) = match child.rfind('.') {
                Some(i) => (&child[..i], &child[i + 1..]),
                None => ("", child),
            };
            hash = self.update(grand, seg, hash, SlotOp::AddPath(delta), delta);
            child = grand;
        }
        match (old.is_some(), digest.is_some()) {
            (false, true) => self.leaves += 1,
            (true, false) => self.leaves -= 1,
            _ => {}
        }
        Ok(old)
    }

    /// Apply one slot change inside path node `path`, creating or dropping the path node.
    /// Returns the hash prefix of `path`'s last segment.
    fn update(&mut self, path: &str, seg: &str, hash: u64, op: SlotOp, delta: NodeValue) -> u64 {
        let cap = self.cap;
        let (emptied, own) = match self.paths.get_mut(path) {
            Some(node) => {
                node.root.apply(seg, hash, op, delta, cap);
                (node.root.value.count == 0, node.hash)
            }
            None => {
                let mut node = PathNode::new(path);
                node.root.apply(seg, hash, op, delta, cap);
                let own = node.hash;
                self.paths.insert(path.into(), node);
                (false, own)
            }
        };
        if emptied {
            if path.is_empty() {
                if let Some(root) = self.paths.get_mut("") {
                    root.root = Bucket::default();
                }
            } else {
                self.paths.remove(path);
            }
        }
        own
    }
}

fn leaf_value(d: Option<Digest>) -> NodeValue {
    d.map(|d| NodeValue::leaf(&d)).unwrap_or(NodeValue::EMPTY)
}

/// Entries of a flat bucket (reached after `depth` nibbles) matching `nibbles[depth..]`.
fn flat_entries(flat: &Flat, nibbles: &[u8], depth: usize) -> Vec<Entry> {
    let mut out = Vec::with_capacity(flat.slots.len() + 1);
    for (k, s) in flat.slots.iter().enumerate() {
        let matches =
            nibbles.iter().enumerate().skip(depth).all(|(i, &n)| flat.nibble(k, i) == Some(n));
        if matches {
            s.push_entries(&mut out);
        }
    }
    out
}

fn collect_leaves(n: &Node, path: &str, out: &mut Vec<(String, Digest)>) {
    match n {
        Node::Empty => {}
        Node::Flat(flat) => {
            for s in &flat.slots {
                if let Some(d) = s.leaf {
                    out.push((crate::key::join(path, s.seg.as_str()), d));
                }
            }
        }
        Node::Split(split) => {
            for k in &split.kids {
                collect_leaves(k, path, out);
            }
        }
    }
}
