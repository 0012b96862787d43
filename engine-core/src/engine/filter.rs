//! The engine's view of the cuckoo filter: insert every id before its write is acknowledged,
//! answer "absent" only while trusted, rebuild in place, snapshot tied to L3's root.
//!
//! Rule kept by the engine: ids are never removed from the filter (a delete leaves its
//! fingerprint; it costs a false positive, never a false negative). A rebuild clears and refills
//! it. Because the filter crate's insert is not idempotent, an id is inserted only when the
//! filter does not already answer "maybe present" for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use sync_engine_cuckoo::{CuckooFilter, TrustState};

use crate::ObjectId;

/// The filter slot (replaced whole when a snapshot is restored) and its insert counter.
pub struct Filter {
    current: RwLock<Arc<CuckooFilter>>,
    inserts_since_snapshot: AtomicU64,
}

impl Filter {
    /// An empty, untrusted filter sized for `capacity` ids.
    pub fn new(capacity: u64) -> Filter {
        let cap = usize::try_from(capacity).unwrap_or(usize::MAX);
        Filter {
            current: RwLock::new(Arc::new(CuckooFilter::with_capacity(cap))),
            inserts_since_snapshot: AtomicU64::new(0),
        }
    }

    /// The current filter.
    pub fn get(&self) -> Arc<CuckooFilter> {
        self.current.read().clone()
    }

    /// Replace the filter (a restored snapshot).
    pub fn replace(&self, f: CuckooFilter) {
        *self.current.write() = Arc::new(f);
        self.inserts_since_snapshot.store(0, Ordering::Relaxed);
    }

    /// Make sure `id` answers "maybe present". On failure (the filter cannot grow any more) the
    /// filter stops being trusted, so no lookup can get a false "absent".
    pub fn note(&self, id: &ObjectId) {
        let f = self.current.read();
        if f.contains(id.as_str().as_bytes()) {
            return;
        }
        if let Err(e) = f.insert(id.as_str().as_bytes()) {
            tracing::error!(error = %e, "cuckoo filter full: marking it untrusted");
            f.trust().invalidate();
        } else {
            self.inserts_since_snapshot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True only when the filter is trusted and does not hold `id`.
    #[inline]
    pub fn definitely_absent(&self, id: &ObjectId) -> bool {
        self.current.read().definitely_absent(id.as_str().as_bytes())
    }

    /// Trust state.
    pub fn trust(&self) -> TrustState {
        self.current.read().trust().state()
    }

    /// Inserts since the last snapshot.
    pub fn inserts_since_snapshot(&self) -> u64 {
        self.inserts_since_snapshot.load(Ordering::Relaxed)
    }

    /// A snapshot was taken.
    pub fn snapshotted(&self) {
        self.inserts_since_snapshot.store(0, Ordering::Relaxed);
    }

    /// Number of ids held.
    pub fn len(&self) -> u64 {
        self.current.read().len()
    }
}
