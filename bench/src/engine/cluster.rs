//! Ingest over a 3-primary Redis Cluster beside the single Redis (issue 12): the same
//! write-behind ingest (bench/src/engine/ingest.rs) into Redis + MariaDB, once with L2 on the
//! single Redis and once on the cluster (`SYNC_ENGINE_TEST_REDIS_CLUSTER_URL`, which
//! `cargo xtask` starts on ports 7101–7103), alternating which goes first per repetition.
//! Skipped with a message when the cluster URL is unset.

use std::sync::Arc;

use sync_engine_core::memory::Faulty;
use sync_engine_core::{Config, SecretUrl};
use sync_engine_redis::{RedisOptions, RedisStore};
use sync_engine_wal::{SqliteWal, WalOptions};

use super::data::Shape;
use super::ingest::{batches, write_behind};
use super::setup::L1_MAX_BYTES;
use super::setup::{engine_config, open_redis, open_sql, stop_destroy, Env, Names, Setup, Tiers};
use crate::report::{median, rate, Figure};

/// Open the tiers of `names` with L2 on the cluster at `cluster_url`.
async fn cluster_tiers(names: &Names, cluster_url: &str, config: &Config) -> Result<Tiers, String> {
    let wal = SqliteWal::open(&names.wal_path, WalOptions::from_config(config))
        .await
        .map_err(|e| format!("open WAL: {e}"))?;
    let l3 = Faulty::new(open_sql(names).await.map_err(|e| format!("open L3: {e}"))?, 3);
    let opts = RedisOptions::from_config(config).with_prefix(names.redis_prefix.clone());
    let l2 = RedisStore::connect_cluster(&SecretUrl::new(cluster_url), opts)
        .await
        .map_err(|e| format!("open the cluster L2: {e}"))?;
    let l2 = Faulty::new(l2, 2);
    let (l3_plan, l2_plan) = (l3.plan(), l2.plan());
    Ok(Tiers {
        l3: Arc::new(l3),
        l2: Some(Arc::new(l2)),
        wal: Arc::new(Faulty::new(wal, 1)),
        l3_plan,
        l2_plan: Some(l2_plan),
    })
}

/// One ingest of `n` items on fresh tiers; items/s until durable in L3 and L2 (shadow folded).
async fn ingest(env: &Env, n: usize, rep: usize, cluster: Option<&str>) -> Result<f64, String> {
    let tag = format!("c{}{rep}", if cluster.is_some() { "c" } else { "s" });
    let names = Names::new(env, Setup::RedisMariadb, Shape::Deep, &tag);
    let config = engine_config(&names, env, L1_MAX_BYTES);
    let tiers = match cluster {
        Some(url) => cluster_tiers(&names, url, &config).await?,
        None => {
            // Make sure the single Redis namespace is reachable the same way the suite opens it.
            open_redis(env, &names.redis_prefix).await.map_err(|e| format!("open L2: {e}"))?;
            Tiers::open(env, &names, &config).await?
        }
    };
    let engine = tiers.start(config).await?;
    let data = batches(Shape::Deep, 0xC1u64 + rep as u64, 0, n);
    let result = write_behind(&engine, &tiers, &data).await;
    stop_destroy(engine, tiers, &names).await?;
    Ok(rate(n, result?.elapsed))
}

/// `engine.redis_cluster_mariadb.ingest.per_s` against `engine.redis_mariadb.single_redis.ingest.per_s`.
pub async fn bench(env: &Env, n: usize, reps: usize) -> Result<Vec<Figure>, String> {
    let Some(url) =
        std::env::var("SYNC_ENGINE_TEST_REDIS_CLUSTER_URL").ok().filter(|u| !u.is_empty())
    else {
        eprintln!(
            "SKIPPED engine.redis_cluster_mariadb: SYNC_ENGINE_TEST_REDIS_CLUSTER_URL is unset"
        );
        return Ok(Vec::new());
    };
    let (mut single, mut cluster) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        if rep % 2 == 0 {
            single.push(ingest(env, n, rep, None).await?);
            cluster.push(ingest(env, n, rep, Some(&url)).await?);
        } else {
            cluster.push(ingest(env, n, rep, Some(&url)).await?);
            single.push(ingest(env, n, rep, None).await?);
        }
    }
    let base =
        Figure::plain("engine.redis_mariadb.single_redis.ingest.per_s", median(single), "items/s");
    let ours =
        Figure::vs("engine.redis_cluster_mariadb.ingest.per_s", median(cluster), "items/s", &base);
    Ok(vec![
        base,
        ours,
        Figure::plain("engine.redis_cluster_mariadb.ingest.items", n as f64, "items"),
    ])
}
