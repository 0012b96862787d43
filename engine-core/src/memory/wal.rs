use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::item::SyncItem;
use crate::store::{FilterSnapshot, SnapshotStore, Wal, WalEntry, WalStats};

struct State {
    entries: VecDeque<WalEntry>,
    next_seq: u64,
    bytes: u64,
}

/// An in-memory [`Wal`] (and [`SnapshotStore`], as the real WAL file is) keeping append order,
/// with the same bounds as the real one. Clones
/// share state, so a clone held by a test "survives" the engine being dropped, as a file would.
#[derive(Clone)]
pub struct MemoryWal {
    state: Arc<Mutex<State>>,
    max_items: u64,
    max_bytes: u64,
    snapshot: Arc<Mutex<Option<FilterSnapshot>>>,
}

impl Default for MemoryWal {
    fn default() -> Self {
        MemoryWal::new(u64::MAX, u64::MAX)
    }
}

impl MemoryWal {
    /// An empty WAL bounded by `max_items` pending items and `max_bytes` pending bytes.
    pub fn new(max_items: u64, max_bytes: u64) -> MemoryWal {
        MemoryWal {
            state: Arc::new(Mutex::new(State { entries: VecDeque::new(), next_seq: 1, bytes: 0 })),
            max_items,
            max_bytes,
            snapshot: Arc::default(),
        }
    }

    /// A new handle on the same log, as reopening the file after a restart would give.
    pub fn reopen(&self) -> MemoryWal {
        self.clone()
    }
}

#[async_trait]
impl Wal for MemoryWal {
    async fn append(&self, items: &[SyncItem]) -> Result<u64> {
        let mut s = self.state.lock();
        let add_bytes: u64 = items.iter().map(|i| i.weight() as u64).sum();
        let new_items = s.entries.len() as u64 + items.len() as u64;
        if new_items > self.max_items || s.bytes + add_bytes > self.max_bytes {
            return Err(Error::new(
                ErrorKind::Backpressure,
                format!(
                    "WAL full: {} items / {} bytes pending, limits {} / {}",
                    s.entries.len(),
                    s.bytes,
                    self.max_items,
                    self.max_bytes
                ),
            )
            .with_operation("append")
            .with_backend("memory-wal"));
        }
        for item in items {
            let seq = s.next_seq;
            s.next_seq += 1;
            s.entries.push_back(WalEntry { seq, item: item.clone() });
        }
        s.bytes += add_bytes;
        Ok(s.next_seq - 1)
    }

    async fn peek(&self, limit: usize) -> Result<Vec<WalEntry>> {
        Ok(self.state.lock().entries.iter().take(limit).cloned().collect())
    }

    async fn remove_through(&self, through: u64) -> Result<u64> {
        let mut s = self.state.lock();
        let mut removed = 0;
        while s.entries.front().is_some_and(|e| e.seq <= through) {
            if let Some(e) = s.entries.pop_front() {
                s.bytes = s.bytes.saturating_sub(e.item.weight() as u64);
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn stats(&self) -> Result<WalStats> {
        let s = self.state.lock();
        Ok(WalStats { items: s.entries.len() as u64, bytes: s.bytes })
    }
}

#[async_trait]
impl SnapshotStore for MemoryWal {
    async fn save_snapshot(&self, snapshot: &FilterSnapshot) -> Result<()> {
        *self.snapshot.lock() = Some(snapshot.clone());
        Ok(())
    }

    async fn load_snapshot(&self) -> Result<Option<FilterSnapshot>> {
        Ok(self.snapshot.lock().clone())
    }
}
