//! The SQLite driver: typed sqlx-sqlite code, WAL journal, busy timeout, `BEGIN IMMEDIATE` as
//! the tree lock (SQLite has one writer at a time; taking the write lock at `BEGIN` makes the
//! read-decide-write sequence of `put_batch` atomic with respect to every other writer).

mod entries;
mod rows;
mod schema;
mod writes;

use rows::{bucket_row, item_row, leaf_of, path_row, stamp_of};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Row, Sqlite, SqliteConnection};
use sync_engine_core::{Error, ErrorKind, SecretUrl};

use crate::codec::{from_ord, to_ord, value_from, KeyRange};
use crate::driver::{
    BucketKey, BucketRow, Driver, EntryRow, ItemRow, LeafEntry, LeafRecord, PathRow, StoredItem,
    StoredStamp, Tx,
};
use crate::error::{ErrCtx, Failure, Fallible};
use crate::options::SqlOptions;
use crate::sqlgen::{list, padded, tuples};

/// Bytes of bound values per statement (bounds memory; SQLite has no packet limit).
const MAX_STATEMENT_BYTES: usize = 64 << 20;

/// The SQLite driver.
pub(crate) struct SqliteDriver {
    pool: SqlitePool,
    p: String,
    /// Bind parameters per statement (32766 on SQLite ≥ 3.32, 999 before).
    max_params: usize,
    get_one: Arc<str>,
    scan: [Arc<str>; 8],
    count: [Arc<str>; 2],
    entries_leaves: Arc<str>,
    entries_paths: Arc<str>,
    gen_read: Arc<str>,
    gen_write: Arc<str>,
}

fn q(sql: &Arc<str>) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

fn dq(sql: String) -> sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(AssertSqlSafe(sql))
}

fn is_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

impl SqliteDriver {
    /// Open (creating file and directory), configure WAL and the busy timeout, migrate.
    pub(crate) async fn connect(
        url: &SecretUrl,
        o: &SqlOptions,
        ctx: &ErrCtx,
    ) -> Result<SqliteDriver, Error> {
        let err = |f: Failure| ctx.error("connect", f);
        let opts = SqliteConnectOptions::from_str(url.expose()).map_err(|e| err(e.into()))?;
        if !is_memory(url.expose()) {
            if let Some(dir) = opts.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!("cannot create the directory of `{url}`: {e}"),
                    )
                    .with_operation("connect")
                    .with_backend("sqlite")
                })?;
            }
        }
        let mut opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(o.busy_timeout)
            .log_statements(LevelFilter::Trace)
            .log_slow_statements(LevelFilter::Warn, Duration::from_secs(1));
        for (k, v) in crate::options::SQLITE_PRAGMAS {
            opts = opts.pragma(*k, *v);
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(o.pool_size)
            .acquire_timeout(o.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(|e| err(e.into()))?;
        let p = o.table_prefix.clone();
        let max_params = {
            let mut conn = pool.acquire().await.map_err(|e| err(e.into()))?;
            schema::migrate(&mut conn, &p).await.map_err(err)?;
            let v: String = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| err(e.into()))?;
            max_params_for(&v)
        };
        let live = "tombstone = 0";
        // `all`: tombstoned ids too, answered from the primary-key index alone.
        let scan = |op: &str, upper: bool, all: bool| -> Arc<str> {
            let up = if upper { " AND id < ?" } else { "" };
            let live = if all { String::new() } else { format!(" AND {live}") };
            format!("SELECT id FROM {p}items WHERE id {op} ?{up}{live} ORDER BY id LIMIT ?").into()
        };
        Ok(SqliteDriver {
            get_one: format!(
                "SELECT id, version, content_hash, tombstone, updated_at, content, state \
                 FROM {p}items WHERE id = ? AND {live}"
            )
            .into(),
            scan: crate::sqlgen::scan_statements(scan),
            count: [
                format!("SELECT COUNT(*) FROM {p}items WHERE id >= ? AND {live}").into(),
                format!("SELECT COUNT(*) FROM {p}items WHERE id >= ? AND id < ? AND {live}").into(),
            ],
            entries_leaves: format!(
                "SELECT id, leaf, seghash FROM {p}entries \
                 WHERE parent = ? AND seghash BETWEEN ? AND ?"
            )
            .into(),
            entries_paths: format!(
                "SELECT path, acc, leaves, seghash FROM {p}paths \
                 WHERE parent = ? AND seghash BETWEEN ? AND ?"
            )
            .into(),
            gen_read: format!("SELECT value FROM {p}meta WHERE name = 'tree_lock'").into(),
            gen_write: format!("UPDATE {p}meta SET value = ? WHERE name = 'tree_lock'").into(),
            pool,
            p,
            max_params,
        })
    }

    /// Largest padded `IN` list that fits the parameter limit.
    fn in_cap(&self, per_value: usize) -> usize {
        let n = (self.max_params / per_value).max(1);
        if n.is_power_of_two() {
            n
        } else {
            n.next_power_of_two() / 2
        }
    }
}

