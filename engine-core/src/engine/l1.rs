//! L1: the in-process cache, bounded by bytes (quick_cache with a byte weigher).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use tokio::time::Instant;

use crate::{newer_wins, ObjectId, Stamp, SyncItem};

/// A cached item, or a *floor*: another instance published a newer stamp for the id, so
/// nothing older may be cached (or served) for it — it closes the race of a backend read that
/// started before the invalidation and would otherwise cache the old value after it.
///
/// Both variants are pointers: quick_cache keeps its entries inline in a table that grows by
/// doubling, so a small slot keeps the table's slack (and the moment it holds the old and the
/// new array at once) small — an inline item made it ~10 MB of a 16 MiB budget's peak heap —
/// and a lookup clones a pointer instead of the item.
#[derive(Clone)]
enum Slot {
    Item(Arc<SyncItem>),
    Floor(Box<Stamp>),
}

impl Slot {
    /// The stamp the slot holds: the item's, or the floor.
    fn stamp(&self) -> Stamp {
        match self {
            Slot::Item(i) => i.stamp(),
            Slot::Floor(s) => **s,
        }
    }
}

#[derive(Clone)]
struct Entry {
    slot: Slot,
    cached_at: Instant,
}

/// Bytes an L1 entry costs beyond [`SyncItem::weight`] (which counts 96 bytes of the item's
/// own overhead): the cloned key, the cache slot, the shared allocation holding the item, the
/// shared-buffer header of the content.
/// Measured at ~215 bytes per entry over 100,000 entries of 512-byte items (x86-64, glibc).
const ENTRY_OVERHEAD: u64 = 128;

/// Weight of a floor marker beside its id.
const FLOOR_WEIGHT: u64 = 64;

#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<ObjectId, Entry> for ByBytes {
    fn weight(&self, key: &ObjectId, val: &Entry) -> u64 {
        match &val.slot {
            Slot::Item(item) => item.weight() as u64 + ENTRY_OVERHEAD,
            Slot::Floor(_) => key.as_str().len() as u64 + FLOOR_WEIGHT,
        }
    }
}

/// The L1 cache. Holds writes and tombstones (a tombstone answers "deleted" without a backend
/// call). Its weight never exceeds its capacity: quick_cache evicts on insert, and an item
/// heavier than the capacity is not cached at all.
///
/// One byte budget (`l1_max_bytes`) covers L1 *and* the writes not yet in L3 (the overlay,
/// itself bounded by backpressure at a fraction of the budget): the capacity is the budget
/// minus the unflushed bytes, in steps of 1/[`STEPS`] of the budget, and never below one step.
/// So cached plus unflushed items stay within the budget plus one step.
pub struct L1 {
    cache: RwLock<Cache<ObjectId, Entry, ByBytes>>,
    ttl: RwLock<Option<Duration>>,
    budget: AtomicU64,
    /// The capacity last applied (changed under the lock, read without it).
    applied: AtomicU64,
    resize: Mutex<()>,
}

/// Granularity of the capacity's share of the budget.
pub const STEPS: u64 = 16;

