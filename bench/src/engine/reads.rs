//! Reads: `get` latency for L1 hits, L2 hits, L3 hits and absent ids (trusted filter), with
//! the raw baselines alternated op by op (raw GET, raw GET of a missing key, raw SELECT by
//! primary key). Every engine op is classified by the backend calls it made (counted by the
//! `Faulty` wrappers): an op that did not reach the tier it is meant to measure is excluded and
//! counted, never silently mixed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_engine_core::SyncEngine;

use super::raw::{RawRedis, RawSql};
use super::setup::Tiers;
use crate::report::Latency;

/// Latencies of one read phase.
#[derive(Default)]
pub struct Reads {
    /// The engine's `get`.
    pub ours: Latency,
    /// Raw baselines, as the phase defines them.
    pub raw_get: Latency,
    pub raw_select: Latency,
    /// Engine ops left out because they did not hit the tier measured.
    pub excluded: u64,
    /// Backend calls made by the recorded engine ops.
    pub backend_calls: u64,
    /// Recorded engine ops that made at least one backend call.
    pub ops_with_calls: u64,
}

async fn get(engine: &SyncEngine, id: &str) -> Result<(bool, Duration), String> {
    let t = Instant::now();
    let found = engine.get(id).await.map_err(|e| format!("get {id}: {e}"))?.is_some();
    Ok((found, t.elapsed()))
}

/// L1 hits: read `ids` once (so L1 holds them), then `ops` gets over them in a seeded random
/// order; the first `warm` are not recorded. Any backend call is reported.
pub async fn l1_hits(
    engine: &SyncEngine,
    tiers: &Tiers,
    ids: &[String],
    ops: usize,
    warm: usize,
) -> Result<Reads, String> {
    for id in ids {
        if !get(engine, id).await?.0 {
            return Err(format!("{id} was written but is not found"));
        }
    }
    // Promotions into L2 spawned by the priming reads finish before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut r = Reads::default();
    let mut order: Vec<usize> = (0..ops + warm).map(|i| i % ids.len()).collect();
    super::data::shuffle(&mut order, 17);
    for (i, &k) in order.iter().enumerate() {
        let (before_l2, before_l3) = tiers.calls();
        let (found, d) = get(engine, &ids[k]).await?;
        let (after_l2, after_l3) = tiers.calls();
        let calls = (after_l2 - before_l2) + (after_l3 - before_l3);
        if !found {
            return Err(format!("{} lost from L1", ids[k]));
        }
        if i >= warm {
            r.ours.record(d);
            r.backend_calls += calls;
            r.ops_with_calls += u64::from(calls > 0);
        }
    }
    Ok(r)
}

/// L2 hits: the first read of each id after a restart (empty L1), alternated with a raw GET of
/// the same id's raw key. An op that reached L3 is excluded.
pub async fn l2_hits(
    engine: &SyncEngine,
    tiers: &Tiers,
    raw: &RawRedis,
    ids: &[String],
    warm: usize,
) -> Result<Reads, String> {
    let mut r = Reads::default();
    for (i, id) in ids.iter().enumerate() {
        let (before_l2, before_l3) = tiers.calls();
        let (found, d) = get(engine, id).await?;
        let (after_l2, after_l3) = tiers.calls();
        let key = raw.key(id);
        let t = Instant::now();
        let raw_found = raw.get(&key).await?.is_some();
        let d_raw = t.elapsed();
        if !found || !raw_found {
            return Err(format!("{id}: engine found {found}, raw GET found {raw_found}"));
        }
        if i < warm {
            continue;
        }
        if after_l3 != before_l3 || after_l2 != before_l2 + 1 {
            r.excluded += 1;
            continue;
        }
        r.ours.record(d);
        r.raw_get.record(d_raw);
    }
    Ok(r)
}

/// L3 hits: the first read of each id after a restart, with the id absent from L2 (removed
/// beforehand), alternated with a raw GET of a missing key and a raw SELECT by primary key.
/// Without L2 (`raw` is None) the baseline is the raw SELECT alone. An op that did not reach L3
/// is excluded.
pub async fn l3_hits(
    engine: &SyncEngine,
    tiers: &Tiers,
    raw: Option<&RawRedis>,
    sql: &Arc<RawSql>,
    ids: &[String],
    warm: usize,
) -> Result<Reads, String> {
    let select = sql.select_sql();
    let mut r = Reads::default();
    for (i, id) in ids.iter().enumerate() {
        let (_, before_l3) = tiers.calls();
        let (found, d) = get(engine, id).await?;
        let (_, after_l3) = tiers.calls();
        let d_get = match raw {
            Some(raw) => {
                let key = raw.key(&format!("missing.{id}"));
                let t = Instant::now();
                if raw.get(&key).await?.is_some() {
                    return Err(format!("raw key {key} should not exist"));
                }
                Some(t.elapsed())
            }
            None => None,
        };
        let t = Instant::now();
        let raw_found = sql.select(&select, id).await?;
        let d_select = t.elapsed();
        if !found || !raw_found {
            return Err(format!("{id}: engine found {found}, raw SELECT found {raw_found}"));
        }
        if i < warm {
            continue;
        }
        if after_l3 == before_l3 {
            r.excluded += 1;
            continue;
        }
        r.ours.record(d);
        if let Some(d_get) = d_get {
            r.raw_get.record(d_get);
        }
        r.raw_select.record(d_select);
    }
    Ok(r)
}

/// Absent ids with a trusted filter: every lookup recorded, with the backend calls it made
/// (a false positive of the filter reaches L2 and L3).
pub async fn absent(
    engine: &SyncEngine,
    tiers: &Tiers,
    ids: &[String],
    warm: usize,
) -> Result<Reads, String> {
    let mut r = Reads::default();
    for (i, id) in ids.iter().enumerate() {
        let (before_l2, before_l3) = tiers.calls();
        let (found, d) = get(engine, id).await?;
        let (after_l2, after_l3) = tiers.calls();
        if found {
            return Err(format!("{id} was never written but was found"));
        }
        if i < warm {
            continue;
        }
        let calls = (after_l2 - before_l2) + (after_l3 - before_l3);
        r.ours.record(d);
        r.backend_calls += calls;
        r.ops_with_calls += u64::from(calls > 0);
    }
    Ok(r)
}
