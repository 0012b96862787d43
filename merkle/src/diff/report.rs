//! What a diff reports: the differing ids, the work done, and why it failed.

use crate::key::{IdError, NodeKey};

/// How an id differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiffKind {
    /// Live in A only.
    OnlyInA,
    /// Live in B only.
    OnlyInB,
    /// Live in both with different leaf digests.
    Different,
}

/// One differing id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Difference {
    /// The full dotted id.
    pub id: String,
    /// How it differs.
    pub kind: DiffKind,
}

/// The result of a [`diff`](super::diff): the exact differing ids and the work done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Every id live on one side only or with different digests, sorted by id.
    pub differences: Vec<Difference>,
    /// Node pairs whose values were compared.
    pub nodes_compared: u64,
    /// Node children asked for (both sides together).
    pub children_fetched: u64,
    /// `children_many` calls made (both sides together).
    pub batches: u64,
    /// Rounds of calls: the diff waits for each round's answers (up to [`CALLS_IN_FLIGHT`](super::CALLS_IN_FLIGHT)
    /// calls per side, concurrently) before the next, so these are its sequential round trips.
    pub rounds: u64,
    /// Buckets and entries received from both sides.
    pub children_received: u64,
}

impl DiffReport {
    /// The differing ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.differences.iter().map(|d| d.id.as_str())
    }
}

/// Which side of a diff misbehaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first source.
    A,
    /// The second source.
    B,
}

/// Why a diff failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError<EA, EB> {
    /// Source A failed.
    #[error("source A failed: {0}")]
    A(EA),
    /// Source B failed.
    #[error("source B failed: {0}")]
    B(EB),
    /// The prefix is not a dotted path.
    #[error("invalid diff prefix: {0}")]
    Prefix(#[from] IdError),
    /// A source answered something no tree can hold.
    #[error("source {side:?} answered malformed children for {key:?}: {reason}")]
    Malformed {
        /// The side.
        side: Side,
        /// The node asked about.
        key: NodeKey,
        /// What was wrong.
        reason: &'static str,
    },
}
