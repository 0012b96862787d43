//! Writes: write-behind ingest until durable in every tier, durable submits from 16 tasks, and
//! submit latency while ingesting at a fixed rate below the sustained one; with the raw
//! baselines that go with them (batched INSERT, pipelined SET, single-row INSERTs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sync_engine_core::engine::BackpressureLevel;
use sync_engine_core::{SubmitOptions, SyncEngine};

use super::data::{items, Shape, BATCH};
use super::raw::{RawRedis, RawSql};
use super::setup::Tiers;
use crate::report::Latency;

/// Pregenerated batches of one run (generation stays out of every timing).
pub type Batches = Vec<Vec<(String, Bytes)>>;

/// Items `start .. start + n` in batches of [`BATCH`].
pub fn batches(shape: Shape, seed: u64, start: u64, n: usize) -> Batches {
    (0..n.div_ceil(BATCH))
        .map(|b| {
            let from = b * BATCH;
            items(shape, seed, start + from as u64, BATCH.min(n - from))
        })
        .collect()
}

fn count(b: &Batches) -> usize {
    b.iter().map(Vec::len).sum()
}

/// One write-behind ingest.
pub struct Ingest {
    /// From the first submit until everything is in L3 and L2 and both Merkle trees are
    /// current (L3's change log and L2's shadow log folded).
    pub elapsed: Duration,
    /// Until `flush()` returned (L2's shadow fold excluded).
    pub flushed: Duration,
    /// Each submit call.
    pub submit: Latency,
    /// Submits that waited on backpressure (took ≥ 1 ms).
    pub throttled: u64,
}

/// Submit every item (write-behind), then `flush()`: L3 (or the WAL) and L2 hold everything;
/// then fold L3's Merkle change log and L2's Merkle shadow so both tiers' trees are current.
/// Fails if anything went to the WAL (an L3 failure would make the figure meaningless).
pub async fn write_behind(
    engine: &SyncEngine,
    tiers: &Tiers,
    data: &Batches,
) -> Result<Ingest, String> {
    let mut submit = Latency::new();
    let mut throttled = 0;
    let started = Instant::now();
    for batch in data {
        for (id, payload) in batch {
            let t = Instant::now();
            engine.submit(id, payload.clone()).await.map_err(|e| format!("submit {id}: {e}"))?;
            let d = t.elapsed();
            if d >= Duration::from_millis(1) {
                throttled += 1;
            }
            submit.record(d);
        }
    }
    engine.flush().await.map_err(|e| format!("flush: {e}"))?;
    let flushed = started.elapsed();
    tiers.l3.inner().fold().await.map_err(|e| format!("L3 fold: {e}"))?;
    if let Some(redis) = tiers.redis() {
        redis.fold().await.map_err(|e| format!("L2 fold: {e}"))?;
    }
    let elapsed = started.elapsed();
    let h = engine.health();
    if h.wal_depth > 0 {
        return Err(format!(
            "{} items were diverted to the WAL during ingest (L3 failing?)",
            h.wal_depth
        ));
    }
    Ok(Ingest { elapsed, flushed, submit, throttled })
}

/// Raw multi-row INSERTs of the same batches; the time of the statements only.
pub async fn raw_insert(raw: &RawSql, data: &Batches) -> Result<Duration, String> {
    let started = Instant::now();
    for batch in data {
        raw.insert(batch).await?;
    }
    Ok(started.elapsed())
}

/// Raw pipelined SETs of the same batches (one pipeline per batch).
pub async fn raw_set(raw: &RawRedis, data: &Batches) -> Result<Duration, String> {
    let started = Instant::now();
    for batch in data {
        raw.set_many(batch).await?;
    }
    Ok(started.elapsed())
}

/// `tasks` concurrent writers sharing `data` round-robin by batch; returns wall time and the
/// latency of each call.
async fn concurrent<F, Fut>(
    tasks: usize,
    data: Batches,
    op: F,
) -> Result<(Duration, Latency, usize), String>
where
    F: Fn(String, Bytes) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let all: Vec<(String, Bytes)> = data.into_iter().flatten().collect();
    let n = all.len();
    let mut slices: Vec<Vec<(String, Bytes)>> = (0..tasks).map(|_| Vec::new()).collect();
    for (i, row) in all.into_iter().enumerate() {
        slices[i % tasks].push(row);
    }
    let op = Arc::new(op);
    let started = Instant::now();
    let handles: Vec<_> = slices
        .into_iter()
        .map(|rows| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(rows.len());
                for (id, payload) in rows {
                    let t = Instant::now();
                    op(id, payload).await?;
                    times.push(t.elapsed());
                }
                Ok::<_, String>(times)
            })
        })
        .collect();
    let mut lat = Latency::new();
    for h in handles {
        for d in h.await.map_err(|e| format!("writer task: {e}"))?? {
            lat.record(d);
        }
    }
    Ok((started.elapsed(), lat, n))
}

/// Durable submits (each acknowledged once L3 committed it) from `tasks` concurrent tasks.
pub async fn durable(
    engine: &SyncEngine,
    tasks: usize,
    data: Batches,
) -> Result<(f64, Latency), String> {
    let engine = engine.clone();
    let (elapsed, lat, n) = concurrent(tasks, data, move |id, payload| {
        let engine = engine.clone();
        async move {
            engine
                .submit_with(&id, payload, SubmitOptions::durable())
                .await
                .map(|_| ())
                .map_err(|e| format!("durable submit {id}: {e}"))
        }
    })
    .await?;
    Ok((crate::report::rate(n, elapsed), lat))
}

/// Single-row autocommit INSERTs from `tasks` concurrent tasks: the raw counterpart of
/// [`durable`].
pub async fn raw_insert_one(
    raw: Arc<RawSql>,
    tasks: usize,
    data: Batches,
) -> Result<(f64, Latency), String> {
    let sql = raw.insert_one_sql();
    let (elapsed, lat, n) = concurrent(tasks, data, move |id, payload| {
        let (raw, sql) = (raw.clone(), sql.clone());
        async move { raw.insert_one(&sql, &id, &payload).await }
    })
    .await?;
    Ok((crate::report::rate(n, elapsed), lat))
}

/// Submit latency while submitting at `rate` items/s (open loop: each millisecond, the
/// submits that are due), then flush. The first `warm` submits are not recorded. Also returns
/// how many times the engine was seen above `Accept` (sampled once per millisecond).
pub async fn paced(
    engine: &SyncEngine,
    data: &Batches,
    rate: f64,
    warm: usize,
) -> Result<(Latency, u64), String> {
    let all: Vec<&(String, Bytes)> = data.iter().flatten().collect();
    let mut lat = Latency::new();
    let mut pressured = 0;
    let started = Instant::now();
    let mut sent = 0;
    while sent < all.len() {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(all.len());
        while sent < due {
            let (id, payload) = all[sent];
            let t = Instant::now();
            engine.submit(id, payload.clone()).await.map_err(|e| format!("submit {id}: {e}"))?;
            if sent >= warm {
                lat.record(t.elapsed());
            }
            sent += 1;
        }
        if engine.health().backpressure != BackpressureLevel::Accept {
            pressured += 1;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    engine.flush().await.map_err(|e| format!("flush: {e}"))?;
    Ok((lat, pressured))
}

/// Number of items in `data`.
pub fn len(data: &Batches) -> usize {
    count(data)
}
