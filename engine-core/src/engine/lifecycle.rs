//! Startup (the eight phases of DESIGN.md, each timed and published) and shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use sync_engine_cuckoo::WarmingTicket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    batcher,
    breaker::{Breaker, BreakerState},
    filter::{Filter, FilterPair},
    invalidate,
    l1::L1,
    maintenance, Builder, EngineState, Inner, SyncEngine, Tasks,
};
use crate::store::MerkleExt;
use crate::store::{BusEvent, InstanceId, Subscription};
use crate::{Error, ErrorKind};

/// Time one startup phase: a tracing span and the `sync_engine_startup_phase_seconds` metric.
async fn phase<T>(name: &'static str, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.instrument(tracing::info_span!("startup_phase", phase = name)).await;
    let secs = started.elapsed().as_secs_f64();
    metrics::histogram!("sync_engine_startup_phase_seconds", "phase" => name).record(secs);
    tracing::info!(phase = name, seconds = secs, "startup phase done");
    out
}

pub(crate) async fn start(b: Builder) -> crate::Result<SyncEngine> {
    b.config.validate()?;
    let l3 =
        b.l3.ok_or_else(|| Error::new(ErrorKind::Config, "no archive (L3) given to the builder"))?;
    let wal = b.wal.ok_or_else(|| Error::new(ErrorKind::Config, "no WAL given to the builder"))?;
    let cfg = b.config;
    let (state_tx, _) = watch::channel(EngineState::Created);
    let (flush_tx, flush_rx) = mpsc::unbounded_channel();
    let pause = Duration::from_millis(cfg.breaker_open_ms);
    let l1_ttl = (cfg.l1_ttl_ms > 0).then(|| Duration::from_millis(cfg.l1_ttl_ms));
    let inner = Arc::new(Inner {
        limits: cfg.limits(),
        l1: L1::new(cfg.l1_max_bytes, l1_ttl),
        filter: Filter::new(cfg.filter_capacity),
        l3_breaker: Breaker::new("l3", cfg.breaker_failure_threshold, pause),
        l2_breaker: Breaker::new("l2", cfg.breaker_failure_threshold, pause),
        config: RwLock::new(cfg),
        l3,
        l2: b.l2,
        wal,
        instance: InstanceId::random(),
        bus_live: AtomicBool::new(b.bus.is_none()),
        bus: b.bus,
        bus_lock: Mutex::new(()),
        filter_rebuild: AtomicBool::new(false),
        listening: AtomicBool::new(false),
        overlay: Default::default(),
        pending: Default::default(),
        flush_tx,
        backlog: Default::default(),
        hlc: Default::default(),
        state_tx,
        closing: AtomicBool::new(false),
        l3_needs_resync: AtomicBool::new(false),
        l2_needs_repair: AtomicBool::new(false),
        l2_stale: Default::default(),
        l2_heal: Default::default(),
        wal_depth: AtomicU64::new(0),
        reads: Default::default(),
        last_repair: Mutex::new(None),
        maint: maintenance::MaintState::new(b.reload),
    });
    inner.set_state(EngineState::Connecting);

    // 1. The WAL first: it is the durability lifeline. Failing here fails start.
    let depth = phase("open_wal", inner.wal.stats()).await?;
    inner.wal_depth.store(depth.items, Ordering::Relaxed);

    // Subscribe before L3's root is read: every write committed after that root is then
    // announced to this instance (messages wait in the subscription until startup is done).
    let sub = match &inner.bus {
        Some(_) => Some(phase("subscribe", subscribe(&inner)).await?),
        None => None,
    };

    // 2. L3, with retries.
    let reachable = phase("connect_l3", connect_l3(&inner)).await;
    let degraded = match reachable {
        Ok(()) => false,
        Err(e) if inner.cfg().allow_degraded_start => {
            tracing::warn!(error = %e, "L3 unreachable at start; starting degraded (writes go to the WAL)");
            true
        }
        Err(e) => return Err(e),
    };

    let flusher = tokio::spawn(batcher::flusher(inner.clone(), flush_rx));
    let engine =
        SyncEngine { inner: inner.clone(), tasks: Arc::new(Tasks(Mutex::new(vec![flusher]))) };
    // The listener starts once the filter is set up (it must not note ids into a filter that
    // a restore then replaces).
    let start_listener = |sub: Option<Subscription>| {
        if let Some(sub) = sub {
            inner.listening.store(true, Ordering::SeqCst);
            let t = tokio::spawn(invalidate::listen(inner.clone(), sub));
            engine.tasks.0.lock().push(t);
        }
    };

    if degraded {
        inner.l3_breaker.trip();
        inner.l3_needs_resync.store(true, Ordering::Relaxed);
        // Reads must see what the WAL holds even though L3 does not yet.
        phase("load_wal_overlay", load_wal_overlay(&inner)).await?;
        if inner.l2.is_some() {
            phase("connect_l2", connect_l2(&inner)).await;
        }
        start_listener(sub);
        inner.set_state(EngineState::Degraded);
        return Ok(engine);
    }

    resync(&inner).await?;
    if inner.l2.is_some() {
        phase("connect_l2", connect_l2(&inner)).await;
    }
    // Step 7 runs whenever L2 answered at start (its breaker is closed), also when the drain
    // of step 3 marked L2 for repair: a crash can leave L2 ahead of L3 or behind it.
    if inner.l2.is_some() && inner.l2_breaker.state() == BreakerState::Closed {
        inner.set_state(EngineState::SyncingL2);
        // 7. Compare L2 with L3; repair only stale branches.
        if let Err(e) = phase("sync_l2", super::repair::run(&inner, "", true, false)).await {
            tracing::warn!(error = %e, "L2 repair at start failed; retried by maintenance");
            inner.l2_needs_repair.store(true, Ordering::Relaxed);
        }
    }
    if inner.cfg().filter_enabled && !inner.filter.get().trust().is_trusted() {
        inner.set_state(EngineState::WarmingUp);
        phase("warm_filter", warm_filter(&inner)).await?;
    }
    start_listener(sub);
    inner.set_state(EngineState::Ready);
    Ok(engine)
}

