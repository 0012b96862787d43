//! Cuckoo filter for sync-engine: answers "absent" without a network hop.
//!
//! Responsibility: insert / contains / remove over object ids with no false negatives, stable
//! hashing across processes and releases, export / import with a checksum, and a trust state.
//! See `README.md` in this crate for the layout, the false-positive arithmetic, the concurrency
//! design, growth, the snapshot format, the removal rule and the trust states.
//!
//! ```
//! use sync_engine_cuckoo::{CuckooFilter, Removal};
//!
//! let filter = CuckooFilter::with_capacity(1_000);
//! filter.insert(b"tenant.users.42").unwrap();
//! assert!(filter.contains(b"tenant.users.42"));
//! // Not trusted yet: "absent" must not be believed.
//! assert!(!filter.definitely_absent(b"tenant.users.43"));
//! let ticket = filter.trust().begin_warming();
//! filter.trust().finish_warming(ticket).unwrap();
//! // Trusted: "absent" is answered exactly when the filter does not contain the id.
//! assert!(!filter.definitely_absent(b"tenant.users.42"));
//! assert_eq!(filter.definitely_absent(b"tenant.users.43"), !filter.contains(b"tenant.users.43"));
//!
//! let snapshot = filter.export();
//! let restored = CuckooFilter::import(&snapshot).unwrap();
//! assert!(restored.contains(b"tenant.users.42"));
//! assert_eq!(restored.remove(b"tenant.users.42"), Removal::Removed);
//! ```

mod error;
mod filter;
mod hash;
mod level;
mod snapshot;
mod trust;

pub use error::{InsertError, SnapshotError, TrustError};
pub use filter::{CuckooFilter, Removal, DESIGN_LOAD, MAX_LEVELS};
pub use hash::{key_hash, FP_BITS, HASH_VERSION, KEY_HASH_SEED};
pub use level::SLOTS_PER_BUCKET;
pub use snapshot::{CHECKSUM_SEED, FORMAT_VERSION, MAGIC};
pub use trust::{Trust, TrustState, WarmingTicket};
