//! The overlay: items this engine acknowledged that L3 does not hold yet (pending in a batch,
//! being flushed, or diverted to the WAL). Reads consult it before the backends, so an item is
//! never read back older than acknowledged while it travels, whatever L1 evicted.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::{ObjectId, Stamp, SyncItem};

use super::batcher::PendingWrite;

/// Bytes an unflushed write costs beyond [`SyncItem::weight`]: its slots in the overlay's map
/// and in the open batch's map, each counted twice (hash tables grow by doubling, so a slot
/// costs up to twice its size). These bytes count against `l1_max_bytes`, which L1 and the
/// unflushed writes share; counting the item alone let the unflushed writes use ~1.8× what
/// was accounted (heap profile of the engine bench's RSS child, 2026-11-26).
const ENTRY_OVERHEAD: u64 = 2
    * (std::mem::size_of::<(ObjectId, SyncItem)>()
        + std::mem::size_of::<(ObjectId, PendingWrite)>()) as u64;

/// What an unflushed item counts against the budget.
fn cost(item: &SyncItem) -> u64 {
    item.weight() as u64 + ENTRY_OVERHEAD
}

#[derive(Default)]
struct Inner {
    items: HashMap<ObjectId, SyncItem>,
    bytes: u64,
}

/// Map of not-yet-in-L3 items with their total weight (bounded by backpressure).
#[derive(Default)]
pub struct Overlay {
    inner: Mutex<Inner>,
}

impl Overlay {
    /// Record an item on its way to L3 (kept if newer than what the overlay holds).
    pub fn put(&self, item: &SyncItem) {
        let mut i = self.inner.lock();
        let w = cost(item);
        match i.items.get(item.id()) {
            Some(cur) if !item.supersedes(Some(cur)) => {}
            Some(cur) => {
                let old = cost(cur);
                i.bytes = i.bytes.saturating_sub(old) + w;
                i.items.insert(item.id().clone(), item.clone());
            }
            None => {
                i.bytes += w;
                i.items.insert(item.id().clone(), item.clone());
            }
        }
    }

    /// The overlay's item for `id`.
    pub fn get(&self, id: &ObjectId) -> Option<SyncItem> {
        self.inner.lock().items.get(id).cloned()
    }

    /// L3 now holds these stamps: forget entries that are not newer than them.
    pub fn settle<'a>(&self, committed: impl IntoIterator<Item = (&'a ObjectId, Stamp)>) {
        let mut i = self.inner.lock();
        for (id, stamp) in committed {
            if let Some(cur) = i.items.get(id) {
                if cur.stamp() <= stamp {
                    let w = cost(cur);
                    i.items.remove(id);
                    i.bytes = i.bytes.saturating_sub(w);
                }
            }
        }
    }

    /// Another instance committed `stamp` for `id`: an older local entry is no longer the
    /// newest acknowledged value, so reads stop answering from it (its batch still travels;
    /// newer-wins makes it harmless in L2 and L3).
    pub fn supersede(&self, id: &ObjectId, stamp: Stamp) {
        let mut i = self.inner.lock();
        if let Some(cur) = i.items.get(id) {
            if crate::newer_wins(&stamp, Some(&cur.stamp())) {
                let w = cost(cur);
                i.items.remove(id);
                i.bytes = i.bytes.saturating_sub(w);
            }
        }
    }

    /// Items held, and the bytes they count against the budget (with their entry overhead).
    pub fn size(&self) -> (usize, u64) {
        let i = self.inner.lock();
        (i.items.len(), i.bytes)
    }
}
