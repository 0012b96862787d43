//! Errors: the internal [`Failure`] the drivers return, and its mapping to the core
//! [`Error`] with a status the engine acts on (Temporary: retry or divert to the WAL;
//! Permanent: never retried).
//!
//! No message built here contains a password: sqlx's texts are passed through a [`Scrubber`]
//! holding the URL's password (raw and percent-decoded), and connection errors name the
//! redacted URL only.

use std::fmt;

use sync_engine_core::{Error, ErrorKind, Status};

/// What went wrong inside a driver call, before it is given an operation and a backend.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database or the driver failed.
    Sql(sqlx::Error),
    /// Stored bytes do not decode (a digest that is not 32 bytes, an id that is not UTF-8...).
    Corrupt(String),
    /// The database answered something that breaks the store's own invariants (the Merkle
    /// tree and the items disagree, a newer-wins upsert touched an unexpected number of rows).
    Contract(String),
    /// An id written as new (plain `INSERT`) already had a row. Under the tree lock, after a
    /// stamp read that found none, this breaks the contract and is reported as `Contract`;
    /// after a batch was written without a stamp read (every id assumed new), it only means the
    /// assumption was wrong and the batch is written again the long way.
    Occupied(String),
    /// Input the database cannot hold (reported before anything is written).
    Invalid(String),
    /// The database holds something this build cannot work with (a newer schema).
    Unsupported(String),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Failure {
        Failure::Sql(e)
    }
}

/// Shorthand for driver results.
pub(crate) type Fallible<T> = Result<T, Failure>;

/// A unique violation while inserting ids as new: [`Failure::Occupied`] (a broken contract when
/// a stamp read under the tree lock found them absent, never bad input).
pub(crate) fn unique_is_occupied(e: sqlx::Error) -> Failure {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Failure::Occupied(format!(
            "an id read as absent under the tree lock was inserted by someone else: {}",
            db.message()
        )),
        _ => Failure::Sql(e),
    }
}

/// A unique violation while a fold inserts the entry of a leaf the tree did not hold means the
/// entries table and the change log disagree: a broken contract, reported, nothing applied.
pub(crate) fn entry_clash_is_contract(e: sqlx::Error) -> Failure {
    unique_as_contract(e, "a leaf the Merkle tree did not hold is already in the entries table")
}

/// A unique violation as a `Contract` failure saying `what` it means; other errors as they are.
fn unique_as_contract(e: sqlx::Error, what: &str) -> Failure {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Failure::Contract(format!("{what}: {}", db.message()))
        }
        _ => Failure::Sql(e),
    }
}

/// Removes secrets (the URL's password, raw and percent-decoded) from texts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// A scrubber for the password of `url`, if it has one.
    pub(crate) fn for_url(url: &str) -> Scrubber {
        let mut secrets = Vec::new();
        if let Ok(parsed) = url::Url::parse(url) {
            if let Some(pw) = parsed.password() {
                if !pw.is_empty() {
                    secrets.push(pw.to_owned());
                    let decoded: String = url::form_urlencoded::parse(format!("p={pw}").as_bytes())
                        .map(|(_, v)| v.into_owned())
                        .next()
                        .unwrap_or_default();
                    if !decoded.is_empty() && decoded != pw {
                        secrets.push(decoded);
                    }
                }
            }
        }
        Scrubber { secrets }
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }
}

/// The database's own words, scrubbed, kept as the source of a core [`Error`].
#[derive(Debug)]
pub struct DbError {
    /// The scrubbed message of the driver or database.
    pub message: String,
    /// The database's error code (SQLSTATE, MySQL error number, SQLite extended code), if any.
    pub code: Option<String>,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{} (code {code})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DbError {}

/// How a database error should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Deadlock, serialization failure, lock wait timeout, SQLite busy: retry the transaction.
    Conflict,
    /// Connection-level trouble: the database may come back.
    Unavailable,
    /// A statement timed out or was cancelled.
    Timeout,
    /// Constraint, type, size or encoding errors: the input cannot be stored.
    Rejected,
    /// Authentication failed or the database does not exist: a configuration problem.
    Config,
    /// Anything else: a broken assumption of this store.
    Other,
}

/// The per-backend classification of a database error code.
pub(crate) fn classify_code(backend: &str, code: &str, number: Option<u16>) -> Class {
    match backend {
        "postgres" => classify_postgres(code),
        "mysql" => classify_mysql(code, number),
        "sqlite" => classify_sqlite(code),
        _ => Class::Other,
    }
}

