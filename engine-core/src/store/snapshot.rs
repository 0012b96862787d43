use async_trait::async_trait;
use bytes::Bytes;
use sync_engine_merkle::Digest;

use crate::error::Result;

/// A saved cuckoo filter, tied to the L3 Merkle root it was built at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSnapshot {
    /// The filter's export bytes (versioned and checksummed by the filter crate).
    pub bytes: Bytes,
    /// L3's root hash when the snapshot was taken; the snapshot is trusted at start only if
    /// L3's root still equals it.
    pub merkle_root: Digest,
    /// Number of entries in the filter.
    pub entries: u64,
    /// When it was taken, unix ms.
    pub taken_at_ms: u64,
}

/// Where filter snapshots live (the WAL file, in production).
///
/// Promises: `save` is atomic (a crash leaves the previous snapshot or the new one, never a
/// mix) and durable on return; `load` returns the last saved snapshot.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Replace the stored snapshot.
    async fn save_snapshot(&self, snapshot: &FilterSnapshot) -> Result<()>;

    /// The stored snapshot, if any.
    async fn load_snapshot(&self) -> Result<Option<FilterSnapshot>>;
}
