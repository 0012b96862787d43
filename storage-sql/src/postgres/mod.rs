//! The PostgreSQL driver: typed sqlx-postgres code. Batches travel as arrays (`UNNEST`,
//! `= ANY`), so every statement has a fixed text (prepared once per connection) and no
//! bind-parameter limit applies; the tree lock is `SELECT ... FOR UPDATE` on the lock row.

mod entries;
mod rows;
mod schema;
mod writes;

use rows::{bucket_row, item_row, leaf_of, path_row, stamp_of};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use log::LevelFilter;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, Postgres, Row};
use sync_engine_core::{Error, ErrorKind, SecretUrl};

use crate::codec::{bucket_text, from_ord, to_ord, value_from, KeyRange};
use crate::driver::{
    BucketKey, BucketRow, Driver, EntryRow, ItemRow, LeafEntry, LeafRecord, PathRow, StoredItem,
    StoredStamp, Tx,
};
use crate::error::{ErrCtx, Failure, Fallible};
use crate::options::SqlOptions;

/// Bytes of bound values per statement (PostgreSQL messages are limited to 1 GiB).
const MAX_STATEMENT_BYTES: usize = 64 << 20;

/// Rows of node and leaf-entry writes bound per statement. A fold writes up to tens of
/// thousands of each; one statement for all of them encoded a message of 20–30 MB (deep ids,
/// 65,536 changes) that the connection's write buffer then kept. ~1 MB per statement costs a
/// round trip per 8,192 rows and bounds that buffer.
const FOLD_ROWS_PER_STATEMENT: usize = 8192;

/// Fixed statement texts (prefix applied).
struct Sql {
    lock: Arc<str>,
    gen_write: Arc<str>,
    read_stamps: Arc<str>,
    insert_items: Arc<str>,
    upsert_items: Arc<str>,
    read_paths: Arc<str>,
    read_buckets: Arc<str>,
    upsert_paths: Arc<str>,
    delete_paths: Arc<str>,
    delete_path_buckets: Arc<str>,
    upsert_buckets: Arc<str>,
    delete_buckets: Arc<str>,
    entries_leaves: Arc<str>,
    entries_paths: Arc<str>,
    entries_leaves_many: Arc<str>,
    entries_paths_many: Arc<str>,
    get_one: Arc<str>,
    get_many: Arc<str>,
    scan: [Arc<str>; 8],
    count: [Arc<str>; 2],
    purge: Arc<str>,
    leaf_page: Arc<str>,
    all_paths: Arc<str>,
    all_buckets: Arc<str>,
}

