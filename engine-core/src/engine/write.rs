//! The write API: submit, submit_many, delete, flush.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::batcher::{dispatch, Job, PendingWrite};
use super::{backpressure, SyncEngine};
use crate::{Error, ErrorKind, ObjectId, SyncItem};

/// Which tiers a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// L1, L2 and L3 (default).
    #[default]
    Both,
    /// L1 and L2 only, usually with a TTL: never in L3, never in the WAL, lost if Redis loses it.
    L2Only,
    /// L1 and L3 only.
    L3Only,
}

/// Options of one write.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Caller-chosen version; default: the engine's hybrid logical clock.
    pub version: Option<u64>,
    /// Tiers to write.
    pub route: Route,
    /// L2 time-to-live for `Route::L2Only` writes (default: `l2_default_ttl_ms`, if set);
    /// ignored on other routes, whose items must stay in L2's Merkle shadow.
    pub ttl: Option<Duration>,
    /// Return only once L3 or the WAL holds the write (L2 for `Route::L2Only`).
    pub durable: bool,
    /// Optional state tag.
    pub state: Option<String>,
}

impl SubmitOptions {
    /// Durable acknowledgement.
    pub fn durable() -> SubmitOptions {
        SubmitOptions { durable: true, ..SubmitOptions::default() }
    }
}

impl SyncEngine {
    /// Write `content` under `id` (write-behind: durable within one flush interval). Returns the
    /// version the write got. Bad input is rejected with an error naming it, storing nothing.
    pub async fn submit(&self, id: &str, content: impl Into<Bytes>) -> crate::Result<u64> {
        self.submit_with(id, content, SubmitOptions::default()).await
    }

    /// Write with options (version, route, TTL, durability, state tag).
    pub async fn submit_with(
        &self,
        id: &str,
        content: impl Into<Bytes>,
        opts: SubmitOptions,
    ) -> crate::Result<u64> {
        let id = ObjectId::with_max_len(id, self.inner.limits.max_id_len)?;
        let version = opts.version.unwrap_or_else(|| self.inner.hlc.next());
        let mut item = SyncItem::new(id, version, content);
        if let Some(state) = &opts.state {
            item = item.with_state(state.clone());
        }
        self.submit_item(item, &opts).await
    }

    /// Write many items (each validated first: one bad item rejects the call, storing nothing).
    pub async fn submit_many(
        &self,
        items: Vec<SyncItem>,
        opts: SubmitOptions,
    ) -> crate::Result<()> {
        for item in &items {
            self.inner.limits.check(item)?;
        }
        let mut acks = Vec::new();
        for item in items {
            acks.push(self.enqueue(item, &opts).await?);
        }
        self.await_acks(acks, opts.durable).await
    }

    /// Delete `id`: a versioned tombstone that travels like a write and hides the item.
    pub async fn delete(&self, id: &str) -> crate::Result<u64> {
        self.delete_with(id, SubmitOptions::default()).await
    }

    /// Delete with options (version, durability, route).
    pub async fn delete_with(&self, id: &str, opts: SubmitOptions) -> crate::Result<u64> {
        let id = ObjectId::with_max_len(id, self.inner.limits.max_id_len)?;
        let version = opts.version.unwrap_or_else(|| self.inner.hlc.next());
        self.submit_item(SyncItem::tombstone(id, version), &opts).await
    }

    /// Submit a prepared item (write or tombstone).
    pub async fn submit_item(&self, item: SyncItem, opts: &SubmitOptions) -> crate::Result<u64> {
        self.inner.limits.check(&item)?;
        let version = item.version();
        let ack = self.enqueue(item, opts).await?;
        self.await_acks(vec![ack], opts.durable).await?;
        Ok(version)
    }

    /// Return once every write submitted before the call is in L3 or the WAL.
    pub async fn flush(&self) -> crate::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .flush_tx
            .send(Job::Barrier(tx))
            .map_err(|_| Error::new(ErrorKind::ShuttingDown, "the engine has stopped"))?;
        rx.await.map_err(|_| Error::new(ErrorKind::ShuttingDown, "the engine stopped during flush"))
    }

    async fn enqueue(
        &self,
        item: SyncItem,
        opts: &SubmitOptions,
    ) -> crate::Result<Option<oneshot::Receiver<crate::Result<()>>>> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::ShuttingDown,
                "the engine is shutting down and accepts no writes",
            )
            .with_operation("submit"));
        }
        if opts.route == Route::L2Only && inner.l2.is_none() {
            return Err(Error::invalid("route L2Only needs an L2 cache, and none is configured")
                .with_operation("submit"));
        }
        backpressure::admit(inner).await?;
        inner.hlc.observe(item.version());
        // The filter learns the id before the write is acknowledged, whatever its route.
        if !item.is_tombstone() {
            inner.filter.note(item.id());
        }
        if opts.route != Route::L2Only {
            inner.hold_unflushed(&item);
        }
        // L1 is newer-wins, but it may have been cleared (a bus gap) while a newer write of
        // this id is still on its way: then this older write must not be cached. Two places
        // hold such a winner: the overlay (in flight), and the open batch, whose newer entry
        // absorbs this write so that it never reaches L3 to be reported stale (the overlay may
        // have dropped that entry already, superseded by another instance's newer stamp).
        let superseded = inner
            .overlay
            .get(item.id())
            .is_some_and(|cur| cur.stamp() != item.stamp() && !item.supersedes(Some(&cur)));
        // TTLs apply to L2-only writes: an item bound for L3 must stay in L2's Merkle shadow.
        let ttl = if opts.route == Route::L2Only {
            opts.ttl.or_else(|| {
                let ms = inner.cfg().l2_default_ttl_ms;
                (ms > 0).then(|| Duration::from_millis(ms))
            })
        } else {
            None
        };
        let (ack, rx) = if opts.durable {
            let (tx, rx) = oneshot::channel();
            (vec![tx], Some(rx))
        } else {
            (Vec::new(), None)
        };
        let w = PendingWrite { item, route: opts.route, ttl, acks: ack };
        let (max_items, max_bytes) = {
            let c = inner.cfg();
            (c.batch_max_items, c.batch_max_bytes)
        };
        metrics::counter!("sync_engine_submits_total").increment(1);
        let cache = |kept: &SyncItem| {
            if !superseded {
                inner.l1.put(kept);
            }
        };
        if let Some(full) = inner.pending.add_then(w, max_items, max_bytes, cache) {
            dispatch(inner, full);
        }
        Ok(rx)
    }

    async fn await_acks(
        &self,
        acks: Vec<Option<oneshot::Receiver<crate::Result<()>>>>,
        durable: bool,
    ) -> crate::Result<()> {
        if !durable {
            return Ok(());
        }
        let _ = self.inner.flush_tx.send(Job::FlushNow);
        for rx in acks.into_iter().flatten() {
            rx.await.map_err(|_| {
                Error::new(
                    ErrorKind::ShuttingDown,
                    "the engine stopped before the write was durable",
                )
            })??;
        }
        Ok(())
    }
}
