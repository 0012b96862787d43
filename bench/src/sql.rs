//! The `sql` suite: `SqlStore::put_batch` (with its Merkle maintenance) and `get` on SQLite,
//! MariaDB/MySQL and PostgreSQL, each against a raw baseline in the same database and the same
//! run: a plain table with the same id and payload column types, filled by multi-row INSERTs
//! of the same rows batched the same way, and read by primary key.
//!
//! Per database and per id shape (deep `t{0..99}.u{0..999}.i{n}`, flat `items.{n}`): preload
//! `--items` rows (default 200,000; 4,000 under `--quick`) into both, then time batches of
//! 1000 new rows of 512 random bytes, alternating ours and raw batch by batch, median of the
//! repetitions. A repetition is one fold cycle of the store's default configuration:
//! `DEFAULT_FOLD_CHANGES / 1000` batches (65; 2 under `--quick`), then `SqlStore::fold` of what
//! they logged. Ours includes the Merkle upkeep: the store logs each batch's leaf changes in its
//! transaction, and the fold of the logged changes into the node rows is inside the timing, at
//! the cadence a sustained ingest folds at (one fold per 65,536 changes). Gets:
//! random preloaded ids of the deep shape, ours and raw alternating op by op, after a warm-up.
//! A server that cannot be reached is skipped with a message; nothing is invented.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::AssertSqlSafe;
use sync_engine_core::store::ArchiveStore;
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::{Dialect, SqlOptions, SqlStore, DEFAULT_FOLD_CHANGES};

use crate::report::{median, rate, Figure, Latency, Opts};

const BATCH: usize = 1000;
const PAYLOAD: usize = 512;

/// One database under test.
struct Target {
    /// `sqlite`, `mariadb`, `postgres` (figure names).
    name: &'static str,
    url: String,
}

/// The raw baseline: a pool of the same driver and a plain table.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    MySql(sqlx::MySqlPool),
    Postgres(sqlx::PgPool),
}

/// The SQLite settings `SqlStore` uses, applied to the raw pool too (same database behaviour).
fn sqlite_options(url: &str) -> Result<sqlx::sqlite::SqliteConnectOptions, String> {
    let mut o: sqlx::sqlite::SqliteConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
    o = o
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    for (k, v) in sync_engine_sql::SQLITE_PRAGMAS {
        o = o.pragma(*k, *v);
    }
    Ok(o)
}