/// Subscribe to the bus and wait (bounded) for the first event: `Connected` lets L1 and the
/// filter be trusted; anything else starts with L1 bypassed and the filter untrusted until the
/// listener sees `Connected`.
async fn subscribe(inner: &Inner) -> crate::Result<Subscription> {
    let Some(bus) = &inner.bus else {
        return Err(Error::new(ErrorKind::Config, "no invalidation bus configured"));
    };
    let mut sub = bus.subscribe().await?;
    let wait = Duration::from_millis(inner.cfg().redis_connect_timeout_ms.max(1) * 2);
    match tokio::time::timeout(wait, sub.recv()).await {
        Ok(Some(BusEvent::Connected)) => {
            inner.bus_live.store(true, Ordering::SeqCst);
        }
        Ok(Some(other)) => {
            tracing::warn!(event = ?other, "invalidation bus not connected at start; L1 bypassed until it is");
        }
        Ok(None) => {
            return Err(Error::unavailable("the invalidation subscription ended at once")
                .with_operation("start"));
        }
        Err(_) => {
            tracing::warn!("invalidation bus not connected within the connect timeout; L1 bypassed until it is");
        }
    }
    Ok(sub)
}

async fn connect_l3(inner: &Inner) -> crate::Result<()> {
    let (attempts, mut backoff) = {
        let c = inner.cfg();
        (c.startup_l3_attempts.max(1), Duration::from_millis(c.startup_backoff_ms))
    };
    let mut last = None;
    for attempt in 1..=attempts {
        match inner.l3.ping().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(attempt, attempts, error = %e, "L3 not reachable yet");
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
            }
        }
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(Error::unavailable(format!("L3 unreachable after {attempts} attempts: {e}"))
        .with_operation("start")
        .persistent())
}

/// Phases 3–5 (also run by maintenance when L3 returns after a degraded start): drain the WAL,
/// read the trusted root, restore the filter snapshot only if it was taken at that root.
pub(crate) async fn resync(inner: &Inner) -> crate::Result<()> {
    inner.set_state(EngineState::DrainingWal);
    phase("drain_wal", maintenance::drain_wal(inner)).await?;
    let root = phase("read_l3_root", inner.l3.root_hash()).await?;
    phase("restore_filter", restore_filter(inner, root)).await;
    inner.l3_needs_resync.store(false, Ordering::Relaxed);
    Ok(())
}

