//! The conformance suite: one public async function per promise of the storage traits. Every
//! backend, the in-memory fakes included, runs it against itself; a broken promise comes back
//! as a [`ConformanceFailure`] naming it.
//!
//! Functions write only ids under the namespace `ns` they are given (a valid id prefix such as
//! `conf.r42`), and only assert on those ids, so they can run against a shared database.

mod archive;
mod bus;
mod cache;
mod wal;

pub use archive::*;
pub use bus::*;
pub use cache::*;
pub use wal::*;

use std::fmt;

use crate::{Error, ObjectId};

/// A broken promise: which one, and what was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceFailure {
    /// The promise, as named in the trait docs (`newer wins`, `exact prefixes`, ...).
    pub promise: &'static str,
    /// What the backend did instead.
    pub detail: String,
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "promise `{}` broken: {}", self.promise, self.detail)
    }
}

impl std::error::Error for ConformanceFailure {}

/// Result of one conformance check.
pub type Check = Result<(), ConformanceFailure>;

pub(crate) fn fail(promise: &'static str, detail: impl Into<String>) -> ConformanceFailure {
    ConformanceFailure { promise, detail: detail.into() }
}

/// Turn a backend error into the failure of the promise under test.
pub(crate) fn backend(promise: &'static str) -> impl Fn(Error) -> ConformanceFailure {
    move |e| fail(promise, format!("backend error: {e}"))
}

pub(crate) fn id(ns: &str, rest: &str) -> ObjectId {
    // The namespace and the suffixes used by this suite are valid ids by construction.
    ObjectId::with_max_len(&format!("{ns}.{rest}"), crate::id::HARD_MAX_ID_LEN)
        .unwrap_or_else(|e| panic!("conformance namespace `{ns}` is not a valid id prefix: {e}"))
}

macro_rules! ensure {
    ($cond:expr, $promise:expr, $($detail:tt)+) => {
        if !$cond {
            return Err($crate::conformance::fail($promise, format!($($detail)+)));
        }
    };
}
pub(crate) use ensure;

/// The URL of a test server from the environment variable `var` (set by `cargo xtask test`).
///
/// When it is unset the caller skips its server suite: this says so loudly on stderr, and
/// under `CI=true` it panics instead, because CI must never pass by skipping.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "{var} is not set under CI=true: the server suite must run (use `cargo xtask test`)");
            eprintln!("SKIPPED: {var} is not set; run `cargo xtask test` to start the server and run this suite");
            None
        }
    }
}

/// A namespace unique to this process and call, for tests sharing a server.
pub fn unique_ns(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("t{}.{}{}x{}", crate::now_ms(), tag, std::process::id(), n)
}
