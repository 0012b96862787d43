//! The raw baselines, in the same databases as the engine's tiers: a plain SQL table with the
//! store's id and payload column types, filled by multi-row INSERTs of 1000 rows (one statement,
//! one transaction) and read by primary key; raw pipelined `SET` and `GET` through the redis
//! crate's `ConnectionManager` (the connection type `RedisStore` uses).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use sqlx::AssertSqlSafe;

/// A pool of the same driver as the store, and the raw table's name.
pub enum RawSql {
    Sqlite(sqlx::SqlitePool, String),
    MySql(sqlx::MySqlPool, String),
    Postgres(sqlx::PgPool, String),
}

fn e(what: &'static str) -> impl Fn(sqlx::Error) -> String {
    move |err| format!("raw {what}: {err}")
}

/// The SQLite settings `SqlStore` uses, applied to the raw pool too.
fn sqlite_options(url: &str) -> Result<sqlx::sqlite::SqliteConnectOptions, String> {
    let mut o: sqlx::sqlite::SqliteConnectOptions =
        url.parse().map_err(|err| format!("raw sqlite url: {err}"))?;
    o = o
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    for (k, v) in sync_engine_sql::SQLITE_PRAGMAS {
        o = o.pragma(*k, *v);
    }
    Ok(o)
}

macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match $self {
            RawSql::Sqlite($pool, _) => $body,
            RawSql::MySql($pool, _) => $body,
            RawSql::Postgres($pool, _) => $body,
        }
    };
}

impl RawSql {
    /// Connect and (re)create the raw table `table`.
    pub async fn open(url: &str, table: &str) -> Result<RawSql, String> {
        let raw = RawSql::connect(url, table).await?;
        raw.recreate().await?;
        Ok(raw)
    }

    /// Connect to the database holding the raw table `table` (which may not exist yet).
    pub async fn connect(url: &str, table: &str) -> Result<RawSql, String> {
        let raw = if url.starts_with("sqlite:") {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(16)
                .connect_with(sqlite_options(url)?)
                .await
                .map_err(e("connect"))?;
            RawSql::Sqlite(pool, table.to_owned())
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            let url = url.replacen("mariadb:", "mysql:", 1);
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(16)
                .connect(&url)
                .await
                .map_err(e("connect"))?;
            RawSql::MySql(pool, table.to_owned())
        } else {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(16)
                .connect(url)
                .await
                .map_err(e("connect"))?;
            RawSql::Postgres(pool, table.to_owned())
        };
        Ok(raw)
    }

    fn table(&self) -> &str {
        match self {
            RawSql::Sqlite(_, t) | RawSql::MySql(_, t) | RawSql::Postgres(_, t) => t,
        }
    }

    /// Drop and create the raw table (the same id and payload column types as the store's).
    pub async fn recreate(&self) -> Result<(), String> {
        let t = self.table();
        let ddl = match self {
            RawSql::Sqlite(..) => {
                format!("CREATE TABLE {t} (id TEXT NOT NULL PRIMARY KEY, payload BLOB NOT NULL)")
            }
            RawSql::MySql(..) => format!(
                "CREATE TABLE {t} (id VARBINARY(1024) NOT NULL PRIMARY KEY, \
                 payload LONGBLOB NOT NULL) ENGINE=InnoDB"
            ),
            RawSql::Postgres(..) => format!(
                "CREATE TABLE {t} (id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, \
                 payload BYTEA NOT NULL)"
            ),
        };
        self.drop_table().await?;
        on_pool!(self, p => sqlx::query(AssertSqlSafe(ddl)).execute(p).await.map(|_| ()))
            .map_err(e("create table"))
    }

