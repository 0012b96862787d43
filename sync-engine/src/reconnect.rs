//! An L2 handle that is created even when its server is down at start, and connects later.
//!
//! The engine already survives an L2 that fails (its breaker opens, reads fall through to L3,
//! maintenance pings and repairs L2 from L3 once it answers). What it cannot survive is having
//! no L2 handle at all: a Redis that was down when the process started would otherwise be left
//! out for the life of the process. [`ReconnectingL2`] stands in for the real store until a
//! connection attempt succeeds; every call before that answers `Unavailable` (Temporary), and
//! attempts are spaced by `retry_every` so a dead server is not hammered. Once connected, the
//! inner store's own reconnection logic takes over.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sync_engine_core::engine::L2Store;
use sync_engine_core::merkle::{Children, NodeKey, NodeValue};
use sync_engine_core::store::{CacheEntry, CacheStore, MerkleStore, PutOutcome};
use sync_engine_core::{Error, ObjectId, Result, SyncItem};
use tracing::Instrument;

/// The future a [`Connector`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn L2Store>>> + Send>>;

/// Opens the real L2 store; called until it succeeds once.
pub type Connector = Arc<dyn Fn() -> ConnectFuture + Send + Sync>;

/// An L2 store that connects on first use and retries, at most once per `retry_every`, until
/// the connection succeeds. Before that, every operation fails with `Unavailable`.
pub struct ReconnectingL2 {
    backend: String,
    target: String,
    connector: Connector,
    retry_every: Duration,
    current: RwLock<Option<Arc<dyn L2Store>>>,
    /// Serialises attempts and remembers when the last one failed.
    attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ReconnectingL2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingL2")
            .field("backend", &self.backend)
            .field("target", &self.target)
            .field("connected", &self.connected())
            .finish()
    }
}

impl ReconnectingL2 {
    /// A handle named `backend` (e.g. `redis`) for `target` (a redacted URL, used in errors)
    /// whose first attempt happens on first use.
    pub fn new(
        backend: impl Into<String>,
        target: impl Into<String>,
        retry_every: Duration,
        connector: Connector,
    ) -> ReconnectingL2 {
        ReconnectingL2 {
            backend: backend.into(),
            target: target.into(),
            connector,
            retry_every,
            current: RwLock::new(None),
            attempt: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether a connection attempt has succeeded.
    pub fn connected(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    fn loaded(&self) -> Option<Arc<dyn L2Store>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The connected store, connecting first if the last failed attempt is old enough.
    async fn store(&self, operation: &'static str) -> Result<Arc<dyn L2Store>> {
        if let Some(s) = self.loaded() {
            return Ok(s);
        }
        let mut last_failure = self.attempt.lock().await;
        if let Some(s) = self.loaded() {
            return Ok(s);
        }
        if let Some(at) = *last_failure {
            let since = at.elapsed();
            if since < self.retry_every {
                let wait = self.retry_every - since;
                return Err(Error::unavailable(format!(
                    "{} `{}` is not connected; next attempt in {} ms",
                    self.backend,
                    self.target,
                    wait.as_millis()
                ))
                .with_backend(self.backend.clone())
                .with_operation(operation));
            }
        }
        let span =
            tracing::info_span!("l2.reconnect", backend = %self.backend, target = %self.target);
        match (self.connector)().instrument(span).await {
            Ok(store) => {
                tracing::info!(backend = %self.backend, target = %self.target, "L2 connected");
                if let Ok(mut c) = self.current.write() {
                    *c = Some(store.clone());
                }
                *last_failure = None;
                Ok(store)
            }
            Err(e) => {
                tracing::debug!(error = %e, "L2 connection attempt failed");
                *last_failure = Some(Instant::now());
                Err(e.with_operation(operation))
            }
        }
    }
}

#[async_trait]
impl CacheStore for ReconnectingL2 {
    fn backend(&self) -> &str {
        &self.backend
    }

    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        self.store("get_many").await?.get_many(ids).await
    }

    async fn put_batch(&self, entries: &[CacheEntry]) -> Result<PutOutcome> {
        self.store("put_batch").await?.put_batch(entries).await
    }

    async fn remove_many(&self, ids: &[ObjectId]) -> Result<()> {
        self.store("remove_many").await?.remove_many(ids).await
    }

    async fn ping(&self) -> Result<()> {
        self.store("ping").await?.ping().await
    }
}

#[async_trait]
impl MerkleStore for ReconnectingL2 {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        self.store("merkle_node").await?.node(key).await
    }

    async fn children(&self, key: &NodeKey) -> Result<Children> {
        self.store("merkle_children").await?.children(key).await
    }
}