impl Sql {
    fn new(p: &str) -> Sql {
        let s = |x: String| -> Arc<str> { x.into() };
        let live = "NOT tombstone";
        let [many_leaves, many_paths] = entries::statements(p);
        let item_cols = "id, version, content_hash, tombstone, updated_at, content, state";
        let insert = format!(
            "INSERT INTO {p}items (id, parent, seghash, version, content_hash, tombstone, \
             updated_at, content, state, leaf) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], \
             $5::bytea[], $6::bool[], $7::int8[], $8::bytea[], $9::text[], $10::bytea[])"
        );
        let scan = |op: &str, upper: bool, all: bool| {
            let up = if upper { " AND id < $2" } else { "" };
            let lim = if upper { "$3" } else { "$2" };
            let live = if all { String::new() } else { format!(" AND {live}") };
            s(format!("SELECT id FROM {p}items WHERE id {op} $1{up}{live} ORDER BY id LIMIT {lim}"))
        };
        Sql {
            lock: s(format!("SELECT value FROM {p}meta WHERE name = 'tree_lock' FOR UPDATE")),
            gen_write: s(format!("UPDATE {p}meta SET value = $1 WHERE name = 'tree_lock'")),
            read_stamps: s(format!(
                "SELECT id, version, content_hash, tombstone, leaf FROM {p}items WHERE id = ANY($1)"
            )),
            insert_items: s(insert.clone()),
            upsert_items: s(format!(
                "{insert} ON CONFLICT (id) DO UPDATE SET parent = excluded.parent, \
                 seghash = excluded.seghash, version = excluded.version, \
                 content_hash = excluded.content_hash, tombstone = excluded.tombstone, \
                 updated_at = excluded.updated_at, content = excluded.content, \
                 state = excluded.state, leaf = excluded.leaf \
                 WHERE (excluded.version, excluded.content_hash, excluded.tombstone) \
                 > ({p}items.version, {p}items.content_hash, {p}items.tombstone)"
            )),
            read_paths: s(format!(
                "SELECT path, parent, seghash, acc, leaves, entries, split, depth FROM {p}paths \
                 WHERE path = ANY($1)"
            )),
            read_buckets: s(format!(
                "SELECT b.path, b.bucket, b.acc, b.leaves, b.entries, b.split FROM {p}buckets b \
                 JOIN UNNEST($1::text[], $2::text[]) AS k(path, bucket) \
                 ON b.path = k.path AND b.bucket = k.bucket"
            )),
            upsert_paths: s(format!(
                "INSERT INTO {p}paths (path, parent, seghash, acc, leaves, entries, split, depth) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::bytea[], \
                 $5::int8[], $6::int8[], $7::bool[], $8::int2[]) \
                 ON CONFLICT (path) DO UPDATE SET acc = excluded.acc, leaves = excluded.leaves, \
                 entries = excluded.entries, split = excluded.split, depth = excluded.depth"
            )),
            delete_paths: s(format!("DELETE FROM {p}paths WHERE path = ANY($1)")),
            delete_path_buckets: s(format!("DELETE FROM {p}buckets WHERE path = ANY($1)")),
            upsert_buckets: s(format!(
                "INSERT INTO {p}buckets (path, bucket, acc, leaves, entries, split) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::int8[], \
                 $5::int8[], $6::bool[]) \
                 ON CONFLICT (path, bucket) DO UPDATE SET acc = excluded.acc, \
                 leaves = excluded.leaves, entries = excluded.entries, split = excluded.split"
            )),
            delete_buckets: s(format!(
                "DELETE FROM {p}buckets WHERE (path, bucket) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::text[]))"
            )),
            entries_leaves: s(format!(
                "SELECT id, leaf, seghash FROM {p}entries \
                 WHERE parent = $1 AND seghash BETWEEN $2 AND $3"
            )),
            entries_paths: s(format!(
                "SELECT path, acc, leaves, seghash FROM {p}paths \
                 WHERE parent = $1 AND seghash BETWEEN $2 AND $3"
            )),
            entries_leaves_many: s(many_leaves),
            entries_paths_many: s(many_paths),
            get_one: s(format!("SELECT {item_cols} FROM {p}items WHERE id = $1 AND {live}")),
            get_many: s(format!("SELECT {item_cols} FROM {p}items WHERE id = ANY($1) AND {live}")),
            scan: crate::sqlgen::scan_statements(scan),
            count: [
                s(format!("SELECT COUNT(*) FROM {p}items WHERE id >= $1 AND {live}")),
                s(format!("SELECT COUNT(*) FROM {p}items WHERE id >= $1 AND id < $2 AND {live}")),
            ],
            purge: s(format!(
                "DELETE FROM {p}items WHERE id IN (SELECT id FROM {p}items \
                 WHERE tombstone AND updated_at < $1 LIMIT $2)"
            )),
            leaf_page: s(format!(
                "SELECT id, version, content_hash, tombstone, leaf, parent, seghash FROM {p}items \
                 WHERE id > $1 ORDER BY id LIMIT $2"
            )),
            all_paths: s(format!(
                "SELECT path, parent, seghash, acc, leaves, entries, split, depth FROM {p}paths"
            )),
            all_buckets: s(format!(
                "SELECT path, bucket, acc, leaves, entries, split FROM {p}buckets"
            )),
        }
    }
}

/// The PostgreSQL driver.
pub(crate) struct PgDriver {
    pool: PgPool,
    p: String,
    sql: Sql,
}

fn q(sql: &Arc<str>) -> sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(AssertSqlSafe(Arc::clone(sql)))
}

impl PgDriver {
    /// Connect once directly (fast, precise failure), migrate, then open the pool.
    pub(crate) async fn connect(
        url: &SecretUrl,
        o: &SqlOptions,
        ctx: &ErrCtx,
    ) -> Result<PgDriver, Error> {
        let err = |f: Failure| ctx.error("connect", f);
        let opts = PgConnectOptions::from_str(url.expose())
            .map_err(|e| err(e.into()))?
            .application_name("sync-engine")
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
                .with_backend("postgres")
            })?
            .map_err(|e| err(e.into()))?;
        let p = o.table_prefix.clone();
        schema::migrate(&mut conn, &p).await.map_err(err)?;
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(o.pool_size)
            .acquire_timeout(o.acquire_timeout)
            .connect_lazy_with(opts);
        Ok(PgDriver { pool, sql: Sql::new(&p), p })
    }
}

impl Driver for PgDriver {
    type Db = Postgres;
    const NAME: &'static str = "postgres";

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin_write(&self) -> Fallible<(Tx<Self>, u64)> {
        let mut tx = self.pool.begin().await?;
        let gen: i64 = q(&self.sql.lock).fetch_one(&mut *tx).await?.try_get(0)?;
        Ok((tx, gen as u64))
    }

    crate::logsql::leaflog_methods!(PgConnection, "$1");

