//! The measurement sequence of one setup and one id shape (see the module doc of `engine`).

use std::sync::Arc;
use std::time::Duration;

use sync_engine_core::store::CacheStore;
use sync_engine_core::{ObjectId, SyncEngine};

use super::breakdown;
use super::data::{spread, Shape, BATCH};
use super::ingest::{self, batches, Batches};
use super::lifecycle;
use super::raw::{RawRedis, RawSql};
use super::reads::{self, Reads};
use super::rss;
use super::setup::{destroy, engine_config, stop, stop_destroy, Env, Names, Tiers, L1_MAX_BYTES};
use super::{Out, Params};
use crate::report::{median, rate};

fn log(out: &Out, msg: impl AsRef<str>) {
    eprintln!("engine.{}.{}: {}", out.setup.name(), out.shape.name(), msg.as_ref());
}

/// Every figure of one setup and shape.
pub async fn bench_shape(env: &Env, p: &Params, out: &mut Out) -> Result<(), String> {
    let (setup, shape) = (out.setup, out.shape);
    let raw_redis = if setup.has_l2() {
        let names = Names::new(env, setup, shape, "raw");
        Some(RawRedis::connect(&env.redis_url, names.raw_key_prefix()).await?)
    } else {
        None
    };
    let result = measure(env, p, out, raw_redis.as_ref()).await;
    if let Some(r) = &raw_redis {
        r.clear().await?;
    }
    result
}

