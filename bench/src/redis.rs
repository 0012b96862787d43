//! The redis suite: `RedisStore::put_batch` (newer-wins script + Merkle shadow) against raw
//! pipelined `SET`, and `get` latency against raw `GET`, both through the redis crate, in the
//! same run, on the same server, with the same ids and payloads (BENCH.md).
//!
//! - Data: 1000-item batches of 512-byte random payloads; ids deep (`t{0..99}.u{0..999}.i{n}`)
//!   and flat (`items.{n}`). Each repetition starts from an empty namespace and measures the
//!   insert of every item, then the update of every item to a newer version; raw and store runs
//!   alternate so that a noisy neighbour hits both. Medians of at least 5 repetitions (1 under
//!   `--quick`).
//! - The store's figure INCLUDES its Merkle shadow: the clock stops only after a final
//!   `fold()` has applied every logged change to the nodes (background folds started by the
//!   writes run meanwhile, as in production). `before_fold.per_s` is the same run's rate when
//!   the last write returned, for the cost split. Both sides run on one 2-worker tokio runtime.
//! - Latency: after the deep insert, single-id gets of random existing ids through the store
//!   and raw `GET`s of the same keys, alternated, after a warm-up.
//! - Also reported: Redis main-thread CPU per item (from `INFO cpu`; server-wide, so other
//!   clients of a shared server inflate it).
//! - Keys: under `se-bench-<pid>:` only, deleted (SCAN + UNLINK on that prefix) at the end.

use std::time::Instant;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redis::aio::ConnectionManager;
use sync_engine_core::store::{CacheEntry, CacheExt, CacheStore};
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_redis::{RedisOptions, RedisStore};

use crate::report::{median, rate, Figure, Latency, Opts};

const BATCH: usize = 1000;
const PAYLOAD: usize = 512;
const POOL: usize = 4096;

#[derive(Clone, Copy)]
enum Shape {
    Deep,
    Flat,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Deep => "deep",
            Shape::Flat => "flat",
        }
    }

    fn id(self, n: usize) -> String {
        match self {
            Shape::Flat => format!("items.{n}"),
            Shape::Deep => format!("t{}.u{}.i{n}", n % 100, (n / 100) % 1000),
        }
    }
}

/// Run the suite.
pub fn run(opts: &Opts) -> Result<Vec<Figure>, String> {
    let url = std::env::var("SYNC_ENGINE_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(run_async(opts, &url))
}

async fn run_async(opts: &Opts, url: &str) -> Result<Vec<Figure>, String> {
    let prefix = format!("se-bench-{}:", std::process::id());
    let store = match RedisStore::connect(
        &SecretUrl::new(url),
        RedisOptions::default().with_prefix(&prefix),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: the redis suite needs a Redis server ({e}); nothing measured");
            return Ok(Vec::new());
        }
    };
    let client = redis::Client::open(url).map_err(|_| "the Redis URL is not valid".to_owned())?;
    let mut raw =
        ConnectionManager::new(client).await.map_err(|e| format!("raw connection: {e}"))?;
    let result = measure(opts, &store, &mut raw, &prefix).await;
    // Always clean up, whatever happened.
    let cleaned = unlink_prefix(&mut raw, &prefix).await;
    let figures = result?;
    cleaned.map_err(|e| format!("cleanup of {prefix}*: {e}"))?;
    Ok(figures)
}

async fn unlink_prefix(raw: &mut ConnectionManager, prefix: &str) -> redis::RedisResult<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(raw)
            .await?;
        if !keys.is_empty() {
            let d: u64 = redis::cmd("UNLINK").arg(keys).query_async(raw).await?;
            n += d;
        }
        if next == 0 {
            return Ok(n);
        }
        cursor = next;
    }
}

/// Redis main-thread CPU seconds so far.
async fn server_cpu(raw: &mut ConnectionManager) -> Option<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(raw).await.ok()?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok())
    };
    Some(field("used_cpu_sys_main_thread")? + field("used_cpu_user_main_thread")?)
}

struct Data {
    ids: Vec<ObjectId>,
    raw_keys: Vec<String>,
    /// Batches of version 1 (insert) and version 2 (update) items.
    v1: Vec<Vec<CacheEntry>>,
    v2: Vec<Vec<CacheEntry>>,
}