impl Raw {
    async fn open(dialect: Dialect, url: &str, table: &str) -> Result<Raw, String> {
        let e = |e: sqlx::Error| format!("raw baseline: {e}");
        Ok(match dialect {
            Dialect::Sqlite => {
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(sqlite_options(url)?)
                    .await
                    .map_err(e)?;
                let ddl = format!(
                    "CREATE TABLE {table} (id TEXT NOT NULL PRIMARY KEY, payload BLOB NOT NULL)"
                );
                sqlx::query(AssertSqlSafe(ddl)).execute(&pool).await.map_err(e)?;
                Raw::Sqlite(pool)
            }
            Dialect::MySql => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let pool = sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(8)
                    .connect(&url)
                    .await
                    .map_err(e)?;
                let ddl = format!(
                    "CREATE TABLE {table} (id VARBINARY(1024) NOT NULL PRIMARY KEY, payload LONGBLOB NOT NULL) ENGINE=InnoDB"
                );
                sqlx::query(AssertSqlSafe(ddl)).execute(&pool).await.map_err(e)?;
                Raw::MySql(pool)
            }
            Dialect::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect(url)
                    .await
                    .map_err(e)?;
                let ddl = format!(
                    "CREATE TABLE {table} (id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, payload BYTEA NOT NULL)"
                );
                sqlx::query(AssertSqlSafe(ddl)).execute(&pool).await.map_err(e)?;
                Raw::Postgres(pool)
            }
        })
    }

    /// One multi-row INSERT of the batch (autocommit: one transaction, like `put_batch`).
    async fn insert(&self, table: &str, batch: &[SyncItem]) -> Result<(), String> {
        let e = |e: sqlx::Error| format!("raw insert: {e}");
        match self {
            Raw::Sqlite(pool) => {
                let sql = format!(
                    "INSERT INTO {table} (id, payload) VALUES {}",
                    vec!["(?,?)"; batch.len()].join(",")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for it in batch {
                    q = q.bind(it.id().as_str()).bind(it.content().as_ref());
                }
                q.execute(pool).await.map_err(e)?;
            }
            Raw::MySql(pool) => {
                let sql = format!(
                    "INSERT INTO {table} (id, payload) VALUES {}",
                    vec!["(?,?)"; batch.len()].join(",")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for it in batch {
                    q = q.bind(it.id().as_str()).bind(it.content().as_ref());
                }
                q.execute(pool).await.map_err(e)?;
            }
            Raw::Postgres(pool) => {
                let values: Vec<String> =
                    (0..batch.len()).map(|i| format!("(${},${})", 2 * i + 1, 2 * i + 2)).collect();
                let sql = format!("INSERT INTO {table} (id, payload) VALUES {}", values.join(","));
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for it in batch {
                    q = q.bind(it.id().as_str()).bind(it.content().as_ref());
                }
                q.execute(pool).await.map_err(e)?;
            }
        }
        Ok(())
    }

    /// `SELECT payload ... WHERE id = ?`; true when found.
    async fn select(&self, sql: &std::sync::Arc<str>, id: &str) -> Result<bool, String> {
        let e = |e: sqlx::Error| format!("raw select: {e}");
        let q = || AssertSqlSafe(std::sync::Arc::clone(sql));
        Ok(match self {
            Raw::Sqlite(p) => {
                sqlx::query(q()).bind(id).fetch_optional(p).await.map_err(e)?.is_some()
            }
            Raw::MySql(p) => {
                sqlx::query(q()).bind(id).fetch_optional(p).await.map_err(e)?.is_some()
            }
            Raw::Postgres(p) => {
                sqlx::query(q()).bind(id).fetch_optional(p).await.map_err(e)?.is_some()
            }
        })
    }

    async fn drop_table(&self, table: &str) {
        let sql = format!("DROP TABLE IF EXISTS {table}");
        let _ = match self {
            Raw::Sqlite(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
            Raw::MySql(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
            Raw::Postgres(p) => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()),
        };
    }
}

/// The ids of one shape, deterministic from the item number.
#[derive(Clone, Copy, PartialEq, Eq)]
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

    /// Batch `b` (1000 items numbered `b*1000..`), payloads of 512 random bytes.
    fn batch(self, b: usize, seed: u64) -> Vec<SyncItem> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        (0..BATCH)
            .map(|j| {
                let n = b * BATCH + j;
                let id = match self {
                    Shape::Deep => {
                        format!("t{}.u{}.i{n}", rng.random_range(0..100), rng.random_range(0..1000))
                    }
                    Shape::Flat => format!("items.{n}"),
                };
                let mut payload = vec![0u8; PAYLOAD];
                rng.fill(&mut payload[..]);
                // Ids built above are valid by construction.
                let id = ObjectId::new(&id).unwrap_or_else(|e| unreachable!("{e}"));
                SyncItem::new(id, 1, payload)
            })
            .collect()
    }
}

/// Throughputs of one shape: ours and raw, median items/s.
struct ShapeRates {
    ours: f64,
    raw: f64,
}

fn targets() -> Vec<Target> {
    let dir = std::env::temp_dir().join(format!("sync-engine-bench-sql-{}", std::process::id()));
    let env = |var: &str, default: &str| {
        std::env::var(var).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| default.to_owned())
    };
    vec![
        Target { name: "sqlite", url: format!("sqlite://{}/bench.db", dir.display()) },
        Target {
            name: "mariadb",
            url: env("SYNC_ENGINE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        },
        Target {
            name: "postgres",
            url: env("SYNC_ENGINE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"),
        },
    ]
}

/// Run the suite.
pub fn run(opts: &Opts) -> Result<Vec<Figure>, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let mut figures = Vec::new();
        for target in targets() {
            match bench_db(&target, opts).await {
                Ok(Some(f)) => figures.extend(f),
                Ok(None) => {}
                Err(e) => return Err(format!("{}: {e}", target.name)),
            }
        }
        if let Some(dir) =
            targets().first().and_then(|t| t.url.strip_prefix("sqlite://").map(|u| u.to_owned()))
        {
            if let Some(parent) = std::path::Path::new(&dir).parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
        Ok(figures)
    })
}

