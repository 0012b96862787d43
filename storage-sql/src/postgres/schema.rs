//! PostgreSQL schema, created and migrated at connect inside one transaction holding an
//! advisory lock (one migrator at a time; DDL is transactional in PostgreSQL).
//!
//! Text keys use `COLLATE "C"`: byte order, case-sensitive, whatever the database's default
//! collation. `u64` columns are sign-flipped `BIGINT`s (see `codec`). The node tables leave 30%
//! of each page free so that the constant rewriting of node values stays heap-only (HOT)
//! updates, which touch no index.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::error::Fallible;

fn migrations(p: &str) -> Vec<Vec<String>> {
    vec![vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {p}items (
                id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
                parent TEXT COLLATE \"C\" NOT NULL,
                seghash BIGINT NOT NULL,
                version BIGINT NOT NULL,
                content_hash BYTEA NOT NULL,
                tombstone BOOLEAN NOT NULL,
                updated_at BIGINT NOT NULL,
                content BYTEA NOT NULL,
                state TEXT,
                leaf BYTEA
            )"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {p}items_entries ON {p}items (parent, seghash) \
             WHERE NOT tombstone"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {p}items_tombstones ON {p}items (updated_at) \
             WHERE tombstone"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}paths (
                path TEXT COLLATE \"C\" NOT NULL PRIMARY KEY,
                parent TEXT COLLATE \"C\",
                seghash BIGINT NOT NULL,
                acc BYTEA NOT NULL,
                leaves BIGINT NOT NULL,
                entries BIGINT NOT NULL,
                split BOOLEAN NOT NULL,
                depth SMALLINT NOT NULL
            ) WITH (fillfactor = 70)"
        ),
        format!("CREATE INDEX IF NOT EXISTS {p}paths_entries ON {p}paths (parent, seghash)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}buckets (
                path TEXT COLLATE \"C\" NOT NULL,
                bucket TEXT COLLATE \"C\" NOT NULL,
                acc BYTEA NOT NULL,
                leaves BIGINT NOT NULL,
                entries BIGINT NOT NULL,
                split BOOLEAN NOT NULL,
                PRIMARY KEY (path, bucket)
            ) WITH (fillfactor = 70)"
        ),
        format!(
            "INSERT INTO {p}meta (name, value) VALUES ('tree_lock', 0) ON CONFLICT (name) DO NOTHING"
        ),
    ],
    // 2: the Merkle leaf-change log (put_batch appends, folds apply it to the node rows) and
    // the leaf entries of the folded tree, which replace the items' (parent, seghash) index.
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {p}leaflog (seq BIGSERIAL PRIMARY KEY, changes BYTEA NOT NULL)"
        ),
        // Log rows are mostly random digests: out of line, never run through pglz.
        format!("ALTER TABLE {p}leaflog ALTER COLUMN changes SET STORAGE EXTERNAL"),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}entries (
                parent TEXT COLLATE \"C\" NOT NULL,
                seghash BIGINT NOT NULL,
                id TEXT COLLATE \"C\" NOT NULL,
                leaf BYTEA NOT NULL,
                PRIMARY KEY (parent, seghash, id)
            )"
        ),
        format!(
            "INSERT INTO {p}entries (parent, seghash, id, leaf) \
             SELECT parent, seghash, id, leaf FROM {p}items WHERE NOT tombstone"
        ),
        format!("DROP INDEX IF EXISTS {p}items_entries"),
    ]]
}

/// A stable advisory-lock key for the schema of prefix `p` (FNV-1a).
fn lock_key(p: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"sync-engine-schema:".iter().chain(p.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Create or migrate the schema; refuse a schema newer than this build.
pub(crate) async fn migrate(conn: &mut PgConnection, p: &str) -> Fallible<()> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key(p)).execute(&mut *tx).await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {p}meta (name TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, \
         value BIGINT NOT NULL)"
    )))
    .execute(&mut *tx)
    .await?;
    let current: i64 = sqlx::query(AssertSqlSafe(format!(
        "SELECT value FROM {p}meta WHERE name = 'schema_version'"
    )))
    .fetch_optional(&mut *tx)
    .await?
    .map(|r| r.try_get::<i64, _>(0))
    .transpose()?
    .unwrap_or(0);
    for (version, steps) in crate::migrate::pending(p, current, migrations(p))? {
        for sql in &steps {
            sqlx::query(AssertSqlSafe(sql.as_str())).execute(&mut *tx).await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {p}meta (name, value) VALUES ('schema_version', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        )))
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `DROP TABLE` of every table of prefix `p`.
pub(crate) fn drop_statements(p: &str) -> Vec<String> {
    ["items", "paths", "buckets", "leaflog", "entries", "meta"]
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {p}{t}"))
        .collect()
}