fn data(shape: Shape, n: usize, pool: &[Bytes], prefix: &str) -> Result<Data, String> {
    let ids = (0..n)
        .map(|i| ObjectId::new(&shape.id(i)).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let raw_keys = ids.iter().map(|id| format!("{prefix}raw:{id}")).collect();
    let batches = |version: u64| -> Vec<Vec<CacheEntry>> {
        ids.chunks(BATCH)
            .enumerate()
            .map(|(b, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        let payload =
                            pool[(b * BATCH + i + version as usize * 7) % pool.len()].clone();
                        CacheEntry::new(SyncItem::new(id.clone(), version, payload))
                    })
                    .collect()
            })
            .collect()
    };
    Ok(Data { v1: batches(1), v2: batches(2), ids, raw_keys })
}

/// Items/s of writing every batch through the store AND folding the shadow up to date (the
/// Merkle cost is paid inside the timing), items/s until the last write returned (folds still
/// pending), and server CPU µs per item.
async fn time_store(
    store: &RedisStore,
    raw: &mut ConnectionManager,
    batches: &[Vec<CacheEntry>],
) -> Result<(f64, f64, Option<f64>), String> {
    let cpu0 = server_cpu(raw).await;
    let started = Instant::now();
    let mut items = 0;
    for b in batches {
        let out = store.put_batch(b).await.map_err(|e| e.to_string())?;
        items += out.applied + out.stale;
    }
    let written = started.elapsed();
    store.fold().await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let cpu = match (cpu0, server_cpu(raw).await) {
        (Some(a), Some(b)) => Some((b - a) * 1e6 / items.max(1) as f64),
        _ => None,
    };
    Ok((rate(items, elapsed), rate(items, written), cpu))
}

/// The same with raw pipelined `SET`s of the payloads.
async fn time_raw(
    raw: &mut ConnectionManager,
    keys: &[String],
    batches: &[Vec<CacheEntry>],
) -> Result<(f64, Option<f64>), String> {
    let cpu0 = server_cpu(raw).await;
    let started = Instant::now();
    let mut items = 0;
    for (b, chunk) in batches.iter().enumerate() {
        let mut pipe = redis::pipe();
        for (i, e) in chunk.iter().enumerate() {
            pipe.cmd("SET").arg(&keys[b * BATCH + i]).arg(e.item.content().as_ref()).ignore();
        }
        let () = pipe.query_async(raw).await.map_err(|e| e.to_string())?;
        items += chunk.len();
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu0, server_cpu(raw).await) {
        (Some(a), Some(b)) => Some((b - a) * 1e6 / items.max(1) as f64),
        _ => None,
    };
    Ok((rate(items, elapsed), cpu))
}

#[derive(Default)]
struct Samples {
    store_insert: Vec<f64>,
    store_insert_written: Vec<f64>,
    raw_insert: Vec<f64>,
    store_update: Vec<f64>,
    raw_update: Vec<f64>,
    store_cpu: Vec<f64>,
    raw_cpu: Vec<f64>,
}

