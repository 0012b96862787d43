//! The tables of format version 1 and the identity checks that refuse a foreign SQLite file
//! or a newer format.

use std::path::Path;

use rusqlite::Connection;
use sync_engine_core::{ErrorKind, Result};

use crate::errors::{file_error, sql_error};

/// `PRAGMA application_id` of every sync-engine WAL file: "SEWL".
pub const APPLICATION_ID: i32 = 0x5345_574c;
/// `PRAGMA user_version`: the file format this build writes and the newest it opens.
pub const FORMAT_VERSION: i32 = 1;

/// Row of `meta` holding the log state record.
pub(crate) const STATE_SLOT: i64 = 1;
/// Row of `meta` holding the filter snapshot record.
pub(crate) const SNAPSHOT_SLOT: i64 = 2;

/// Tables:
/// - `entries(seq, record)`: pending entries, `record` an entry record bound to `seq`.
/// - `damaged(first_seq, last_seq, record, reason, detected_at_ms)`: entries that failed their
///   checksum (one row each, with the raw bytes) or sequence numbers found missing (a range,
///   `record` NULL). Kept for the operator; never drained.
/// - `meta(slot, record)`: slot 1 the log state record, slot 2 the filter snapshot record.
pub(crate) fn create_sql() -> String {
    format!(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
         CREATE TABLE damaged (first_seq INTEGER PRIMARY KEY, last_seq INTEGER NOT NULL,
                               record BLOB, reason TEXT NOT NULL, detected_at_ms INTEGER NOT NULL);
         CREATE TABLE meta (slot INTEGER PRIMARY KEY, record BLOB NOT NULL);
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {FORMAT_VERSION};"
    )
}

/// Refuse a file that is not a sync-engine WAL of a format this build reads: a foreign
/// SQLite database (other application id), a newer format, or a file missing its tables.
/// Reads only; a refused file is left untouched.
pub(crate) fn check_identity(conn: &Connection, path: &Path) -> Result<()> {
    const OP: &str = "open";
    let sql = |e| sql_error(OP, path, e);
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
    if app != APPLICATION_ID {
        return Err(file_error(
            ErrorKind::Corrupt,
            OP,
            path,
            format!(
                "is a SQLite database but not a sync-engine WAL (application_id {app:#010x}, expected {APPLICATION_ID:#010x}); refusing to touch it"
            ),
        ));
    }
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
    if version > FORMAT_VERSION {
        return Err(file_error(
            ErrorKind::Unsupported,
            OP,
            path,
            format!(
                "has WAL format version {version}, newer than this build supports ({FORMAT_VERSION}): open it with a newer sync-engine"
            ),
        ));
    }
    if version < 1 {
        return Err(file_error(
            ErrorKind::Corrupt,
            OP,
            path,
            format!(
                "has the sync-engine application id but format version {version}: damaged header"
            ),
        ));
    }
    for table in ["entries", "damaged", "meta"] {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(sql)?;
        if n != 1 {
            return Err(file_error(
                ErrorKind::Corrupt,
                OP,
                path,
                format!("is a sync-engine WAL but its table `{table}` is missing: damaged schema"),
            ));
        }
    }
    Ok(())
}
