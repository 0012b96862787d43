//! [`ChangeSet`]: a batch of leaf changes, and the per-node deltas a store applies.
//!
//! A store builds a change set from what it is about to write (`old` = the leaf digest it holds
//! now, `new` = the one it will hold; `None` = no live item) and asks for
//! [`ChangeSet::path_deltas`]: one [`PathDelta`] per affected path node, each with the signed
//! change of the node's total and of each of its direct entries. Applying them:
//!
//! 1. For each [`PathDelta`]: read the node's stored value `v`, write `total.apply(v)`; delete
//!    the node when the result's count is 0.
//! 2. For each [`EntryChange`]: a `Leaf` entry becomes `new` (deleted when `None`); a `Path`
//!    entry's value becomes `delta.apply(value)` (deleted when its count reaches 0).
//! 3. A store that groups entries into hash buckets also adds each entry's delta to every bucket
//!    on the entry's nibble path (`segment_hash(segment)`); [`PathDelta::bucket_deltas`] gives
//!    those sums, aggregated per bucket, for a store that splits every path node to a fixed depth.
//!
//! Every touched node is written once per batch, and one leaf touches its id's path nodes and
//! their buckets only: O(depth) writes per leaf whatever the number of siblings. Deltas are
//! sums, so the order in which a store applies them does not matter.

use std::collections::BTreeMap;

use crate::key::{nibble, segment_hash, split_id, IdError};
use crate::types::{Digest, NodeValue};

/// A signed change of a node value: add `plus`, subtract `minus` (both wrapping).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Leaves (or subtree sums) that appear.
    pub plus: NodeValue,
    /// Leaves (or subtree sums) that disappear.
    pub minus: NodeValue,
}

impl Delta {
    /// No change.
    pub const ZERO: Delta = Delta { plus: NodeValue::EMPTY, minus: NodeValue::EMPTY };

    /// The delta of one leaf going from `old` to `new`.
    pub fn leaf(old: Option<Digest>, new: Option<Digest>) -> Delta {
        let v = |d: Option<Digest>| d.map(|d| NodeValue::leaf(&d)).unwrap_or(NodeValue::EMPTY);
        Delta { plus: v(new), minus: v(old) }
    }

    /// Both changes together.
    pub fn combine(self, other: Delta) -> Delta {
        Delta { plus: self.plus.plus(other.plus), minus: self.minus.plus(other.minus) }
    }

    /// The value after the change: `value + plus - minus`.
    pub fn apply(self, value: NodeValue) -> NodeValue {
        value.plus(self.plus).minus(self.minus)
    }

    /// The net change as one wrapping value (`count` wraps below zero): `apply(v) == v.plus(net)`.
    pub fn net(self) -> NodeValue {
        self.plus.minus(self.minus)
    }

    /// The net change of the leaf count.
    pub fn count_delta(self) -> i64 {
        self.net().count as i64
    }

    /// True when applying the delta changes nothing.
    pub fn is_zero(self) -> bool {
        self.net() == NodeValue::EMPTY
    }
}

/// The net change of one leaf over a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafChange {
    /// The full dotted id.
    pub id: String,
    /// Its digest before the batch (None: not live).
    pub old: Option<Digest>,
    /// Its digest after the batch (None: not live, e.g. deleted or tombstoned).
    pub new: Option<Digest>,
}

/// Why a change was refused (the set is left as it was).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The id cannot be placed in the tree.
    #[error("invalid id: {0}")]
    Id(#[from] IdError),
    /// A second change of an id in one batch must start where the first ended.
    #[error("change of `{id}` starts from {got:?} but the batch already set it to {expected:?}")]
    BrokenChain {
        /// The id.
        id: String,
        /// The `new` of the earlier change.
        expected: Option<Digest>,
        /// The `old` of the refused change.
        got: Option<Digest>,
    },
}

/// Why a tree refused to apply a change set (nothing was changed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The change's `old` is not what the tree holds: the caller's data and tree disagree.
    #[error("change of `{id}` expects {expected:?} but the tree holds {current:?}")]
    StaleOld {
        /// The id.
        id: String,
        /// The change's `old`.
        expected: Option<Digest>,
        /// What the tree holds.
        current: Option<Digest>,
    },
    /// The id cannot be placed in the tree.
    #[error("invalid id: {0}")]
    Id(#[from] IdError),
}

/// A batch of leaf changes, one net change per id (kept sorted by id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    changes: BTreeMap<String, LeafChange>,
}

/// What kind of entry an [`EntryChange`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryChange {
    /// The leaf `path.segment` goes from `old` to `new`.
    Leaf {
        /// Last segment of the id.
        segment: String,
        /// Digest before (None: absent).
        old: Option<Digest>,
        /// Digest after (None: absent).
        new: Option<Digest>,
    },
    /// The child path node `path.segment` changes by `delta`.
    Path {
        /// The child's last segment.
        segment: String,
        /// Change of the child's value.
        delta: Delta,
    },
}

impl EntryChange {
    /// The entry's segment.
    pub fn segment(&self) -> &str {
        match self {
            EntryChange::Leaf { segment, .. } | EntryChange::Path { segment, .. } => segment,
        }
    }

    /// The change of the entry's contribution to its parent.
    pub fn delta(&self) -> Delta {
        match self {
            EntryChange::Leaf { old, new, .. } => Delta::leaf(*old, *new),
            EntryChange::Path { delta, .. } => *delta,
        }
    }
}

