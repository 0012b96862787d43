//! Where the ingest time goes: the same batches written straight into each tier's store,
//! without the engine (`SqlStore::put_batch` alone, `RedisStore::put_batch` alone, one batch
//! at a time like the flusher), on fresh tables and keys. The engine writes L2 and L3
//! concurrently, so its ingest rate is bounded by the slower of the two.

use std::time::{Duration, Instant};

use sync_engine_core::store::{ArchiveStore, CacheEntry, CacheStore};
use sync_engine_core::{ObjectId, SyncItem};

use super::ingest::Batches;
use super::setup::{destroy, open_redis, open_sql, Env, Names};
use crate::report::{rate, Latency};

/// Direct-to-store rates (items/s) and per-batch latencies.
pub struct Breakdown {
    pub l3: f64,
    pub l3_batch: Latency,
    pub l2: Option<f64>,
    pub l2_batch: Latency,
}

fn to_items(batch: &[(String, bytes::Bytes)]) -> Result<Vec<SyncItem>, String> {
    batch
        .iter()
        .enumerate()
        .map(|(i, (id, payload))| {
            let id = ObjectId::new(id).map_err(|e| e.to_string())?;
            Ok(SyncItem::new(id, 1 + i as u64, payload.clone()))
        })
        .collect()
}

/// Write `data` into fresh stores of `names`, L3 first, then L2 (each timed on its own).
pub async fn measure(env: &Env, names: &Names, data: &Batches) -> Result<Breakdown, String> {
    let result = async {
        let n: usize = data.iter().map(Vec::len).sum();
        let items: Vec<Vec<SyncItem>> =
            data.iter().map(|b| to_items(b)).collect::<Result<_, _>>()?;
        let l3 = open_sql(names).await.map_err(|e| format!("open L3: {e}"))?;
        let mut l3_batch = Latency::new();
        let mut total = Duration::ZERO;
        for batch in &items {
            let t = Instant::now();
            l3.put_batch(batch).await.map_err(|e| format!("L3 put_batch: {e}"))?;
            let d = t.elapsed();
            total += d;
            l3_batch.record(d);
        }
        let dropped = l3.drop_tables().await;
        l3.close().await;
        dropped.map_err(|e| format!("drop tables: {e}"))?;
        let l3_rate = rate(n, total);
        let mut l2_batch = Latency::new();
        let l2_rate = if names.setup.has_l2() {
            let l2 =
                open_redis(env, &names.redis_prefix).await.map_err(|e| format!("open L2: {e}"))?;
            let started = Instant::now();
            for batch in &items {
                let entries: Vec<CacheEntry> = batch.iter().cloned().map(CacheEntry::new).collect();
                let t = Instant::now();
                l2.put_batch(&entries).await.map_err(|e| format!("L2 put_batch: {e}"))?;
                l2_batch.record(t.elapsed());
            }
            l2.fold().await.map_err(|e| format!("L2 fold: {e}"))?;
            let r = rate(n, started.elapsed());
            l2.clear_namespace().await.map_err(|e| format!("clear L2: {e}"))?;
            Some(r)
        } else {
            None
        };
        Ok::<_, String>(Breakdown { l3: l3_rate, l3_batch, l2: l2_rate, l2_batch })
    }
    .await;
    if result.is_err() {
        let _ = destroy(env, names).await;
    }
    result
}
