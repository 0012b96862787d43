//! An archive (L3) that connects on first use, so that `connect` can start an engine with
//! `allow_degraded_start = true` while the database is down: the engine starts degraded
//! (writes go to the WAL) and its maintenance probes reconnect once the database is back.

use std::sync::Arc;

use async_trait::async_trait;
use sync_engine_core::engine::L3Store;
use sync_engine_core::merkle::{Children, NodeKey, NodeValue};
use sync_engine_core::store::{ArchiveStore, KeyScan, MerkleStore, PutOutcome};
use sync_engine_core::{Config, ObjectId, Result, SyncItem};
use tokio::sync::OnceCell;

/// Opens the real archive with [`crate::connect::open_l3`] on the first call that needs it;
/// until that succeeds every call fails with the connection error (retryable), which the
/// engine treats as an L3 outage.
pub(crate) struct LazyL3 {
    config: Config,
    backend: &'static str,
    store: OnceCell<Arc<dyn L3Store>>,
}

impl LazyL3 {
    /// An archive for `config.sql_url`, not yet connected.
    pub(crate) fn new(config: Config) -> LazyL3 {
        let backend = match config.sql_url.scheme().as_deref() {
            Some("sqlite") => "sqlite",
            Some("mysql" | "mariadb") => "mysql",
            Some("postgres" | "postgresql") => "postgres",
            _ => "sql",
        };
        LazyL3 { config, backend, store: OnceCell::new() }
    }

    async fn store(&self) -> Result<&Arc<dyn L3Store>> {
        self.store.get_or_try_init(|| crate::connect::open_l3(&self.config)).await
    }
}

#[async_trait]
impl ArchiveStore for LazyL3 {
    fn backend(&self) -> &str {
        self.store.get().map_or(self.backend, |s| s.backend())
    }

    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        self.store().await?.get_many(ids).await
    }

    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome> {
        self.store().await?.put_batch(items).await
    }

    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        self.store().await?.scan_keys(scan).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.store().await?.count(prefix).await
    }

    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64> {
        self.store().await?.purge_tombstones(older_than_ms).await
    }

    async fn ping(&self) -> Result<()> {
        self.store().await?.ping().await
    }
}

#[async_trait]
impl MerkleStore for LazyL3 {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        self.store().await?.node(key).await
    }

    async fn children(&self, key: &NodeKey) -> Result<Children> {
        self.store().await?.children(key).await
    }
}