async fn bench_db(target: &Target, opts: &Opts) -> Result<Option<Vec<Figure>>, String> {
    let url = SecretUrl::new(target.url.clone());
    let dialect = Dialect::of_url(&url).map_err(|e| e.to_string())?;
    let preload = opts.items_or(200_000, 4_000).div_ceil(BATCH);
    // One fold cycle per repetition: as many batches of 1000 as the store logs before it folds
    // by itself (the default `fold_changes`, 65 batches), then the fold of everything they
    // logged (inside the timing) — what a sustained ingest pays per batch.
    let measured = if opts.quick { 2 } else { DEFAULT_FOLD_CHANGES / BATCH };
    let db = target.name;
    let mut figures = Vec::new();
    let mut rates = Vec::new();
    let mut deep_store = None;
    for shape in [Shape::Deep, Shape::Flat] {
        let prefix = format!("bench_{}_{}_", shape.name(), std::process::id());
        let options =
            SqlOptions { pool_size: 8, ..SqlOptions::default().with_table_prefix(prefix.clone()) };
        let store = match SqlStore::connect(&url, options).await {
            Ok(s) => s,
            Err(e) if e.is_retryable() => {
                eprintln!("SKIPPED sql.{db}: {} is not reachable: {e}", url);
                return Ok(None);
            }
            Err(e) => return Err(e.to_string()),
        };
        let raw_table = format!("{prefix}raw");
        let raw = Raw::open(dialect, url.expose(), &raw_table).await?;
        let seed = 0x5eed ^ shape as u64;
        let start = Instant::now();
        for b in 0..preload {
            let batch = shape.batch(b, seed);
            store.put_batch(&batch).await.map_err(|e| e.to_string())?;
            raw.insert(&raw_table, &batch).await?;
        }
        store.fold().await.map_err(|e| e.to_string())?;
        eprintln!(
            "sql.{db}.{}: preloaded {} items into both in {:.1} s",
            shape.name(),
            preload * BATCH,
            start.elapsed().as_secs_f64()
        );
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut next = preload;
        for _ in 0..opts.reps() {
            // Batch by batch, alternating which side goes first, so that the load of the shared
            // machine falls on both sides alike.
            let (mut t_ours, mut t_raw) = (Duration::ZERO, Duration::ZERO);
            for i in 0..measured {
                let batch = shape.batch(next + i, seed);
                for side in [i % 2, 1 - i % 2] {
                    let t = Instant::now();
                    if side == 0 {
                        store.put_batch(&batch).await.map_err(|e| e.to_string())?;
                        t_ours += t.elapsed();
                    } else {
                        raw.insert(&raw_table, &batch).await?;
                        t_raw += t.elapsed();
                    }
                }
            }
            // The Merkle upkeep of every measured batch is paid inside the timing: fold what
            // the batches logged and the store has not folded by itself yet.
            let t = Instant::now();
            store.fold().await.map_err(|e| e.to_string())?;
            t_ours += t.elapsed();
            next += measured;
            ours.push(rate(measured * BATCH, t_ours));
            theirs.push(rate(measured * BATCH, t_raw));
        }
        let r = ShapeRates { ours: median(ours), raw: median(theirs) };
        let raw_fig =
            Figure::plain(format!("sql.{db}.raw_insert.{}.per_s", shape.name()), r.raw, "items/s");
        figures.push(Figure::plain(
            format!("sql.{db}.put_batch.{}.per_s", shape.name()),
            r.ours,
            "items/s",
        ));
        figures.push(Figure::vs(
            format!("sql.{db}.put_batch.{}.vs_raw", shape.name()),
            r.ours,
            "items/s",
            &raw_fig,
        ));
        figures.push(raw_fig);
        rates.push((shape, r));
        if shape == Shape::Deep {
            deep_store = Some((store, raw, raw_table, prefix, preload));
        } else {
            store.drop_tables().await.map_err(|e| e.to_string())?;
            raw.drop_table(&raw_table).await;
        }
    }
    // The headline: the lower of the two shapes.
    if let Some((shape, r)) =
        rates.iter().min_by(|a, b| (a.1.ours / a.1.raw).total_cmp(&(b.1.ours / b.1.raw)))
    {
        let raw_fig = Figure::plain(format!("sql.{db}.raw_insert.per_s"), r.raw, "items/s");
        figures.push(Figure::vs(format!("sql.{db}.put_batch.vs_raw"), r.ours, "items/s", &raw_fig));
        figures.push(raw_fig);
        eprintln!("sql.{db}.put_batch.vs_raw is the {} shape", shape.name());
    }
    if let Some((store, raw, raw_table, prefix, preloaded)) = deep_store {
        figures.extend(bench_gets(db, &store, &raw, &raw_table, preloaded, opts).await?);
        store.drop_tables().await.map_err(|e| e.to_string())?;
        raw.drop_table(&raw_table).await;
        let _ = prefix;
    }
    Ok(Some(figures))
}

