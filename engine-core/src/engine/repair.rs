//! Verify and repair L2 against L3: compare roots, diff branch by branch through the Merkle
//! stores, and repair only the differing ids (upsert from L3, remove from L2 what L3 lacks).
//!
//! The *deep* forms also audit L2's entries ([`crate::store::CacheStore::audit`]): the Merkle
//! diff sees only what L2's shadow says, so bytes changed behind the store's back (bit rot, a
//! manual `SET`, a deleted key) are invisible to it. The audit reads every entry under the
//! prefix (O(entries), where the diff is O(differences)), so it is a separate, explicit mode.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use sync_engine_merkle::{diff, Children, ChildrenSource, DiffError, DiffKind, NodeKey, NodeValue};
use tokio::time::Instant;

use super::{Inner, L2Store, SyncEngine};
use crate::store::{CacheEntry, MerkleStore};
use crate::{Error, ErrorKind, ObjectId, SyncItem};

/// What a verify or repair found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The dotted path prefix compared (`""` = everything).
    pub prefix: String,
    /// True when L2's and L3's hashes were equal at the start and, for the deep forms, the
    /// audit found no corrupt entry (nothing to do).
    pub in_sync: bool,
    /// Merkle node pairs compared by the diff.
    pub nodes_compared: u64,
    /// Sequential round trips of the diff (rounds of batched children questions to both tiers,
    /// a few concurrent calls per tier each).
    pub diff_round_trips: u64,
    /// Wall time of the diff (the rest of `duration` is reading L3 and writing L2).
    pub diff_duration: Duration,
    /// Time the diff waited on L2's answers (summed over its calls; the tiers are asked
    /// concurrently, so the two waits overlap).
    pub diff_l2_wait: Duration,
    /// Time the diff waited on L3's answers.
    pub diff_l3_wait: Duration,
    /// Ids that differed.
    pub differing: usize,
    /// Ids written into L2 from L3.
    pub repaired: usize,
    /// Ids removed from L2 because L3 does not hold them.
    pub removed: usize,
    /// Differing ids left alone because a newer local write is still on its way to L3.
    pub skipped_in_flight: usize,
    /// Up to 100 of the differing ids, for reports.
    pub sample: Vec<String>,
    /// True for the deep forms ([`SyncEngine::verify_deep`], [`SyncEngine::repair_deep`]),
    /// which also audited L2's entries.
    pub deep: bool,
    /// L2 entries the audit checked (0 unless `deep`).
    pub audited: u64,
    /// Ids whose L2 entry failed the audit (its bytes or its shadow leaf do not check out);
    /// they are counted in `differing` too. A deep repair removes them from L2 (shadow kept
    /// exact) and rewrites them from L3.
    pub corrupt: usize,
    /// Wall time.
    pub duration: Duration,
}

/// A `MerkleStore` seen as the Merkle crate's diff source, summing the time spent waiting on
/// its `children_many` answers (nanoseconds).
struct Source(Arc<dyn MerkleStore>, Arc<AtomicU64>);

impl ChildrenSource for Source {
    type Error = Error;

    fn node(&self, key: &NodeKey) -> impl Future<Output = Result<Option<NodeValue>, Error>> + Send {
        let (store, key) = (self.0.clone(), key.clone());
        async move { store.node(&key).await }
    }

    fn children(&self, key: &NodeKey) -> impl Future<Output = Result<Children, Error>> + Send {
        let (store, key) = (self.0.clone(), key.clone());
        async move { store.children(&key).await }
    }

    fn children_many(
        &self,
        keys: &[NodeKey],
    ) -> impl Future<Output = Result<Vec<Children>, Error>> + Send {
        let (store, keys, waited) = (self.0.clone(), keys.to_vec(), self.1.clone());
        async move {
            let started = Instant::now();
            let answer = store.children_many(&keys).await;
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            waited.fetch_add(nanos, Ordering::Relaxed);
            answer
        }
    }
}

