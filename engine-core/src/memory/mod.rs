//! In-memory implementations of every storage trait: real implementations (versions,
//! tombstones, TTLs through `tokio::time`, order), used by the engine's tests and by users'
//! tests, plus [`Faulty`], a seeded fault-injecting wrapper around any backend.
//!
//! Every fake is a cheap handle over shared state: cloning it and dropping the engine that
//! used it keeps the "durable" state, which is how tests simulate a crash and restart.

mod archive;
mod bus;
mod cache;
mod fault;
mod snapshot;
mod wal;

pub use archive::MemoryArchive;
pub use bus::MemoryBus;
pub use cache::MemoryCache;
pub use fault::{FaultPlan, Faulty};
pub use snapshot::MemorySnapshots;
pub use wal::MemoryWal;

use crate::store::KeyScan;
use crate::ObjectId;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Keyset page over a BTreeMap of ids, honouring prefix, `after` and `limit`, keeping only
/// entries for which `live` holds.
pub(crate) fn scan_page<V>(
    map: &BTreeMap<ObjectId, V>,
    scan: &KeyScan,
    live: impl Fn(&V) -> bool,
) -> Vec<ObjectId> {
    let lower = match &scan.after {
        Some(after) => Bound::Excluded(after.clone()),
        None => Bound::Unbounded,
    };
    map.range((lower, Bound::Unbounded))
        .skip_while(|(id, _)| id.as_str() < scan.prefix.as_str())
        .take_while(|(id, _)| id.has_prefix(&scan.prefix))
        .filter(|(_, v)| live(v))
        .take(scan.limit.max(1))
        .map(|(id, _)| id.clone())
        .collect()
}

/// Report a Merkle tree refusal. Ids reaching the tree are [`ObjectId`]s, whose rules are
/// stricter than the tree's, so this only fires on a bug; it never panics.
pub(crate) fn tree_op<T, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "in-memory Merkle tree refused a validated id");
    }
}
