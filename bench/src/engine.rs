//! The engine suite: `SyncEngine` end to end over Redis + MariaDB, Redis + PostgreSQL and SQLite
//! alone, each against raw baselines measured in the same run on the same servers (BENCH.md).
//!
//! Per setup and id shape (deep, flat), in this order:
//! 1. ingest of `--items` items (default 1,000,000) of 512 random bytes, write-behind, until
//!    durable in every tier (`flush()` returned, L2's Merkle shadow folded), on fresh tiers each
//!    repetition, alternated with raw multi-row INSERTs of the same rows (1000 per statement)
//!    into a plain table of the same database and raw pipelined SETs; median of the repetitions;
//! 2. on that engine: L1 hits, and absent ids with the trusted filter (backend calls counted by
//!    `memory::Faulty` wrappers);
//! 3. shutdown (which snapshots the filter), start-up timed; L2 hits and L3 hits on the cold L1,
//!    alternated op by op with raw GET / raw GET of a missing key + raw SELECT by primary key;
//! 4. start-up as a new node (no snapshot) until the filter is trusted;
//! 5. 1% of L2 made to differ behind the engine's back, `repair("")` timed against a full
//!    resync of L2 (every item read from L3 and written into L2 in 1000-item batches);
//! 6. on fresh tiers: submit latency at 80% of the sustained ingest rate, then durable submits
//!    from 16 tasks against single-row INSERTs from 16 tasks;
//! 7. peak RSS against `l1_max_bytes` in a child process.
//!
//! First of all, once: cross-instance invalidation over Redis + MariaDB (`invalidation.rs`), and
//! ingest with L2 on a 3-primary Redis Cluster beside the single Redis (`cluster.rs`).
//!
//! Isolation: tables `se_engine_<run>_*` in the configured databases, Redis keys under
//! `se-engine-<run>-*`, SQLite files in a temporary directory; all removed at the end. A setup
//! whose server is unreachable is skipped with a message.

mod breakdown;
mod cluster;
mod data;
mod flow;
mod ingest;
mod invalidation;
mod lifecycle;
mod raw;
mod reads;
mod rss;
mod setup;

use data::Shape;
use setup::{Env, Setup};

use crate::report::{Figure, Latency, Opts};

/// Sizes of every phase.
pub struct Params {
    /// Items per ingest (`--items`).
    pub n: usize,
    /// Ingest repetitions.
    pub reps: usize,
    /// Recorded ops per read phase, and warm-up ops before them.
    pub get_ops: usize,
    pub get_warm: usize,
    /// Distinct ids the L1-hit phase cycles over.
    pub l1_ids: usize,
    /// Items of the paced submit-latency run, and unrecorded warm-up submits.
    pub lat_items: usize,
    pub lat_warm: usize,
    /// Items of the durable 16-task run.
    pub durable_items: usize,
    /// Items and L1 budget of the memory run.
    pub rss_items: usize,
    pub rss_l1: u64,
    /// Items in the store when the start-up figures are taken (deep shape; the store is topped
    /// up after the read phases' data). `SYNC_ENGINE_BENCH_ENGINE_STARTUP_ITEMS` overrides.
    pub startup_items: usize,
    /// Id shapes measured.
    pub shapes: Vec<Shape>,
    /// Trials of the cross-instance invalidation figure.
    pub invalidation_trials: usize,
    /// Items per ingest of the Redis Cluster comparison.
    pub cluster_items: usize,
}

impl Params {
    fn new(opts: &Opts) -> Params {
        let n = opts.items_or(1_000_000, 3_000).max(data::BATCH);
        let get_ops = if opts.quick { (n / 5).min(500) } else { (n / 5).min(20_000) };
        let lat_items = if opts.quick { n } else { n.min(60_000) };
        Params {
            n,
            reps: opts.reps(),
            get_ops,
            get_warm: (get_ops / 10).max(1),
            l1_ids: (n / 10).clamp(1, 1000),
            lat_items,
            lat_warm: lat_items / 6,
            durable_items: (n / 10).clamp(160, 8_000),
            rss_items: n.min(200_000),
            rss_l1: 64 * 1024 * 1024,
            startup_items: std::env::var("SYNC_ENGINE_BENCH_ENGINE_STARTUP_ITEMS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if opts.quick { n } else { n.max(1_000_000) }),
            shapes: shapes(opts.quick),
            invalidation_trials: if opts.quick { 50 } else { 1000 },
            cluster_items: n.min(100_000),
        }
    }
}

/// The id shapes measured: both, or only deep in a quick run; `SYNC_ENGINE_BENCH_ENGINE_SHAPES`
/// (comma-separated `deep`, `flat`) narrows a run for profiling.
fn shapes(quick: bool) -> Vec<Shape> {
    let all = if quick { vec![Shape::Deep] } else { vec![Shape::Deep, Shape::Flat] };
    match std::env::var("SYNC_ENGINE_BENCH_ENGINE_SHAPES") {
        Ok(list) => all.into_iter().filter(|s| selected(Some(&list), s.name())).collect(),
        Err(_) => all,
    }
}

/// The figures of one setup and shape, named `engine.<setup>.<shape>.<name>`.
pub struct Out {
    pub setup: Setup,
    pub shape: Shape,
    pub figs: Vec<Figure>,
}

impl Out {
    fn name(&self, name: &str) -> String {
        format!("engine.{}.{}.{name}", self.setup.name(), self.shape.name())
    }

