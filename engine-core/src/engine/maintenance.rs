//! Maintenance: `run()` / `tick()` (L3 and L2 health probes, WAL drain, resync after an
//! outage, L2/L3 root comparison every round and L2 repair on a mismatch, filter snapshots by
//! time and by insert count, tombstone purge, hot reload) and the cheap `health()` report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use sync_engine_cuckoo::TrustState;
use tokio::sync::watch;
use tokio::time::Instant;

use super::backpressure::{self, Level};
use super::breaker::BreakerState;
use super::repair::RepairReport;
use super::{lifecycle, EngineState, Inner, SyncEngine};
use crate::store::{FilterSnapshot, MerkleExt};
use crate::Config;

/// Maintenance bookkeeping.
pub(crate) struct MaintState {
    reload: Mutex<Option<watch::Receiver<Config>>>,
    last_snapshot: Mutex<Option<Instant>>,
    last_purge: Mutex<Option<Instant>>,
    pub(crate) warmup_progress: AtomicU64,
}

impl MaintState {
    pub(crate) fn new(reload: Option<watch::Receiver<Config>>) -> MaintState {
        MaintState {
            reload: Mutex::new(reload),
            last_snapshot: Mutex::new(None),
            last_purge: Mutex::new(None),
            warmup_progress: AtomicU64::new(0),
        }
    }
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// WAL entries drained into L3.
    pub drained: u64,
    /// L3 came back and was resynced (drain, root, filter).
    pub resynced: bool,
    /// L2 was compared and repaired.
    pub repaired: Option<usize>,
    /// A filter snapshot was written.
    pub snapshot: bool,
    /// A new configuration was applied.
    pub reloaded: bool,
}

/// Reachability and breaker of one backend, as last observed.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendHealth {
    /// Backend name.
    pub backend: String,
    /// Breaker state (closed means reachable as far as the engine knows).
    pub breaker: BreakerState,
}

/// A cheap readiness / liveness report (no I/O).
#[derive(Debug, Clone)]
pub struct Health {
    /// Engine state.
    pub state: EngineState,
    /// L3.
    pub l3: BackendHealth,
    /// L2, if configured.
    pub l2: Option<BackendHealth>,
    /// Entries waiting in the WAL.
    pub wal_depth: u64,
    /// Filter trust.
    pub filter: TrustState,
    /// Ids in the filter.
    pub filter_len: u64,
    /// Ids scanned by the last warm-up.
    pub warmup_scanned: u64,
    /// L1 bytes held.
    pub l1_bytes: u64,
    /// L1's current capacity: `l1_max_bytes` less the unflushed writes' share (one budget).
    pub l1_capacity: u64,
    /// L1 entries.
    pub l1_entries: usize,
    /// Acknowledged writes not yet in L3 (pending, flushing, or in the WAL): items, bytes.
    pub unflushed: (usize, u64),
    /// Backpressure level.
    pub backpressure: Level,
    /// The last repair report.
    pub last_repair: Option<RepairReport>,
    /// Ids whose newest write L2 missed (reads of them skip L2 until it has them), and whether
    /// too many were missed to count, so that every read skips L2 until the next full repair.
    pub l2_missed: (usize, bool),
    /// Invalidation bus: `None` without one, else whether it is connected (L1 served).
    pub bus_connected: Option<bool>,
}

impl Health {
    /// Ready to serve: started and not stopping.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, EngineState::Ready | EngineState::Running | EngineState::Degraded)
    }
}

/// Drain the WAL into L3 in order, settling the overlay batch by batch.
pub(crate) async fn drain_wal(inner: &Inner) -> crate::Result<u64> {
    let batch = inner.cfg().wal_drain_batch.max(1);
    let mut drained = 0;
    let started = Instant::now();
    loop {
        let entries = inner.wal.peek(batch).await?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            break;
        };
        let items: Vec<crate::SyncItem> = entries.into_iter().map(|e| e.item).collect();
        let outcome = inner.l3.put_batch(&items).await?;
        inner.l3_breaker.success();
        if outcome.stale > 0 {
            super::batcher::forget_losers(inner, &items);
        }
        inner.wal.remove_through(last).await?;
        inner.reads.committed(&inner.l1, super::stamps(&items));
        // L2 may have missed these when they were first written (its marks do not survive a
        // restart): reads skip it for them until it has them.
        if inner.l2.is_some() {
            inner.l2_stale.mark(super::stamps(&items));
        }
        inner.release_unflushed(super::stamps(&items));
        drained += items.len() as u64;
        let left = inner.wal_depth.load(Ordering::Relaxed).saturating_sub(items.len() as u64);
        inner.wal_depth.store(left, Ordering::Relaxed);
    }
    if let Ok(s) = inner.wal.stats().await {
        inner.wal_depth.store(s.items, Ordering::Relaxed);
    }
    metrics::gauge!("sync_engine_wal_depth").set(inner.wal_depth.load(Ordering::Relaxed) as f64);
    if drained > 0 {
        tracing::info!(drained, seconds = started.elapsed().as_secs_f64(), "WAL drained into L3");
        // L2 was written while L3 was not: make sure they agree again.
        inner.l2_needs_repair.store(true, Ordering::Relaxed);
    }
    Ok(drained)
}

