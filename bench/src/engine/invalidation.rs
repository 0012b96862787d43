//! Cross-instance invalidation (issue 12): two engines, A and B, over one Redis and one MariaDB,
//! each with its own L1 and the Redis invalidation bus. Per trial, B holds an id's current value
//! in its L1; A writes a new version with a durable submit; the clock runs from the moment A's
//! submit returns (the write is acknowledged and durable) until B's `get` stops serving the old
//! value. `invalidation_from_submit` runs from the start of A's submit instead (adds A's L3 and
//! L2 write). B polls with `yield_now`, so the resolution is that of one `get` from L1.

use std::time::{Duration, Instant};

use sync_engine_core::{SubmitOptions, SyncEngine};

use super::data::Shape;
use super::setup::{engine_config, Env, Names, Setup, Tiers, L1_MAX_BYTES};
use crate::report::{Figure, Latency};

/// Distinct ids the trials cycle over.
const IDS: usize = 50;
/// Give up on one trial after this long (a lost message: reported as an error, not hidden).
const PATIENCE: Duration = Duration::from_secs(5);

async fn start(tiers: &Tiers, names: &Names, env: &Env) -> Result<SyncEngine, String> {
    let config = engine_config(names, env, L1_MAX_BYTES);
    let redis = tiers.redis().ok_or("the invalidation bench needs Redis")?;
    let mut b = SyncEngine::builder(config)
        .archive_arc(tiers.l3.clone())
        .wal_arc(tiers.wal.clone())
        .bus(redis.invalidation_bus());
    if let Some(l2) = &tiers.l2 {
        b = b.cache_arc(l2.clone());
    }
    b.start().await.map_err(|e| format!("engine start: {e}"))
}

/// `engine.redis_mariadb.invalidation_{p50,p99,p999}_ms` and the from-submit variants.
pub async fn bench(env: &Env, trials: usize) -> Result<Vec<Figure>, String> {
    let setup = Setup::RedisMariadb;
    let names_a = Names::new(env, setup, Shape::Deep, "inv");
    let names_b = names_a.with_wal("b");
    let config = engine_config(&names_a, env, L1_MAX_BYTES);
    let tiers_a = Tiers::open(env, &names_a, &config).await?;
    let tiers_b = Tiers::open(env, &names_b, &config).await?;
    let a = start(&tiers_a, &names_a, env).await?;
    let b = start(&tiers_b, &names_b, env).await?;
    let result = trials_over(&a, &b, trials).await;
    let stopped_b = super::setup::stop(b, tiers_b).await;
    let destroyed = super::setup::stop_destroy(a, tiers_a, &names_a).await;
    let (from_ack, from_submit) = result?;
    stopped_b?;
    destroyed?;
    let name = |s: &str| format!("engine.{}.{s}", setup.name());
    let ms = |l: &Latency, q: f64| l.quantile_us(q) / 1000.0;
    Ok(vec![
        Figure::plain(name("invalidation_p50_ms"), ms(&from_ack, 0.5), "ms"),
        Figure::plain(name("invalidation_p99_ms"), ms(&from_ack, 0.99), "ms"),
        Figure::plain(name("invalidation_p999_ms"), ms(&from_ack, 0.999), "ms"),
        Figure::plain(name("invalidation_from_submit_p50_ms"), ms(&from_submit, 0.5), "ms"),
        Figure::plain(name("invalidation_from_submit_p99_ms"), ms(&from_submit, 0.99), "ms"),
        Figure::plain(name("invalidation_trials"), from_ack.len() as f64, "trials"),
    ])
}

async fn trials_over(
    a: &SyncEngine,
    b: &SyncEngine,
    trials: usize,
) -> Result<(Latency, Latency), String> {
    let err = |what: &str, e: sync_engine_core::Error| format!("{what}: {e}");
    let (mut from_ack, mut from_submit) = (Latency::new(), Latency::new());
    let warm = IDS;
    for i in 0..warm + trials {
        let id = format!("inv.k{}", i % IDS);
        let old = format!("v{i}-old");
        let new = format!("v{i}-new");
        // B caches `old`.
        a.submit_with(&id, old.clone(), SubmitOptions::durable())
            .await
            .map_err(|e| err("submit", e))?;
        wait_for(b, &id, old.as_bytes()).await?;
        wait_for(b, &id, old.as_bytes()).await?; // now served from B's L1
        let submitted = Instant::now();
        a.submit_with(&id, new.clone(), SubmitOptions::durable())
            .await
            .map_err(|e| err("submit", e))?;
        let acked = Instant::now();
        wait_for(b, &id, new.as_bytes()).await?;
        if i >= warm {
            from_ack.record(acked.elapsed());
            from_submit.record(submitted.elapsed());
        }
    }
    Ok((from_ack, from_submit))
}

/// Poll B until it serves `want` for `id`.
async fn wait_for(b: &SyncEngine, id: &str, want: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let got = b.get(id).await.map_err(|e| format!("get {id}: {e}"))?;
        if got.as_ref().is_some_and(|item| item.content().as_ref() == want) {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            return Err(format!("B did not serve the new value of {id} within {PATIENCE:?}"));
        }
        tokio::task::yield_now().await;
    }
}