    /// Add a figure without baseline.
    pub fn plain(&mut self, name: &str, value: f64, unit: &str) -> Figure {
        let f = Figure::plain(self.name(name), value, unit);
        self.figs.push(f.clone());
        f
    }

    /// Add a figure against a baseline of the same run.
    pub fn vs(&mut self, name: &str, value: f64, unit: &str, base: &Figure) -> Figure {
        let f = Figure::vs(self.name(name), value, unit, base);
        self.figs.push(f.clone());
        f
    }

    /// Add `<name>_p50_us`, `_p99_us`, `_p999_us` and `_ops`; returns the p50.
    pub fn lat(&mut self, name: &str, l: &Latency) -> Result<Figure, String> {
        if l.is_empty() {
            return Err(format!("{}: no operation was measured", self.name(name)));
        }
        let p50 = self.plain(&format!("{name}_p50_us"), l.quantile_us(0.5), "us");
        self.plain(&format!("{name}_p99_us"), l.quantile_us(0.99), "us");
        self.plain(&format!("{name}_p999_us"), l.quantile_us(0.999), "us");
        self.plain(&format!("{name}_ops"), l.len() as f64, "ops");
        Ok(p50)
    }
}

/// Whether a higher or a lower figure is worse (headlines quote the worse shape).
#[derive(Clone, Copy)]
enum Worse {
    Lower,
    Higher,
}

/// The named figures of BENCH.md, quoted per setup from the worse of the two shapes.
const HEADLINES: &[(&str, Worse)] = &[
    ("ingest.vs_raw_insert", Worse::Lower),
    ("ingest.per_s", Worse::Lower),
    ("ingest_durable16.per_s", Worse::Lower),
    ("l1_hit_p50_us", Worse::Higher),
    ("l2_hit_p50.vs_raw", Worse::Higher),
    ("l3_hit_p50.vs_raw", Worse::Higher),
    ("absent_p50_us", Worse::Higher),
    ("absent_backend_calls", Worse::Higher),
    ("submit_p999_us", Worse::Higher),
    ("startup_snapshot_s", Worse::Higher),
    ("filter_rebuild_s", Worse::Higher),
    ("repair_1pct.vs_full_resync", Worse::Higher),
    ("peak_rss.vs_budget", Worse::Higher),
];

fn headlines(setup: Setup, figs: &[Figure]) -> Vec<Figure> {
    let mut out = Vec::new();
    for &(suffix, worse) in HEADLINES {
        let key = |f: &Figure| f.ratio.unwrap_or(f.value);
        let candidates = figs.iter().filter(|f| {
            [Shape::Deep, Shape::Flat]
                .iter()
                .any(|s| f.name == format!("engine.{}.{}.{suffix}", setup.name(), s.name()))
        });
        let pick = match worse {
            Worse::Lower => candidates.min_by(|a, b| key(a).total_cmp(&key(b))),
            Worse::Higher => candidates.max_by(|a, b| key(a).total_cmp(&key(b))),
        };
        if let Some(f) = pick {
            out.push(Figure { name: format!("engine.{}.{suffix}", setup.name()), ..f.clone() });
        }
    }
    out
}

/// Run the suite (or, in the memory child, its one measurement).
pub fn run(opts: &Opts) -> Result<Vec<Figure>, String> {
    if let Ok(spec) = std::env::var(rss::CHILD_VAR) {
        rss::child_main(&spec);
    }
    let p = Params::new(opts);
    let env = Env::from_env(std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let result = rt.block_on(run_all(&env, &p));
    let _ = std::fs::remove_dir_all(&env.dir);
    result
}

/// True when `name` is in the comma-separated `SYNC_ENGINE_BENCH_ENGINE_SETUPS` list, or no
/// list was given.
fn selected(only: Option<&str>, name: &str) -> bool {
    only.is_none_or(|o| o.split(',').any(|s| s.trim() == name))
}

/// One phase alone, per selected setup with L2 and shape.
#[derive(Clone, Copy)]
enum Phase {
    /// Repair of 1% against a full resync (after an ingest).
    Repair,
    /// Peak RSS against the L1 budget (two child processes).
    Rss,
    /// Submit latency while pacing at 80% of the given sustained rate (items/s), then the
    /// durable 16-task writes, on fresh tiers.
    Latency(f64),
}

async fn phase_only(
    env: &Env,
    p: &Params,
    only: Option<&str>,
    phase: Phase,
    mut figs: Vec<Figure>,
) -> Result<Vec<Figure>, String> {
    // Only the repair phase needs L2.
    let setups = Setup::ALL.into_iter().filter(|s| s.has_l2() || !matches!(phase, Phase::Repair));
    for setup in setups {
        if !selected(only, setup.name()) {
            continue;
        }
        if let Some(why) = setup::unreachable(env, setup).await {
            eprintln!("SKIPPED engine.{}: {why}", setup.name());
            continue;
        }
        let mut mine = Vec::new();
        for &shape in &p.shapes {
            let mut out = Out { setup, shape, figs: Vec::new() };
            match phase {
                Phase::Repair => flow::repair_only(env, p, &mut out).await,
                Phase::Rss => rss::figures(env, p, &mut out).await,
                Phase::Latency(rate) => flow::writes_under_load(env, p, &mut out, rate).await,
            }
            .map_err(|e| format!("{}.{}: {e}", setup.name(), shape.name()))?;
            mine.extend(out.figs);
        }
        figs.extend(headlines(setup, &mine));
        figs.extend(mine);
    }
    Ok(figs)
}

async fn run_all(env: &Env, p: &Params) -> Result<Vec<Figure>, String> {
    std::fs::create_dir_all(&env.dir).map_err(|e| format!("{}: {e}", env.dir.display()))?;
    let mut figs = vec![
        Figure::plain("engine.items", p.n as f64, "items"),
        Figure::plain("engine.reps", p.reps as f64, "reps"),
    ];
    // `SYNC_ENGINE_BENCH_ENGINE_SETUPS=sqlite,redis_mariadb` limits the run (for profiling);
    // `SYNC_ENGINE_BENCH_ENGINE_INVALIDATION_ONLY=1` runs only the invalidation and cluster figures.
    let only = std::env::var("SYNC_ENGINE_BENCH_ENGINE_SETUPS").ok();
    let invalidation_only =
        std::env::var("SYNC_ENGINE_BENCH_ENGINE_INVALIDATION_ONLY").is_ok_and(|v| v == "1");
    // `SYNC_ENGINE_BENCH_ENGINE_REPAIR_ONLY=1` runs only phase 5 (repair of 1% against a full
    // resync) after an ingest of `--items` items, per selected setup with L2 and shape.
    if std::env::var("SYNC_ENGINE_BENCH_ENGINE_REPAIR_ONLY").is_ok_and(|v| v == "1") {
        return phase_only(env, p, only.as_deref(), Phase::Repair, figs).await;
    }
    // `SYNC_ENGINE_BENCH_ENGINE_RSS_ONLY=1` runs only the peak-RSS children (phase 6).
    if std::env::var("SYNC_ENGINE_BENCH_ENGINE_RSS_ONLY").is_ok_and(|v| v == "1") {
        return phase_only(env, p, only.as_deref(), Phase::Rss, figs).await;
    }
    // `SYNC_ENGINE_BENCH_ENGINE_LATENCY_ONLY=<items/s>` runs only phase 6 (submit latency at 80%
    // of that sustained rate, durable submits), per selected setup and shape; for finding what
    // a full run's submit tail depends on without its ingests.
    if let Ok(v) = std::env::var("SYNC_ENGINE_BENCH_ENGINE_LATENCY_ONLY") {
        let rate: f64 = v.parse().map_err(|_| {
            format!("SYNC_ENGINE_BENCH_ENGINE_LATENCY_ONLY={v:?}: expected a rate in items/s")
        })?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("SYNC_ENGINE_BENCH_ENGINE_LATENCY_ONLY={v:?}: must be above 0"));
        }
        return phase_only(env, p, only.as_deref(), Phase::Latency(rate), figs).await;
    }
    if selected(only.as_deref(), "redis_mariadb") {
        match setup::unreachable(env, Setup::RedisMariadb).await {
            Some(why) => eprintln!("SKIPPED engine.redis_mariadb.invalidation: {why}"),
            None => figs.extend(invalidation::bench(env, p.invalidation_trials).await?),
        }
    }
    if selected(only.as_deref(), "redis_cluster_mariadb") {
        if let Some(why) = setup::unreachable(env, Setup::RedisMariadb).await {
            eprintln!("SKIPPED engine.redis_cluster_mariadb: {why}");
        } else {
            figs.extend(cluster::bench(env, p.cluster_items, p.reps).await?);
        }
    }
    if invalidation_only {
        return Ok(figs);
    }
    for setup in Setup::ALL {
        if !selected(only.as_deref(), setup.name()) {
            eprintln!("engine.{}: not selected by SYNC_ENGINE_BENCH_ENGINE_SETUPS", setup.name());
            continue;
        }
        if let Some(why) = setup::unreachable(env, setup).await {
            eprintln!("SKIPPED engine.{}: {why}", setup.name());
            continue;
        }
        let mut mine = Vec::new();
        for &shape in &p.shapes {
            let started = std::time::Instant::now();
            let mut out = Out { setup, shape, figs: Vec::new() };
            flow::bench_shape(env, p, &mut out)
                .await
                .map_err(|e| format!("{}.{}: {e}", setup.name(), shape.name()))?;
            eprintln!(
                "engine.{}.{}: done in {:.0} s",
                setup.name(),
                shape.name(),
                started.elapsed().as_secs_f64()
            );
            mine.extend(out.figs);
        }
        figs.extend(headlines(setup, &mine));
        figs.extend(mine);
    }
    Ok(figs)
}
