use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::Result;
use crate::store::{FilterSnapshot, SnapshotStore};

/// An in-memory [`SnapshotStore`]; clones share the stored snapshot.
#[derive(Clone, Default)]
pub struct MemorySnapshots {
    slot: Arc<Mutex<Option<FilterSnapshot>>>,
}

impl MemorySnapshots {
    /// An empty store.
    pub fn new() -> MemorySnapshots {
        MemorySnapshots::default()
    }
}

#[async_trait]
impl SnapshotStore for MemorySnapshots {
    async fn save_snapshot(&self, snapshot: &FilterSnapshot) -> Result<()> {
        *self.slot.lock() = Some(snapshot.clone());
        Ok(())
    }

    async fn load_snapshot(&self) -> Result<Option<FilterSnapshot>> {
        Ok(self.slot.lock().clone())
    }
}