async fn restore_filter(inner: &Inner, root: sync_engine_merkle::Digest) {
    // With a bus, only at start (before the listener runs) and while connected: a restore
    // replaces the filter object, which would lose ids the listener notes into the old one.
    let listening = inner.listening.load(Ordering::SeqCst);
    if !inner.cfg().filter_enabled || listening || !inner.bus_live.load(Ordering::SeqCst) {
        return;
    }
    let snap = match inner.wal.load_snapshot().await {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::info!("no filter snapshot; the filter will be rebuilt");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "filter snapshot unreadable; the filter will be rebuilt");
            return;
        }
    };
    if snap.merkle_root != root {
        tracing::info!(snapshot_root = %snap.merkle_root, l3_root = %root, "filter snapshot is stale; rebuilding");
        return;
    }
    match FilterPair::import(&snap.bytes) {
        Ok(f) => {
            let ticket = f.trust().begin_warming();
            match f.trust().finish_warming(ticket) {
                Ok(()) => {
                    tracing::info!(entries = snap.entries, "filter restored from snapshot");
                    inner.filter.replace(f);
                }
                Err(e) => tracing::warn!(error = %e, "restored filter could not be trusted"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "filter snapshot corrupt; rebuilding"),
    }
}

/// Rebuild the filter in place by a keyset scan of L3, then trust it — unless something
/// invalidated it meanwhile. Ids written during the scan are inserted by their submits.
pub(crate) async fn warm_filter(inner: &Inner) -> crate::Result<()> {
    if !inner.cfg().filter_enabled {
        return Ok(());
    }
    let f = inner.filter.get();
    // With a bus the listener notes ids concurrently: keep them (no clear; stale ids only cost
    // false positives). Without one, start afresh.
    if inner.bus.is_none() {
        f.clear();
    }
    let Some(ticket) = invalidate::begin_warming(inner) else {
        tracing::info!("filter warm-up deferred until the invalidation bus is connected");
        return Ok(());
    };
    fill_filter(inner, ticket).await
}

/// Insert every id of L3 (keyset scan), then finish `ticket` (trusted unless something
/// invalidated the filter meanwhile).
pub(crate) async fn fill_filter(inner: &Inner, ticket: WarmingTicket) -> crate::Result<()> {
    let f = inner.filter.get();
    let mut scan = crate::store::KeyScan::prefix("", 10_000);
    let mut scanned: u64 = 0;
    loop {
        let ids = inner.l3.scan_filter_keys(&scan).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        let full = ids.len() >= scan.limit;
        for id in &ids {
            inner.filter.note(id);
        }
        scanned += ids.len() as u64;
        inner.maint.warmup_progress.store(scanned, Ordering::Relaxed);
        tracing::debug!(scanned, "filter warm-up progress");
        if !full {
            break;
        }
        scan = scan.next_page(&last);
    }
    match f.trust().finish_warming(ticket) {
        Ok(()) => tracing::info!(ids = scanned, "filter rebuilt and trusted"),
        Err(e) => {
            tracing::warn!(error = %e, "filter rebuilt but invalidated meanwhile; stays untrusted")
        }
    }
    Ok(())
}

async fn load_wal_overlay(inner: &Inner) -> crate::Result<()> {
    let max = usize::try_from(inner.cfg().wal_max_items).unwrap_or(usize::MAX);
    for e in inner.wal.peek(max).await? {
        inner.hold_unflushed(&e.item);
        inner.hlc.observe(e.item.version());
    }
    Ok(())
}

async fn connect_l2(inner: &Inner) {
    let Some(l2) = &inner.l2 else { return };
    if let Err(e) = l2.ping().await {
        tracing::warn!(error = %e, "L2 unreachable at start; running without it until it returns");
        inner.l2_breaker.trip();
        inner.l2_needs_repair.store(true, Ordering::Relaxed);
    }
}

impl SyncEngine {
    /// Stop: refuse new writes, flush every batch, drain the WAL if L3 is reachable, snapshot
    /// the filter, end in `Stopped`. Calling it again is harmless.
    pub async fn shutdown(&self) -> crate::Result<()> {
        let inner = &self.inner;
        if inner.closing.swap(true, Ordering::AcqRel) {
            // Already shutting down or stopped: wait for Stopped.
            let mut rx = inner.state_tx.subscribe();
            let _ = rx.wait_for(|s| *s == EngineState::Stopped).await;
            return Ok(());
        }
        inner.set_state(EngineState::ShuttingDown);
        let flushed = self.flush().await;
        if let Err(e) = &flushed {
            tracing::error!(error = %e, "flush at shutdown failed");
        }
        if inner.wal_depth.load(Ordering::Relaxed) > 0 && inner.l3.ping().await.is_ok() {
            if let Err(e) = maintenance::drain_wal(inner).await {
                tracing::warn!(error = %e, "WAL drain at shutdown stopped; entries stay in the WAL");
            }
        }
        if let Err(e) = maintenance::snapshot_filter(inner).await {
            tracing::warn!(error = %e, "filter snapshot at shutdown failed");
        }
        for t in self.tasks.0.lock().drain(..) {
            t.abort();
        }
        inner.set_state(EngineState::Stopped);
        flushed
    }
}
