//! The MySQL / MariaDB driver: typed sqlx-mysql code. Connections run `READ COMMITTED` (every
//! statement of a writer sees the latest commits once it holds the tree lock, and no gap locks)
//! in strict SQL mode; statements are packed under `max_allowed_packet` and under MySQL's 65535
//! bind parameters; contents above a quarter of the packet size go to the `chunks` table
//! (`content` module).

mod content;
mod entries;
mod rows;
mod schema;
mod writes;

use rows::{bucket_row, item_row, leaf_of, path_row, stamp_of, text};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor, MySql, MySqlConnection, Row};
use sync_engine_core::{Error, ErrorKind, SecretUrl};

use crate::codec::{bucket_text, KeyRange};
use crate::driver::{
    BucketKey, BucketRow, Driver, EntryRow, ItemRow, LeafEntry, LeafRecord, PathRow, StoredItem,
    StoredStamp, Tx,
};
use crate::error::{ErrCtx, Failure, Fallible};
use crate::options::SqlOptions;
use crate::sqlgen::{list, padded, tuples};

/// MySQL's limit of bind parameters per prepared statement.
const MAX_PARAMS: usize = 65_535;

/// Session settings of every connection.
const SESSION_SETUP: [&str; 2] = [
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
];

/// The MySQL / MariaDB driver.
pub(crate) struct MySqlDriver {
    pool: MySqlPool,
    p: String,
    /// Bytes of bound values per statement: well under `max_allowed_packet`.
    statement_bytes: usize,
    /// Contents longer than this are stored in the chunk table, in pieces of this size.
    inline_max: usize,
    lock: Arc<str>,
    gen_write: Arc<str>,
    get_one: Arc<str>,
    scan: [Arc<str>; 8],
    count: [Arc<str>; 2],
    entries_leaves: Arc<str>,
    entries_paths: Arc<str>,
}

fn q(sql: &Arc<str>) -> sqlx::query::Query<'static, MySql, sqlx::mysql::MySqlArguments> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

fn dq(sql: String) -> sqlx::query::Query<'static, MySql, sqlx::mysql::MySqlArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

/// `mariadb://...` is accepted as a synonym of `mysql://...`.
fn driver_url(url: &str) -> String {
    match url.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql:{rest}"),
        _ => url.to_owned(),
    }
}

/// The newer-wins condition of the upsert: the incoming stamp is greater than the stored one.
/// MySQL evaluates `ON DUPLICATE KEY UPDATE` assignments left to right, each seeing the columns
/// already assigned; the stamp columns are therefore assigned last, tombstone, then content
/// hash, then version, which keeps every comparison correct (see README).
const NEWER: &str = "(VALUES(version), VALUES(content_hash), VALUES(tombstone)) \
                     > (version, content_hash, tombstone)";

impl MySqlDriver {
    /// Connect once directly (fast, precise failure), set up, migrate, then open the pool.
    pub(crate) async fn connect(
        url: &SecretUrl,
        o: &SqlOptions,
        ctx: &ErrCtx,
    ) -> Result<MySqlDriver, Error> {
        let err = |f: Failure| ctx.error("connect", f);
        let opts = MySqlConnectOptions::from_str(&driver_url(url.expose()))
            .map_err(|e| err(e.into()))?
            .log_statements(LevelFilter::Trace)
            .log_slow_statements(LevelFilter::Warn, Duration::from_secs(1));
        let mut conn = tokio::time::timeout(o.acquire_timeout, opts.connect())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("no answer from `{url}` within {} ms", ctx.acquire_timeout_ms),
                )
                .with_operation("connect")
                .with_backend("mysql")
            })?
            .map_err(|e| err(e.into()))?;
        for sql in SESSION_SETUP {
            conn.execute(sql).await.map_err(|e| err(e.into()))?;
        }
        let packet: i64 = sqlx::query_scalar("SELECT CAST(@@max_allowed_packet AS SIGNED)")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| err(e.into()))?;
        let packet = usize::try_from(packet).unwrap_or(1 << 20).max(64 << 10);
        let p = o.table_prefix.clone();
        schema::migrate(&mut conn, &p).await.map_err(err)?;
        let _ = conn.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(o.pool_size)
            .acquire_timeout(o.acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    for sql in SESSION_SETUP {
                        conn.execute(sql).await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(opts);
        let live = "tombstone = 0";
        let s = |x: String| -> Arc<str> { x.into() };
        let scan = |op: &str, upper: bool, all: bool| {
            let up = if upper { " AND id < ?" } else { "" };
            let live = if all { String::new() } else { format!(" AND {live}") };
            s(format!("SELECT id FROM {p}items WHERE id {op} ?{up}{live} ORDER BY id LIMIT ?"))
        };
        Ok(MySqlDriver {
            statement_bytes: packet / 2,
            inline_max: (packet / 4).min(8 << 20),
            lock: s(format!("SELECT value FROM {p}meta WHERE name = 'tree_lock' FOR UPDATE")),
            gen_write: s(format!("UPDATE {p}meta SET value = ? WHERE name = 'tree_lock'")),
            get_one: s(format!("SELECT {ITEM_COLS} FROM {p}items WHERE id = ? AND {live}")),
            scan: crate::sqlgen::scan_statements(scan),
            count: [
                s(format!("SELECT COUNT(*) FROM {p}items WHERE id >= ? AND {live}")),
                s(format!("SELECT COUNT(*) FROM {p}items WHERE id >= ? AND id < ? AND {live}")),
            ],
            entries_leaves: s(format!(
                "SELECT id, leaf, seghash FROM {p}entries \
                 WHERE parent = ? AND seghash BETWEEN ? AND ?"
            )),
            entries_paths: s(format!(
                "SELECT path, acc, leaves, seghash FROM {p}paths \
                 WHERE parent = ? AND seghash BETWEEN ? AND ?"
            )),
            pool,
            p,
        })
    }

    /// Largest padded `IN` list of `per_value`-parameter values.
    fn in_cap(per_value: usize) -> usize {
        let n = MAX_PARAMS / per_value;
        n.next_power_of_two() / 2
    }
}

