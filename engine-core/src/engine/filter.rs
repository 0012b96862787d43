//! The engine's view of the cuckoo filter: insert every id before its write is acknowledged,
//! answer "absent" only while trusted, rebuild in place, snapshot tied to L3's root.
//!
//! Rule kept by the engine: ids are never removed from the filter (a delete leaves its
//! fingerprint; it costs a false positive, never a false negative). A rebuild clears and refills
//! it. Because the filter crate's insert is not idempotent, an id is inserted only when the
//! filter does not already answer "maybe present" for it.
//!
//! Two filters, one answer: every id goes into a main filter (keyed by the id) and a confirming
//! filter (keyed by an independent 64-bit hash of the id). An id is "absent" when either filter
//! says so, so a lookup reaches a backend only when both give a false positive: about
//! `p_main²` (≈ 3e-6 at working fill instead of ≈ 2e-3) for 1.6 MB more per million ids. Only
//! the main filter's trust state counts; the two are cleared, restored and replaced together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use sync_engine_cuckoo::{CuckooFilter, SnapshotError, Trust, TrustState};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ObjectId;

/// Seed of the confirming filter's key hash (ASCII "confirm1"). Never change it: snapshots
/// depend on it.
const CONFIRM_SEED: u64 = 0x636f_6e66_6972_6d31;

/// Header of a snapshot of both filters: magic, then the main filter's length (u64 LE), the
/// main filter's export and the confirming filter's export.
const PAIR_MAGIC: &[u8; 8] = b"SEFPAIR1";

/// Why a filter-pair snapshot cannot be restored (the engine then rebuilds the filter).
#[derive(Debug, thiserror::Error)]
pub enum FilterSnapshotError {
    /// The bytes do not start with the pair header (an older single-filter snapshot, or damage).
    #[error("not a filter-pair snapshot (older format or damaged header)")]
    Header,
    /// One of the two filter exports inside is invalid.
    #[error("filter snapshot, {part} filter: {source}")]
    Part {
        /// `main` or `confirm`.
        part: &'static str,
        /// The filter crate's reason.
        source: SnapshotError,
    },
}

/// The key of `id` in the confirming filter: an xxh3 hash under another seed, so that its
/// fingerprint and buckets are independent of the main filter's.
#[inline]
fn confirm_key(id: &[u8]) -> [u8; 8] {
    xxh3_64_with_seed(id, CONFIRM_SEED).to_le_bytes()
}

/// The main and the confirming filter, always replaced together.
pub struct FilterPair {
    main: CuckooFilter,
    confirm: CuckooFilter,
}

impl FilterPair {
    /// Two empty, untrusted filters sized for `capacity` ids each.
    pub fn with_capacity(capacity: usize) -> FilterPair {
        FilterPair {
            main: CuckooFilter::with_capacity(capacity),
            confirm: CuckooFilter::with_capacity(capacity),
        }
    }

    /// The trust state (the main filter's).
    pub fn trust(&self) -> &Trust {
        self.main.trust()
    }

    /// Empty both filters.
    pub fn clear(&self) {
        self.main.clear();
        self.confirm.clear();
    }

    /// Ids held (main filter).
    pub fn len(&self) -> u64 {
        self.main.len()
    }

    /// May `id` be present? Only `false` is definite.
    #[inline]
    pub fn contains(&self, id: &[u8]) -> bool {
        self.main.contains(id) && self.confirm.contains(&confirm_key(id))
    }

    /// True only when trusted and `id` is not held.
    #[inline]
    pub fn definitely_absent(&self, id: &[u8]) -> bool {
        self.main.trust().is_trusted() && !self.contains(id)
    }

    /// Make `id` answer "maybe present" in both filters (each inserted only where missing).
    pub fn insert(&self, id: &[u8]) -> Result<bool, sync_engine_cuckoo::InsertError> {
        let mut added = false;
        if !self.main.contains(id) {
            self.main.insert(id)?;
            added = true;
        }
        let key = confirm_key(id);
        if !self.confirm.contains(&key) {
            self.confirm.insert(&key)?;
            added = true;
        }
        Ok(added)
    }

    /// Both filters as one snapshot blob (see [`PAIR_MAGIC`]).
    pub fn export(&self) -> Vec<u8> {
        let main = self.main.export();
        let confirm = self.confirm.export();
        let mut out = Vec::with_capacity(16 + main.len() + confirm.len());
        out.extend_from_slice(PAIR_MAGIC);
        out.extend_from_slice(&(main.len() as u64).to_le_bytes());
        out.extend_from_slice(&main);
        out.extend_from_slice(&confirm);
        out
    }

    /// Restore both filters from [`export`](Self::export)'s bytes; untrusted, like any import.
    pub fn import(bytes: &[u8]) -> Result<FilterPair, FilterSnapshotError> {
        let rest = bytes.strip_prefix(PAIR_MAGIC.as_slice()).ok_or(FilterSnapshotError::Header)?;
        let (len, rest) = rest.split_first_chunk::<8>().ok_or(FilterSnapshotError::Header)?;
        let len =
            usize::try_from(u64::from_le_bytes(*len)).map_err(|_| FilterSnapshotError::Header)?;
        if len > rest.len() {
            return Err(FilterSnapshotError::Header);
        }
        let (main, confirm) = rest.split_at(len);
        let part = |part| move |source| FilterSnapshotError::Part { part, source };
        Ok(FilterPair {
            main: CuckooFilter::import(main).map_err(part("main"))?,
            confirm: CuckooFilter::import(confirm).map_err(part("confirm"))?,
        })
    }
}

/// The filter slot (replaced whole when a snapshot is restored) and its insert counter.
pub struct Filter {
    current: RwLock<Arc<FilterPair>>,
    inserts_since_snapshot: AtomicU64,
}

impl Filter {
    /// An empty, untrusted filter sized for `capacity` ids.
    pub fn new(capacity: u64) -> Filter {
        let cap = usize::try_from(capacity).unwrap_or(usize::MAX);
        Filter {
            current: RwLock::new(Arc::new(FilterPair::with_capacity(cap))),
            inserts_since_snapshot: AtomicU64::new(0),
        }
    }

    /// The current filters.
    pub fn get(&self) -> Arc<FilterPair> {
        self.current.read().clone()
    }

    /// Replace the filters (a restored snapshot).
    pub fn replace(&self, f: FilterPair) {
        *self.current.write() = Arc::new(f);
        self.inserts_since_snapshot.store(0, Ordering::Relaxed);
    }

    /// Make sure `id` answers "maybe present". On failure (a filter cannot grow any more) the
    /// filter stops being trusted, so no lookup can get a false "absent".
    pub fn note(&self, id: &ObjectId) {
        let f = self.current.read();
        match f.insert(id.as_str().as_bytes()) {
            Ok(true) => {
                self.inserts_since_snapshot.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cuckoo filter full: marking it untrusted");
                f.trust().invalidate();
            }
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

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
