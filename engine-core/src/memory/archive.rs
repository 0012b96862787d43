use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use sync_engine_merkle::{Children, MemTree, NodeKey, NodeValue};

use super::tree_op;
use crate::error::Result;
use crate::item::{newer_wins, SyncItem};
use crate::store::{ArchiveStore, KeyScan, MerkleStore, PutOutcome};
use crate::ObjectId;

#[derive(Default)]
struct State {
    items: BTreeMap<ObjectId, SyncItem>,
    tree: MemTree,
}

/// An in-memory [`ArchiveStore`] + [`MerkleStore`]: a `BTreeMap` of items and tombstones and a
/// Merkle tree of the live ones, changed together under one lock (the "transaction").
/// Clones share the same state.
#[derive(Clone, Default)]
pub struct MemoryArchive {
    state: Arc<Mutex<State>>,
}

impl MemoryArchive {
    /// An empty archive.
    pub fn new() -> MemoryArchive {
        MemoryArchive::default()
    }

    /// Number of stored rows, tombstones included (for tests).
    pub fn rows(&self) -> usize {
        self.state.lock().items.len()
    }

    /// The stored row for `id`, tombstone included (for tests).
    pub fn raw(&self, id: &ObjectId) -> Option<SyncItem> {
        self.state.lock().items.get(id).cloned()
    }
}

#[async_trait]
impl ArchiveStore for MemoryArchive {
    fn backend(&self) -> &str {
        "memory"
    }

    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        let state = self.state.lock();
        Ok(ids
            .iter()
            .map(|id| state.items.get(id).filter(|i| !i.is_tombstone()).cloned())
            .collect())
    }

    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome> {
        let mut state = self.state.lock();
        let mut outcome = PutOutcome::default();
        for item in items {
            let stored = state.items.get(item.id()).map(SyncItem::stamp);
            if !newer_wins(&item.stamp(), stored.as_ref()) {
                outcome.stale += 1;
                continue;
            }
            if item.is_tombstone() {
                tree_op(state.tree.remove(item.id().as_str()));
            } else {
                tree_op(state.tree.upsert(item.id().as_str(), item.leaf_digest()));
            }
            state.items.insert(item.id().clone(), item.clone());
            outcome.applied += 1;
        }
        Ok(outcome)
    }

    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        let state = self.state.lock();
        Ok(super::scan_page(&state.items, scan, |i| !i.is_tombstone()))
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        let state = self.state.lock();
        Ok(state.items.iter().filter(|(id, i)| id.has_prefix(prefix) && !i.is_tombstone()).count()
            as u64)
    }

    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64> {
        let mut state = self.state.lock();
        let before = state.items.len();
        state.items.retain(|_, i| !(i.is_tombstone() && i.updated_at() < older_than_ms));
        Ok((before - state.items.len()) as u64)
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl MerkleStore for MemoryArchive {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        Ok(self.state.lock().tree.node(key))
    }

    async fn children(&self, key: &NodeKey) -> Result<Children> {
        Ok(self.state.lock().tree.children(key))
    }
}