/// L1's capacity for `budget` bytes when `unflushed` bytes are pinned by the overlay.
fn capacity_beside(budget: u64, unflushed: u64) -> u64 {
    let step = (budget / STEPS).max(1);
    // Whole steps only: the capacity changes once per step the overlay crosses, not at every
    // flush (the overlay empties and refills each batch).
    let pinned = (unflushed / step).saturating_mul(step);
    budget.saturating_sub(pinned).max(step)
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
        L1 {
            cache: RwLock::new(build(max_bytes)),
            ttl: RwLock::new(ttl),
            budget: AtomicU64::new(max_bytes),
            applied: AtomicU64::new(max_bytes),
            resize: Mutex::new(()),
        }
    }

    /// Give L1 what the budget leaves beside `unflushed` bytes of writes not yet in L3
    /// (evicting if it shrinks). Cheap when the share did not change.
    pub fn share_with_unflushed(&self, unflushed: u64) {
        let target = capacity_beside(self.budget.load(Ordering::Relaxed), unflushed);
        if self.applied.load(Ordering::Relaxed) == target {
            return;
        }
        let _g = self.resize.lock();
        let target = capacity_beside(self.budget.load(Ordering::Relaxed), unflushed);
        if self.applied.swap(target, Ordering::Relaxed) != target {
            self.cache.read().set_capacity(target);
        }
    }

    /// The capacity currently applied (the budget's share beside unflushed writes).
    pub fn capacity(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// The cached item (tombstones included), unless older than the TTL.
    pub fn get(&self, id: &ObjectId) -> Option<SyncItem> {
        let e = self.cache.read().get(id)?;
        if let Some(ttl) = *self.ttl.read() {
            if e.cached_at.elapsed() > ttl {
                return None;
            }
        }
        match e.slot {
            Slot::Item(item) => Some(SyncItem::clone(&item)),
            Slot::Floor(_) => None,
        }
    }

    /// Cache `item` unless L1 holds a newer stamp for its id.
    pub fn put(&self, item: &SyncItem) {
        let cache = self.cache.read();
        if let Some(cur) = cache.get(item.id()) {
            let stored = cur.slot.stamp();
            // Equal to a floor is fine: the floor is exactly the item's stamp.
            let floor_met = matches!(&cur.slot, Slot::Floor(s) if **s == item.stamp());
            if !floor_met && !newer_wins(&item.stamp(), Some(&stored)) {
                return;
            }
        }
        let slot = Slot::Item(Arc::new(item.clone()));
        cache.insert(item.id().clone(), Entry { slot, cached_at: Instant::now() });
    }

    /// Another instance wrote `stamp` for `id`: drop an older entry. With `floor`, also keep a
    /// marker so that nothing older than `stamp` is cached for `id` afterwards (used when the
    /// id is cached or being read). An entry at `stamp` or newer stays.
    pub fn invalidate(&self, id: &ObjectId, stamp: Stamp, floor: bool) {
        let cache = self.cache.read();
        let cur = cache.get(id);
        let stored = cur.as_ref().map(|e| e.slot.stamp());
        if !newer_wins(&stamp, stored.as_ref()) {
            return;
        }
        if floor || cur.is_some() {
            let slot = Slot::Floor(Box::new(stamp));
            cache.insert(id.clone(), Entry { slot, cached_at: Instant::now() });
        }
    }

    /// Drop the entry of `id` if it is exactly `stamp` (a write that lost to a newer one in L3).
    pub fn forget(&self, id: &ObjectId, stamp: Stamp) {
        let cache = self.cache.read();
        if matches!(cache.get(id), Some(Entry { slot: Slot::Item(i), .. }) if i.stamp() == stamp) {
            cache.remove(id);
        }
    }

    /// Drop the cached item of `id` if it is older than `stamp` (a newer write committed; a
    /// floor stays as it is).
    pub fn drop_older(&self, id: &ObjectId, stamp: Stamp) {
        let cache = self.cache.read();
        if matches!(cache.get(id), Some(Entry { slot: Slot::Item(i), .. }) if newer_wins(&stamp, Some(&i.stamp())))
        {
            cache.remove(id);
        }
    }

    /// Drop everything (the invalidation channel may have missed messages).
    pub fn clear(&self) {
        self.cache.read().clear();
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
        let _g = self.resize.lock();
        if self.budget.swap(max_bytes, Ordering::Relaxed) != max_bytes {
            *self.cache.write() = build(max_bytes);
            self.applied.store(max_bytes, Ordering::Relaxed);
        }
        *self.ttl.write() = ttl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(l1: &L1, n: usize) {
        for i in 0..n {
            let id = ObjectId::new(&format!("k.{i}")).unwrap();
            l1.put(&SyncItem::new(id, 1, vec![0u8; 300]));
        }
    }

    #[test]
    fn cached_plus_unflushed_bytes_stay_within_the_budget_plus_one_step() {
        let budget = 256 * 1024;
        let step = budget / STEPS;
        let l1 = L1::new(budget, None);
        fill(&l1, 2000);
        assert!(l1.bytes() > budget / 2, "L1 should use its whole budget first");
        for unflushed in [0, 1, step - 1, step, budget / 3, budget / 2, budget * 9 / 10, budget * 2]
        {
            l1.share_with_unflushed(unflushed);
            fill(&l1, 2000);
            let cap = l1.capacity();
            assert!(l1.bytes() <= cap + 400, "{} bytes over a capacity of {cap}", l1.bytes());
            assert!(cap >= step, "capacity {cap} below one step");
            assert!(
                cap + unflushed.min(budget) <= budget + step,
                "capacity {cap} beside {unflushed} unflushed exceeds the budget by more than a step"
            );
        }
        // The share comes back when the overlay drains.
        l1.share_with_unflushed(0);
        fill(&l1, 2000);
        assert_eq!(l1.capacity(), budget);
        assert!(l1.bytes() > budget / 2);
    }

    #[test]
    fn cache_slots_stay_pointer_sized() {
        // The table holds entries inline and grows by doubling: a slot that inlines the item
        // (~150 bytes) made the table's slack a visible share of the budget.
        assert!(std::mem::size_of::<Entry>() <= 32, "{} bytes", std::mem::size_of::<Entry>());
    }

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

    #[test]
    fn a_floor_hides_older_entries_and_refuses_older_puts() {
        let l1 = L1::new(1 << 20, None);
        let id = ObjectId::new("a").unwrap();
        let old = SyncItem::new(id.clone(), 1, "one");
        let new = SyncItem::new(id.clone(), 2, "two");
        l1.put(&old);
        l1.invalidate(&id, new.stamp(), false);
        assert!(l1.get(&id).is_none(), "the older entry is no longer served");
        l1.put(&old);
        assert!(l1.get(&id).is_none(), "a late read of the older value is not cached");
        l1.put(&new);
        assert_eq!(l1.get(&id).unwrap().version(), 2, "the published version is cached");
        l1.invalidate(&id, old.stamp(), true);
        assert_eq!(l1.get(&id).unwrap().version(), 2, "an older message changes nothing");
        let other = ObjectId::new("b").unwrap();
        l1.invalidate(&other, new.stamp(), false);
        assert_eq!(l1.len(), 1, "no marker for an id neither cached nor being read");
    }
}
