//! Backend handles that exist even when their server is down at start, and connect later.
//!
//! The engine survives a backend that fails (its breaker opens, reads fall through, writes go
//! to the WAL, maintenance probes and repairs once the backend answers). What it cannot survive
//! is having no handle at all: a Redis that was down when the process started would be left
//! out for the life of the process, and an L3 that was down could not be started degraded.
//! [`Reconnecting`] stands in for the real store until a connection attempt succeeds; every
//! call before that answers `Unavailable` (Temporary), and attempts are spaced by
//! `retry_every` so a dead server is not hammered. Once connected, the inner store's own
//! reconnection logic (sqlx's pool, redis' connection manager) takes over.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sync_engine_core::engine::{L2Store, L3Store};
use sync_engine_core::merkle::{Children, NodeKey, NodeValue};
use sync_engine_core::store::{
    ArchiveStore, AuditReport, CacheEntry, CacheStore, KeyScan, MerkleStore, PutOutcome,
};
use sync_engine_core::{Error, ObjectId, Result, SyncItem};
use tracing::Instrument;

/// The future a [`Connector`] returns.
pub type ConnectFuture<T> = Pin<Box<dyn Future<Output = Result<Arc<T>>> + Send>>;

/// Opens the real store; called until it succeeds once.
pub type Connector<T> = Arc<dyn Fn() -> ConnectFuture<T> + Send + Sync>;

/// An L2 (cache + Merkle shadow) that connects when its server answers.
pub type ReconnectingL2 = Reconnecting<dyn L2Store>;

/// An L3 (archive + Merkle tree) that connects when its database answers.
pub type ReconnectingL3 = Reconnecting<dyn L3Store>;

/// A store of type `T` that connects on first use and retries, at most once per
/// `retry_every`, until the connection succeeds. Before that, every operation fails with
/// `Unavailable` naming the target.
pub struct Reconnecting<T: ?Sized> {
    backend: String,
    target: String,
    connector: Connector<T>,
    retry_every: Duration,
    current: RwLock<Option<Arc<T>>>,
    /// Serialises attempts and remembers when the last one failed.
    attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl<T: ?Sized + Send + Sync> std::fmt::Debug for Reconnecting<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconnecting")
            .field("backend", &self.backend)
            .field("target", &self.target)
            .field("connected", &self.connected())
            .finish()
    }
}

impl<T: ?Sized + Send + Sync> Reconnecting<T> {
    /// A handle named `backend` (e.g. `redis`) for `target` (a redacted URL, used in errors)
    /// whose first attempt happens on first use.
    pub fn new(
        backend: impl Into<String>,
        target: impl Into<String>,
        retry_every: Duration,
        connector: Connector<T>,
    ) -> Reconnecting<T> {
        Reconnecting {
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

    fn loaded(&self) -> Option<Arc<T>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// The connected store, connecting first if the last failed attempt is old enough.
    async fn store(&self, operation: &'static str) -> Result<Arc<T>> {
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
        let span = tracing::info_span!("reconnect", backend = %self.backend, target = %self.target);
        match (self.connector)().instrument(span).await {
            Ok(store) => {
                tracing::info!(backend = %self.backend, target = %self.target, "connected");
                if let Ok(mut c) = self.current.write() {
                    *c = Some(store.clone());
                }
                *last_failure = None;
                Ok(store)
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection attempt failed");
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

    async fn audit(&self, prefix: &str, evict: bool) -> Result<AuditReport> {
        self.store("audit").await?.audit(prefix, evict).await
    }

    async fn audit_ids(&self, ids: &[ObjectId], evict: bool) -> Result<AuditReport> {
        self.store("audit").await?.audit_ids(ids, evict).await
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

    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>> {
        self.store("merkle_children").await?.children_many(keys).await
    }
}

#[async_trait]
impl ArchiveStore for ReconnectingL3 {
    fn backend(&self) -> &str {
        &self.backend
    }

    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        self.store("get_many").await?.get_many(ids).await
    }

    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome> {
        self.store("put_batch").await?.put_batch(items).await
    }

    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        self.store("scan_keys").await?.scan_keys(scan).await
    }

    async fn scan_filter_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        self.store("scan_filter_keys").await?.scan_filter_keys(scan).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.store("count").await?.count(prefix).await
    }

    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64> {
        self.store("purge_tombstones").await?.purge_tombstones(older_than_ms).await
    }

    async fn ping(&self) -> Result<()> {
        self.store("ping").await?.ping().await
    }
}

#[async_trait]
impl MerkleStore for ReconnectingL3 {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        self.store("merkle_node").await?.node(key).await
    }

    async fn children(&self, key: &NodeKey) -> Result<Children> {
        self.store("merkle_children").await?.children(key).await
    }

    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>> {
        self.store("merkle_children").await?.children_many(keys).await
    }
}
