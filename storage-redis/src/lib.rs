//! Redis backend for sync-engine: the L2 `CacheStore` and its shadow `MerkleStore`.
//!
//! Responsibility: pipelined, version-checked writes into plain Redis 7, namespaced keys, the
//! Merkle shadow updated in the same script as the data, bounded timeouts and reconnects.