/// Save the filter with the L3 root, if the filter is trusted. The root is read before the
/// export: every id in L3 at that root was inserted into the filter before it reached L3.
pub(crate) async fn snapshot_filter(inner: &Inner) -> crate::Result<bool> {
    if inner.filter.trust() != TrustState::Trusted || inner.l3_needs_resync.load(Ordering::Relaxed)
    {
        return Ok(false);
    }
    let root = inner.l3.root_hash().await?;
    let f = inner.filter.get();
    let bytes = f.export();
    let snap = FilterSnapshot {
        bytes: bytes.into(),
        merkle_root: root,
        entries: f.len(),
        taken_at_ms: crate::now_ms(),
    };
    inner.wal.save_snapshot(&snap).await?;
    inner.filter.snapshotted();
    *inner.maint.last_snapshot.lock() = Some(Instant::now());
    tracing::debug!(entries = snap.entries, "filter snapshot saved");
    Ok(true)
}

fn apply_reload(inner: &Inner, new: Config) -> bool {
    if let Err(e) = new.validate() {
        tracing::warn!(error = %e, "ignoring invalid configuration reload");
        return false;
    }
    let mut cur = inner.config.write();
    let restart_only = cur.sql_url != new.sql_url
        || cur.redis_url != new.redis_url
        || cur.redis_prefix != new.redis_prefix
        || cur.redis_invalidation != new.redis_invalidation
        || cur.wal_path != new.wal_path
        || cur.max_id_len != new.max_id_len
        || cur.max_payload_bytes != new.max_payload_bytes;
    if restart_only {
        tracing::warn!(
            "configuration reload changes restart-only options; they apply at the next start"
        );
    }
    cur.l1_max_bytes = new.l1_max_bytes;
    cur.l1_ttl_ms = new.l1_ttl_ms;
    cur.batch_max_items = new.batch_max_items;
    cur.batch_max_bytes = new.batch_max_bytes;
    cur.batch_max_age_ms = new.batch_max_age_ms;
    cur.l2_default_ttl_ms = new.l2_default_ttl_ms;
    cur.backpressure_throttle_ratio = new.backpressure_throttle_ratio;
    cur.backpressure_reject_ratio = new.backpressure_reject_ratio;
    cur.filter_snapshot_interval_ms = new.filter_snapshot_interval_ms;
    cur.filter_snapshot_every_inserts = new.filter_snapshot_every_inserts;
    cur.health_check_interval_ms = new.health_check_interval_ms;
    let ttl = (new.l1_ttl_ms > 0).then(|| Duration::from_millis(new.l1_ttl_ms));
    inner.l1.reconfigure(new.l1_max_bytes, ttl);
    tracing::info!("hot configuration applied");
    true
}

