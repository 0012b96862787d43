//! The read path: L1 → overlay → filter (only when trusted) → L2 → L3, promoting on the way
//! back; concurrent misses of one id share one backend read.

use std::sync::Arc;

use tokio::time::Instant;

use super::coalesce::Answer;
use super::{Inner, SyncEngine};
use crate::store::CacheEntry;
use crate::{Error, ErrorKind, ObjectId, SyncItem};

fn hit(tier: &'static str, started: Instant) {
    metrics::counter!("sync_engine_get_total", "tier" => tier).increment(1);
    metrics::histogram!("sync_engine_get_seconds", "tier" => tier)
        .record(started.elapsed().as_secs_f64());
}

impl SyncEngine {
    /// The item under `id`, or `None` if absent or deleted.
    pub async fn get(&self, id: &str) -> crate::Result<Option<SyncItem>> {
        let id = ObjectId::with_max_len(id, self.inner.limits.max_id_len)?;
        self.get_id(&id).await
    }

    /// [`get`](Self::get) with a validated id.
    pub async fn get_id(&self, id: &ObjectId) -> crate::Result<Option<SyncItem>> {
        let started = Instant::now();
        if let Some(local) = local(&self.inner, id) {
            hit("l1", started);
            return Ok(Some(local).filter(|i| !i.is_tombstone()));
        }
        if self.inner.filter.definitely_absent(id) {
            hit("filter", started);
            return Ok(None);
        }
        let ticket = self.inner.reads.join(id);
        let mut answer = ticket.cell.answer.get_or_init(|| fetch(&self.inner, id)).await.clone();
        // A write of this id committed while the shared read was on its way, and the answer is
        // older: read L3 again (once; L3 holds that write, unless it was another instance's
        // L2-only write, whose answer then stays what the tiers hold).
        if matches!(&answer, Ok(item) if self.inner.reads.superseded(id, item.as_ref())) {
            answer = reread(&self.inner, id).await;
        }
        drop(ticket);
        answer.map_err(|(kind, msg)| Error::new(kind, msg).with_operation("get"))
    }

    /// Many items, in the order asked; backend reads are batched.
    pub async fn get_many(&self, ids: &[ObjectId]) -> crate::Result<Vec<Option<SyncItem>>> {
        let inner = &self.inner;
        let mut out: Vec<Option<SyncItem>> = vec![None; ids.len()];
        let mut missing: Vec<usize> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match local(inner, id) {
                Some(item) => out[i] = Some(item).filter(|x| !x.is_tombstone()),
                None if inner.filter.definitely_absent(id) => {}
                None => missing.push(i),
            }
        }
        let chunk = inner.cfg().batch_max_items.max(1);
        for part in missing.chunks(chunk) {
            let part_ids: Vec<ObjectId> = part.iter().map(|&i| ids[i].clone()).collect();
            let _reading = inner.reads.batch(&part_ids);
            let (found, _) = read_through(inner, &part_ids).await?;
            for ((&i, id), item) in part.iter().zip(&part_ids).zip(found) {
                out[i] = if inner.reads.superseded(id, item.as_ref()) {
                    reread(inner, id).await.map_err(|(kind, msg)| Error::new(kind, msg))?
                } else {
                    item
                };
            }
        }
        Ok(out)
    }
}

/// L1, then the overlay of not-yet-in-L3 writes. Tombstones are returned (they answer "deleted").
/// L1 is skipped while the invalidation channel is disconnected (it may be missing messages).
fn local(inner: &Inner, id: &ObjectId) -> Option<SyncItem> {
    let l1 = if inner.bus_live.load(std::sync::atomic::Ordering::Acquire) {
        inner.l1.get(id)
    } else {
        None
    };
    l1.or_else(|| inner.overlay.get(id))
}

/// L3 again, for an answer a commit overtook (no L2: it may not hold that commit yet).
async fn reread(inner: &Arc<Inner>, id: &ObjectId) -> Answer {
    let found =
        read_l3(inner, std::slice::from_ref(id)).await.map_err(|e| (e.kind(), e.to_string()))?;
    let item = found.into_iter().next().flatten();
    if let Some(item) = &item {
        inner.reads.fill(&inner.l1, item);
    }
    Ok(item)
}

