//! The write-behind batcher and its flusher task.
//!
//! Submits add to [`Pending`] (one entry per id: the newest stamp wins, so a delete cancels a
//! pending write). A batch leaves when it reaches `batch_max_items` or `batch_max_bytes` (handed
//! to the flusher by the submit that filled it, which returns at once), when its oldest item
//! reaches `batch_max_age_ms` (the flusher's own timer: no `run()` needed), or on demand
//! (durable submits, `flush()`). One flusher task writes batches in order: L2 and L3
//! concurrently; on a retryable L3 error (or an open breaker) the batch goes to the WAL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::write::Route;
use super::Inner;
use crate::store::{CacheEntry, Change};
use crate::{Error, ErrorKind, ObjectId, Stamp, SyncItem};

/// Ack channel of a durable submit or a flush.
pub(crate) type Ack = oneshot::Sender<crate::Result<()>>;

/// One accepted write waiting for its batch.
pub(crate) struct PendingWrite {
    pub item: SyncItem,
    pub route: Route,
    pub ttl: Option<Duration>,
    pub acks: Vec<Ack>,
}

/// A batch on its way to the backends.
#[derive(Default)]
pub(crate) struct Batch {
    pub writes: Vec<PendingWrite>,
    pub bytes: u64,
}

#[derive(Default)]
struct PendingInner {
    writes: HashMap<ObjectId, PendingWrite>,
    bytes: u64,
    oldest: Option<Instant>,
}

/// The open batch.
#[derive(Default)]
pub(crate) struct Pending {
    inner: Mutex<PendingInner>,
    pub notify: Notify,
}

/// Bytes handed to the flusher and not yet written.
#[derive(Default)]
pub(crate) struct Backlog(pub AtomicU64);

/// Messages to the flusher.
pub(crate) enum Job {
    /// A full batch.
    Batch(Batch),
    /// Flush whatever is pending now.
    FlushNow,
    /// Flush what is pending, then answer (everything sent before is written).
    Barrier(oneshot::Sender<()>),
}

impl Pending {
    /// Add a write; returns the batch if it is now full.
    pub fn add(&self, w: PendingWrite, max_items: usize, max_bytes: u64) -> Option<Batch> {
        self.add_then(w, max_items, max_bytes, |_| {})
    }

    /// Add a write and, while the open batch is still locked, call `kept` with the item if it
    /// is the one the batch will carry for its id (not merged into a newer pending write of the
    /// same id, whose batch entry alone will reach L3). Returns the batch if it is now full.
    pub fn add_then(
        &self,
        w: PendingWrite,
        max_items: usize,
        max_bytes: u64,
        kept: impl FnOnce(&SyncItem),
    ) -> Option<Batch> {
        let mut p = self.inner.lock();
        let was_empty = p.writes.is_empty();
        let weight = w.item.weight() as u64;
        match p.writes.get_mut(w.item.id()) {
            Some(cur) => {
                let mut w = w;
                if w.item.supersedes(Some(&cur.item)) {
                    kept(&w.item);
                    let old = cur.item.weight() as u64;
                    w.acks.append(&mut cur.acks);
                    *cur = w;
                    p.bytes = p.bytes.saturating_sub(old) + weight;
                } else {
                    cur.acks.append(&mut w.acks);
                }
            }
            None => {
                kept(&w.item);
                p.writes.insert(w.item.id().clone(), w);
                p.bytes += weight;
            }
        }
        if was_empty {
            p.oldest = Some(Instant::now());
            self.notify.notify_one();
        }
        if p.writes.len() >= max_items || p.bytes >= max_bytes {
            return Some(take_locked(&mut p));
        }
        None
    }

    /// Take the open batch (None when empty).
    pub fn take(&self) -> Option<Batch> {
        let mut p = self.inner.lock();
        (!p.writes.is_empty()).then(|| take_locked(&mut p))
    }

    /// When the open batch must leave by age.
    pub fn deadline(&self, max_age: Duration) -> Option<Instant> {
        self.inner.lock().oldest.map(|t| t + max_age)
    }
}

fn take_locked(p: &mut PendingInner) -> Batch {
    let writes: Vec<PendingWrite> = p.writes.drain().map(|(_, w)| w).collect();
    let bytes = std::mem::take(&mut p.bytes);
    p.oldest = None;
    Batch { writes, bytes }
}