fn diff_error(e: DiffError<Error, Error>) -> Error {
    match e {
        DiffError::A(e) => e,
        DiffError::B(e) => e,
        other => Error::new(ErrorKind::Contract, other.to_string()),
    }
    .with_operation("verify")
}

impl SyncEngine {
    /// Compare L2 with L3 under a dotted path prefix (`""` for all) without changing anything.
    /// Cheap: compares Merkle nodes, O(differences); trusts L2's shadow (see
    /// [`SyncEngine::verify_deep`]).
    pub async fn verify(&self, prefix: &str) -> crate::Result<RepairReport> {
        run(&self.inner, prefix, false, false).await
    }

    /// Compare and repair L2 from L3 under a dotted path prefix, touching only differing ids.
    pub async fn repair(&self, prefix: &str) -> crate::Result<RepairReport> {
        run(&self.inner, prefix, true, false).await
    }

    /// [`SyncEngine::verify`] plus an audit of every L2 entry under the prefix against L2's own
    /// integrity data, which also finds entries changed behind the store's back (raw byte
    /// edits, deleted keys) that its shadow does not show. Changes nothing. O(entries).
    /// Errors with Unsupported when the L2 store cannot audit.
    pub async fn verify_deep(&self, prefix: &str) -> crate::Result<RepairReport> {
        run(&self.inner, prefix, false, true).await
    }

    /// [`SyncEngine::repair`] plus the audit of [`SyncEngine::verify_deep`]: corrupt L2 entries
    /// are removed (keeping the shadow exact) and rewritten from L3; nothing else is touched.
    pub async fn repair_deep(&self, prefix: &str) -> crate::Result<RepairReport> {
        run(&self.inner, prefix, true, true).await
    }
}

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

