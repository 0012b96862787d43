use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::ObjectId;
use crate::item::SyncItem;

use super::PutOutcome;

/// One write to the cache, with an optional time-to-live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The item (a write or a tombstone).
    pub item: SyncItem,
    /// Expire after this long; `None` keeps it until evicted. Items with a TTL are not part of
    /// the cache's Merkle shadow (they are not expected in L3).
    pub ttl: Option<Duration>,
}

impl CacheEntry {
    /// An entry without TTL.
    pub fn new(item: SyncItem) -> CacheEntry {
        CacheEntry { item, ttl: None }
    }
}

/// What [`CacheStore::audit`] found under a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Stored entries examined (live, tombstoned and TTL'd ones alike).
    pub checked: u64,
    /// Ids whose stored entry does not check out against the store's own integrity data
    /// (sorted, distinct): bytes that fail their checks, or an entry and its shadow leaf that
    /// disagree (a leaf with no entry, an entry with no leaf, different digests).
    pub corrupt: Vec<ObjectId>,
    /// Of `corrupt`, the ids whose entries were removed (when asked to evict).
    pub evicted: Vec<ObjectId>,
    /// Ids left alone because they changed while the audit looked at them (a write in flight):
    /// they are neither `corrupt` nor healthy; the next audit looks again.
    pub changing: u64,
}

/// L2, the shared cache.
///
/// Promises:
/// - **May forget**: anything may vanish at any time (TTL, eviction, restart); nothing may
///   depend on the cache for durability.
/// - **Newer wins**, enforced atomically inside the store: an older write never overwrites a
///   newer one; tombstones hide items and block older writes while they are kept.
/// - **One round trip per batch**: `put_batch` and `get_many` are pipelined.
/// - **TTL**: an entry written with a TTL is gone from `get_many` once it expires.
/// - Implementations that also implement [`super::MerkleStore`] (the L2 shadow) update it in
///   the same atomic step as the data; TTL'd entries are not in the shadow.
/// - **Errors**: unreachable → Temporary.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// Short backend name for errors, logs and metrics.
    fn backend(&self) -> &str;

    /// Fetch items by id, in the order asked; `None` for absent, expired or tombstoned ids.
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>>;

    /// Store a batch under the newer-wins rule, in one round trip.
    async fn put_batch(&self, entries: &[CacheEntry]) -> Result<PutOutcome>;

    /// Forget ids unconditionally (repair of entries L3 lacks, invalidation).
    async fn remove_many(&self, ids: &[ObjectId]) -> Result<()>;

    /// Cheap reachability check.
    async fn ping(&self) -> Result<()>;

    /// Deep audit of the entries under the dotted path `prefix` (`""`: all; `"a.b"`: ids
    /// starting with `a.b.`): every stored entry is checked against the store's own integrity
    /// data (for Redis: the content hash, the leaf digest, and the Merkle shadow's leaf), so
    /// entries changed behind the store's back (bit rot, a manual `SET`, a deleted key) are
    /// named even when the shadow does not show it. Reads the whole prefix: O(entries).
    ///
    /// With `evict`, the corrupt entries are also removed, in a way that keeps the shadow
    /// exact (a plain [`CacheStore::remove_many`] trusts the stored bytes, which are what is
    /// wrong); an entry that changed since it was checked is left alone. Nothing else changes.
    ///
    /// The default answers Unsupported: a store that cannot check its entries must say so,
    /// not report them healthy. A bad `prefix` is refused (InvalidInput) before anything is read.
    async fn audit(&self, prefix: &str, evict: bool) -> Result<AuditReport> {
        let _ = (prefix, evict);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("the {} cache cannot audit its entries", self.backend()),
        )
        .with_operation("audit"))
    }

    /// [`CacheStore::audit`] of the given ids only (they need not share a prefix): for a read
    /// that found a value refused as corrupt, to evict it so that L3's value can take its
    /// place. `checked` counts the ids asked. Same default (Unsupported).
    async fn audit_ids(&self, ids: &[ObjectId], evict: bool) -> Result<AuditReport> {
        let _ = (ids, evict);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("the {} cache cannot audit its entries", self.backend()),
        )
        .with_operation("audit"))
    }
}

/// Conveniences over [`CacheStore`].
#[async_trait]
pub trait CacheExt: CacheStore {
    /// One item.
    async fn get(&self, id: &ObjectId) -> Result<Option<SyncItem>> {
        Ok(self.get_many(std::slice::from_ref(id)).await?.pop().flatten())
    }

    /// True when a live, unexpired item is cached.
    async fn exists(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.get(id).await?.is_some())
    }

    /// Store one item, optionally with a TTL.
    async fn put(&self, item: SyncItem, ttl: Option<Duration>) -> Result<PutOutcome> {
        self.put_batch(&[CacheEntry { item, ttl }]).await
    }

    /// Store a tombstone for `id` at `version`.
    async fn delete(&self, id: &ObjectId, version: u64) -> Result<PutOutcome> {
        self.put_batch(&[CacheEntry::new(SyncItem::tombstone(id.clone(), version))]).await
    }
}

impl<T: CacheStore + ?Sized> CacheExt for T {}
