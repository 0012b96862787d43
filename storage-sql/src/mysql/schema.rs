//! MySQL / MariaDB schema, created and migrated at connect under a named lock (`GET_LOCK`: DDL
//! commits implicitly in MySQL, so a transaction cannot serialize migrators).
//!
//! Keys are `VARBINARY` (byte order, case-sensitive whatever the server's default collation:
//! MariaDB's defaults are case-insensitive and would break exact prefixes); the state tag is
//! `utf8mb4_bin`. `u64` columns are `BIGINT UNSIGNED`. Contents larger than the inline limit
//! (a quarter of `max_allowed_packet`) live in the `chunks` table. MySQL has no partial index,
//! so tombstones are listed in the small `tombstones` table (written only when a tombstone is
//! stored or overwritten) instead of indexing every live row for the purge.

use sqlx::{AssertSqlSafe, MySqlConnection, Row};

use crate::error::{Failure, Fallible};

fn migrations(p: &str) -> Vec<Vec<String>> {
    vec![vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {p}items (
                id VARBINARY(1024) NOT NULL PRIMARY KEY,
                parent VARBINARY(1024) NOT NULL,
                seghash BIGINT UNSIGNED NOT NULL,
                version BIGINT UNSIGNED NOT NULL,
                content_hash BINARY(32) NOT NULL,
                tombstone BOOLEAN NOT NULL,
                updated_at BIGINT UNSIGNED NOT NULL,
                content LONGBLOB NULL,
                chunks INT NOT NULL DEFAULT 0,
                state TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
                leaf BINARY(32) NULL,
                KEY {p}items_entries (parent, seghash)
            ) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}tombstones (
                id VARBINARY(1024) NOT NULL PRIMARY KEY,
                updated_at BIGINT UNSIGNED NOT NULL,
                KEY {p}tombstones_age (updated_at)
            ) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}chunks (
                id VARBINARY(1024) NOT NULL,
                seq INT NOT NULL,
                data LONGBLOB NOT NULL,
                PRIMARY KEY (id, seq)
            ) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}paths (
                path VARBINARY(1024) NOT NULL PRIMARY KEY,
                parent VARBINARY(1024) NULL,
                seghash BIGINT UNSIGNED NOT NULL,
                acc BINARY(32) NOT NULL,
                leaves BIGINT NOT NULL,
                entries BIGINT NOT NULL,
                split BOOLEAN NOT NULL,
                depth TINYINT UNSIGNED NOT NULL,
                KEY {p}paths_entries (parent, seghash)
            ) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}buckets (
                path VARBINARY(1024) NOT NULL,
                bucket VARBINARY(64) NOT NULL,
                acc BINARY(32) NOT NULL,
                leaves BIGINT NOT NULL,
                entries BIGINT NOT NULL,
                split BOOLEAN NOT NULL,
                PRIMARY KEY (path, bucket)
            ) ENGINE=InnoDB"
        ),
        format!("INSERT IGNORE INTO {p}meta (name, value) VALUES ('tree_lock', 0)"),
    ],
    // 2: the Merkle leaf-change log (put_batch appends, folds apply it to the node rows) and
    // the leaf entries of the folded tree, which replace the items' (parent, seghash) index.
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {p}leaflog (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             changes LONGBLOB NOT NULL) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}entries (
                parent VARBINARY(1024) NOT NULL,
                seghash BIGINT UNSIGNED NOT NULL,
                id VARBINARY(1024) NOT NULL,
                leaf BINARY(32) NOT NULL,
                PRIMARY KEY (parent, seghash, id)
            ) ENGINE=InnoDB"
        ),
        format!(
            "INSERT INTO {p}entries (parent, seghash, id, leaf) \
             SELECT parent, seghash, id, leaf FROM {p}items WHERE tombstone = 0"
        ),
        format!("ALTER TABLE {p}items DROP INDEX {p}items_entries"),
    ]]
}

/// Create or migrate the schema under a named lock; refuse a schema newer than this build.
pub(crate) async fn migrate(conn: &mut MySqlConnection, p: &str) -> Fallible<()> {
    let lock = format!("sync_engine_schema:{p}");
    let got: Option<i64> =
        sqlx::query_scalar("SELECT GET_LOCK(?, 30)").bind(&lock).fetch_one(&mut *conn).await?;
    if got != Some(1) {
        return Err(Failure::Sql(sqlx::Error::PoolTimedOut));
    }
    let result = migrate_locked(conn, p).await;
    let released = sqlx::query("SELECT RELEASE_LOCK(?)").bind(&lock).execute(&mut *conn).await;
    result?;
    released?;
    Ok(())
}

async fn migrate_locked(conn: &mut MySqlConnection, p: &str) -> Fallible<()> {
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {p}meta (name VARBINARY(64) NOT NULL PRIMARY KEY, \
         value BIGINT NOT NULL) ENGINE=InnoDB"
    )))
    .execute(&mut *conn)
    .await?;
    let current: i64 = sqlx::query(AssertSqlSafe(format!(
        "SELECT value FROM {p}meta WHERE name = 'schema_version'"
    )))
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.try_get::<i64, _>(0))
    .transpose()?
    .unwrap_or(0);
    for (version, steps) in crate::migrate::pending(p, current, migrations(p))? {
        for sql in &steps {
            sqlx::query(AssertSqlSafe(sql.as_str())).execute(&mut *conn).await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {p}meta (name, value) VALUES ('schema_version', ?) \
             ON DUPLICATE KEY UPDATE value = VALUES(value)"
        )))
        .bind(version)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `DROP TABLE` of every table of prefix `p`.
pub(crate) fn drop_statements(p: &str) -> Vec<String> {
    ["items", "tombstones", "chunks", "paths", "buckets", "leaflog", "entries", "meta"]
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {p}{t}"))
        .collect()
}