/// The changes inside one path node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathDelta {
    /// The path node (`""` for the root).
    pub path: String,
    /// Change of the path node's value: the sum of `entries`' deltas.
    pub total: Delta,
    /// Changed direct entries, sorted by (segment, leaf before path); none has a zero delta.
    pub entries: Vec<EntryChange>,
}

impl PathDelta {
    /// Aggregated deltas of every bucket `b` with `1 <= b.len() <= depth` that an entry change
    /// falls into, sorted by bucket; for stores splitting this path node to a fixed `depth`
    /// (at most 64 nibbles). The path node itself (`b` empty) takes [`PathDelta::total`].
    pub fn bucket_deltas(&self, depth: usize) -> Vec<(Vec<u8>, Delta)> {
        let depth = depth.min(64);
        let mut out: BTreeMap<Vec<u8>, Delta> = BTreeMap::new();
        for e in &self.entries {
            let h = segment_hash(e.segment());
            let mut bucket = Vec::with_capacity(depth);
            for i in 0..depth {
                bucket.push(nibble(&h, i));
                let slot = out.entry(bucket.clone()).or_default();
                *slot = slot.combine(e.delta());
            }
        }
        out.into_iter().collect()
    }
}

impl ChangeSet {
    /// An empty batch.
    pub fn new() -> ChangeSet {
        ChangeSet::default()
    }

    /// Record that `id` goes from `old` to `new` (None = not live). A later change of the same
    /// id must start from the earlier one's `new`; the set keeps the net change.
    pub fn push(
        &mut self,
        id: &str,
        old: Option<Digest>,
        new: Option<Digest>,
    ) -> Result<(), ChangeError> {
        split_id(id)?;
        match self.changes.get_mut(id) {
            Some(c) => {
                if c.new != old {
                    return Err(ChangeError::BrokenChain {
                        id: id.to_owned(),
                        expected: c.new,
                        got: old,
                    });
                }
                c.new = new;
            }
            None => {
                self.changes.insert(id.to_owned(), LeafChange { id: id.to_owned(), old, new });
            }
        }
        Ok(())
    }

    /// Record an upsert of `id` to `new` over `old`.
    pub fn upsert(
        &mut self,
        id: &str,
        old: Option<Digest>,
        new: Digest,
    ) -> Result<(), ChangeError> {
        self.push(id, old, Some(new))
    }

    /// Record the removal of live leaf `id` whose digest was `old` (a delete or a tombstone).
    pub fn remove(&mut self, id: &str, old: Digest) -> Result<(), ChangeError> {
        self.push(id, Some(old), None)
    }

    /// Number of ids changed.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True when no id is changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The net change of every id, sorted by id (no-op changes included).
    pub fn iter(&self) -> impl Iterator<Item = &LeafChange> + '_ {
        self.changes.values()
    }

    /// The per-path-node deltas of the batch, sorted by path; no-op changes produce nothing.
    ///
    /// Memory: one small row per (changed id, ancestor path) — references into the set, not
    /// copies — sorted once; a nested map per path node would allocate a map node for every
    /// parent, which for ids spread over many parents costs ~1.4 KB per change.
    pub fn path_deltas(&self) -> Vec<PathDelta> {
        let changes: Vec<&LeafChange> = self.changes.values().filter(|c| c.old != c.new).collect();
        let mut rows: Vec<Row<'_>> = Vec::with_capacity(changes.len() * 3);
        for (i, c) in changes.iter().enumerate() {
            let Ok((parent, seg)) = split_id(&c.id) else {
                continue;
            };
            rows.push((parent, seg, false, i));
            let mut child = parent;
            while !child.is_empty() {
                let (grand, seg) = match child.rfind('.') {
                    Some(at) => (&child[..at], &child[at + 1..]),
                    None => ("", child),
                };
                rows.push((grand, seg, true, i));
                child = grand;
            }
        }
        rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        let deltas: Vec<Delta> = changes.iter().map(|c| Delta::leaf(c.old, c.new)).collect();
        // Rows of one path node are adjacent; within them, a leaf row is an entry of its own
        // and the rows of one child path (same segment) are one entry. Every vector gets its
        // exact capacity: grown by pushing, one per changed parent, they held ~3× the memory.
        let by_path = |a: &Row<'_>, b: &Row<'_>| a.0 == b.0;
        let by_entry = |a: &Row<'_>, b: &Row<'_>| a.2 && b.2 && a.1 == b.1;
        let mut out: Vec<PathDelta> = Vec::with_capacity(rows.chunk_by(by_path).count());
        for run in rows.chunk_by(by_path) {
            let mut entries = Vec::with_capacity(run.chunk_by(by_entry).count());
            let mut total = Delta::ZERO;
            for group in run.chunk_by(by_entry) {
                let (_, segment, is_path, i) = group[0];
                // A child path collects the deltas of every changed leaf below it.
                let delta = group[1..].iter().fold(deltas[i], |d, r| d.combine(deltas[r.3]));
                if delta.is_zero() {
                    continue;
                }
                total = total.combine(delta);
                let segment = segment.to_owned();
                entries.push(if is_path {
                    EntryChange::Path { segment, delta }
                } else {
                    // Ids are unique in the set, so a leaf entry occurs once.
                    let c = changes[i];
                    EntryChange::Leaf { segment, old: c.old, new: c.new }
                });
            }
            if !entries.is_empty() {
                out.push(PathDelta { path: run[0].0.to_owned(), total, entries });
            }
        }
        out
    }
}

/// A row of [`ChangeSet::path_deltas`]: (path node, entry segment, entry is a child path,
/// index of the leaf change).
type Row<'a> = (&'a str, &'a str, bool, usize);