async fn measure(
    opts: &Opts,
    store: &RedisStore,
    raw: &mut ConnectionManager,
    prefix: &str,
) -> Result<Vec<Figure>, String> {
    let n = opts.items_or(200_000, 5_000).max(BATCH);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let pool: Vec<Bytes> = (0..POOL)
        .map(|_| {
            let mut p = vec![0u8; PAYLOAD];
            rng.fill(&mut p[..]);
            Bytes::from(p)
        })
        .collect();
    let shapes = [Shape::Deep, Shape::Flat];
    let sets: Vec<Data> =
        shapes.iter().map(|&s| data(s, n, &pool, prefix)).collect::<Result<_, _>>()?;
    let mut samples: Vec<Samples> = shapes.iter().map(|_| Samples::default()).collect();
    let raw_prefix = format!("{prefix}raw:");
    let reps = if opts.quick { opts.reps() } else { opts.reps().max(5) };
    for _rep in 0..reps {
        for (d, s) in sets.iter().zip(samples.iter_mut()) {
            unlink_prefix(raw, &raw_prefix).await.map_err(|e| e.to_string())?;
            let (r, rc) = time_raw(raw, &d.raw_keys, &d.v1).await?;
            s.raw_insert.push(r);
            s.raw_cpu.extend(rc);
            let (r, _) = time_raw(raw, &d.raw_keys, &d.v2).await?;
            s.raw_update.push(r);
            unlink_prefix(raw, &raw_prefix).await.map_err(|e| e.to_string())?;
            store.clear_namespace().await.map_err(|e| e.to_string())?;
            let (r, w, sc) = time_store(store, raw, &d.v1).await?;
            s.store_insert.push(r);
            s.store_insert_written.push(w);
            s.store_cpu.extend(sc);
            let (r, _, _) = time_store(store, raw, &d.v2).await?;
            s.store_update.push(r);
        }
    }

    let mut figs = Vec::new();
    let mut headline: Option<Figure> = None;
    let mut all_raw = Vec::new();
    for (shape, s) in shapes.iter().zip(&samples) {
        let name = shape.name();
        let raw_fig = Figure::plain(
            format!("redis.raw_set.{name}.per_s"),
            median(s.raw_insert.clone()),
            "items/s",
        );
        let put = Figure::plain(
            format!("redis.put_batch.{name}.per_s"),
            median(s.store_insert.clone()),
            "items/s",
        );
        let vs =
            Figure::vs(format!("redis.put_batch.{name}.vs_raw"), put.value, "items/s", &raw_fig);
        let raw_up = Figure::plain(
            format!("redis.raw_set.{name}.update.per_s"),
            median(s.raw_update.clone()),
            "items/s",
        );
        let up = Figure::vs(
            format!("redis.put_batch.{name}.update.vs_raw"),
            median(s.store_update.clone()),
            "items/s",
            &raw_up,
        );
        if headline.as_ref().is_none_or(|h| vs.ratio < h.ratio) {
            headline = Some(Figure { name: "redis.put_batch.vs_raw".into(), ..vs.clone() });
        }
        all_raw.extend(s.raw_insert.iter().copied());
        let written = Figure::plain(
            format!("redis.put_batch.{name}.before_fold.per_s"),
            median(s.store_insert_written.clone()),
            "items/s",
        );
        figs.extend([put, raw_fig, vs, written, raw_up, up]);
        if !s.store_cpu.is_empty() && !s.raw_cpu.is_empty() {
            let raw_cpu = Figure::plain(
                format!("redis.raw_set.{name}.server_us_per_item"),
                median(s.raw_cpu.clone()),
                "us",
            );
            figs.push(Figure::vs(
                format!("redis.put_batch.{name}.server_us_per_item"),
                median(s.store_cpu.clone()),
                "us",
                &raw_cpu,
            ));
            figs.push(raw_cpu);
        }
    }
    figs.push(Figure::plain("redis.raw_set.per_s", median(all_raw), "items/s"));
    figs.extend(headline);
    figs.extend(get_latency(opts, store, raw, &sets[0], prefix).await?);
    figs.push(Figure::plain("redis.items", n as f64, "items"));
    Ok(figs)
}

/// Single-id get latency through the store and raw `GET`, over the deep data set.
async fn get_latency(
    opts: &Opts,
    store: &RedisStore,
    raw: &mut ConnectionManager,
    d: &Data,
    prefix: &str,
) -> Result<Vec<Figure>, String> {
    // Load the deep items into both.
    unlink_prefix(raw, &format!("{prefix}raw:")).await.map_err(|e| e.to_string())?;
    store.clear_namespace().await.map_err(|e| e.to_string())?;
    time_raw(raw, &d.raw_keys, &d.v1).await?;
    time_store(store, raw, &d.v1).await?;
    store.fold().await.map_err(|e| e.to_string())?;
    let ops = if opts.quick { 10_000 } else { 50_000 };
    let warm = 2_000;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut ours, mut theirs) = (Latency::new(), Latency::new());
    for i in 0..warm + ops {
        let k = rng.random_range(0..d.ids.len());
        let t = Instant::now();
        let got = store.get(&d.ids[k]).await.map_err(|e| e.to_string())?;
        let a = t.elapsed();
        if got.is_none() {
            return Err(format!("store lost {}", d.ids[k]));
        }
        let t = Instant::now();
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&d.raw_keys[k])
            .query_async(raw)
            .await
            .map_err(|e| e.to_string())?;
        let b = t.elapsed();
        if v.is_none() {
            return Err(format!("raw key {} missing", d.raw_keys[k]));
        }
        if i >= warm {
            ours.record(a);
            theirs.record(b);
        }
    }
    if ours.is_empty() || theirs.is_empty() {
        return Err("no get was measured".into());
    }
    let raw50 = Figure::plain("redis.raw_get_p50_us", theirs.quantile_us(0.5), "us");
    Ok(vec![
        Figure::plain("redis.get_p50_us", ours.quantile_us(0.5), "us"),
        Figure::plain("redis.get_p99_us", ours.quantile_us(0.99), "us"),
        Figure::plain("redis.get_p999_us", ours.quantile_us(0.999), "us"),
        Figure::vs("redis.get_p50.vs_raw", ours.quantile_us(0.5), "us", &raw50),
        raw50,
        Figure::plain("redis.raw_get_p99_us", theirs.quantile_us(0.99), "us"),
        Figure::plain("redis.raw_get_p999_us", theirs.quantile_us(0.999), "us"),
        Figure::plain("redis.get_ops", ours.len() as f64, "ops"),
    ])
}
