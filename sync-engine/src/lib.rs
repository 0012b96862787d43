//! sync-engine: one `submit / get / delete` API over an in-process L1 cache, Redis (L2) and SQL
//! (L3), with a local write-ahead log, a cuckoo filter and Merkle-verified tiers.
//!
//! This is the crate applications depend on: it re-exports the core and picks backends by
//! cargo feature.

pub use sync_engine_core as core;