const ITEM_COLS: &str = "id, version, content_hash, tombstone, updated_at, content, state, chunks";

fn bind_padded<'q>(
    mut query: sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>,
    chunk: &[&str],
    n: usize,
) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
    for i in 0..n {
        query = query.bind(*chunk.get(i).or(chunk.first()).unwrap_or(&""));
    }
    query
}

impl Driver for MySqlDriver {
    type Db = MySql;
    const NAME: &'static str = "mysql";

    fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    async fn begin_write(&self) -> Fallible<(Tx<Self>, u64)> {
        let mut tx = self.pool.begin().await?;
        let gen: i64 = q(&self.lock).fetch_one(&mut *tx).await?.try_get(0)?;
        Ok((tx, gen as u64))
    }

    crate::logsql::leaflog_methods!(MySqlConnection, "?");

    async fn write_entries(
        &self,
        c: &mut MySqlConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        self.entries_write(c, entries).await
    }

    async fn set_generation(&self, c: &mut MySqlConnection, gen: u64) -> Fallible<()> {
        q(&self.gen_write).bind(gen as i64).execute(&mut *c).await?;
        Ok(())
    }

    async fn read_stamps(
        &self,
        c: &mut MySqlConnection,
        ids: &[&str],
    ) -> Fallible<Vec<StoredStamp>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(Self::in_cap(1)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT id, version, content_hash, tombstone, leaf, chunks FROM {}items \
                 WHERE id IN ({})",
                self.p,
                list(n)
            );
            for r in bind_padded(dq(sql), chunk, n).fetch_all(&mut *c).await? {
                let hash: Vec<u8> = r.try_get(2)?;
                out.push(StoredStamp {
                    id: text(&r, 0)?,
                    stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
                    leaf: leaf_of(r.try_get(4)?)?,
                    chunked: r.try_get::<i32, _>(5)? > 0,
                });
            }
        }
        Ok(out)
    }

    async fn write_items(&self, c: &mut MySqlConnection, rows: &[ItemRow<'_>]) -> Fallible<()> {
        self.put_items(c, rows).await
    }

    async fn read_paths(&self, c: &mut MySqlConnection, paths: &[&str]) -> Fallible<Vec<PathRow>> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(Self::in_cap(1)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT path, parent, seghash, acc, leaves, entries, split, depth FROM {}paths \
                 WHERE path IN ({})",
                self.p,
                list(n)
            );
            for r in bind_padded(dq(sql), chunk, n).fetch_all(&mut *c).await? {
                out.push(path_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn read_buckets(
        &self,
        c: &mut MySqlConnection,
        keys: &[BucketKey],
    ) -> Fallible<Vec<BucketRow>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(Self::in_cap(2)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT path, bucket, acc, leaves, entries, split FROM {}buckets \
                 WHERE (path, bucket) IN ({})",
                self.p,
                tuples(n, 2)
            );
            let mut query = dq(sql);
            for i in 0..n {
                if let Some((path, bucket)) = chunk.get(i).or(chunk.first()) {
                    query = query.bind(path.as_str()).bind(bucket_text(bucket));
                }
            }
            for r in query.fetch_all(&mut *c).await? {
                out.push(bucket_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn write_paths(
        &self,
        c: &mut MySqlConnection,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> Fallible<()> {
        self.put_paths(c, upserts, deletes).await
    }

    async fn write_buckets(
        &self,
        c: &mut MySqlConnection,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> Fallible<()> {
        self.put_buckets(c, upserts, deletes).await
    }

    async fn read_entries(
        &self,
        c: &mut MySqlConnection,
        path: &str,
        range: (u64, u64),
    ) -> Fallible<Vec<EntryRow>> {
        self.entries_one(c, path, range).await
    }

    async fn read_entries_many(
        &self,
        c: &mut MySqlConnection,
        questions: &[(String, (u64, u64))],
    ) -> Fallible<Vec<Vec<EntryRow>>> {
        self.entries_many(c, questions).await
    }

    async fn get_many(&self, ids: &[&str]) -> Fallible<Vec<StoredItem>> {
        let mut rows = Vec::with_capacity(ids.len());
        if let [one] = ids {
            if let Some(r) = q(&self.get_one).bind(*one).fetch_optional(&self.pool).await? {
                rows.push(item_row(&r)?);
            }
        } else {
            for chunk in ids.chunks(Self::in_cap(1)) {
                let n = padded(chunk.len());
                let sql = format!(
                    "SELECT {ITEM_COLS} FROM {}items WHERE id IN ({}) AND tombstone = 0",
                    self.p,
                    list(n)
                );
                for r in bind_padded(dq(sql), chunk, n).fetch_all(&self.pool).await? {
                    rows.push(item_row(&r)?);
                }
            }
        }
        if rows.iter().all(|(_, chunks)| *chunks == 0) {
            return Ok(rows.into_iter().map(|(item, _)| item).collect());
        }
        // Chunked contents: re-read those rows with their chunks in one consistent snapshot.
        let chunked: Vec<String> =
            rows.iter().filter(|(_, n)| *n > 0).map(|(i, _)| i.id.clone()).collect();
        let mut out: Vec<StoredItem> =
            rows.into_iter().filter(|(_, n)| *n == 0).map(|(i, _)| i).collect();
        out.extend(content::read_chunked(&self.pool, &self.p, &self.get_one, &chunked).await?);
        Ok(out)
    }

    async fn scan_keys(
        &self,
        range: &KeyRange,
        limit: usize,
        live_only: bool,
    ) -> Fallible<Vec<String>> {
        let mut query =
            q(&self.scan[crate::sqlgen::scan_index(range, live_only)]).bind(range.lower.as_str());
        if let Some(u) = &range.upper {
            query = query.bind(u.as_str());
        }
        let rows =
            query.bind(i64::try_from(limit).unwrap_or(i64::MAX)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| text(r, 0)).collect()
    }

    async fn count(&self, lower: &str, upper: Option<&str>) -> Fallible<u64> {
        let query = match upper {
            Some(u) => q(&self.count[1]).bind(lower).bind(u),
            None => q(&self.count[0]).bind(lower),
        };
        let n: i64 = query.fetch_one(&self.pool).await?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge_tombstones(
        &self,
        c: &mut MySqlConnection,
        older_than_ms: u64,
        limit: usize,
    ) -> Fallible<(u64, usize)> {
        let p = &self.p;
        let sql = format!(
            "SELECT id FROM {p}tombstones WHERE updated_at < ? ORDER BY updated_at LIMIT {limit}"
        );
        let ids: Vec<String> = dq(sql)
            .bind(older_than_ms)
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(|r| text(r, 0))
            .collect::<Fallible<_>>()?;
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let sql = format!(
            "DELETE FROM {p}items WHERE id IN ({}) AND tombstone = 1 AND updated_at < ?",
            list(ids.len())
        );
        let mut query = dq(sql);
        for id in &ids {
            query = query.bind(id.as_str());
        }
        let deleted = query.bind(older_than_ms).execute(&mut *c).await?.rows_affected();
        let sql = format!("DELETE FROM {p}tombstones WHERE id IN ({})", list(ids.len()));
        let mut query = dq(sql);
        for id in &ids {
            query = query.bind(id.as_str());
        }
        query.execute(&mut *c).await?;
        Ok((deleted, ids.len()))
    }

    async fn ping(&self) -> Fallible<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn leaf_page(&self, after: &str, limit: usize) -> Fallible<Vec<LeafRecord>> {
        let sql = format!(
            "SELECT id, version, content_hash, tombstone, leaf, parent, seghash FROM {}items \
             WHERE id > ? ORDER BY id LIMIT ?",
            self.p
        );
        let rows = dq(sql)
            .bind(after)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let hash: Vec<u8> = r.try_get(2)?;
                Ok(LeafRecord {
                    id: text(r, 0)?,
                    stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
                    leaf: leaf_of(r.try_get(4)?)?,
                    parent: text(r, 5)?,
                    seghash: r.try_get(6)?,
                })
            })
            .collect()
    }

    async fn all_paths(&self) -> Fallible<Vec<PathRow>> {
        let sql = format!(
            "SELECT path, parent, seghash, acc, leaves, entries, split, depth FROM {}paths",
            self.p
        );
        dq(sql).fetch_all(&self.pool).await?.iter().map(path_row).collect()
    }

    async fn all_buckets(&self) -> Fallible<Vec<BucketRow>> {
        let sql =
            format!("SELECT path, bucket, acc, leaves, entries, split FROM {}buckets", self.p);
        dq(sql).fetch_all(&self.pool).await?.iter().map(bucket_row).collect()
    }

    async fn all_entries(&self) -> Fallible<Vec<(String, EntryRow)>> {
        self.entries_all().await
    }

    async fn drop_tables(&self) -> Fallible<()> {
        for sql in schema::drop_statements(&self.p) {
            dq(sql).execute(&self.pool).await?;
        }
        Ok(())
    }
}
