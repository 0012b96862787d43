use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_engine_merkle::{Children, NodeKey, NodeValue};

use crate::error::{Error, Result};
use crate::item::SyncItem;
use crate::store::{
    ArchiveStore, AuditReport, CacheEntry, CacheStore, FilterSnapshot, KeyScan, MerkleStore,
    PutOutcome, SnapshotStore, Wal, WalEntry, WalStats,
};
use crate::ObjectId;

/// The faults a [`Faulty`] wrapper injects; shared, so a test changes them while the engine
/// runs. Seeded: the same seed and call sequence fail the same calls, so a failing run replays.
pub struct FaultPlan {
    down: AtomicBool,
    every_nth: AtomicU64,
    fraction_ppm: AtomicU64,
    latency_us: AtomicU64,
    reply_us: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    rng: Mutex<ChaCha8Rng>,
}

impl FaultPlan {
    /// No faults yet; randomness from `seed`.
    pub fn new(seed: u64) -> FaultPlan {
        FaultPlan {
            down: AtomicBool::new(false),
            every_nth: AtomicU64::new(0),
            fraction_ppm: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            reply_us: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// Take the backend down (every call fails with Unavailable) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// True while down.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Fail every `n`-th call (0 disables).
    pub fn fail_every(&self, n: u64) {
        self.every_nth.store(n, Ordering::SeqCst);
    }

    /// Fail a seeded random fraction of calls (0.0 ..= 1.0).
    pub fn fail_fraction(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.fraction_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Delay every call by `latency` (on `tokio::time`, so paused clocks apply).
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.store(us, Ordering::SeqCst);
    }

    /// Delay every read's answer by `delay` after the backend produced it (a slow way back:
    /// the answer can be overtaken by writes that commit meanwhile). Captured when the read
    /// starts; on `tokio::time`.
    pub fn set_reply_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.reply_us.store(us, Ordering::SeqCst);
    }

    /// A read through the plan: the usual faults first, then the reply delay captured when
    /// the read started.
    async fn read<T>(&self, op: &'static str, read: impl Future<Output = Result<T>>) -> Result<T> {
        let reply = Duration::from_micros(self.reply_us.load(Ordering::SeqCst));
        self.check(op).await?;
        let answer = read.await;
        if !reply.is_zero() {
            tokio::time::sleep(reply).await;
        }
        answer
    }

    /// Calls made through the wrapper so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Calls failed by injection so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    async fn check(&self, op: &'static str) -> Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let latency = self.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        let every = self.every_nth.load(Ordering::SeqCst);
        let ppm = self.fraction_ppm.load(Ordering::SeqCst);
        let fail = if self.is_down() {
            Some("backend is down (injected)")
        } else if every > 0 && n % every == 0 {
            Some("every-nth call fails (injected)")
        } else if ppm > 0 && self.rng.lock().random_range(0..1_000_000) < ppm {
            Some("random failure (injected)")
        } else {
            None
        };
        match fail {
            Some(msg) => {
                self.failures.fetch_add(1, Ordering::SeqCst);
                Err(Error::unavailable(msg).with_operation(op).with_backend("faulty"))
            }
            None => Ok(()),
        }
    }
}

/// Wraps any backend and injects the faults of its [`FaultPlan`] before each call reaches it.
#[derive(Clone)]
pub struct Faulty<T> {
    inner: T,
    plan: Arc<FaultPlan>,
}

impl<T> Faulty<T> {
    /// Wrap `inner` with a fresh plan seeded by `seed`.
    pub fn new(inner: T, seed: u64) -> Faulty<T> {
        Faulty { inner, plan: Arc::new(FaultPlan::new(seed)) }
    }

    /// The shared fault plan.
    pub fn plan(&self) -> Arc<FaultPlan> {
        self.plan.clone()
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

#[async_trait]
impl<T: ArchiveStore> ArchiveStore for Faulty<T> {
    fn backend(&self) -> &str {
        self.inner.backend()
    }
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        self.plan.read("get_many", self.inner.get_many(ids)).await
    }
    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome> {
        self.plan.check("put_batch").await?;
        self.inner.put_batch(items).await
    }
    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        self.plan.check("scan_keys").await?;
        self.inner.scan_keys(scan).await
    }

    async fn scan_filter_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        self.plan.check("scan_keys").await?;
        self.inner.scan_filter_keys(scan).await
    }
    async fn count(&self, prefix: &str) -> Result<u64> {
        self.plan.check("count").await?;
        self.inner.count(prefix).await
    }
    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64> {
        self.plan.check("purge_tombstones").await?;
        self.inner.purge_tombstones(older_than_ms).await
    }
    async fn ping(&self) -> Result<()> {
        self.plan.check("ping").await?;
        self.inner.ping().await
    }
}

#[async_trait]
impl<T: CacheStore> CacheStore for Faulty<T> {
    fn backend(&self) -> &str {
        self.inner.backend()
    }
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        self.plan.read("get_many", self.inner.get_many(ids)).await
    }
    async fn put_batch(&self, entries: &[CacheEntry]) -> Result<PutOutcome> {
        self.plan.check("put_batch").await?;
        self.inner.put_batch(entries).await
    }
    async fn remove_many(&self, ids: &[ObjectId]) -> Result<()> {
        self.plan.check("remove_many").await?;
        self.inner.remove_many(ids).await
    }
    async fn ping(&self) -> Result<()> {
        self.plan.check("ping").await?;
        self.inner.ping().await
    }
    async fn audit(&self, prefix: &str, evict: bool) -> Result<AuditReport> {
        self.plan.check("audit").await?;
        self.inner.audit(prefix, evict).await
    }
    async fn audit_ids(&self, ids: &[ObjectId], evict: bool) -> Result<AuditReport> {
        self.plan.check("audit").await?;
        self.inner.audit_ids(ids, evict).await
    }
}

#[async_trait]
impl<T: MerkleStore> MerkleStore for Faulty<T> {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        self.plan.check("merkle_node").await?;
        self.inner.node(key).await
    }
    async fn children(&self, key: &NodeKey) -> Result<Children> {
        self.plan.check("merkle_children").await?;
        self.inner.children(key).await
    }
    /// One call of the wrapped store (one `merkle_children` check), as a batch costs it.
    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>> {
        self.plan.check("merkle_children").await?;
        self.inner.children_many(keys).await
    }
}

#[async_trait]
impl<T: Wal> Wal for Faulty<T> {
    async fn append(&self, items: &[SyncItem]) -> Result<u64> {
        self.plan.check("append").await?;
        self.inner.append(items).await
    }
    async fn peek(&self, limit: usize) -> Result<Vec<WalEntry>> {
        self.plan.check("peek").await?;
        self.inner.peek(limit).await
    }
    async fn remove_through(&self, through: u64) -> Result<u64> {
        self.plan.check("remove_through").await?;
        self.inner.remove_through(through).await
    }
    async fn stats(&self) -> Result<WalStats> {
        self.plan.check("stats").await?;
        self.inner.stats().await
    }
}

#[async_trait]
impl<T: SnapshotStore> SnapshotStore for Faulty<T> {
    async fn save_snapshot(&self, snapshot: &FilterSnapshot) -> Result<()> {
        self.plan.check("save_snapshot").await?;
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self) -> Result<Option<FilterSnapshot>> {
        self.plan.check("load_snapshot").await?;
        self.inner.load_snapshot().await
    }
}
