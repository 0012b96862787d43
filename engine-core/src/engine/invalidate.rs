//! Cross-instance invalidation over an [`InvalidationBus`]: publish the stamps of every flushed
//! batch; apply other instances' messages to L1, the overlay and the filter; and on a possible
//! gap (disconnect, lag) stop trusting L1 and the filter until the bus is back and the filter
//! is rebuilt.
//!
//! Staleness bound (while the bus is connected): a value another instance's L1 serves is at
//! most one flush (`batch_max_age_ms` + the batch write) plus the bus delivery time behind the
//! newest write flushed anywhere. Whatever the bus does — including losses it has not yet
//! noticed — an L1 entry is never served longer than `l1_ttl_ms` after it was cached, when set.
//! While disconnected, L1 is not consulted at all (reads go to the backends) and the filter
//! answers no "absent".

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sync_engine_cuckoo::WarmingTicket;

use super::{lifecycle, Inner};
use crate::store::{BusEvent, Change, Invalidation, Subscription, MAX_CHANGES_PER_MESSAGE};

/// Publish the changes of one written batch (chunked). A failed publish is logged and counted;
/// other instances then rely on their own disconnect detection and on `l1_ttl_ms`.
pub(crate) async fn publish(inner: &Inner, changes: Vec<Change>) {
    let Some(bus) = &inner.bus else { return };
    for chunk in changes.chunks(MAX_CHANGES_PER_MESSAGE) {
        let msg = Invalidation { origin: inner.instance, changes: chunk.to_vec() };
        let mut result = bus.publish(&msg).await;
        if result.is_err() {
            // One retry: a reconnecting client usually succeeds at once.
            result = bus.publish(&msg).await;
        }
        match result {
            Ok(()) => {
                metrics::counter!("sync_engine_invalidations_published_total")
                    .increment(chunk.len() as u64);
            }
            Err(e) => {
                metrics::counter!("sync_engine_invalidation_publish_failures_total").increment(1);
                tracing::warn!(error = %e, ids = chunk.len(), "invalidation publish failed; other instances may serve stale L1 entries until their l1_ttl_ms");
            }
        }
    }
}

/// The listener task: applies every event of the subscription until it ends.
pub(crate) async fn listen(inner: Arc<Inner>, mut sub: Subscription) {
    while let Some(event) = sub.recv().await {
        apply(&inner, event);
    }
    tracing::warn!("invalidation subscription ended; L1 and the filter are no longer trusted");
    disconnected(&inner);
}

/// Apply one event.
pub(crate) fn apply(inner: &Arc<Inner>, event: BusEvent) {
    match event {
        BusEvent::Message(m) if m.origin == inner.instance => {}
        BusEvent::Message(m) => {
            metrics::counter!("sync_engine_invalidations_received_total")
                .increment(m.changes.len() as u64);
            let noting = inner.cfg().filter_enabled;
            for c in &m.changes {
                // A floor also when a read of the id is in flight: it must not cache the older
                // value it may have fetched before this message.
                let reading = inner.reads.in_flight(&c.id);
                inner.l1.invalidate(&c.id, c.stamp, reading);
                inner.reads.committed(&inner.l1, [(&c.id, c.stamp)]);
                inner.supersede_unflushed(&c.id, c.stamp);
                if noting && !c.stamp.tombstone {
                    inner.filter.note(&c.id);
                }
                inner.hlc.observe(c.stamp.version);
            }
        }
        BusEvent::Disconnected => disconnected(inner),
        BusEvent::Connected => connected(inner),
    }
}

fn disconnected(inner: &Inner) {
    let _g = inner.bus_lock.lock();
    if inner.bus_live.swap(false, Ordering::SeqCst) {
        metrics::counter!("sync_engine_invalidation_gaps_total").increment(1);
        tracing::warn!("invalidation channel lost: L1 bypassed and filter untrusted until it is back and the filter rebuilt");
    }
    inner.l1.clear();
    inner.filter.get().trust().invalidate();
}

fn connected(inner: &Arc<Inner>) {
    let ticket = {
        let _g = inner.bus_lock.lock();
        // Entries cached while disconnected may be stale: start L1 afresh.
        inner.l1.clear();
        inner.bus_live.store(true, Ordering::SeqCst);
        let f = inner.filter.get();
        (inner.cfg().filter_enabled && !f.trust().is_trusted()).then(|| f.trust().begin_warming())
    };
    tracing::info!("invalidation channel connected");
    if let Some(ticket) = ticket {
        spawn_rebuild(inner.clone(), ticket);
    }
}

fn spawn_rebuild(inner: Arc<Inner>, ticket: WarmingTicket) {
    inner.filter_rebuild.store(false, Ordering::SeqCst);
    tokio::spawn(async move {
        if let Err(e) = lifecycle::fill_filter(&inner, ticket).await {
            tracing::warn!(error = %e, "filter rebuild after reconnect failed; retried by maintenance");
            inner.filter_rebuild.store(true, Ordering::SeqCst);
        }
    });
}

/// Begin a filter warm-up unless the bus is configured and disconnected (a warm-up then could
/// make the filter trusted although messages are being missed).
pub(crate) fn begin_warming(inner: &Inner) -> Option<WarmingTicket> {
    let _g = inner.bus_lock.lock();
    inner.bus_live.load(Ordering::SeqCst).then(|| inner.filter.get().trust().begin_warming())
}

/// Maintenance: retry a failed rebuild.
pub(crate) fn retry_rebuild(inner: &Arc<Inner>) {
    if inner.filter_rebuild.load(Ordering::SeqCst) {
        if let Some(ticket) = begin_warming(inner) {
            spawn_rebuild(inner.clone(), ticket);
        }
    }
}
