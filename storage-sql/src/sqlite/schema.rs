//! SQLite schema, created and migrated at connect under `BEGIN IMMEDIATE` (one migrator at a
//! time, even across processes).
//!
//! `TEXT` columns compare with SQLite's default `BINARY` collation (memcmp of UTF-8 = byte
//! order, case-sensitive). `u64` columns are sign-flipped `INTEGER`s (see `codec`).

use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

use crate::error::Fallible;

/// The migrations, in order; migration `i` (0-based) brings the schema to version `i + 1`.
fn migrations(p: &str) -> Vec<Vec<String>> {
    vec![
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {p}items (
                id TEXT NOT NULL PRIMARY KEY,
                parent TEXT NOT NULL,
                seghash INTEGER NOT NULL,
                version INTEGER NOT NULL,
                content_hash BLOB NOT NULL,
                tombstone INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                content BLOB NOT NULL,
                state TEXT,
                leaf BLOB
            )"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {p}items_entries ON {p}items (parent, seghash) \
             WHERE tombstone = 0"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {p}items_tombstones ON {p}items (updated_at) \
             WHERE tombstone = 1"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {p}paths (
                path TEXT NOT NULL PRIMARY KEY,
                parent TEXT,
                seghash INTEGER NOT NULL,
                acc BLOB NOT NULL,
                leaves INTEGER NOT NULL,
                entries INTEGER NOT NULL,
                split INTEGER NOT NULL,
                depth INTEGER NOT NULL
            ) WITHOUT ROWID"
            ),
            format!("CREATE INDEX IF NOT EXISTS {p}paths_entries ON {p}paths (parent, seghash)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {p}buckets (
                path TEXT NOT NULL,
                bucket TEXT NOT NULL,
                acc BLOB NOT NULL,
                leaves INTEGER NOT NULL,
                entries INTEGER NOT NULL,
                split INTEGER NOT NULL,
                PRIMARY KEY (path, bucket)
            ) WITHOUT ROWID"
            ),
            format!("INSERT OR IGNORE INTO {p}meta (name, value) VALUES ('tree_lock', 0)"),
        ],
        // 2: the Merkle leaf-change log (put_batch appends, folds apply it to the node rows) and
        // the leaf entries of the folded tree, which replace the items' (parent, seghash) index.
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {p}leaflog (seq INTEGER NOT NULL PRIMARY KEY, \
             changes BLOB NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {p}entries (
                parent TEXT NOT NULL,
                seghash INTEGER NOT NULL,
                id TEXT NOT NULL,
                leaf BLOB NOT NULL,
                PRIMARY KEY (parent, seghash, id)
            ) WITHOUT ROWID"
            ),
            format!(
                "INSERT INTO {p}entries (parent, seghash, id, leaf) \
             SELECT parent, seghash, id, leaf FROM {p}items WHERE tombstone = 0"
            ),
            format!("DROP INDEX IF EXISTS {p}items_entries"),
        ],
    ]
}

/// Create or migrate the schema; refuse a schema newer than this build.
pub(crate) async fn migrate(conn: &mut SqliteConnection, p: &str) -> Fallible<()> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {p}meta (name TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)"
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
            "INSERT INTO {p}meta (name, value) VALUES ('schema_version', ?) \
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
