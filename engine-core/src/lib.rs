//! Core of sync-engine: the vocabulary ([`ObjectId`], [`SyncItem`], [`Error`], [`Config`]),
//! the storage contracts ([`store`]), in-memory fakes with fault injection ([`memory`]) and the
//! conformance suite every backend runs (feature `conformance`).
//!
//! Nothing here depends on a backend crate; backends depend on this crate.

pub mod config;
pub mod error;
pub mod id;
pub mod item;
pub mod limits;
pub mod memory;
pub mod secret;
pub mod store;

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod engine;

pub use engine::{EngineState, Route, SubmitOptions, SyncEngine};

pub use config::{Config, ConfigError};
pub use error::{Error, ErrorKind, Result, Status};
pub use id::{IdError, IdRule, ObjectId};
pub use item::{newer_wins, now_ms, ContentHash, Stamp, SyncItem};
pub use limits::Limits;
pub use secret::SecretUrl;

/// The Merkle vocabulary, re-exported for backends.
pub use sync_engine_merkle as merkle;
