//! SQLite write-ahead log for sync-engine: absorbs writes while L3 is down.
//!
//! Responsibility: appends durable on return (fsync'd), group commit, ordered drain that removes
//! entries only after the archive committed them, filter snapshots in the same file, and
//! recovery of the valid prefix of a damaged file.
//!
//! ```no_run
//! # async fn demo() -> sync_engine_core::Result<()> {
//! use sync_engine_core::store::{Wal, WalExt};
//! use sync_engine_wal::{SqliteWal, WalOptions};
//!
//! let wal = SqliteWal::open("data/wal.db", WalOptions::default()).await?;
//! # let items: Vec<sync_engine_core::SyncItem> = Vec::new();
//! let last_seq = wal.append(&items).await?; // durable when this returns
//! # let archive = sync_engine_core::memory::MemoryArchive::new();
//! wal.drain_to(&archive, 1000).await?;      // in order, removed only after the archive committed
//! # let _ = last_seq;
//! wal.close().await?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`record`] (the byte format of stored blobs), `file` (lock, atomic creation,
//! pre-SQLite checks), `schema` (tables and identity), `recover` (verification and
//! quarantine at open), `writer` (group commit thread), `reader` (read thread), `wal` (the
//! public handle). The file format, the durability argument and what a crash can lose are in
//! README.md.

#![deny(unsafe_code)]

mod errors;
mod file;
mod options;
mod reader;
pub mod record;
mod recover;
mod schema;
mod wal;
mod writer;

pub use errors::BACKEND;
pub use options::WalOptions;
pub use reader::DamagedRange;
pub use record::{decode_record, decode_snapshot, encode_record, encode_snapshot, RecordError};
pub use schema::{APPLICATION_ID, FORMAT_VERSION};
pub use wal::SqliteWal;

/// State the writer thread publishes after each commit and `stats` reads without I/O.
pub(crate) struct Shared {
    pub stats: parking_lot::Mutex<recover::Counters>,
    /// Transactions committed by the writer since open.
    pub commits: std::sync::atomic::AtomicU64,
}
