//! Self-healing reads. L2 refused a value as corrupt (its bytes were changed behind the store's
//! back: the store checks every value it reads), so the read went on to L3. Here, in the
//! background, the corrupt entries among the ids read are evicted through the store's audit
//! ([`crate::store::CacheStore::audit_ids`], which keeps L2's shadow exact and removes only
//! entries still as it checked them) and L3's items written in their place by newer-wins.
//! Without this, the damaged value would stay: newer-wins refuses L3's item over a stamp the
//! damage may have raised, and the Merkle comparison does not see the damage.
//!
//! One task heals at a time, draining a bounded queue; ids beyond the bound are only promoted
//! (harmless), and a later read that reaches the damaged value queues them again.

use std::sync::Arc;

use super::Inner;
use crate::store::CacheEntry;
use crate::{ObjectId, SyncItem};

/// Ids waiting for a heal, at most this many.
const MAX_QUEUED: usize = 10_000;
/// Ids per audit call.
const STEP: usize = 1_000;

/// Reads waiting for a heal (`Inner::l2_heal`).
#[derive(Default)]
pub(crate) struct Queue {
    running: bool,
    ids: Vec<ObjectId>,
    items: Vec<SyncItem>,
}

/// Evict the corrupt entries among `ids` from L2, then write `items` (read from L3).
pub(super) fn spawn(inner: &Arc<Inner>, ids: Vec<ObjectId>, items: Vec<SyncItem>) {
    let Some(l2) = inner.l2.clone() else { return };
    {
        let mut q = inner.l2_heal.lock();
        if q.ids.len() + ids.len() > MAX_QUEUED {
            drop(q);
            tracing::debug!(ids = ids.len(), "L2 self-heal queue full; promoting only");
            super::read::promote_to_l2(inner, items);
            return;
        }
        q.ids.extend(ids);
        q.items.extend(items);
        if q.running {
            return;
        }
        q.running = true;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        loop {
            let (ids, items) = {
                let mut q = inner.l2_heal.lock();
                if q.ids.is_empty() {
                    q.running = false;
                    q.items.clear();
                    return;
                }
                (std::mem::take(&mut q.ids), std::mem::take(&mut q.items))
            };
            for chunk in ids.chunks(STEP) {
                match l2.audit_ids(chunk, true).await {
                    Ok(r) if !r.evicted.is_empty() => {
                        metrics::counter!("sync_engine_l2_healed_total")
                            .increment(r.evicted.len() as u64);
                        tracing::warn!(
                            evicted = r.evicted.len(),
                            first = %r.evicted[0],
                            "L2 held values changed behind its back; evicted, rewriting from L3"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "L2 self-heal: audit failed"),
                }
            }
            if !items.is_empty() {
                let entries: Vec<CacheEntry> = items.into_iter().map(CacheEntry::new).collect();
                let sent = inner.l2_stale.token();
                match l2.put_batch(&entries).await {
                    Ok(_) => inner.l2_stale.written_entries(sent, &entries),
                    Err(e) => tracing::debug!(error = %e, "L2 self-heal: rewrite failed"),
                }
            }
        }
    });
}
