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

/// The `i`-th nibble (0..16) of a digest, most significant nibble of byte 0 first; 0 beyond the
/// 64th (a digest has 64 nibbles), so that no caller can make it panic.
pub fn nibble(d: &Digest, i: usize) -> u8 {
    let Some(&byte) = d.0.get(i / 2) else {
        return 0;
    };
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

/// Why a dotted id or path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// An id must have at least one segment.
    #[error("empty id")]
    Empty,
    /// `a..b`, `.a` and `a.` hold an empty segment, which the tree cannot place.
    #[error("`{0}` has an empty segment (leading, trailing or doubled dot)")]
    EmptySegment(String),
}

/// Split an id into its parent path (`""` under the root) and its last segment.
///
/// `a.b.c` gives `("a.b", "c")`; `a` gives `("", "a")`. Refuses empty ids and empty segments.
pub fn split_id(id: &str) -> Result<(&str, &str), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    validate_path(id)?;
    Ok(match id.rfind('.') {
        Some(i) => (&id[..i], &id[i + 1..]),
        None => ("", id),
    })
}

/// Check a dotted path: `""` (the root) or one or more non-empty segments joined by dots.
pub fn validate_path(path: &str) -> Result<(), IdError> {
    if !path.is_empty() && path.split('.').any(str::is_empty) {
        return Err(IdError::EmptySegment(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_id_separates_parent_and_last_segment() {
        assert_eq!(split_id("a.b.c"), Ok(("a.b", "c")));
        assert_eq!(split_id("solo"), Ok(("", "solo")));
        assert_eq!(split_id(""), Err(IdError::Empty));
        for bad in [".a", "a.", "a..b", "."] {
            assert_eq!(split_id(bad), Err(IdError::EmptySegment(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn nibbles_read_most_significant_first() {
        let mut d = Digest::ZERO;
        d.0[0] = 0xab;
        d.0[1] = 0x0c;
        assert_eq!(
            (nibble(&d, 0), nibble(&d, 1), nibble(&d, 2), nibble(&d, 3)),
            (0xa, 0xb, 0, 0xc)
        );
        assert_eq!(nibble(&Digest([0xff; 32]), 63), 0xf);
        assert_eq!(nibble(&Digest([0xff; 32]), 64), 0, "beyond the digest, no panic");
    }

    #[test]
    fn segment_hash_separates_segments() {
        assert_ne!(segment_hash("a"), segment_hash("b"));
        assert_eq!(segment_hash("a"), segment_hash("a"));
    }
}
