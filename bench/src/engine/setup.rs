//! The three setups (Redis + MariaDB, Redis + PostgreSQL, SQLite alone), their isolated names on
//! the shared servers, and the tiers an engine runs over: every backend wrapped in
//! `memory::Faulty` with no fault set, which only counts calls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sync_engine_core::memory::{FaultPlan, Faulty};
use sync_engine_core::{Config, SecretUrl, SyncEngine};
use sync_engine_redis::{RedisOptions, RedisStore};
use sync_engine_sql::{SqlOptions, SqlStore};
use sync_engine_wal::{SqliteWal, WalOptions};

use super::data::{Shape, BATCH};

/// One deployment shape under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// L2 Redis, L3 MariaDB.
    RedisMariadb,
    /// L2 Redis, L3 PostgreSQL.
    RedisPostgres,
    /// L3 SQLite, no L2.
    Sqlite,
}

impl Setup {
    /// Every setup, in run order.
    pub const ALL: [Setup; 3] = [Setup::RedisMariadb, Setup::RedisPostgres, Setup::Sqlite];

    /// The name used in figure names.
    pub fn name(self) -> &'static str {
        match self {
            Setup::RedisMariadb => "redis_mariadb",
            Setup::RedisPostgres => "redis_postgres",
            Setup::Sqlite => "sqlite",
        }
    }

    /// True when the setup has an L2.
    pub fn has_l2(self) -> bool {
        self != Setup::Sqlite
    }

    /// Parse [`Setup::name`].
    pub fn parse(s: &str) -> Option<Setup> {
        Setup::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Server URLs (from the `SYNC_ENGINE_TEST_*` variables) and the local scratch directory.
#[derive(Debug, Clone)]
pub struct Env {
    pub redis_url: String,
    pub mysql_url: String,
    pub postgres_url: String,
    /// Temporary directory for SQLite archives and WAL files (removed at the end).
    pub dir: PathBuf,
    /// Distinguishes this run's tables and keys from other runs on the shared servers.
    pub run_id: u32,
}

impl Env {
    /// From the environment, with the documented defaults.
    pub fn from_env(run_id: u32) -> Env {
        let var = |name: &str, default: &str| {
            std::env::var(name).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| default.to_owned())
        };
        Env {
            redis_url: var("SYNC_ENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/"),
            mysql_url: var("SYNC_ENGINE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
            postgres_url: var(
                "SYNC_ENGINE_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            dir: std::env::temp_dir().join(format!("sync-engine-bench-engine-{run_id}")),
            run_id,
        }
    }

    /// The L3 URL of a setup; SQLite archives of one shape share one file.
    pub fn sql_url(&self, setup: Setup, shape: Shape) -> String {
        match setup {
            Setup::RedisMariadb => self.mysql_url.clone(),
            Setup::RedisPostgres => self.postgres_url.clone(),
            Setup::Sqlite => format!("sqlite://{}", self.sqlite_path(shape).display()),
        }
    }

    fn sqlite_path(&self, shape: Shape) -> PathBuf {
        self.dir.join(format!("archive-{}.db", shape.name()))
    }
}

/// The isolated names of one engine's data: SQL table prefix, Redis key prefix, WAL file.
#[derive(Debug, Clone)]
pub struct Names {
    pub setup: Setup,
    pub shape: Shape,
    pub sql_url: String,
    pub table_prefix: String,
    pub redis_prefix: String,
    pub wal_path: PathBuf,
}

impl Names {
    /// Names for one engine's data, `tag` distinguishing repetitions and phases.
    pub fn new(env: &Env, setup: Setup, shape: Shape, tag: &str) -> Names {
        let s = &shape.name()[..1];
        Names {
            setup,
            shape,
            sql_url: env.sql_url(setup, shape),
            table_prefix: format!("se_engine_{}_{s}_{tag}_", env.run_id),
            redis_prefix: format!("se-engine-{}-{s}-{tag}:", env.run_id),
            wal_path: env.dir.join(format!("wal-{}-{}-{tag}.db", setup.name(), shape.name())),
        }
    }

    /// Another WAL file for the same data: a new node (no filter snapshot).
    pub fn with_wal(&self, suffix: &str) -> Names {
        let mut n = self.clone();
        let stem = self.wal_path.with_extension("");
        n.wal_path = PathBuf::from(format!("{}-{suffix}.db", stem.display()));
        n
    }

    /// The table of the raw INSERT / SELECT baseline, beside the engine's tables.
    pub fn raw_table(&self) -> String {
        format!("{}raw", self.table_prefix)
    }

    /// The key prefix of the raw SET / GET baseline, beside the engine's keys.
    pub fn raw_key_prefix(&self) -> String {
        format!("{}raw:", self.redis_prefix)
    }
}

/// The engine configuration under test (stated in BENCHMARKS.md).
pub fn engine_config(names: &Names, env: &Env, l1_max_bytes: u64) -> Config {
    Config {
        sql_url: SecretUrl::new(names.sql_url.clone()),
        redis_url: names.setup.has_l2().then(|| SecretUrl::new(env.redis_url.clone())),
        redis_prefix: names.redis_prefix.clone(),
        wal_path: names.wal_path.clone(),
        l1_max_bytes,
        batch_max_items: BATCH,
        batch_max_bytes: 4 * 1024 * 1024,
        batch_max_age_ms: 50,
        sql_pool_size: 8,
        filter_capacity: 1_000_000,
        ..Config::default()
    }
}

/// The L1 budget of every phase but the memory one.
pub const L1_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The backends of one engine, each behind a call-counting `Faulty` (no faults set).
pub struct Tiers {
    pub l3: Arc<Faulty<SqlStore>>,
    pub l2: Option<Arc<Faulty<RedisStore>>>,
    pub wal: Arc<Faulty<SqliteWal>>,
    pub l3_plan: Arc<FaultPlan>,
    pub l2_plan: Option<Arc<FaultPlan>>,
}

fn err(what: &str) -> impl Fn(sync_engine_core::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Connect to the SQL store of `names`.
pub async fn open_sql(names: &Names) -> Result<SqlStore, sync_engine_core::Error> {
    let options = SqlOptions {
        pool_size: 8,
        ..SqlOptions::default().with_table_prefix(names.table_prefix.clone())
    };
    SqlStore::connect(&SecretUrl::new(names.sql_url.clone()), options).await
}

/// Connect to the Redis store of `names` (under its own key prefix).
pub async fn open_redis(env: &Env, prefix: &str) -> Result<RedisStore, sync_engine_core::Error> {
    let config =
        Config { redis_url: Some(SecretUrl::new(env.redis_url.clone())), ..Config::default() };
    RedisStore::connect(
        &SecretUrl::new(env.redis_url.clone()),
        RedisOptions::from_config(&config).with_prefix(prefix),
    )
    .await
}

impl Tiers {
    /// Open the WAL, L3 and (for Redis setups) L2 of `names`, as `sync_engine::open_backends`
    /// does, but each wrapped for counting.
    pub async fn open(env: &Env, names: &Names, config: &Config) -> Result<Tiers, String> {
        let wal = SqliteWal::open(&names.wal_path, WalOptions::from_config(config))
            .await
            .map_err(err("open WAL"))?;
        let l3 = Faulty::new(open_sql(names).await.map_err(err("open L3"))?, 3);
        let l3_plan = l3.plan();
        let (l2, l2_plan) = if names.setup.has_l2() {
            let l2 =
                Faulty::new(open_redis(env, &names.redis_prefix).await.map_err(err("open L2"))?, 2);
            let plan = l2.plan();
            (Some(Arc::new(l2)), Some(plan))
        } else {
            (None, None)
        };
        Ok(Tiers { l3: Arc::new(l3), l2, wal: Arc::new(Faulty::new(wal, 1)), l3_plan, l2_plan })
    }

    /// Start an engine over these tiers.
    pub async fn start(&self, config: Config) -> Result<SyncEngine, String> {
        let mut b =
            SyncEngine::builder(config).archive_arc(self.l3.clone()).wal_arc(self.wal.clone());
        if let Some(l2) = &self.l2 {
            b = b.cache_arc(l2.clone());
        }
        b.start().await.map_err(err("engine start"))
    }

    /// Calls made to L2 and L3 so far: (l2, l3).
    pub fn calls(&self) -> (u64, u64) {
        (self.l2_plan.as_ref().map_or(0, |p| p.calls()), self.l3_plan.calls())
    }

    /// The Redis store itself (for direct reads, divergence, folding).
    pub fn redis(&self) -> Option<&RedisStore> {
        self.l2.as_ref().map(|l2| l2.inner())
    }

    /// Close the SQL pool (the engine using these tiers must be stopped first).
    pub async fn close(self) {
        self.l3.inner().close().await;
    }
}

/// Stop an engine and release its tiers (pool closed, WAL lock released).
pub async fn stop(engine: SyncEngine, tiers: Tiers) -> Result<(), String> {
    let r = engine.shutdown().await.map_err(err("shutdown"));
    drop(engine);
    tiers.close().await;
    // The WAL's threads release its file lock when its last handle is gone.
    tokio::time::sleep(Duration::from_millis(50)).await;
    r
}

/// Stop an engine and delete its data through its own tiers (tables, Redis keys, WAL files).
pub async fn stop_destroy(engine: SyncEngine, tiers: Tiers, names: &Names) -> Result<(), String> {
    let stopped = engine.shutdown().await.map_err(err("shutdown"));
    drop(engine);
    let mut problems = Vec::new();
    if let Err(e) = tiers.l3.inner().drop_tables().await {
        problems.push(format!("drop tables {}*: {e}", names.table_prefix));
    }
    if let Some(redis) = tiers.redis() {
        if let Err(e) = redis.clear_namespace().await {
            problems.push(format!("clear {}*: {e}", names.redis_prefix));
        }
    }
    let wal = tiers.wal.inner().path().to_path_buf();
    tiers.close().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    remove_sqlite_files(&wal);
    remove_sqlite_files(&names.wal_path);
    stopped?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Delete everything stored under `names` by opening its stores again (error paths):
/// tables, Redis keys, WAL files.
pub async fn destroy(env: &Env, names: &Names) -> Result<(), String> {
    let mut problems = Vec::new();
    match open_sql(names).await {
        Ok(s) => {
            if let Err(e) = s.drop_tables().await {
                problems.push(format!("drop tables {}*: {e}", names.table_prefix));
            }
            s.close().await;
        }
        Err(e) => problems.push(format!("drop tables {}*: {e}", names.table_prefix)),
    }
    if names.setup.has_l2() {
        match open_redis(env, &names.redis_prefix).await {
            Ok(r) => {
                if let Err(e) = r.clear_namespace().await {
                    problems.push(format!("clear {}*: {e}", names.redis_prefix));
                }
            }
            Err(e) => problems.push(format!("clear {}*: {e}", names.redis_prefix)),
        }
    }
    remove_sqlite_files(&names.wal_path);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Remove a SQLite file with its `-wal` / `-shm` companions (missing files are fine).
pub fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Are the servers of a setup reachable? `None` when yes, else why not.
pub async fn unreachable(env: &Env, setup: Setup) -> Option<String> {
    if setup.has_l2() {
        let probe = async {
            let client = redis::Client::open(env.redis_url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(format!("Redis ({}) is not reachable: {e}", env.redis_url)),
            Err(_) => return Some(format!("Redis ({}) did not answer in 3 s", env.redis_url)),
        }
    }
    let url = env.sql_url(setup, Shape::Deep);
    if url.starts_with("sqlite:") {
        return None;
    }
    let shown = SecretUrl::new(url.clone());
    match tokio::time::timeout(Duration::from_secs(5), super::raw::RawSql::connect(&url, "unused"))
        .await
    {
        Ok(Ok(raw)) => {
            raw.close().await;
            None
        }
        Ok(Err(e)) => Some(format!("{shown} is not reachable: {e}")),
        Err(_) => Some(format!("{shown} did not answer in 5 s")),
    }
}