async fn measure(
    env: &Env,
    p: &Params,
    out: &mut Out,
    raw_redis: Option<&RawRedis>,
) -> Result<(), String> {
    let (setup, shape) = (out.setup, out.shape);
    let seed = 0x5eed ^ shape as u64;
    let data = batches(shape, seed, 0, p.n);

    // 1. Write-behind ingest against raw batched INSERT (and pipelined SET), alternating.
    let mut ours = Vec::new();
    let mut flushed = Vec::new();
    let mut raw_ins = Vec::new();
    let mut raw_sets = Vec::new();
    let mut kept = None;
    for rep in 0..p.reps {
        let names = Names::new(env, setup, shape, &format!("r{rep}"));
        let raw = RawSql::open(&names.sql_url, &names.raw_table()).await?;
        if rep % 2 == 1 {
            let (e, t, r) = engine_rep(env, &names, &data).await?;
            ours.push(r.0);
            flushed.push(r.1);
            kept = Some((e, t, names.clone(), r.2));
        }
        let d = ingest::raw_insert(&raw, &data).await?;
        raw_ins.push(rate(p.n, d));
        if let Some(rr) = raw_redis {
            raw_sets.push(rate(p.n, ingest::raw_set(rr, &data).await?));
            rr.clear().await?;
        }
        if rep % 2 == 0 {
            let (e, t, r) = engine_rep(env, &names, &data).await?;
            ours.push(r.0);
            flushed.push(r.1);
            kept = Some((e, t, names.clone(), r.2));
        }
        log(
            out,
            format!(
                "rep {rep}: engine {:.0}/s, raw INSERT {:.0}/s",
                ours.last().copied().unwrap_or_default(),
                raw_ins.last().copied().unwrap_or_default()
            ),
        );
        if rep + 1 < p.reps {
            if let Some((e, t, names, _)) = kept.take() {
                stop_destroy(e, t, &names).await?;
            }
            raw.drop_table().await?;
        }
        raw.close().await;
    }
    let (engine, tiers, names, submit_lat) = kept.ok_or("no repetition ran")?;
    let phase = std::time::Instant::now();
    // Where the time goes: each tier's store alone on the same batches.
    let tier_names = Names::new(env, setup, shape, "tier");
    let b = breakdown::measure(env, &tier_names, &data).await?;
    drop(data);
    log(out, format!("tier breakdown took {:.1} s", phase.elapsed().as_secs_f64()));
    out.plain("ingest.l3_only.per_s", b.l3, "items/s");
    out.lat("l3_put_batch", &b.l3_batch)?;
    if let Some(l2) = b.l2 {
        out.plain("ingest.l2_only.per_s", l2, "items/s");
        out.lat("l2_put_batch", &b.l2_batch)?;
    }
    let raw_fig = out.plain("raw_insert.per_s", median(raw_ins), "items/s");
    let sustained = median(ours.clone());
    out.plain("ingest.per_s", sustained, "items/s");
    out.vs("ingest.vs_raw_insert", sustained, "items/s", &raw_fig);
    out.plain("ingest.flushed.per_s", median(flushed), "items/s");
    if !raw_sets.is_empty() {
        let set_fig = out.plain("raw_set.per_s", median(raw_sets), "items/s");
        out.vs("ingest.vs_raw_set", sustained, "items/s", &set_fig);
    }
    out.lat("ingest_submit", &submit_lat)?;

    // The start-up figures are quoted over `startup_items` (deep shape): top the store up.
    let total = if Some(&shape) == p.shapes.first() { p.startup_items.max(p.n) } else { p.n };
    if total > p.n {
        let started = std::time::Instant::now();
        let mut from = p.n;
        while from < total {
            let len = (100 * BATCH).min(total - from);
            let data = batches(shape, seed, from as u64, len);
            ingest::write_behind(&engine, &tiers, &data).await?;
            from += len;
        }
        out.plain("topup.per_s", rate(total - p.n, started.elapsed()), "items/s");
        log(out, format!("topped up to {total} items for the start-up figures"));
    }
    out.plain("startup_items", total as f64, "items");
    let result = after_ingest(env, p, out, raw_redis, engine, tiers, &names, total).await;
    if result.is_err() {
        let _ = destroy(env, &names).await;
    }
    result?;

    // 6. Submit latency at 80% of the sustained rate; durable submits from 16 tasks.
    let phase = std::time::Instant::now();
    writes_under_load(env, p, out, sustained).await?;
    log(out, format!("writes under load took {:.1} s", phase.elapsed().as_secs_f64()));

    // 7. Peak RSS in child processes (first shape only: memory does not depend on it).
    if Some(&shape) == p.shapes.first() {
        let phase = std::time::Instant::now();
        rss::figures(env, p, out).await?;
        log(out, format!("memory children took {:.1} s", phase.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// One engine repetition: fresh tiers, ingest, keep the engine running.
async fn engine_rep(
    env: &Env,
    names: &Names,
    data: &Batches,
) -> Result<(SyncEngine, Tiers, (f64, f64, crate::report::Latency)), String> {
    let config = engine_config(names, env, L1_MAX_BYTES);
    let tiers = Tiers::open(env, names, &config).await?;
    let engine = tiers.start(config).await?;
    let n = ingest::len(data);
    let r = ingest::write_behind(&engine, &tiers, data).await?;
    if r.throttled > 0 {
        eprintln!("  ({} of {n} submits waited on backpressure)", r.throttled);
    }
    Ok((engine, tiers, (rate(n, r.elapsed), rate(n, r.flushed), r.submit)))
}

fn ids(shape: Shape, ks: &[u64]) -> Vec<String> {
    ks.iter().map(|&k| shape.id(k)).collect()
}

/// Phases 2–5 over the data of the last ingest (`total` items in the store).
#[allow(clippy::too_many_arguments)]
async fn after_ingest(
    env: &Env,
    p: &Params,
    out: &mut Out,
    raw_redis: Option<&RawRedis>,
    engine: SyncEngine,
    tiers: Tiers,
    names: &Names,
    total: usize,
) -> Result<(), String> {
    let (setup, shape) = (out.setup, out.shape);
    let n = p.n as u64;
    let raw = Arc::new(RawSql::connect(&names.sql_url, &names.raw_table()).await?);
    let result = async {
        let phase = std::time::Instant::now();
        // 2. L1 hits and absent ids on the engine that wrote everything (trusted filter).
        let l1_ids = ids(shape, &spread(n, p.l1_ids as u64, 2));
        let r = reads::l1_hits(&engine, &tiers, &l1_ids, p.get_ops, p.get_warm).await?;
        out.lat("l1_hit", &r.ours)?;
        out.plain("l1_hit_backend_calls", r.backend_calls as f64, "calls");
        let absent_ids: Vec<String> =
            (0..(p.get_ops + p.get_warm) as u64).map(|k| shape.absent_id(k)).collect();
        let r = reads::absent(&engine, &tiers, &absent_ids, p.get_warm).await?;
        out.lat("absent", &r.ours)?;
        let per = r.backend_calls as f64 / r.ours.len().max(1) as f64;
        out.plain("absent_backend_calls", per, "calls/op");
        out.plain(
            "absent_ops_with_backend_calls",
            r.ops_with_calls as f64 / r.ours.len().max(1) as f64,
            "fraction",
        );
        let filter_len = engine.health().filter_len;
        out.plain("filter_ids", filter_len as f64, "ids");
        stop(engine, tiers).await?;
        log(out, format!("L1/absent reads took {:.1} s", phase.elapsed().as_secs_f64()));
        let phase = std::time::Instant::now();

        // 3. Start-up with the snapshot shutdown() saved; L2 hits and L3 hits on a cold L1.
        let config = engine_config(names, env, L1_MAX_BYTES);
        let s = lifecycle::start(env, names, config).await?;
        let scanned = s.engine.health().warmup_scanned;
        if scanned > 0 {
            log(out, format!("start-up scanned {scanned} ids: the snapshot was NOT used"));
        }
        out.plain("startup_snapshot_s", s.total().as_secs_f64(), "s");
        out.plain("startup_snapshot.open_s", s.open.as_secs_f64(), "s");
        out.plain("startup_snapshot.start_s", s.start.as_secs_f64(), "s");
        out.plain("startup_snapshot.warmup_scanned", scanned as f64, "ids");
        let count = (p.get_ops + p.get_warm) as u64;
        let l2_ids = ids(shape, &spread(n, count, 0));
        let l3_ids = ids(shape, &spread(n, count, 1));
        read_tiers(out, p, raw_redis, &raw, &s.tiers, &s.engine, &l2_ids, &l3_ids).await?;
        // Promotions of the L3 hits into L2 settle before the stop.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stop(s.engine, s.tiers).await?;
        log(out, format!("start-up + L2/L3 reads took {:.1} s", phase.elapsed().as_secs_f64()));
        let phase = std::time::Instant::now();

        // 4. A new node (no snapshot): start until the filter is trusted.
        let node2 = names.with_wal("node2");
        let config = engine_config(&node2, env, L1_MAX_BYTES);
        let s = lifecycle::start(env, &node2, config).await?;
        let scanned = s.engine.health().warmup_scanned;
        out.plain("filter_rebuild_s", s.total().as_secs_f64(), "s");
        out.plain("filter_rebuild.start_s", s.start.as_secs_f64(), "s");
        out.plain("filter_rebuild.warmup_scanned", scanned as f64, "ids");
        if scanned < total as u64 {
            log(out, format!("warm-up scanned {scanned} ids of {total}"));
        }

        // 5. Verify + repair of 1% divergence in L2 against a full resync of L2.
        let repaired = if setup.has_l2() {
            repair_phase(env, out, &s.tiers, &s.engine, names, total).await
        } else {
            Ok(())
        };
        stop_destroy(s.engine, s.tiers, names).await?;
        log(out, format!("rebuild + repair took {:.1} s", phase.elapsed().as_secs_f64()));
        repaired
    }
    .await;
    let _ = raw.drop_table().await;
    raw.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn read_tiers(
    out: &mut Out,
    p: &Params,
    raw_redis: Option<&RawRedis>,
    raw: &Arc<RawSql>,
    tiers: &Tiers,
    engine: &SyncEngine,
    l2_ids: &[String],
    l3_ids: &[String],
) -> Result<(), String> {
    if let (Some(rr), Some(redis)) = (raw_redis, tiers.redis()) {
        // The raw GET baseline reads the same ids' payloads under the raw prefix.
        for chunk in l2_ids.chunks(BATCH) {
            let rows: Vec<(String, bytes::Bytes)> = chunk
                .iter()
                .map(|id| (id.clone(), bytes::Bytes::from(vec![7u8; super::data::PAYLOAD])))
                .collect();
            rr.set_many(&rows).await?;
        }
        let r = reads::l2_hits(engine, tiers, rr, l2_ids, p.get_warm).await?;
        let base = out.lat("raw_get", &r.raw_get)?;
        let ours = out.lat("l2_hit", &r.ours)?;
        out.vs("l2_hit_p50.vs_raw", ours.value, "us", &base);
        out.plain("l2_hit_excluded", r.excluded as f64, "ops");
        // Take the L3 ids out of L2 behind the engine's back.
        for chunk in l3_ids.chunks(BATCH) {
            let ids: Vec<ObjectId> = chunk
                .iter()
                .map(|id| ObjectId::new(id).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            redis.remove_many(&ids).await.map_err(|e| format!("remove from L2: {e}"))?;
        }
    }
    let r: Reads = reads::l3_hits(engine, tiers, raw_redis, raw, l3_ids, p.get_warm).await?;
    let ours = out.lat("l3_hit", &r.ours)?;
    let select = out.lat("raw_select", &r.raw_select)?;
    out.plain("l3_hit_excluded", r.excluded as f64, "ops");
    if raw_redis.is_some() {
        let miss = out.lat("raw_get_miss", &r.raw_get)?;
        let sum = out.plain("raw_get_miss_plus_select_p50_us", miss.value + select.value, "us");
        out.vs("l3_hit_p50.vs_raw", ours.value, "us", &sum);
    } else {
        out.vs("l3_hit_p50.vs_raw", ours.value, "us", &select);
    }
    Ok(())
}

async fn repair_phase(
    env: &Env,
    out: &mut Out,
    tiers: &Tiers,
    engine: &SyncEngine,
    names: &Names,
    n: usize,
) -> Result<(), String> {
    let diverged = lifecycle::diverge(tiers, out.shape, n).await?;
    let (took, report, verify_after) = lifecycle::repair(engine).await?;
    if report.differing < diverged {
        log(out, format!("repair found {} of {diverged} differing ids", report.differing));
    }
    let (full, copied) = lifecycle::full_resync(env, names, tiers).await?;
    if copied != n {
        log(out, format!("full resync copied {copied} items of {n}"));
    }
    out.plain("repair_1pct.differing", report.differing as f64, "ids");
    out.plain("repair_1pct.nodes_compared", report.nodes_compared as f64, "nodes");
    out.plain("repair_1pct.diff_round_trips", report.diff_round_trips as f64, "calls");
    out.plain("repair_1pct.diff_s", report.diff_duration.as_secs_f64(), "s");
    out.plain("repair_1pct.diff_l2_wait_s", report.diff_l2_wait.as_secs_f64(), "s");
    out.plain("repair_1pct.diff_l3_wait_s", report.diff_l3_wait.as_secs_f64(), "s");
    out.plain("repair_1pct.copy_s", took.saturating_sub(report.diff_duration).as_secs_f64(), "s");
    out.plain("verify_in_sync_s", verify_after.as_secs_f64(), "s");
    let base = out.plain("full_resync_s", full.as_secs_f64(), "s");
    out.plain("repair_1pct_s", took.as_secs_f64(), "s");
    out.vs("repair_1pct.vs_full_resync", took.as_secs_f64(), "s", &base);
    Ok(())
}

/// Only phase 5 (`SYNC_ENGINE_BENCH_ENGINE_REPAIR_ONLY=1`): fresh tiers, a write-behind ingest
/// of `p.n` items until durable everywhere, then the repair of 1% against a full resync.
pub async fn repair_only(env: &Env, p: &Params, out: &mut Out) -> Result<(), String> {
    let names = Names::new(env, out.setup, out.shape, "repair");
    let data = batches(out.shape, 0x5eed ^ out.shape as u64, 0, p.n);
    let (engine, tiers, (rate, _, _)) = match engine_rep(env, &names, &data).await {
        Ok(r) => r,
        Err(e) => {
            let _ = destroy(env, &names).await;
            return Err(e);
        }
    };
    drop(data);
    log(out, format!("ingested {} items at {rate:.0}/s", p.n));
    let result = repair_phase(env, out, &tiers, &engine, &names, p.n).await;
    stop_destroy(engine, tiers, &names).await?;
    result
}

/// Submit latency at 80% of the sustained ingest rate, then durable submits from 16 tasks
/// against single-row INSERTs from 16 tasks, on fresh tiers (phase 6; alone with
/// `SYNC_ENGINE_BENCH_ENGINE_LATENCY_ONLY=<sustained items/s>`).
pub async fn writes_under_load(
    env: &Env,
    p: &Params,
    out: &mut Out,
    sustained: f64,
) -> Result<(), String> {
    let (setup, shape) = (out.setup, out.shape);
    let names = Names::new(env, setup, shape, "lat");
    let result = async {
        let config = engine_config(&names, env, L1_MAX_BYTES);
        let tiers = Tiers::open(env, &names, &config).await?;
        let engine = tiers.start(config).await?;
        let data = batches(shape, 0x1a7, 0, p.lat_items);
        let target = 0.8 * sustained;
        let (lat, pressured) = ingest::paced(&engine, &data, target, p.lat_warm).await?;
        drop(data);
        out.plain("submit_rate", target, "items/s");
        out.lat("submit", &lat)?;
        out.plain("submit_backpressure_samples", pressured as f64, "samples");
        let data = batches(shape, 0xd0, p.lat_items as u64, p.durable_items);
        let (ours, lat) = ingest::durable(&engine, 16, data).await?;
        stop_destroy(engine, tiers, &names).await?;
        let raw = Arc::new(RawSql::open(&names.sql_url, &names.raw_table()).await?);
        let data = batches(shape, 0xd0, p.lat_items as u64, p.durable_items);
        let raw_result = ingest::raw_insert_one(raw.clone(), 16, data).await;
        let _ = raw.drop_table().await;
        raw.close().await;
        let (theirs, raw_lat) = raw_result?;
        let base = out.plain("raw_insert16.per_s", theirs, "items/s");
        out.plain("ingest_durable16.per_s", ours, "items/s");
        out.vs("ingest_durable16.vs_raw_insert16", ours, "items/s", &base);
        out.lat("durable_submit", &lat)?;
        out.lat("raw_insert16", &raw_lat)?;
        Ok::<_, String>(())
    }
    .await;
    if result.is_err() {
        let _ = destroy(env, &names).await;
    }
    result
}
