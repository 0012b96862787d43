//! Pure Merkle logic for sync-engine: hashing, change sets, diffs. No I/O.
//!
//! See [`types`] for the hash construction and [`key`] for the tree's shape.

pub mod key;
pub mod types;

pub use key::{join, nibble, segment_hash, Children, Entry, NodeKey};
pub use types::{leaf_digest, Acc, Digest, NodeValue, DIGEST_LEN};