    async fn write_entries(&self, c: &mut PgConnection, entries: &[LeafEntry<'_>]) -> Fallible<()> {
        self.entries_write(c, entries).await
    }

    async fn set_generation(&self, c: &mut PgConnection, gen: u64) -> Fallible<()> {
        q(&self.sql.gen_write).bind(gen as i64).execute(&mut *c).await?;
        Ok(())
    }

    async fn read_stamps(&self, c: &mut PgConnection, ids: &[&str]) -> Fallible<Vec<StoredStamp>> {
        let rows = q(&self.sql.read_stamps).bind(ids).fetch_all(&mut *c).await?;
        rows.iter()
            .map(|r| {
                let hash: Vec<u8> = r.try_get(2)?;
                Ok(StoredStamp {
                    id: r.try_get(0)?,
                    stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
                    leaf: leaf_of(r.try_get(4)?)?,
                    chunked: false,
                })
            })
            .collect()
    }

    async fn write_items(&self, c: &mut PgConnection, rows: &[ItemRow<'_>]) -> Fallible<()> {
        self.put_items(c, rows).await
    }

    async fn read_paths(&self, c: &mut PgConnection, paths: &[&str]) -> Fallible<Vec<PathRow>> {
        let rows = q(&self.sql.read_paths).bind(paths).fetch_all(&mut *c).await?;
        rows.iter().map(path_row).collect()
    }

    async fn read_buckets(
        &self,
        c: &mut PgConnection,
        keys: &[BucketKey],
    ) -> Fallible<Vec<BucketRow>> {
        let paths: Vec<&str> = keys.iter().map(|(p, _)| p.as_str()).collect();
        let buckets: Vec<String> = keys.iter().map(|(_, b)| bucket_text(b)).collect();
        let rows = q(&self.sql.read_buckets).bind(paths).bind(buckets).fetch_all(&mut *c).await?;
        rows.iter().map(bucket_row).collect()
    }

    async fn write_paths(
        &self,
        c: &mut PgConnection,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> Fallible<()> {
        self.put_paths(c, upserts, deletes).await
    }

    async fn write_buckets(
        &self,
        c: &mut PgConnection,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> Fallible<()> {
        self.put_buckets(c, upserts, deletes).await
    }

    async fn read_entries(
        &self,
        c: &mut PgConnection,
        path: &str,
        range: (u64, u64),
    ) -> Fallible<Vec<EntryRow>> {
        let (lo, hi) = (to_ord(range.0), to_ord(range.1));
        let mut out = Vec::new();
        for r in q(&self.sql.entries_leaves).bind(path).bind(lo).bind(hi).fetch_all(&mut *c).await?
        {
            let id: String = r.try_get(0)?;
            let digest = leaf_of(r.try_get(1)?)?.ok_or_else(|| {
                Failure::Corrupt(format!("live item {id:?} has no stored leaf digest"))
            })?;
            out.push(EntryRow::Leaf { id, digest, seghash: from_ord(r.try_get(2)?) });
        }
        for r in q(&self.sql.entries_paths).bind(path).bind(lo).bind(hi).fetch_all(&mut *c).await? {
            let child: String = r.try_get(0)?;
            let acc: Vec<u8> = r.try_get(1)?;
            let value = value_from(&acc, r.try_get(2)?, &format!("path {child:?}"))?;
            out.push(EntryRow::Path { path: child, value, seghash: from_ord(r.try_get(3)?) });
        }
        Ok(out)
    }

    async fn read_entries_many(
        &self,
        c: &mut PgConnection,
        questions: &[(String, (u64, u64))],
    ) -> Fallible<Vec<Vec<EntryRow>>> {
        self.entries_many(c, questions).await
    }

    async fn get_many(&self, ids: &[&str]) -> Fallible<Vec<StoredItem>> {
        if let [one] = ids {
            let row = q(&self.sql.get_one).bind(*one).fetch_optional(&self.pool).await?;
            return row.as_ref().map(item_row).into_iter().collect();
        }
        let rows = q(&self.sql.get_many).bind(ids).fetch_all(&self.pool).await?;
        rows.iter().map(item_row).collect()
    }

    async fn scan_keys(
        &self,
        range: &KeyRange,
        limit: usize,
        live_only: bool,
    ) -> Fallible<Vec<String>> {
        let mut query = q(&self.sql.scan[crate::sqlgen::scan_index(range, live_only)])
            .bind(range.lower.as_str());
        if let Some(u) = &range.upper {
            query = query.bind(u.as_str());
        }
        let rows =
            query.bind(i64::try_from(limit).unwrap_or(i64::MAX)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?)
    }

    async fn count(&self, lower: &str, upper: Option<&str>) -> Fallible<u64> {
        let query = match upper {
            Some(u) => q(&self.sql.count[1]).bind(lower).bind(u),
            None => q(&self.sql.count[0]).bind(lower),
        };
        let n: i64 = query.fetch_one(&self.pool).await?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge_tombstones(
        &self,
        c: &mut PgConnection,
        older_than_ms: u64,
        limit: usize,
    ) -> Fallible<(u64, usize)> {
        let done = q(&self.sql.purge)
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
        let rows = q(&self.sql.leaf_page)
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
        q(&self.sql.all_paths).fetch_all(&self.pool).await?.iter().map(path_row).collect()
    }

    async fn all_buckets(&self) -> Fallible<Vec<BucketRow>> {
        q(&self.sql.all_buckets).fetch_all(&self.pool).await?.iter().map(bucket_row).collect()
    }

    async fn all_entries(&self) -> Fallible<Vec<(String, EntryRow)>> {
        self.entries_all().await
    }

    async fn drop_tables(&self) -> Fallible<()> {
        for sql in schema::drop_statements(&self.p) {
            sqlx::query(AssertSqlSafe(sql)).execute(&self.pool).await?;
        }
        Ok(())
    }
}
