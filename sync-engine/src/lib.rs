//! sync-engine: one `submit / get / delete` API over an in-process L1 cache, Redis (L2) and SQL
//! (L3), with a local write-ahead log, a cuckoo filter and Merkle-verified tiers.
//!
//! This is the crate applications depend on. It re-exports the core ([`SyncEngine`],
//! [`Config`], [`SyncItem`], ...) and picks backends from the configured URLs with
//! [`connect`]; cargo features decide which backends are compiled in: `sqlite` and
//! `wal-sqlite` (default), `mysql`, `postgres`, `redis`.
//!
//! ```no_run
//! # async fn demo() -> sync_engine::Result<()> {
//! let config = sync_engine::Config::load(None)?; // defaults < TOML < SYNC_ENGINE_* env
//! let node = sync_engine::connect(config).await?;
//! node.engine.submit("tenant.users.42", "hello").await?;
//! let item = node.engine.get("tenant.users.42").await?;
//! node.engine.shutdown().await?;
//! # Ok(()) }
//! ```

mod connect;
mod lazy;

pub use connect::{connect, open_backends, Backends, Node};
pub use sync_engine_core::engine::{
    BackpressureLevel, BreakerState, EngineState, Health, RepairReport, TickReport,
};
pub use sync_engine_core::{
    memory, store, Config, ConfigError, Error, ErrorKind, ObjectId, Result, Route, SecretUrl,
    Status, SubmitOptions, SyncEngine, SyncItem,
};

/// The core crate, for what is not re-exported.
pub use sync_engine_core as core;