/// Verify (and optionally repair) `prefix`; `deep` audits L2's entries first.
#[tracing::instrument(name = "repair", skip(inner), fields(prefix = %prefix, fix, deep))]
pub(crate) async fn run(
    inner: &Inner,
    prefix: &str,
    fix: bool,
    deep: bool,
) -> crate::Result<RepairReport> {
    let started = Instant::now();
    // Marks of ids L2 missed that are older than this run are cleared if it repairs in full.
    let generation = inner.l2_stale.begin_repair();
    let l2 = inner.l2.as_ref().ok_or_else(|| {
        Error::new(ErrorKind::Unsupported, "no L2 cache is configured: nothing to verify")
            .with_operation("verify")
    })?;
    // The audit goes first: when it evicts, the shadow then shows the evicted ids as missing,
    // and the diff below rewrites them from L3 like any other missing id.
    let audit = if deep { Some(l2.audit(prefix, fix).await?) } else { None };
    let corrupt: BTreeSet<&str> =
        audit.iter().flat_map(|a| a.corrupt.iter().map(|id| id.as_str())).collect();
    let key = NodeKey::path(prefix);
    let (a, b) = tokio::try_join!(l2.node(&key), inner.l3.node(&key))?;
    let roots_equal = a.unwrap_or_default().hash() == b.unwrap_or_default().hash();
    let mut report = RepairReport {
        prefix: prefix.to_owned(),
        in_sync: roots_equal && corrupt.is_empty(),
        nodes_compared: 1,
        diff_round_trips: 0,
        diff_duration: Duration::ZERO,
        diff_l2_wait: Duration::ZERO,
        diff_l3_wait: Duration::ZERO,
        differing: 0,
        repaired: 0,
        removed: 0,
        skipped_in_flight: 0,
        sample: Vec::new(),
        deep,
        audited: audit.as_ref().map_or(0, |a| a.checked),
        corrupt: corrupt.len(),
        duration: Duration::ZERO,
    };
    let mut in_diff: BTreeSet<String> = BTreeSet::new();
    if !roots_equal {
        let l2_src = Source(l2.clone(), Arc::default());
        let l3_src = Source(inner.l3.clone(), Arc::default());
        let diff_started = Instant::now();
        let d = diff(&l2_src, &l3_src, prefix).await.map_err(diff_error)?;
        report.diff_duration = diff_started.elapsed();
        report.diff_l2_wait = Duration::from_nanos(l2_src.1.load(Ordering::Relaxed));
        report.diff_l3_wait = Duration::from_nanos(l3_src.1.load(Ordering::Relaxed));
        report.diff_round_trips = d.rounds;
        report.nodes_compared = d.nodes_compared;
        report.differing = d.differences.len();
        report.sample = d.differences.iter().take(100).map(|x| x.id.clone()).collect();
        in_diff = d.differences.iter().map(|x| x.id.clone()).collect();
        if fix {
            let mut upsert = Vec::new();
            let mut remove = Vec::new();
            for x in &d.differences {
                let Ok(id) = ObjectId::with_max_len(&x.id, crate::id::HARD_MAX_ID_LEN) else {
                    tracing::warn!(id = %x.id, "the diff returned an invalid id; skipped");
                    continue;
                };
                if inner.overlay.get(&id).is_some() {
                    report.skipped_in_flight += 1;
                    continue;
                }
                match x.kind {
                    DiffKind::OnlyInA => remove.push(id),
                    DiffKind::OnlyInB | DiffKind::Different => upsert.push(id),
                }
            }
            // Chunks are copied a few at a time: each is an L3 read and two L2 writes, and
            // they touch disjoint ids, so their round trips may overlap.
            let copies: Vec<_> =
                upsert.chunks(COPY_CHUNK).map(|chunk| copy_chunk(inner, l2, chunk)).collect();
            let copied = stream::iter(copies)
                .buffer_unordered(COPY_IN_FLIGHT)
                .try_fold((0, 0), |(r, g), (r1, g1)| async move { Ok((r + r1, g + g1)) })
                .await?;
            report.repaired += copied.0;
            report.removed += copied.1;
            let removals: Vec<_> =
                remove.chunks(COPY_CHUNK).map(|chunk| remove_chunk(inner, l2, chunk)).collect();
            let removed = stream::iter(removals)
                .buffer_unordered(COPY_IN_FLIGHT)
                .try_fold(0, |n, k| async move { Ok(n + k) })
                .await?;
            report.removed += removed;
        }
    }
    // Corrupt ids the diff did not list: without eviction, ids whose shadow leaf still matches
    // L3; after eviction, ids L3 does not hold either (the eviction removed them).
    let beyond: Vec<&str> = corrupt.iter().copied().filter(|id| !in_diff.contains(*id)).collect();
    report.differing += beyond.len();
    let room = 100usize.saturating_sub(report.sample.len());
    report.sample.extend(beyond.iter().take(room).map(|id| (*id).to_owned()));
    if let Some(audit) = audit.as_ref().filter(|_| fix) {
        let evicted: BTreeSet<&str> = audit.evicted.iter().map(|id| id.as_str()).collect();
        report.removed += beyond.iter().filter(|id| evicted.contains(**id)).count();
        if audit.changing > 0 {
            tracing::info!(
                changing = audit.changing,
                "ids changing during the L2 audit left alone"
            );
        }
    }
    report.duration = started.elapsed();
    metrics::counter!("sync_engine_repaired_items_total")
        .increment(report.repaired as u64 + report.removed as u64);
    tracing::info!(
        differing = report.differing,
        corrupt = report.corrupt,
        nodes_compared = report.nodes_compared,
        diff_round_trips = report.diff_round_trips,
        diff_ms = report.diff_duration.as_millis() as u64,
        repaired = report.repaired,
        removed = report.removed,
        "L2 compared with L3"
    );
    if fix {
        if prefix.is_empty() && report.skipped_in_flight == 0 {
            inner.l2_needs_repair.store(false, Ordering::Relaxed);
            inner.l2_stale.repaired(generation);
        }
        *inner.last_repair.lock() = Some(report.clone());
    }
    Ok(report)
}
