use async_trait::async_trait;

use crate::error::Result;
use crate::item::SyncItem;

use super::{ArchiveStore, PutOutcome};

/// One pending WAL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEntry {
    /// Append sequence number, strictly increasing in append order.
    pub seq: u64,
    /// The write or tombstone.
    pub item: SyncItem,
}

/// Depth of the WAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Pending entries.
    pub items: u64,
    /// Pending payload bytes (approximate encoded size).
    pub bytes: u64,
}

/// The local write-ahead log: the durability lifeline while L3 is down.
///
/// Promises:
/// - **Durable on return**: when `append` returns Ok, the items survive a crash or power loss.
/// - **All or nothing**: an append either stores every item of the call or none.
/// - **Bounded**: an append that would exceed the configured items or bytes returns a
///   Backpressure error (status Temporary) and stores nothing.
/// - **Order**: `peek` returns pending entries oldest first, in append order, across reopen.
/// - **Removal only on command**: entries leave only through `remove_through`, which the
///   drain calls after L3 committed them; a crash in between replays them harmlessly.
#[async_trait]
pub trait Wal: Send + Sync {
    /// Append items durably; returns the sequence number of the last one.
    async fn append(&self, items: &[SyncItem]) -> Result<u64>;

    /// Up to `limit` oldest pending entries, in append order.
    async fn peek(&self, limit: usize) -> Result<Vec<WalEntry>>;

    /// Remove every pending entry with `seq <= through`; returns how many were removed.
    async fn remove_through(&self, through: u64) -> Result<u64>;

    /// Pending items and bytes.
    async fn stats(&self) -> Result<WalStats>;
}

/// Result of draining the WAL into an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Entries committed to the archive and removed from the WAL.
    pub drained: u64,
    /// Batches written.
    pub batches: u64,
    /// What the archive did with them.
    pub outcome: PutOutcome,
}

/// Conveniences over [`Wal`].
#[async_trait]
pub trait WalExt: Wal {
    /// Drain pending entries into `archive` in append order, `batch` at a time, removing each
    /// batch only after the archive committed it. Stops at the first archive error, keeping
    /// the failed batch and everything after it.
    async fn drain_to(&self, archive: &dyn ArchiveStore, batch: usize) -> Result<DrainReport> {
        let mut report = DrainReport::default();
        loop {
            let entries = self.peek(batch.max(1)).await?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                break;
            };
            let items: Vec<SyncItem> = entries.into_iter().map(|e| e.item).collect();
            let outcome = archive.put_batch(&items).await?;
            self.remove_through(last).await?;
            report.drained += items.len() as u64;
            report.batches += 1;
            report.outcome = report.outcome.merge(outcome);
        }
        Ok(report)
    }
}

impl<T: Wal + ?Sized> WalExt for T {}
