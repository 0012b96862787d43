//! The repair's copy: differing ids rewritten in L2 from L3 (or removed from L2), in chunks,
//! a few at once, starting while the diff is still comparing the rest of the tree.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use sync_engine_merkle::{DiffKind, Difference};
use tokio::sync::mpsc::UnboundedReceiver;

use super::super::{Inner, L2Store};
use crate::store::CacheEntry;
use crate::{ObjectId, SyncItem};

/// A write of a repaired id that raced the repair may have reached L2 before the repair's
/// removal took it out again (the removal is there for tampered entries, which newer-wins
/// would keep): such ids — on their way to L3, or committed since the repair read L3 — are
/// marked as missing from L2, so reads skip L2 for them until it holds that write.
fn mark_overtaken<'a>(
    inner: &Inner,
    repaired: impl IntoIterator<Item = (&'a ObjectId, Option<&'a SyncItem>)>,
) {
    let mut missed = Vec::new();
    for (id, from_l3) in repaired {
        let newer = match inner.overlay.get(id) {
            Some(pending) => Some(pending.stamp()),
            None => inner
                .reads
                .newest_commit(id)
                .filter(|s| crate::newer_wins(s, from_l3.map(SyncItem::stamp).as_ref())),
        };
        if let Some(stamp) = newer {
            missed.push((id, stamp));
        }
    }
    if !missed.is_empty() {
        tracing::debug!(ids = missed.len(), "writes raced the repair; reads skip L2 for them");
        inner.l2_stale.mark(missed);
    }
}

/// Ids per chunk of the repair's copy (one L3 `get_many`, one L2 `remove_many` + `put_batch`).
const COPY_CHUNK: usize = 1000;

/// Chunks of the repair's copy in flight at once.
const COPY_IN_FLIGHT: usize = 4;

/// Rewrite `chunk` in L2 from L3 (ids L3 no longer holds are removed from L2); returns how
/// many were written and how many removed.
async fn copy_chunk(
    inner: &Inner,
    l2: &Arc<dyn L2Store>,
    chunk: &[ObjectId],
) -> crate::Result<(usize, usize)> {
    // Registered as a read, so that writes committing meanwhile are recorded.
    let _reading = inner.reads.batch(chunk);
    let items = inner.l3.get_many(chunk).await?;
    let mut entries = Vec::new();
    let mut gone = 0;
    for item in &items {
        match item {
            Some(item) => entries.push(CacheEntry::new(item.clone())),
            None => gone += 1,
        }
    }
    // Remove first: L2 may hold a tampered entry with a higher stamp.
    let sent = inner.l2_stale.token();
    l2.remove_many(chunk).await?;
    l2.put_batch(&entries).await?;
    inner.l2_stale.written_entries(sent, &entries);
    mark_overtaken(inner, chunk.iter().zip(items.iter().map(Option::as_ref)));
    Ok((entries.len(), gone))
}

/// Remove `chunk` (ids L3 does not hold) from L2; returns how many.
async fn remove_chunk(
    inner: &Inner,
    l2: &Arc<dyn L2Store>,
    chunk: &[ObjectId],
) -> crate::Result<usize> {
    let _reading = inner.reads.batch(chunk);
    l2.remove_many(chunk).await?;
    mark_overtaken(inner, chunk.iter().map(|id| (id, None)));
    Ok(chunk.len())
}

/// What the copy did.
#[derive(Debug, Default)]
pub(super) struct Copied {
    /// Ids written into L2 from L3.
    pub repaired: usize,
    /// Ids removed from L2 (L3 does not hold them).
    pub removed: usize,
    /// Differing ids left alone because a newer local write is still on its way to L3.
    pub skipped_in_flight: usize,
}

type Chunk<'a> = Pin<Box<dyn Future<Output = crate::Result<(usize, usize)>> + Send + 'a>>;

/// Repair the differences handed over on `found` (a diff's rounds, see
/// `sync_engine_merkle::diff_each`) as they arrive: ids L3 holds are rewritten in L2 from L3,
/// ids L2 holds alone are removed from it, [`COPY_CHUNK`] ids per chunk and up to
/// [`COPY_IN_FLIGHT`] chunks at once; a partial chunk leaves when the diff has ended. Ids with a
/// write still on its way to L3 are skipped (that write brings them). Ends when `found` is
/// closed and every chunk is done; the first failed chunk ends it with its error.
pub(super) async fn copy_as_found(
    inner: &Inner,
    l2: &Arc<dyn L2Store>,
    mut found: UnboundedReceiver<Vec<Difference>>,
) -> crate::Result<Copied> {
    let mut done = Copied::default();
    let (mut upsert, mut remove): (Vec<ObjectId>, Vec<ObjectId>) = (Vec::new(), Vec::new());
    let mut seen: HashSet<String> = HashSet::new();
    let mut running: FuturesUnordered<Chunk<'_>> = FuturesUnordered::new();
    let mut open = true;
    loop {
        // Full chunks leave at once, partial ones once the diff has handed over everything.
        while running.len() < COPY_IN_FLIGHT {
            let take = |ids: &mut Vec<ObjectId>| {
                let ready = ids.len() >= COPY_CHUNK || (!open && !ids.is_empty());
                ready.then(|| ids.drain(..ids.len().min(COPY_CHUNK)).collect::<Vec<_>>())
            };
            if let Some(chunk) = take(&mut upsert) {
                running.push(Box::pin(async move { copy_chunk(inner, l2, &chunk).await }));
            } else if let Some(chunk) = take(&mut remove) {
                running
                    .push(Box::pin(async move { Ok((0, remove_chunk(inner, l2, &chunk).await?)) }));
            } else {
                break;
            }
        }
        if !open && running.is_empty() {
            return Ok(done);
        }
        tokio::select! {
            round = found.recv(), if open => match round {
                Some(round) => {
                    for x in round {
                        if !seen.insert(x.id.clone()) {
                            continue;
                        }
                        let Ok(id) = ObjectId::with_max_len(&x.id, crate::id::HARD_MAX_ID_LEN) else {
                            tracing::warn!(id = %x.id, "the diff returned an invalid id; skipped");
                            continue;
                        };
                        if inner.overlay.get(&id).is_some() {
                            done.skipped_in_flight += 1;
                            continue;
                        }
                        match x.kind {
                            DiffKind::OnlyInA => remove.push(id),
                            DiffKind::OnlyInB | DiffKind::Different => upsert.push(id),
                        }
                    }
                }
                None => open = false,
            },
            Some(chunk) = running.next(), if !running.is_empty() => {
                let (written, gone) = chunk?;
                done.repaired += written;
                done.removed += gone;
            }
        }
    }
}
