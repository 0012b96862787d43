//! SQL backend for sync-engine: the L3 `ArchiveStore` and its `MerkleStore` on sqlx.
//!
//! Responsibility: the ground truth. Newer-wins upserts enforced by the database, the Merkle
//! nodes updated in the same transaction as the items, keyset scans, exact prefix operations.