/// Hand a full batch to the flusher.
pub(crate) fn dispatch(inner: &Inner, b: Batch) {
    inner.backlog.0.fetch_add(b.bytes, Ordering::Relaxed);
    if let Err(mpsc::error::SendError(Job::Batch(b))) = inner.flush_tx.send(Job::Batch(b)) {
        // The flusher is gone (engine stopped or crashed): fail the waiters.
        fail_all(b, &Error::new(ErrorKind::ShuttingDown, "the engine's flusher has stopped"));
    }
}

fn fail_all(b: Batch, e: &Error) {
    for w in b.writes {
        for ack in w.acks {
            let _ = ack.send(Err(Error::new(e.kind(), e.message().to_owned())));
        }
    }
}

/// The flusher task: batches by message, by age, in order.
pub(crate) async fn flusher(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    loop {
        let max_age = Inner::ms(inner.cfg().batch_max_age_ms);
        let deadline = inner.pending.deadline(max_age);
        tokio::select! {
            biased;
            job = rx.recv() => match job {
                None => break,
                Some(Job::Batch(b)) => {
                    inner.backlog.0.fetch_sub(b.bytes, Ordering::Relaxed);
                    write_batch(&inner, b).await;
                }
                Some(Job::FlushNow) => {
                    if let Some(b) = inner.pending.take() {
                        write_batch(&inner, b).await;
                    }
                }
                Some(Job::Barrier(done)) => {
                    if let Some(b) = inner.pending.take() {
                        write_batch(&inner, b).await;
                    }
                    let _ = done.send(());
                }
            },
            _ = inner.pending.notify.notified(), if deadline.is_none() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(b) = inner.pending.take() {
                    write_batch(&inner, b).await;
                }
            }
        }
    }
}

/// Write one batch: L3 (or the WAL) and L2 concurrently, then answer the waiters.
#[tracing::instrument(name = "flush_batch", skip_all, fields(items = b.writes.len()))]
pub(crate) async fn write_batch(inner: &Arc<Inner>, b: Batch) {
    let started = Instant::now();
    let l3_items: Vec<SyncItem> =
        b.writes.iter().filter(|w| w.route != Route::L2Only).map(|w| w.item.clone()).collect();
    let l2_entries: Vec<CacheEntry> = b
        .writes
        .iter()
        .filter(|w| w.route != Route::L3Only)
        .map(|w| CacheEntry { item: w.item.clone(), ttl: w.ttl })
        .collect();
    if inner.bus.is_some() {
        // Announce new ids before any tier can answer them, so another instance's filter
        // learns them before a read there could find them (its "absent" is never wrong for
        // an id already in L2/L3). The stamps are announced again once the batch is written.
        let announce: Vec<Change> = b
            .writes
            .iter()
            .filter(|w| !w.item.is_tombstone())
            .map(|w| Change { id: w.item.id().clone(), stamp: w.item.stamp() })
            .collect();
        super::invalidate::publish(inner, announce).await;
    }
    let sent = inner.l2_stale.token();
    let (l3, l2) = tokio::join!(write_l3(inner, &l3_items), write_l2(inner, &l2_entries));
    if inner.l2.is_some() {
        if l2.is_ok() {
            inner.l2_stale.written_entries(sent, &l2_entries);
        }
        // Writes L2 missed (its write failed), and L3-only writes (which skip L2 by design):
        // L2 may hold an older version of them, so reads skip it for them until it has them.
        let missed: Vec<(&ObjectId, Stamp)> = b
            .writes
            .iter()
            .filter(|w| w.route == Route::L3Only || (w.route == Route::Both && l2.is_err()))
            .map(|w| (w.item.id(), w.item.stamp()))
            .collect();
        if !missed.is_empty() {
            inner.l2_stale.mark(missed);
        }
    }
    metrics::histogram!("sync_engine_batch_items").record(b.writes.len() as f64);
    metrics::histogram!("sync_engine_flush_seconds").record(started.elapsed().as_secs_f64());
    let mut retry = Vec::new();
    let mut changes = Vec::new();
    let l3_rejected = matches!(&l3, Err(e) if !e.is_retryable());
    for w in b.writes {
        // Announce every write some tier may now hold (an L3-rejected one is held nowhere).
        if inner.bus.is_some() && (w.route == Route::L2Only || !l3_rejected) {
            changes.push(Change { id: w.item.id().clone(), stamp: w.item.stamp() });
        }
        let result = match w.route {
            Route::L2Only => clone_result(&l2),
            _ => clone_result(&l3),
        };
        let requeue = w.route != Route::L2Only && matches!(&l3, Err(e) if e.is_retryable());
        for ack in w.acks {
            let _ = ack.send(clone_result(&result));
        }
        if requeue {
            retry.push(w.item);
        }
    }
    super::invalidate::publish(inner, changes).await;
    // Neither L3 nor the WAL took these: keep them in the overlay and try again by age.
    for item in retry {
        let add = PendingWrite { item, route: Route::L3Only, ttl: None, acks: Vec::new() };
        let cfg = inner.cfg();
        if let Some(full) = inner.pending.add(add, cfg.batch_max_items, cfg.batch_max_bytes) {
            drop(cfg);
            dispatch(inner, full);
        }
    }
}

