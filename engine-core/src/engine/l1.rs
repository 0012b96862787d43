//! L1: the in-process cache, bounded by bytes (quick_cache with a byte weigher).

use std::time::Duration;

use parking_lot::RwLock;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use tokio::time::Instant;

use crate::{ObjectId, SyncItem};

#[derive(Clone)]
struct Entry {
    item: SyncItem,
    cached_at: Instant,
}

#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<ObjectId, Entry> for ByBytes {
    fn weight(&self, _key: &ObjectId, val: &Entry) -> u64 {
        val.item.weight() as u64
    }
}

/// The L1 cache. Holds writes and tombstones (a tombstone answers "deleted" without a backend
/// call). Its weight never exceeds the byte budget: quick_cache evicts on insert, and an item
/// heavier than the budget is not cached at all.
pub struct L1 {
    cache: RwLock<Cache<ObjectId, Entry, ByBytes>>,
    ttl: RwLock<Option<Duration>>,
}

fn build(max_bytes: u64) -> Cache<ObjectId, Entry, ByBytes> {
    // Estimate ~1 KiB per item for the index sizing; the weight bound is what holds.
    let estimated =
        usize::try_from((max_bytes / 1024).clamp(64, 16 * 1024 * 1024)).unwrap_or(1 << 20);
    Cache::with_weighter(estimated, max_bytes, ByBytes)
}

impl L1 {
    /// A cache of `max_bytes`, with entries older than `ttl` treated as absent.
    pub fn new(max_bytes: u64, ttl: Option<Duration>) -> L1 {
        L1 { cache: RwLock::new(build(max_bytes)), ttl: RwLock::new(ttl) }
    }

    /// The cached item (tombstones included), unless older than the TTL.
    pub fn get(&self, id: &ObjectId) -> Option<SyncItem> {
        let e = self.cache.read().get(id)?;
        if let Some(ttl) = *self.ttl.read() {
            if e.cached_at.elapsed() > ttl {
                return None;
            }
        }
        Some(e.item)
    }

    /// Cache `item` unless L1 holds a newer stamp for its id.
    pub fn put(&self, item: &SyncItem) {
        let cache = self.cache.read();
        if let Some(cur) = cache.get(item.id()) {
            if !item.supersedes(Some(&cur.item)) {
                return;
            }
        }
        cache.insert(item.id().clone(), Entry { item: item.clone(), cached_at: Instant::now() });
    }

    /// Drop an id (invalidation).
    pub fn remove(&self, id: &ObjectId) {
        self.cache.read().remove(id);
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.cache.read().weight()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.cache.read().len()
    }

    /// Apply a new byte budget and TTL (hot reload). A new budget starts an empty cache.
    pub fn reconfigure(&self, max_bytes: u64, ttl: Option<Duration>) {
        if self.cache.read().capacity() != max_bytes {
            *self.cache.write() = build(max_bytes);
        }
        *self.ttl.write() = ttl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_exceeds_budget_by_more_than_one_item() {
        let l1 = L1::new(64 * 1024, None);
        for i in 0..2000 {
            let id = ObjectId::new(&format!("k.{i}")).unwrap();
            l1.put(&SyncItem::new(id, 1, vec![0u8; 300]));
            assert!(l1.bytes() <= 64 * 1024 + 400, "{} bytes", l1.bytes());
        }
        assert!(l1.len() > 50);
    }

    #[test]
    fn keeps_the_newer_item() {
        let l1 = L1::new(1 << 20, None);
        let id = ObjectId::new("a").unwrap();
        l1.put(&SyncItem::new(id.clone(), 2, "two"));
        l1.put(&SyncItem::new(id.clone(), 1, "one"));
        assert_eq!(l1.get(&id).unwrap().version(), 2);
    }
}