    /// Drop the raw table.
    pub async fn drop_table(&self) -> Result<(), String> {
        let sql = format!("DROP TABLE IF EXISTS {}", self.table());
        on_pool!(self, p => sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()))
            .map_err(e("drop table"))
    }

    /// One multi-row INSERT of `rows` (autocommit: one statement, one transaction).
    pub async fn insert(&self, rows: &[(String, Bytes)]) -> Result<(), String> {
        let t = self.table();
        let values = match self {
            RawSql::Postgres(..) => (0..rows.len())
                .map(|i| format!("(${},${})", 2 * i + 1, 2 * i + 2))
                .collect::<Vec<_>>()
                .join(","),
            _ => vec!["(?,?)"; rows.len()].join(","),
        };
        let sql = format!("INSERT INTO {t} (id, payload) VALUES {values}");
        on_pool!(self, p => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (id, payload) in rows {
                q = q.bind(id.as_str()).bind(payload.as_ref());
            }
            q.execute(p).await.map(|_| ())
        })
        .map_err(e("insert"))
    }

    /// The `SELECT payload ... WHERE id = ?` statement text (shared, so sqlx caches it).
    pub fn select_sql(&self) -> Arc<str> {
        let ph = if matches!(self, RawSql::Postgres(..)) { "$1" } else { "?" };
        format!("SELECT payload FROM {} WHERE id = {ph}", self.table()).into()
    }

    /// The single-row INSERT statement text.
    pub fn insert_one_sql(&self) -> Arc<str> {
        let values = if matches!(self, RawSql::Postgres(..)) { "($1,$2)" } else { "(?,?)" };
        format!("INSERT INTO {} (id, payload) VALUES {values}", self.table()).into()
    }

    /// Select by primary key; true when a row was found.
    pub async fn select(&self, sql: &Arc<str>, id: &str) -> Result<bool, String> {
        let q = || AssertSqlSafe(Arc::clone(sql));
        on_pool!(self, p => sqlx::query(q()).bind(id).fetch_optional(p).await.map(|r| r.is_some()))
            .map_err(e("select"))
    }

    /// Insert one row in its own transaction (autocommit).
    pub async fn insert_one(&self, sql: &Arc<str>, id: &str, payload: &[u8]) -> Result<(), String> {
        let q = || AssertSqlSafe(Arc::clone(sql));
        on_pool!(self, p => sqlx::query(q()).bind(id).bind(payload).execute(p).await.map(|_| ()))
            .map_err(e("insert one"))
    }

    /// Close the pool.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }
}

/// Raw Redis: pipelined `SET` and single `GET` under the suite's raw key prefix.
#[derive(Clone)]
pub struct RawRedis {
    conn: ConnectionManager,
    prefix: String,
}

fn re(what: &'static str) -> impl Fn(redis::RedisError) -> String {
    move |err| format!("raw redis {what}: {err}")
}

impl RawRedis {
    /// Connect; keys live under `prefix`.
    pub async fn connect(url: &str, prefix: String) -> Result<RawRedis, String> {
        let client = redis::Client::open(url).map_err(re("client"))?;
        let conn = ConnectionManager::new(client).await.map_err(re("connect"))?;
        Ok(RawRedis { conn, prefix })
    }

    /// The raw key of an id.
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// One pipeline of `SET`s.
    pub async fn set_many(&self, rows: &[(String, Bytes)]) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for (id, payload) in rows {
            pipe.cmd("SET").arg(self.key(id)).arg(payload.as_ref()).ignore();
        }
        let () = pipe.query_async(&mut self.conn.clone()).await.map_err(re("set"))?;
        Ok(())
    }

    /// `GET` of a raw key; its value length, if present.
    pub async fn get(&self, key: &str) -> Result<Option<usize>, String> {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(re("get"))?;
        Ok(v.map(|v| v.len()))
    }

    /// Delete every raw key (SCAN + UNLINK on the prefix only).
    pub async fn clear(&self) -> Result<u64, String> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", self.prefix);
        let mut cursor = 0u64;
        let mut n = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(re("scan"))?;
            if !keys.is_empty() {
                let d: u64 = redis::cmd("UNLINK")
                    .arg(keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(re("unlink"))?;
                n += d;
            }
            if next == 0 {
                return Ok(n);
            }
            cursor = next;
        }
    }
}
