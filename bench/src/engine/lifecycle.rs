//! Restarts: start-up over existing data with a valid filter snapshot, and on a new node (no
//! snapshot) until the filter is trusted; L2 repair of a 1% divergence against a full resync.

use std::time::{Duration, Instant};

use sync_engine_core::engine::RepairReport;
use sync_engine_core::store::{ArchiveStore, CacheEntry, CacheStore, KeyScan};
use sync_engine_core::{Config, ObjectId, SyncEngine, SyncItem};
use sync_engine_cuckoo::TrustState;

use super::data::{items, spread, Shape, BATCH};
use super::setup::{open_redis, Env, Names, Tiers};

/// One timed start.
pub struct Started {
    pub engine: SyncEngine,
    pub tiers: Tiers,
    /// Opening the backends (WAL, L3 pool, L2 connection).
    pub open: Duration,
    /// `start()` until Ready (WAL drain, root, snapshot or warm-up, L2 compare).
    pub start: Duration,
}

impl Started {
    /// Open + start.
    pub fn total(&self) -> Duration {
        self.open + self.start
    }
}

/// Open the backends of `names` and start an engine, timing both; the filter must end trusted.
pub async fn start(env: &Env, names: &Names, config: Config) -> Result<Started, String> {
    let t = Instant::now();
    let tiers = Tiers::open(env, names, &config).await?;
    let open = t.elapsed();
    let t = Instant::now();
    let engine = tiers.start(config).await?;
    let start = t.elapsed();
    let trust = engine.health().filter;
    if trust != TrustState::Trusted {
        return Err(format!("the filter is {trust:?} after start, not trusted"));
    }
    Ok(Started { engine, tiers, open, start })
}

/// Make 1% of L2 differ from L3 behind the engine's back, spread evenly over the ids: half the
/// chosen items removed from L2, half overwritten there with a newer, different value. Folds
/// L2's shadow afterwards (untimed), as the background fold would. Returns how many differ.
pub async fn diverge(tiers: &Tiers, shape: Shape, n: usize) -> Result<usize, String> {
    let redis = tiers.redis().ok_or("no L2 to diverge")?;
    let chosen = spread(n as u64, (n as u64 / 100).max(1), 37);
    let remove: Vec<u64> = chosen.iter().copied().step_by(2).collect();
    let change: Vec<u64> = chosen.iter().copied().skip(1).step_by(2).collect();
    let remove: Vec<ObjectId> = remove
        .iter()
        .map(|&k| ObjectId::new(&shape.id(k)).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    for chunk in remove.chunks(BATCH) {
        redis.remove_many(chunk).await.map_err(|e| format!("diverge: remove from L2: {e}"))?;
    }
    for chunk in change.chunks(BATCH) {
        let mut entries = Vec::with_capacity(chunk.len());
        for &k in chunk {
            let (id, payload) = items(shape, 0xbad, k, 1).remove(0);
            let id = ObjectId::new(&id).map_err(|e| e.to_string())?;
            entries.push(CacheEntry::new(SyncItem::new(id, u64::MAX / 2, payload)));
        }
        redis.put_batch(&entries).await.map_err(|e| format!("diverge: overwrite in L2: {e}"))?;
    }
    redis.fold().await.map_err(|e| format!("L2 fold: {e}"))?;
    Ok(chosen.len())
}

/// `repair("")` timed, then a `verify("")` that must find L2 and L3 equal.
pub async fn repair(engine: &SyncEngine) -> Result<(Duration, RepairReport, Duration), String> {
    let t = Instant::now();
    let report = engine.repair("").await.map_err(|e| format!("repair: {e}"))?;
    let took = t.elapsed();
    let t = Instant::now();
    let after = engine.verify("").await.map_err(|e| format!("verify: {e}"))?;
    let verify = t.elapsed();
    if !after.in_sync {
        return Err(format!(
            "L2 still differs from L3 after repair: {} ids ({:?}...)",
            after.differing,
            after.sample.iter().take(3).collect::<Vec<_>>()
        ));
    }
    Ok((took, report, verify))
}

/// The full resync a tier without Merkle trees needs: read every item from L3 (keyset pages of
/// 1000, `get_many`) and write it into an empty L2 namespace with `put_batch` in 1000-item
/// batches, then fold that namespace's shadow (the repair pays its Merkle upkeep too).
/// Returns the time and the number of items copied; the namespace is cleared afterwards.
pub async fn full_resync(
    env: &Env,
    names: &Names,
    tiers: &Tiers,
) -> Result<(Duration, usize), String> {
    let target = open_redis(env, &format!("{}resync-", names.redis_prefix))
        .await
        .map_err(|e| format!("open resync namespace: {e}"))?;
    target.clear_namespace().await.map_err(|e| format!("clear resync namespace: {e}"))?;
    let l3 = tiers.l3.inner();
    let started = Instant::now();
    let mut scan = KeyScan::prefix("", BATCH);
    let mut copied = 0;
    loop {
        let ids = l3.scan_keys(&scan).await.map_err(|e| format!("resync scan: {e}"))?;
        let Some(last) = ids.last().cloned() else { break };
        let found = l3.get_many(&ids).await.map_err(|e| format!("resync read: {e}"))?;
        let entries: Vec<CacheEntry> = found.into_iter().flatten().map(CacheEntry::new).collect();
        target.put_batch(&entries).await.map_err(|e| format!("resync write: {e}"))?;
        copied += entries.len();
        if ids.len() < scan.limit {
            break;
        }
        scan = scan.next_page(&last);
    }
    target.fold().await.map_err(|e| format!("resync fold: {e}"))?;
    let took = started.elapsed();
    target.clear_namespace().await.map_err(|e| format!("clear resync namespace: {e}"))?;
    Ok((took, copied))
}
