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
