use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::item::SyncItem;

use super::PutOutcome;

/// One page of a keyset-paginated scan: live ids starting with `prefix` (byte-wise,
/// case-sensitive, no wildcards: `_` and `%` are ordinary characters), strictly greater than
/// `after`, ascending by bytes, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScan {
    /// Byte prefix; empty scans everything.
    pub prefix: String,
    /// Resume after this id (the last id of the previous page).
    pub after: Option<ObjectId>,
    /// Page size (at least 1).
    pub limit: usize,
}

impl KeyScan {
    /// The first page of ids under `prefix`.
    pub fn prefix(prefix: impl Into<String>, limit: usize) -> KeyScan {
        KeyScan { prefix: prefix.into(), after: None, limit: limit.max(1) }
    }

    /// The page after `last`.
    pub fn next_page(&self, last: &ObjectId) -> KeyScan {
        KeyScan { prefix: self.prefix.clone(), after: Some(last.clone()), limit: self.limit }
    }
}

/// L3, the archive: the ground truth.
///
/// Promises:
/// - **Newer wins**: `put_batch` stores an item only if its [`crate::Stamp`] is greater than the
///   stored one ([`crate::newer_wins`]); equal or older stamps are ignored and counted stale.
///   Replaying a batch is harmless; an older write never overwrites a newer one.
/// - **Tombstones**: a tombstone is stored like a write. It hides the item from `get_many`,
///   scans and counts, and blocks every older write from resurrecting it.
/// - **Atomic batches**: one `put_batch` is one transaction: a reader sees all of it or none,
///   and on error nothing of it is stored.
/// - **Keyset scans**: `scan_keys` pages never use OFFSET; following `after` returns every live
///   id present for the whole scan exactly once, even with concurrent inserts.
/// - **Exact prefixes**: prefix operations are byte-wise and case-sensitive.
/// - **Errors**: unreachable backend → status Temporary (retry, divert to the WAL); rejected
///   input → Permanent (never retried).
/// - Implementations that also implement [`super::MerkleStore`] commit the Merkle change in the
///   same transaction as the items: every Merkle answer given after `put_batch` returned
///   describes the batch (the SQL store commits the batch's leaf changes with the items and
///   folds them into its node rows before any Merkle read).
#[async_trait]
pub trait ArchiveStore: Send + Sync {
    /// Short backend name for errors, logs and metrics (`sqlite`, `postgres`, `memory`, ...).
    fn backend(&self) -> &str;

    /// Fetch items by id, in the order asked; `None` for absent or tombstoned ids.
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>>;

    /// Store a batch in one transaction under the newer-wins rule. A batch may contain the
    /// same id more than once: the newest stamp wins.
    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome>;

    /// One page of live ids ([`KeyScan`]).
    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>>;

    /// One page of ids for filling the engine's absent-id filter: keyset-paginated, ascending
    /// and each id once like [`scan_keys`](Self::scan_keys), but the page may also hold ids
    /// whose latest write is a tombstone (a superset of the live ids; never an id that was
    /// never written). A store answers it from an index alone where that is cheaper than
    /// testing each row; an extra id only costs the filter a false positive, never a false
    /// "absent". The default is `scan_keys`.
    async fn scan_filter_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        self.scan_keys(scan).await
    }

    /// Number of live items whose id starts with `prefix` (empty: all).
    async fn count(&self, prefix: &str) -> Result<u64>;

    /// Delete tombstones whose `updated_at` is older than `older_than_ms` (unix ms); returns how
    /// many. Live items are never touched.
    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64>;

    /// Cheap reachability check (health probes, circuit-breaker half-open probes).
    async fn ping(&self) -> Result<()>;
}

/// Conveniences over [`ArchiveStore`], for every implementation.
#[async_trait]
pub trait ArchiveExt: ArchiveStore {
    /// One item, or `None` if absent or deleted.
    async fn get(&self, id: &ObjectId) -> Result<Option<SyncItem>> {
        Ok(self.get_many(std::slice::from_ref(id)).await?.pop().flatten())
    }

    /// True when a live item exists.
    async fn exists(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.get(id).await?.is_some())
    }

    /// Store a tombstone for `id` at `version`.
    async fn delete(&self, id: &ObjectId, version: u64) -> Result<PutOutcome> {
        self.put_batch(&[SyncItem::tombstone(id.clone(), version)]).await
    }

    /// Every live id under `prefix`, by keyset pages of `page` ids.
    async fn all_keys(&self, prefix: &str, page: usize) -> Result<Vec<ObjectId>> {
        let mut scan = KeyScan::prefix(prefix, page);
        let mut out = Vec::new();
        loop {
            let ids = self.scan_keys(&scan).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let full = ids.len() >= scan.limit;
            out.extend(ids);
            if !full {
                break;
            }
            scan = scan.next_page(&last);
        }
        Ok(out)
    }

    /// Tombstone every live id starting with `prefix` at `version`; returns how many were
    /// deleted. An empty prefix is refused (it would delete everything).
    async fn delete_prefix(&self, prefix: &str, version: u64, page: usize) -> Result<u64> {
        if prefix.is_empty() {
            return Err(Error::invalid("delete_prefix: an empty prefix is refused")
                .with_operation("delete_prefix")
                .with_backend(self.backend().to_owned()));
        }
        let mut deleted = 0;
        let mut scan = KeyScan::prefix(prefix, page);
        loop {
            let ids = self.scan_keys(&scan).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let full = ids.len() >= scan.limit;
            let batch: Vec<SyncItem> =
                ids.into_iter().map(|id| SyncItem::tombstone(id, version)).collect();
            deleted += self.put_batch(&batch).await?.applied as u64;
            if !full {
                break;
            }
            scan = scan.next_page(&last);
        }
        Ok(deleted)
    }
}

impl<T: ArchiveStore + ?Sized> ArchiveExt for T {}