fn classify_postgres(code: &str) -> Class {
    match code {
        "40001" | "40P01" | "55P03" => Class::Conflict,
        "57014" => Class::Timeout,
        "53300" | "57P01" | "57P02" | "57P03" | "53000" | "53100" | "53200" | "58000" | "58030" => {
            Class::Unavailable
        }
        c if c.starts_with("08") => Class::Unavailable,
        c if c.starts_with("23") || c.starts_with("22") || c == "54000" => Class::Rejected,
        c if c.starts_with("28") || c == "3D000" => Class::Config,
        _ => Class::Other,
    }
}

fn classify_mysql(code: &str, number: Option<u16>) -> Class {
    match number {
        // Deadlock; lock wait timeout; "record has changed since last read".
        Some(1213 | 1205 | 1020) => Class::Conflict,
        // Query interrupted; max_statement_time exceeded.
        Some(1317 | 1969 | 3024) => Class::Timeout,
        // Too many connections; server shutdown; connection killed; read-only; lost.
        Some(1040 | 1053 | 1927 | 1290 | 2006 | 2013 | 1158 | 1159 | 1160 | 1161) => {
            Class::Unavailable
        }
        // Access denied; unknown database.
        Some(1044 | 1045 | 1049 | 1698) => Class::Config,
        // Packet too large; data too long; incorrect value; out of range; duplicate; null.
        Some(1153 | 1301 | 1406 | 1366 | 1264 | 1062 | 1048 | 1452 | 1451 | 4025) => {
            Class::Rejected
        }
        _ => match code {
            "40001" => Class::Conflict,
            c if c.starts_with("08") => Class::Unavailable,
            c if c.starts_with("23") || c.starts_with("22") => Class::Rejected,
            _ => Class::Other,
        },
    }
}

fn classify_sqlite(code: &str) -> Class {
    // sqlx reports the extended result code; the primary code is its low byte.
    let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
    match primary {
        // SQLITE_BUSY, SQLITE_LOCKED
        5 | 6 => Class::Conflict,
        // SQLITE_INTERRUPT
        9 => Class::Timeout,
        // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL, SQLITE_READONLY
        10 | 13 | 14 | 15 | 8 => Class::Unavailable,
        // SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH, SQLITE_RANGE
        18 | 19 | 20 | 25 => Class::Rejected,
        _ => Class::Other,
    }
}

/// Classification of any sqlx error.
pub(crate) fn class_of(backend: &str, e: &sqlx::Error) -> Class {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            classify_code(backend, &code, mysql_number(db.as_ref()))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Class::Unavailable,
        sqlx::Error::Encode(_) => Class::Rejected,
        _ => Class::Other,
    }
}

#[cfg(feature = "mysql")]
fn mysql_number(db: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|e| e.number())
}

#[cfg(not(feature = "mysql"))]
fn mysql_number(_db: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    None
}

/// True when the failure is a transaction conflict worth retrying inside `put_batch`.
pub(crate) fn is_conflict(backend: &str, f: &Failure) -> bool {
    matches!(f, Failure::Sql(e) if class_of(backend, e) == Class::Conflict)
}

/// Context for turning a [`Failure`] into a core [`Error`].
#[derive(Clone, Debug)]
pub(crate) struct ErrCtx {
    /// `sqlite`, `mysql` or `postgres`.
    pub backend: &'static str,
    /// The URL with its password replaced by `***`.
    pub redacted_url: String,
    /// Removes the password from driver texts.
    pub scrubber: Scrubber,
    /// The configured acquire timeout, for messages.
    pub acquire_timeout_ms: u64,
}

impl ErrCtx {
    /// The core error for `f` during `op`.
    pub(crate) fn error(&self, op: &'static str, f: Failure) -> Error {
        let err = match f {
            Failure::Sql(e) => self.sql_error(e),
            Failure::Corrupt(m) => Error::new(ErrorKind::Corrupt, m),
            Failure::Contract(m) | Failure::Occupied(m) => Error::new(ErrorKind::Contract, m),
            Failure::Invalid(m) => Error::invalid(m),
            Failure::Unsupported(m) => Error::new(ErrorKind::Unsupported, m),
        };
        err.with_operation(op).with_backend(self.backend)
    }