async fn fetch(inner: &Arc<Inner>, id: &ObjectId) -> Answer {
    let started = Instant::now();
    let (mut found, from_l2) = read_through(inner, std::slice::from_ref(id))
        .await
        .map_err(|e| (e.kind(), e.to_string()))?;
    let item = found.pop().flatten();
    hit(
        match (&item, from_l2) {
            (None, _) => "miss",
            (Some(_), 0) => "l3",
            (Some(_), _) => "l2",
        },
        started,
    );
    Ok(item)
}

/// `ids` from L2 (except those L2 missed a write of), the rest from L3, filling L1 and
/// promoting L3's answers (or healing L2 if it refused a damaged value). Also returns how many
/// L2 answered.
async fn read_through(
    inner: &Arc<Inner>,
    ids: &[ObjectId],
) -> crate::Result<(Vec<Option<SyncItem>>, usize)> {
    let mut out: Vec<Option<SyncItem>> = vec![None; ids.len()];
    let mut rest: Vec<usize> = (0..ids.len()).collect();
    let mut corrupt = false;
    if let Some(l2) = &inner.l2 {
        // Ids L2 missed a write of go straight to L3.
        let (ask, skip): (Vec<usize>, Vec<usize>) =
            (0..ids.len()).partition(|&i| !inner.l2_stale.suspect(&ids[i]));
        // (The breaker last: in half-open, `allow` hands out the one probe.)
        if !ask.is_empty() && inner.l2_breaker.allow() {
            let ask_ids: Vec<ObjectId> = ask.iter().map(|&i| ids[i].clone()).collect();
            match l2.get_many(&ask_ids).await {
                Ok(found) => {
                    inner.l2_breaker.success();
                    rest = skip;
                    for (&i, item) in ask.iter().zip(found) {
                        match item {
                            Some(item) => {
                                inner.reads.fill(&inner.l1, &item);
                                out[i] = Some(item);
                            }
                            None => rest.push(i),
                        }
                    }
                    rest.sort_unstable();
                }
                // The server answered, with a damaged value: not an outage (self-healed below).
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    inner.l2_breaker.success();
                    corrupt = true;
                    tracing::debug!(error = %e, "L2 refused a damaged value; reading L3");
                }
                Err(e) => {
                    inner.l2_breaker.failure();
                    tracing::debug!(error = %e, "L2 read failed; falling through to L3");
                }
            }
        }
    }
    let from_l2 = ids.len() - rest.len();
    if rest.is_empty() {
        return Ok((out, from_l2));
    }
    let rest_ids: Vec<ObjectId> = rest.iter().map(|&i| ids[i].clone()).collect();
    let found = read_l3(inner, &rest_ids).await?;
    let mut promote = Vec::new();
    for (&i, item) in rest.iter().zip(found) {
        if let Some(item) = &item {
            inner.reads.fill(&inner.l1, item);
            promote.push(item.clone());
        }
        out[i] = item;
    }
    if corrupt {
        super::heal::spawn(inner, rest_ids, promote);
    } else {
        promote_to_l2(inner, promote);
    }
    Ok((out, from_l2))
}

async fn read_l3(inner: &Inner, ids: &[ObjectId]) -> crate::Result<Vec<Option<SyncItem>>> {
    if !inner.l3_breaker.allow() {
        return Err(
            Error::unavailable("L3 is unavailable (circuit breaker open)").with_operation("get")
        );
    }
    match inner.l3.get_many(ids).await {
        Ok(v) => {
            inner.l3_breaker.success();
            Ok(v)
        }
        Err(e) => {
            if e.is_retryable() {
                inner.l3_breaker.failure();
            } else {
                inner.l3_breaker.success();
            }
            Err(e)
        }
    }
}

/// Write items read from L3 into L2 in the background (newer-wins keeps this harmless).
pub(super) fn promote_to_l2(inner: &Arc<Inner>, items: Vec<SyncItem>) {
    let Some(l2) = inner.l2.clone() else { return };
    // A value a newer commit overtook would only lose to it in L2 (or, if that commit's L2
    // write failed, sit there older than L3 until repaired): not worth the round trip.
    let items: Vec<SyncItem> =
        items.into_iter().filter(|i| !inner.reads.superseded(i.id(), Some(i))).collect();
    if items.is_empty() || !inner.l2_breaker.allow() {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        let entries: Vec<CacheEntry> = items.into_iter().map(CacheEntry::new).collect();
        let sent = inner.l2_stale.token();
        match l2.put_batch(&entries).await {
            Ok(_) => {
                inner.l2_breaker.success();
                inner.l2_stale.written_entries(sent, &entries);
            }
            Err(_) => inner.l2_breaker.failure(),
        }
    });
}
