//! SQL backend for sync-engine: the L3 `ArchiveStore` and its `MerkleStore` on sqlx.
//!
//! Responsibility: the ground truth. Newer-wins upserts enforced by the database, the Merkle
//! leaf changes committed in the same transaction as the items (and folded into the node rows
//! before any Merkle read), keyset scans, exact prefix operations.
//!
//! One typed sqlx driver per database (features `sqlite`, `mysql`, `postgres`,
//! `all-databases`), chosen by [`SqlStore::connect`] from the URL's scheme. The logic that
//! decides what to write (newer wins, the Merkle change set, bucket splits) is written once in
//! shared modules; each driver only supplies its typed SQL. See `README.md` for the schema per
//! database, the newer-wins SQL, the Merkle shape, the transaction protocol and the error
//! mapping.

// Without any driver every `connect` is `Unsupported`; the shared code is then unused.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "mysql", feature = "postgres")),
    allow(unused, dead_code, unreachable_code)
)]

mod batch;
mod codec;
mod driver;
mod error;
mod logsql;
mod migrate;
mod ops;
mod options;
mod sqlgen;
mod store;
mod tree;
mod verify;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use error::DbError;
pub use options::{
    Dialect, SqlOptions, DEFAULT_FOLD_CHANGES, DEFAULT_NODE_CACHE_ROWS, DEFAULT_SPLIT_THRESHOLD,
    DEFAULT_TABLE_PREFIX, MAX_TABLE_PREFIX_LEN, SQLITE_PRAGMAS,
};
pub use store::{SqlStore, SCHEMA_VERSION};
pub use verify::MerkleCheck;