    fn sql_error(&self, e: sqlx::Error) -> Error {
        let class = class_of(self.backend, &e);
        let (code, detail) = match &e {
            sqlx::Error::Database(db) => {
                (db.code().map(|c| c.into_owned()), self.scrubber.scrub(db.message()))
            }
            other => (None, self.scrubber.scrub(&other.to_string())),
        };
        let source = DbError { message: detail, code };
        let (kind, message) = match (&e, class) {
            (sqlx::Error::PoolTimedOut, _) => (
                ErrorKind::Unavailable,
                format!(
                    "no connection to {} within the acquire timeout of {} ms",
                    self.redacted_url, self.acquire_timeout_ms
                ),
            ),
            (sqlx::Error::PoolClosed, _) => {
                (ErrorKind::ShuttingDown, "the store's connection pool is closed".to_owned())
            }
            (sqlx::Error::Configuration(_), _) => (
                ErrorKind::Config,
                format!("invalid connection settings for {}", self.redacted_url),
            ),
            (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_), _) => {
                (ErrorKind::Corrupt, "a stored value does not decode".to_owned())
            }
            (_, Class::Conflict) => (
                ErrorKind::Unavailable,
                "transaction conflict (deadlock, serialization failure or lock timeout)".to_owned(),
            ),
            (_, Class::Unavailable) => {
                (ErrorKind::Unavailable, format!("database {} unavailable", self.redacted_url))
            }
            (_, Class::Timeout) => (ErrorKind::Timeout, "statement timed out".to_owned()),
            (_, Class::Rejected) => {
                (ErrorKind::InvalidInput, "the database rejected the data".to_owned())
            }
            (_, Class::Config) => (
                ErrorKind::Config,
                format!("{} refused the credentials or the database name", self.redacted_url),
            ),
            (_, Class::Other) => (ErrorKind::Contract, "unexpected database error".to_owned()),
        };
        let status = match class {
            Class::Conflict | Class::Unavailable | Class::Timeout => Status::Temporary,
            Class::Rejected | Class::Config | Class::Other => kind.default_status(),
        };
        Error::new(kind, message).with_status(status).with_source(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubber_removes_raw_and_decoded_passwords() {
        let s = Scrubber::for_url("postgres://app:s3cr%40t@db:5432/x");
        let text = "auth failed for s3cr%40t and s3cr@t";
        let out = s.scrub(text);
        assert!(!out.contains("s3cr"), "{out}");
        assert_eq!(Scrubber::for_url("sqlite://a.db").scrub("x"), "x");
    }

    #[test]
    fn codes_classify_per_backend() {
        assert_eq!(classify_code("postgres", "40P01", None), Class::Conflict);
        assert_eq!(classify_code("postgres", "40001", None), Class::Conflict);
        assert_eq!(classify_code("postgres", "08006", None), Class::Unavailable);
        assert_eq!(classify_code("postgres", "23505", None), Class::Rejected);
        assert_eq!(classify_code("postgres", "22021", None), Class::Rejected);
        assert_eq!(classify_code("postgres", "42P01", None), Class::Other);
        assert_eq!(classify_code("postgres", "28P01", None), Class::Config);
        assert_eq!(classify_code("mysql", "28000", Some(1045)), Class::Config);
        assert_eq!(classify_code("mysql", "40001", Some(1213)), Class::Conflict);
        assert_eq!(classify_code("mysql", "HY000", Some(1205)), Class::Conflict);
        assert_eq!(classify_code("mysql", "08S01", Some(1153)), Class::Rejected);
        assert_eq!(classify_code("mysql", "08004", Some(1040)), Class::Unavailable);
        assert_eq!(classify_code("sqlite", "5", None), Class::Conflict);
        assert_eq!(classify_code("sqlite", "517", None), Class::Conflict, "SQLITE_BUSY_SNAPSHOT");
        assert_eq!(
            classify_code("sqlite", "2067", None),
            Class::Rejected,
            "SQLITE_CONSTRAINT_UNIQUE"
        );
        assert_eq!(classify_code("sqlite", "1", None), Class::Other);
    }

    #[test]
    fn pool_timeout_is_temporary_and_names_the_redacted_url() {
        let ctx = ErrCtx {
            backend: "postgres",
            redacted_url: "postgres://u:***@h/db".into(),
            scrubber: Scrubber::for_url("postgres://u:pw@h/db"),
            acquire_timeout_ms: 2000,
        };
        let e = ctx.error("get", Failure::Sql(sqlx::Error::PoolTimedOut));
        assert_eq!(e.status(), Status::Temporary);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.to_string().contains("postgres://u:***@h/db"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let c = ctx.error("put_batch", Failure::Contract("x".into()));
        assert_eq!(c.status(), Status::Permanent);
    }
}
