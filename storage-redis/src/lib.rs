//! Redis backend for sync-engine: the L2 [`CacheStore`](sync_engine_core::store::CacheStore)
//! and its shadow [`MerkleStore`](sync_engine_core::store::MerkleStore), on plain Redis 7 (no
//! modules).
//!
//! - Writes are newer-wins on the stored [`Stamp`](sync_engine_core::Stamp) (version, content
//!   hash, tombstone), atomic inside Redis: optimistically (`WATCH` of a write epoch, the
//!   comparison on the values read, native writes in `MULTI`/`EXEC`, which Redis refuses if any
//!   other write landed meanwhile), else by a Lua script that compares and writes. Both append
//!   every change of an item's shadow digest to a change log, atomically with the data; a
//!   *fold* (Rust, under a Redis lock, written with `MULTI`/`EXEC`) applies the log to the
//!   Merkle nodes — in the background once enough changes are pending, and always before a
//!   Merkle read answers. The shadow a reader sees is
//!   therefore exactly the data's.
//! - One round trip per `get_many`; two per `put_batch` / `remove_many` chunk of 1000 ops (one
//!   when it goes through the script).
//! - Every key lives under the configured prefix and one hash tag; user ids live in their own
//!   sub-namespace.
//! - Calls are bounded by the connect and response timeouts; dropped connections reconnect.
//!
//! See `README.md` for the key layout, the scripts, the Merkle shape, the cost per item, the
//! TTL and tombstone policy, failure behaviour and cluster notes.

mod audit;
mod batch;
mod bus;
pub mod bus_codec;
#[cfg(feature = "redis-cluster")]
mod cluster;
mod codec;
mod error;
mod fold;
#[cfg(test)]
mod fold_tests;
mod folding;
mod keys;
mod log;
mod merkle;
mod nibbles;
mod node;
mod options;
mod store;
mod txn;

pub use bus::RedisBus;
pub use keys::{PrefixError, MAX_PREFIX_LEN};
pub use options::{
    OptionsError, RedisOptions, DEFAULT_BUCKET_CAP, DEFAULT_FOLD_THRESHOLD, MAX_BUCKET_CAP,
};
pub use store::RedisStore;
