use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use sync_engine_merkle::{Children, MemTree, NodeKey, NodeValue};
use tokio::time::Instant;

use super::tree_op;
use crate::error::Result;
use crate::item::{newer_wins, ContentHash, SyncItem};
use crate::store::{AuditReport, CacheEntry, CacheStore, MerkleStore, PutOutcome};
use crate::ObjectId;

struct Slot {
    item: SyncItem,
    expires_at: Option<Instant>,
    /// Changed behind the store's back ([`MemoryCache::corrupt`]): refused on read.
    corrupt: bool,
}

impl Slot {
    fn alive(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }

    /// Changed behind the store's back, or a payload that does not match its content hash.
    fn damaged(&self) -> bool {
        self.corrupt || ContentHash::of(self.item.content()) != *self.item.content_hash()
    }
}

#[derive(Default)]
struct State {
    slots: HashMap<ObjectId, Slot>,
    /// Shadow tree over live items written without a TTL.
    tree: MemTree,
}

impl State {
    fn evict(&mut self, ids: &[ObjectId]) {
        for id in ids {
            self.slots.remove(id);
            tree_op(self.tree.remove(id.as_str()));
        }
    }
}

/// An in-memory [`CacheStore`] + shadow [`MerkleStore`]. TTLs run on `tokio::time`, so a test
/// with a paused clock expires entries by advancing it. Expired entries behave as absent (for
/// newer-wins too: an expired tombstone no longer blocks). Clones share state; [`clear`]
/// simulates a restart that lost everything.
///
/// [`clear`]: MemoryCache::clear
#[derive(Clone, Default)]
pub struct MemoryCache {
    state: Arc<Mutex<State>>,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }

    /// Forget everything, as a restarted or flushed Redis would.
    pub fn clear(&self) {
        let mut s = self.state.lock();
        s.slots.clear();
        s.tree = MemTree::default();
    }

    /// Overwrite an entry behind the engine's back, bypassing newer-wins (for repair tests):
    /// the shadow tree follows the data, as it would in a real store.
    pub fn tamper(&self, item: SyncItem) {
        let mut s = self.state.lock();
        tree_op(s.tree.upsert(item.id().as_str(), item.leaf_digest()));
        s.slots.insert(item.id().clone(), Slot { item, expires_at: None, corrupt: false });
    }

    /// Replace the stored payload of `id` behind the store's back, as a raw byte edit of a
    /// real cache would: the stamp (content hash, version) and the shadow stay as they were,
    /// so the shadow no longer describes the entry. Reads refuse it (Corrupt), as the Redis
    /// store's integrity check does; [`CacheStore::audit`] finds it. False when `id` is absent.
    pub fn corrupt(&self, id: &ObjectId, content: impl Into<bytes::Bytes>) -> bool {
        let mut s = self.state.lock();
        let Some(slot) = s.slots.get_mut(id) else { return false };
        let it = &slot.item;
        let state = it.state().map(str::to_owned);
        slot.item =
            SyncItem::from_stored(id.clone(), it.stamp(), it.updated_at(), content.into(), state);
        slot.corrupt = true;
        true
    }

    /// Number of live, unexpired entries.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.state.lock().slots.values().filter(|s| s.alive(now) && !s.item.is_tombstone()).count()
    }

    /// True when no live entry is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    fn backend(&self) -> &str {
        "memory"
    }

    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        let now = Instant::now();
        let s = self.state.lock();
        ids.iter()
            .map(|id| match s.slots.get(id).filter(|slot| slot.alive(now)) {
                Some(slot) if slot.corrupt => Err(crate::Error::new(
                    crate::ErrorKind::Corrupt,
                    format!("value of {id}: changed behind the cache's back"),
                )
                .with_operation("get_many")),
                Some(slot) if !slot.item.is_tombstone() => Ok(Some(slot.item.clone())),
                _ => Ok(None),
            })
            .collect()
    }

    async fn put_batch(&self, entries: &[CacheEntry]) -> Result<PutOutcome> {
        let now = Instant::now();
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let mut outcome = PutOutcome::default();
        for e in entries {
            let id = e.item.id();
            let stored =
                s.slots.get(id).filter(|slot| slot.alive(now)).map(|slot| slot.item.stamp());
            if !newer_wins(&e.item.stamp(), stored.as_ref()) {
                outcome.stale += 1;
                continue;
            }
            if e.item.is_tombstone() || e.ttl.is_some() {
                tree_op(s.tree.remove(id.as_str()));
            } else {
                tree_op(s.tree.upsert(id.as_str(), e.item.leaf_digest()));
            }
            let expires_at = e.ttl.map(|ttl| now + ttl);
            s.slots.insert(id.clone(), Slot { item: e.item.clone(), expires_at, corrupt: false });
            outcome.applied += 1;
        }
        Ok(outcome)
    }

    async fn remove_many(&self, ids: &[ObjectId]) -> Result<()> {
        let mut s = self.state.lock();
        for id in ids {
            s.slots.remove(id);
            tree_op(s.tree.remove(id.as_str()));
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    /// Items are kept as Rust values and the shadow changes with them under one lock, so the
    /// only thing to check is each item's payload against its content hash.
    async fn audit(&self, prefix: &str, evict: bool) -> Result<AuditReport> {
        sync_engine_merkle::validate_path(prefix).map_err(|e| {
            crate::Error::invalid(format!("audit prefix `{prefix}`: {e}")).with_operation("audit")
        })?;
        let now = Instant::now();
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let mut report = AuditReport::default();
        for (id, slot) in &s.slots {
            let under = prefix.is_empty()
                || id.as_str().strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.'));
            if !under || !slot.alive(now) {
                continue;
            }
            report.checked += 1;
            if slot.damaged() {
                report.corrupt.push(id.clone());
            }
        }
        report.corrupt.sort();
        if evict {
            s.evict(&report.corrupt);
            report.evicted = report.corrupt.clone();
        }
        Ok(report)
    }

    async fn audit_ids(&self, ids: &[ObjectId], evict: bool) -> Result<AuditReport> {
        let now = Instant::now();
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let mut corrupt: Vec<ObjectId> = ids
            .iter()
            .filter(|id| s.slots.get(*id).is_some_and(|slot| slot.alive(now) && slot.damaged()))
            .cloned()
            .collect();
        corrupt.sort();
        corrupt.dedup();
        let evicted = if evict {
            s.evict(&corrupt);
            corrupt.clone()
        } else {
            Vec::new()
        };
        Ok(AuditReport { checked: ids.len() as u64, corrupt, evicted, changing: 0 })
    }
}

#[async_trait]
impl MerkleStore for MemoryCache {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        Ok(self.state.lock().tree.node(key))
    }

    async fn children(&self, key: &NodeKey) -> Result<Children> {
        Ok(self.state.lock().tree.children(key))
    }
}