/// 32766 parameters on SQLite ≥ 3.32.0, else 999.
fn max_params_for(version: &str) -> usize {
    let mut parts = version.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (3, 32) {
        32766
    } else {
        999
    }
}

const ITEM_COLS: &str = "id, version, content_hash, tombstone, updated_at, content, state";

impl Driver for SqliteDriver {
    type Db = Sqlite;
    const NAME: &'static str = "sqlite";

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Fallible<(Tx<Self>, u64)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let gen: i64 = sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.gen_read)))
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, gen as u64))
    }

    crate::logsql::leaflog_methods!(SqliteConnection, "?");

    async fn write_entries(
        &self,
        c: &mut SqliteConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        self.entries_write(c, entries).await
    }

    async fn set_generation(&self, c: &mut SqliteConnection, gen: u64) -> Fallible<()> {
        q(&self.gen_write).bind(gen as i64).execute(&mut *c).await?;
        Ok(())
    }

    async fn read_stamps(
        &self,
        c: &mut SqliteConnection,
        ids: &[&str],
    ) -> Fallible<Vec<StoredStamp>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.in_cap(1)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT id, version, content_hash, tombstone, leaf FROM {}items WHERE id IN ({})",
                self.p,
                list(n)
            );
            let mut query = dq(sql);
            for i in 0..n {
                query = query.bind(*chunk.get(i).or(chunk.first()).unwrap_or(&""));
            }
            for r in query.fetch_all(&mut *c).await? {
                let hash: Vec<u8> = r.try_get(2)?;
                out.push(StoredStamp {
                    id: r.try_get(0)?,
                    stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
                    leaf: leaf_of(r.try_get(4)?)?,
                    chunked: false,
                });
            }
        }
        Ok(out)
    }

    async fn write_items(&self, c: &mut SqliteConnection, rows: &[ItemRow<'_>]) -> Fallible<()> {
        self.put_items(c, rows).await
    }

    async fn read_paths(&self, c: &mut SqliteConnection, paths: &[&str]) -> Fallible<Vec<PathRow>> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(self.in_cap(1)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT path, parent, seghash, acc, leaves, entries, split, depth FROM {}paths \
                 WHERE path IN ({})",
                self.p,
                list(n)
            );
            let mut query = dq(sql);
            for i in 0..n {
                query = query.bind(*chunk.get(i).or(chunk.first()).unwrap_or(&""));
            }
            for r in query.fetch_all(&mut *c).await? {
                out.push(path_row(&r)?);
            }
        }
        Ok(out)
    }

    async fn read_buckets(
        &self,
        c: &mut SqliteConnection,
        keys: &[BucketKey],
    ) -> Fallible<Vec<BucketRow>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.in_cap(2)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT path, bucket, acc, leaves, entries, split FROM {}buckets \
                 WHERE (path, bucket) IN (VALUES {})",
                self.p,
                tuples(n, 2)
            );
            let mut query = dq(sql);
            for i in 0..n {
                if let Some((path, bucket)) = chunk.get(i).or(chunk.first()) {
                    query = query.bind(path.as_str()).bind(crate::codec::bucket_text(bucket));
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
        c: &mut SqliteConnection,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> Fallible<()> {
        self.put_paths(c, upserts, deletes).await
    }

    async fn write_buckets(
        &self,
        c: &mut SqliteConnection,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> Fallible<()> {
        self.put_buckets(c, upserts, deletes).await
    }

    async fn read_entries(
        &self,
        c: &mut SqliteConnection,
        path: &str,
        range: (u64, u64),
    ) -> Fallible<Vec<EntryRow>> {
        let (lo, hi) = (to_ord(range.0), to_ord(range.1));
        let mut out = Vec::new();
        let leaves =
            q(&self.entries_leaves).bind(path).bind(lo).bind(hi).fetch_all(&mut *c).await?;
        for r in leaves {
            let id: String = r.try_get(0)?;
            let digest = leaf_of(r.try_get(1)?)?.ok_or_else(|| {
                Failure::Corrupt(format!("live item {id:?} has no stored leaf digest"))
            })?;
            out.push(EntryRow::Leaf { id, digest, seghash: from_ord(r.try_get(2)?) });
        }
        let paths = q(&self.entries_paths).bind(path).bind(lo).bind(hi).fetch_all(&mut *c).await?;
        for r in paths {
            let child: String = r.try_get(0)?;
            let acc: Vec<u8> = r.try_get(1)?;
            let value = value_from(&acc, r.try_get(2)?, &format!("path {child:?}"))?;
            out.push(EntryRow::Path { path: child, value, seghash: from_ord(r.try_get(3)?) });
        }
        Ok(out)
    }

    async fn get_many(&self, ids: &[&str]) -> Fallible<Vec<StoredItem>> {
        if let [one] = ids {
            let row = q(&self.get_one).bind(*one).fetch_optional(&self.pool).await?;
            return row.as_ref().map(item_row).into_iter().collect();
        }
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.in_cap(1)) {
            let n = padded(chunk.len());
            let sql = format!(
                "SELECT {ITEM_COLS} FROM {}items WHERE id IN ({}) AND tombstone = 0",
                self.p,
                list(n)
            );
            let mut query = dq(sql);
            for i in 0..n {
                query = query.bind(*chunk.get(i).or(chunk.first()).unwrap_or(&""));
            }
            for r in query.fetch_all(&self.pool).await? {
                out.push(item_row(&r)?);
            }
        }
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
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn count(&self, lower: &str, upper: Option<&str>) -> Fallible<u64> {
        let n: i64 = match upper {
            Some(u) => {
                sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.count[1])))
                    .bind(lower)
                    .bind(u)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar(AssertSqlSafe(Arc::clone(&self.count[0])))
                    .bind(lower)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge_tombstones(
        &self,
        c: &mut SqliteConnection,
        older_than_ms: u64,
        limit: usize,
    ) -> Fallible<(u64, usize)> {
        let p = &self.p;
        let sql = format!(
            "DELETE FROM {p}items WHERE id IN (SELECT id FROM {p}items \
             WHERE tombstone = 1 AND updated_at < ? LIMIT ?)"
        );
        let done = dq(sql)
            .bind(to_ord(older_than_ms))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(&mut *c)
            .await?;
        let n = done.rows_affected();
        Ok((n, usize::try_from(n).unwrap_or(usize::MAX)))
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
                    id: r.try_get(0)?,
                    stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
                    leaf: leaf_of(r.try_get(4)?)?,
                    parent: r.try_get(5)?,
                    seghash: from_ord(r.try_get(6)?),
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
