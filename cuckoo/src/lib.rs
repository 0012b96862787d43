//! Cuckoo filter for sync-engine: answers "absent" without a network hop.
//!
//! Responsibility: insert / contains / remove over object ids with no false negatives, stable
//! hashing across processes and releases, export / import with a checksum, and a trust state.
