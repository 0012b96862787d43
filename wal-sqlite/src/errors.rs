//! Turning SQLite, file-system and record failures into the engine's [`Error`], always naming
//! the file and the operation.

use std::path::Path;

use rusqlite::ErrorCode;
use sync_engine_core::{Error, ErrorKind, Status};

use crate::record::RecordError;

/// The backend name every error of this crate carries.
pub const BACKEND: &str = "wal-sqlite";

/// An error of `kind` about the WAL file at `path`.
pub(crate) fn file_error(
    kind: ErrorKind,
    op: &'static str,
    path: &Path,
    msg: impl AsRef<str>,
) -> Error {
    Error::new(kind, format!("WAL file {}: {}", path.display(), msg.as_ref()))
        .with_operation(op)
        .with_backend(BACKEND)
}

/// A SQLite failure during `op` on the WAL file at `path`.
///
/// Corruption (`SQLITE_CORRUPT`, `SQLITE_NOTADB`) is [`ErrorKind::Corrupt`]; a busy or locked
/// database is [`ErrorKind::Unavailable`] (temporary); a full disk is an I/O error with status
/// Temporary (freeing space fixes it); everything else is [`ErrorKind::Io`].
pub(crate) fn sql_error(op: &'static str, path: &Path, e: rusqlite::Error) -> Error {
    let (kind, status, what) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt) => {
            (ErrorKind::Corrupt, None, "the SQLite file is corrupt (left untouched)")
        }
        Some(ErrorCode::NotADatabase) => (
            ErrorKind::Corrupt,
            None,
            "not a SQLite database (foreign or damaged file, left untouched)",
        ),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            (ErrorKind::Unavailable, None, "the database is locked by another connection")
        }
        Some(ErrorCode::DiskFull) => (ErrorKind::Io, Some(Status::Temporary), "the disk is full"),
        Some(ErrorCode::CannotOpen) => (ErrorKind::Io, None, "cannot open the file"),
        _ => (ErrorKind::Io, None, "SQLite failed"),
    };
    let err = file_error(kind, op, path, what).with_source(e);
    match status {
        Some(s) => err.with_status(s),
        None => err,
    }
}

/// A file-system failure during `op`.
pub(crate) fn io_error(op: &'static str, path: &Path, what: &str, e: std::io::Error) -> Error {
    file_error(ErrorKind::Io, op, path, what).with_source(e)
}

/// A record that failed its format or checksum check.
pub(crate) fn record_error(op: &'static str, path: &Path, what: &str, e: RecordError) -> Error {
    file_error(ErrorKind::Corrupt, op, path, what).with_source(e)
}

/// The background thread that owns a connection has stopped (it only stops on close).
pub(crate) fn stopped(op: &'static str, path: &Path) -> Error {
    file_error(ErrorKind::Io, op, path, "the WAL's SQLite thread has stopped (the log was closed)")
}
