//! Node keys and children listings: the shape of the tree as stores expose it.
//!
//! The logical tree follows the dotted ids: a *path node* for every proper prefix of an id's
//! segments (the root is the empty path), and below each path node its *entries* — leaves
//! (`path.segment` is an id) and child path nodes (`path.segment` is a prefix of longer ids).
//! An id may be both a leaf and a path (`a.b` beside `a.b.c`); the two are distinct entries.
//!
//! A store may group a path node's entries into hash buckets: bucket `b` (a string of nibbles)
//! holds the entries whose [`segment_hash`] starts with `b`. Node values are sums, so any
//! grouping yields the same hashes; diffing copes with two stores grouping differently.

use sha2::{Digest as _, Sha256};

use crate::types::{Digest, NodeValue};

/// Domain tag of segment hashes (bucket placement).
const SEGMENT_TAG: &[u8] = b"sync-engine/merkle/segment/v1";

/// Hash deciding which bucket an entry falls into: `H(segment tag, segment)`.
/// Its nibbles, most significant first, are the bucket path.
pub fn segment_hash(segment: &str) -> Digest {
    let mut h = Sha256::new();
    h.update((SEGMENT_TAG.len() as u32).to_be_bytes());
    h.update(SEGMENT_TAG);
    h.update((segment.len() as u32).to_be_bytes());
    h.update(segment.as_bytes());
    Digest(h.finalize().into())
}

/// The `i`-th nibble (0..16) of a digest, most significant nibble of byte 0 first.
pub fn nibble(d: &Digest, i: usize) -> u8 {
    let byte = d.0[i / 2];
    if i % 2 == 0 {
        byte >> 4
    } else {
        byte & 0x0f
    }
}

/// Identifies one node: a path (dotted segments, `""` for the root) and a bucket inside it
/// (nibbles, each `0..16`; empty for the path node itself).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeKey {
    /// Dotted path of the path node; `""` is the root.
    pub path: String,
    /// Bucket nibbles below that path node; empty means the whole path node.
    pub bucket: Vec<u8>,
}

impl NodeKey {
    /// The root of the whole tree.
    pub fn root() -> NodeKey {
        NodeKey::default()
    }

    /// The path node for a dotted prefix (`""` for the root).
    pub fn path(path: impl Into<String>) -> NodeKey {
        NodeKey { path: path.into(), bucket: Vec::new() }
    }

    /// The sub-bucket `nibble` of this node.
    pub fn child_bucket(&self, nibble: u8) -> NodeKey {
        let mut bucket = self.bucket.clone();
        bucket.push(nibble);
        NodeKey { path: self.path.clone(), bucket }
    }

    /// The path node of an entry `segment` directly under this node's path.
    pub fn child_path(&self, segment: &str) -> NodeKey {
        NodeKey::path(join(&self.path, segment))
    }
}

/// `path.segment`, or `segment` under the root.
pub fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        let mut s = String::with_capacity(path.len() + 1 + segment.len());
        s.push_str(path);
        s.push('.');
        s.push_str(segment);
        s
    }
}

/// One entry directly under a path node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A live item whose id is `path.segment`.
    Leaf {
        /// The last segment of the id.
        segment: String,
        /// Its leaf digest.
        digest: Digest,
    },
    /// A child path node `path.segment` with everything beneath it.
    Path {
        /// The child's last segment.
        segment: String,
        /// The child's value (sum over all its leaves).
        value: NodeValue,
    },
}

impl Entry {
    /// The entry's segment.
    pub fn segment(&self) -> &str {
        match self {
            Entry::Leaf { segment, .. } | Entry::Path { segment, .. } => segment,
        }
    }

    /// The entry's contribution to its parent's value.
    pub fn value(&self) -> NodeValue {
        match self {
            Entry::Leaf { digest, .. } => NodeValue::leaf(digest),
            Entry::Path { value, .. } => *value,
        }
    }
}

/// What a store answers when asked for a node's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Children {
    /// The node is split into hash buckets: `(nibble, value)` of every non-empty sub-bucket.
    Buckets(Vec<(u8, NodeValue)>),
    /// The node is not split: every entry under it (leaves and child path nodes).
    Entries(Vec<Entry>),
}