impl SyncEngine {
    /// One maintenance round; for callers who drive maintenance themselves.
    pub async fn tick(&self) -> crate::Result<TickReport> {
        let inner = &self.inner;
        let mut report = TickReport::default();
        // Hot reload.
        let changed = {
            let mut rx = inner.maint.reload.lock();
            match rx.as_mut() {
                Some(rx) if rx.has_changed().unwrap_or(false) => {
                    Some(rx.borrow_and_update().clone())
                }
                _ => None,
            }
        };
        if let Some(new) = changed {
            report.reloaded = apply_reload(inner, new);
        }
        // L3: probe when the breaker lets us, drain, resync after an outage.
        if inner.l3_breaker.state() != BreakerState::Closed && inner.l3_breaker.allow() {
            match inner.l3.ping().await {
                Ok(()) => inner.l3_breaker.success(),
                Err(_) => inner.l3_breaker.failure(),
            }
        }
        if inner.l3_breaker.state() == BreakerState::Closed {
            if inner.l3_needs_resync.load(Ordering::Relaxed) {
                lifecycle::resync(inner).await?;
                if !inner.filter.get().trust().is_trusted() {
                    lifecycle::warm_filter(inner).await?;
                }
                report.resynced = true;
                inner.set_state(if inner.closing.load(Ordering::Relaxed) {
                    EngineState::ShuttingDown
                } else {
                    EngineState::Running
                });
            } else if inner.wal_depth.load(Ordering::Relaxed) > 0 {
                report.drained = drain_wal(inner).await?;
            }
        }
        // A filter rebuild after a bus reconnect that failed (L3 was down, say).
        if inner.l3_breaker.state() == BreakerState::Closed {
            super::invalidate::retry_rebuild(inner);
        }
        // L2: probe and repair.
        if let Some(l2) = &inner.l2 {
            if inner.l2_breaker.state() != BreakerState::Closed && inner.l2_breaker.allow() {
                match l2.ping().await {
                    Ok(()) => inner.l2_breaker.success(),
                    Err(_) => inner.l2_breaker.failure(),
                }
            }
            let l3_ok = inner.l3_breaker.state() == BreakerState::Closed
                && !inner.l3_needs_resync.load(Ordering::Relaxed);
            if l3_ok && inner.l2_breaker.state() == BreakerState::Closed {
                // L2 may lose or change data without any error (FLUSHALL, a restart, eviction,
                // a foreign writer): compare the roots every round (two reads) and repair on a
                // mismatch. Ids still on their way to L3 are left alone by the repair.
                if !inner.l2_needs_repair.load(Ordering::Relaxed) {
                    match tokio::try_join!(l2.root_hash(), inner.l3.root_hash()) {
                        Ok((a, b)) if a != b => {
                            tracing::info!(l2_root = %a, l3_root = %b, "L2's Merkle root differs from L3's; repairing");
                            inner.l2_needs_repair.store(true, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(error = %e, "root comparison failed"),
                    }
                }
                if inner.l2_needs_repair.load(Ordering::Relaxed) {
                    let r = super::repair::run(inner, "", true, false).await?;
                    report.repaired = Some(r.repaired + r.removed);
                }
            }
        }
        // Filter snapshots by time and by insert count (0 disables either).
        let (interval, every) = {
            let c = inner.cfg();
            (c.filter_snapshot_interval_ms, c.filter_snapshot_every_inserts)
        };
        let due_time = interval > 0
            && inner
                .maint
                .last_snapshot
                .lock()
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(interval));
        let due_count = every > 0 && inner.filter.inserts_since_snapshot() >= every;
        if (due_time || due_count) && inner.l3_breaker.state() == BreakerState::Closed {
            report.snapshot = snapshot_filter(inner).await.unwrap_or(false);
        }
        // Tombstone purge, hourly.
        let purge_due =
            inner.maint.last_purge.lock().is_none_or(|t| t.elapsed() >= Duration::from_secs(3600));
        if purge_due && inner.l3_breaker.state() == BreakerState::Closed {
            let cutoff = crate::now_ms().saturating_sub(inner.cfg().tombstone_retention_ms);
            if let Ok(n) = inner.l3.purge_tombstones(cutoff).await {
                if n > 0 {
                    tracing::info!(purged = n, "old tombstones purged from L3");
                }
            }
            *inner.maint.last_purge.lock() = Some(Instant::now());
        }
        Ok(report)
    }

    /// Drive maintenance until shutdown: one [`tick`](Self::tick) every
    /// `health_check_interval_ms`. Errors of a round are logged, never fatal.
    pub async fn run(&self) {
        if self.state() == EngineState::Ready {
            self.inner.set_state(EngineState::Running);
        }
        loop {
            if self.inner.closing.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "maintenance round failed");
            }
            let every = Duration::from_millis(self.inner.cfg().health_check_interval_ms);
            tokio::time::sleep(every).await;
        }
    }

    /// The health report: state, backends, WAL depth, filter, L1, backlog, last repair.
    pub fn health(&self) -> Health {
        let inner = &self.inner;
        Health {
            state: inner.state(),
            l3: BackendHealth {
                backend: inner.l3.backend().to_owned(),
                breaker: inner.l3_breaker.state(),
            },
            l2: inner.l2.as_ref().map(|l2| BackendHealth {
                backend: l2.backend().to_owned(),
                breaker: inner.l2_breaker.state(),
            }),
            wal_depth: inner.wal_depth.load(Ordering::Relaxed),
            filter: inner.filter.trust(),
            filter_len: inner.filter.len(),
            warmup_scanned: inner.maint.warmup_progress.load(Ordering::Relaxed),
            l1_bytes: inner.l1.bytes(),
            l1_capacity: inner.l1.capacity(),
            l1_entries: inner.l1.len(),
            unflushed: inner.overlay.size(),
            backpressure: backpressure::assess(inner).0,
            last_repair: inner.last_repair.lock().clone(),
            l2_missed: inner.l2_stale.size(),
            bus_connected: inner.bus.as_ref().map(|_| inner.bus_live.load(Ordering::SeqCst)),
        }
    }
}
