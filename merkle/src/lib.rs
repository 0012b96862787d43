//! Pure Merkle logic for sync-engine: hashing, change sets, diffs. No I/O.
//!
//! See [`types`] for the hash construction and [`key`] for the tree's shape; `README.md` in
//! this crate explains the design, its costs and its limits.
//!
//! - [`MemTree`]: the whole tree in memory, with adaptive hash buckets.
//! - [`ChangeSet`]: a batch of leaf changes and the per-node deltas a store applies.
//! - [`diff()`]: the exact differing ids of two trees, through [`ChildrenSource`].
//! - [`scratch`]: from-scratch computation, the oracle of the tests.
//! - [`codec`]: storage encodings of node keys and values.

mod bucket;
pub mod change;
pub mod codec;
pub mod diff;
pub mod key;
pub mod scratch;
mod seg;
pub mod tree;
pub mod types;

pub use change::{ApplyError, ChangeError, ChangeSet, Delta, EntryChange, LeafChange, PathDelta};
pub use codec::{KeyError, ValueError, KEY_FORMAT_VERSION, MAX_BUCKET_NIBBLES, NODE_VALUE_LEN};
pub use diff::{
    diff, diff_batched, ChildrenSource, DiffError, DiffKind, DiffReport, Difference, Side,
    CALLS_IN_FLIGHT, DIFF_BATCH,
};
pub use key::{
    join, nibble, segment_hash, split_id, validate_path, Children, Entry, IdError, NodeKey,
};
pub use scratch::ScratchTree;
pub use tree::{MemTree, TreeStats, DEFAULT_CAP};
pub use types::{leaf_digest, Acc, Digest, NodeValue, DIGEST_LEN};