fn clone_result(r: &crate::Result<()>) -> crate::Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::new(e.kind(), e.to_string()).with_status(e.status())),
    }
}

/// L3, or the WAL when L3 is unavailable. Ok means durable.
async fn write_l3(inner: &Arc<Inner>, items: &[SyncItem]) -> crate::Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    if inner.l3_breaker.allow() {
        match inner.l3.put_batch(items).await {
            Ok(outcome) => {
                inner.l3_breaker.success();
                // Before the overlay lets go: a read that misses the overlay from now on must
                // find these stamps recorded if it joins a read that started earlier.
                inner.reads.committed(&inner.l1, super::stamps(items));
                inner.release_unflushed(super::stamps(items));
                if outcome.stale > 0 {
                    forget_losers(inner, items);
                }
                return Ok(());
            }
            Err(e) if e.is_retryable() => {
                inner.l3_breaker.failure();
                tracing::warn!(error = %e, items = items.len(), "L3 write failed; diverting the batch to the WAL");
            }
            Err(e) => {
                inner.l3_breaker.success();
                tracing::error!(error = %e, items = items.len(), "L3 rejected a batch");
                inner.release_unflushed(super::stamps(items));
                for i in items {
                    inner.l1.remove(i.id());
                }
                return Err(e);
            }
        }
    }
    divert_to_wal(inner, items).await
}

/// Some items lost to newer stamps already in L3 (written by another instance, say): drop
/// them from L1 so the next read fetches the winner. (Only the exact losing entry is dropped.)
pub(crate) fn forget_losers(inner: &Inner, items: &[SyncItem]) {
    for i in items {
        inner.l1.forget(i.id(), i.stamp());
    }
}

async fn divert_to_wal(inner: &Arc<Inner>, items: &[SyncItem]) -> crate::Result<()> {
    match inner.wal.append(items).await {
        Ok(_) => {
            inner.wal_depth.fetch_add(items.len() as u64, Ordering::Relaxed);
            metrics::counter!("sync_engine_wal_diverted_items_total").increment(items.len() as u64);
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, items = items.len(), "WAL append failed; the batch stays in memory and is retried");
            Err(e.persistent())
        }
    }
}

async fn write_l2(inner: &Arc<Inner>, entries: &[CacheEntry]) -> crate::Result<()> {
    let Some(l2) = &inner.l2 else { return Ok(()) };
    if entries.is_empty() {
        return Ok(());
    }
    if !inner.l2_breaker.allow() {
        inner.l2_needs_repair.store(true, Ordering::Relaxed);
        return Err(Error::unavailable("L2 circuit breaker is open")
            .with_backend("l2")
            .with_operation("put_batch"));
    }
    match l2.put_batch(entries).await {
        Ok(_) => {
            inner.l2_breaker.success();
            Ok(())
        }
        Err(e) => {
            inner.l2_breaker.failure();
            inner.l2_needs_repair.store(true, Ordering::Relaxed);
            tracing::warn!(error = %e, "L2 write failed; L2 will be repaired from L3");
            Err(e)
        }
    }
}