/// Get latency: ours (`get_many` of one id) and raw SELECT by primary key, alternating.
async fn bench_gets(
    db: &str,
    store: &SqlStore,
    raw: &Raw,
    raw_table: &str,
    preloaded: usize,
    opts: &Opts,
) -> Result<Vec<Figure>, String> {
    let ops = if opts.quick { 2_000 } else { 20_000 };
    let warm = ops / 10;
    let placeholder = if matches!(raw, Raw::Postgres(_)) { "$1" } else { "?" };
    let sql: std::sync::Arc<str> =
        format!("SELECT payload FROM {raw_table} WHERE id = {placeholder}").into();
    // Ids of the preloaded batches (regenerated, same seed as the deep preload).
    let mut ids = Vec::new();
    for b in (0..preloaded).step_by((preloaded / 50).max(1)) {
        ids.extend(
            Shape::Deep.batch(b, 0x5eed ^ Shape::Deep as u64).into_iter().map(|i| i.id().clone()),
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut ours = Latency::new();
    let mut theirs = Latency::new();
    for op in 0..warm + ops {
        let id = &ids[rng.random_range(0..ids.len())];
        let t = Instant::now();
        let got = store.get_many(std::slice::from_ref(id)).await.map_err(|e| e.to_string())?;
        let d_ours = t.elapsed();
        let t = Instant::now();
        let found = raw.select(&sql, id.as_str()).await?;
        let d_raw = t.elapsed();
        if got.first().and_then(Option::as_ref).is_none() || !found {
            return Err(format!("get of preloaded id {id} found nothing"));
        }
        if op >= warm {
            ours.record(d_ours);
            theirs.record(d_raw);
        }
    }
    if ours.is_empty() || ours.len() != theirs.len() || (!opts.quick && ours.len() < 10_000) {
        return Err(format!("get latencies: {} and {} samples recorded", ours.len(), theirs.len()));
    }
    let raw_p50 =
        Figure::plain(format!("sql.{db}.raw_select_p50_us"), theirs.quantile_us(0.5), "us");
    Ok(vec![
        Figure::vs(format!("sql.{db}.get_p50.vs_raw"), ours.quantile_us(0.5), "us", &raw_p50),
        Figure::plain(format!("sql.{db}.get_p50_us"), ours.quantile_us(0.5), "us"),
        Figure::plain(format!("sql.{db}.get_p99_us"), ours.quantile_us(0.99), "us"),
        Figure::plain(format!("sql.{db}.get_p999_us"), ours.quantile_us(0.999), "us"),
        raw_p50,
        Figure::plain(format!("sql.{db}.raw_select_p99_us"), theirs.quantile_us(0.99), "us"),
        Figure::plain(format!("sql.{db}.raw_select_p999_us"), theirs.quantile_us(0.999), "us"),
    ])
}
