//! The storage contracts. Each trait holds the few batch primitives a backend must implement;
//! conveniences live in extension traits with blanket impls ([`ArchiveExt`], [`CacheExt`],
//! [`MerkleExt`], [`WalExt`]). Every promise written here is checked by the conformance suite
//! (feature `conformance`), which every backend, the in-memory fakes included, runs.

mod archive;
mod bus;
mod cache;
mod merkle;
mod snapshot;
mod wal;

pub use archive::{ArchiveExt, ArchiveStore, KeyScan};
pub use bus::{
    BusEvent, Change, InstanceId, Invalidation, InvalidationBus, Subscription,
    MAX_CHANGES_PER_MESSAGE, SUBSCRIPTION_BUFFER,
};
pub use cache::{AuditReport, CacheEntry, CacheExt, CacheStore};
pub use merkle::{MerkleExt, MerkleStore};
pub use snapshot::{FilterSnapshot, SnapshotStore};
pub use wal::{DrainReport, Wal, WalEntry, WalExt, WalStats};

/// What a `put_batch` did with each item of the batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOutcome {
    /// Items stored because they were newer than what the store held.
    pub applied: usize,
    /// Items ignored because the store already held the same or a newer stamp.
    pub stale: usize,
}

impl PutOutcome {
    /// Add the counts of another batch.
    pub fn merge(self, other: PutOutcome) -> PutOutcome {
        PutOutcome { applied: self.applied + other.applied, stale: self.stale + other.stale }
    }
}
