//! [`SqlOptions`] and the choice of driver from a URL's scheme.

use std::time::Duration;

use sync_engine_core::{Config, Error, ErrorKind, SecretUrl};

/// Default number of direct entries a path node (or bucket) holds before the store splits it
/// into 16 hash buckets.
pub const DEFAULT_SPLIT_THRESHOLD: usize = 256;

/// Default number of node rows cached between batches ([`SqlOptions::node_cache_rows`]).
pub const DEFAULT_NODE_CACHE_ROWS: usize = 250_000;

/// Default number of leaf changes a process logs before it folds them into the Merkle node rows
/// ([`SqlOptions::fold_changes`]). A fold rewrites each index page its changes land on once, so
/// on a large tree (hash-ordered leaf entries, changes spread over every page) more changes per
/// fold cost fewer page writes each: at 1,000,000 flat items a batch-and-fold cycle is ~30%
/// faster at 65,536 than at 16,384 (BENCHMARKS.md, sql, session 9). A fold holds its merged
/// changes in memory while it runs (~160 bytes each) and applies them in slices of
/// [`SqlOptions::fold_slice_changes`]. A Merkle read folds whatever is logged first.
pub const DEFAULT_FOLD_CHANGES: usize = 65_536;

/// Default number of leaf changes a fold applies at a time ([`SqlOptions::fold_slice_changes`]).
/// A slice's per-node deltas, plan and entry rows take ~0.5 KB per change (deep ids) while it
/// runs; before slicing, one fold of 65,536 deep ids peaked at ~60 MB (heaptrack, BENCHMARKS.md
/// engine, session 11).
pub const DEFAULT_FOLD_SLICE_CHANGES: usize = 8192;

/// The pragmas every SQLite connection of a store sets, besides `journal_mode = WAL` and the
/// busy timeout: full `fsync` on commit (an acknowledged batch survives power loss), a 32 MiB
/// page cache per connection, and a checkpoint every 10,000 WAL pages (40 MiB), so that pages
/// rewritten by consecutive batches (upper index levels, hot Merkle nodes) are copied back to
/// the database file once per checkpoint rather than once per batch.
pub const SQLITE_PRAGMAS: &[(&str, &str)] =
    &[("synchronous", "FULL"), ("cache_size", "-32768"), ("wal_autocheckpoint", "10000")];

/// Default table-name prefix.
pub const DEFAULT_TABLE_PREFIX: &str = "sync_";

/// Longest table-name prefix accepted (MySQL identifiers are limited to 64 characters).
pub const MAX_TABLE_PREFIX_LEN: usize = 40;

/// Connection settings of a [`crate::SqlStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// Maximum connections in the pool (at least 1).
    pub pool_size: u32,
    /// How long an operation waits for a connection before reporting the database
    /// unavailable (status Temporary). Also bounds the first connection at `connect`.
    pub acquire_timeout: Duration,
    /// Prefix of every table name (`[a-z][a-z0-9_]*`, at most [`MAX_TABLE_PREFIX_LEN`]):
    /// lets several stores, or test runs, share one database.
    pub table_prefix: String,
    /// Direct entries a flat node holds before it is split into hash buckets (at least 2).
    pub split_threshold: usize,
    /// SQLite only: how long a writer waits for another writer's lock before `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// Node rows kept in memory between batches while this process is the only writer
    /// (0 disables the cache). Rows are only served at the tree generation they were read or
    /// written at, so the cache never changes an answer; it saves reads.
    pub node_cache_rows: usize,
    /// Leaf changes this process logs (in `put_batch`'s transaction) before it folds the
    /// change log into the Merkle node rows (at least 1; 1 folds after every batch). Larger
    /// values write each hot node row once for more batches; every Merkle read folds first
    /// whatever is logged, so no answer depends on this setting.
    pub fold_changes: usize,
    /// Leaf changes a fold applies at a time, one slice after the other inside its single
    /// transaction (at least 1). Bounds the fold's transient memory whatever `fold_changes`
    /// is; slices follow the leaf-entry order, so each writes its own node rows and the tree
    /// written is the same for every value.
    pub fold_slice_changes: usize,
}

impl Default for SqlOptions {
    fn default() -> SqlOptions {
        SqlOptions {
            pool_size: 8,
            acquire_timeout: Duration::from_millis(2000),
            table_prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            split_threshold: DEFAULT_SPLIT_THRESHOLD,
            busy_timeout: Duration::from_secs(5),
            node_cache_rows: DEFAULT_NODE_CACHE_ROWS,
            fold_changes: DEFAULT_FOLD_CHANGES,
            fold_slice_changes: DEFAULT_FOLD_SLICE_CHANGES,
        }
    }
}

impl SqlOptions {
    /// Pool size and acquire timeout from the engine's configuration; other fields default.
    pub fn from_config(config: &Config) -> SqlOptions {
        SqlOptions {
            pool_size: config.sql_pool_size,
            acquire_timeout: Duration::from_millis(config.sql_acquire_timeout_ms),
            ..SqlOptions::default()
        }
    }

    /// With another table prefix.
    pub fn with_table_prefix(mut self, prefix: impl Into<String>) -> SqlOptions {
        self.table_prefix = prefix.into();
        self
    }

    /// Check every field; the error names the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, msg: String| {
            Err(Error::new(ErrorKind::Config, format!("SqlOptions.{field}: {msg}")))
        };
        if self.pool_size == 0 {
            return bad("pool_size", "must be at least 1".into());
        }
        if self.acquire_timeout.is_zero() {
            return bad("acquire_timeout", "must be greater than 0".into());
        }
        if self.split_threshold < 2 {
            return bad(
                "split_threshold",
                format!("must be at least 2, got {}", self.split_threshold),
            );
        }
        if self.fold_changes == 0 {
            return bad("fold_changes", "must be at least 1, got 0".into());
        }
        if self.fold_slice_changes == 0 {
            return bad("fold_slice_changes", "must be at least 1, got 0".into());
        }
        let p = &self.table_prefix;
        let shape_ok = p.len() <= MAX_TABLE_PREFIX_LEN
            && p.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !shape_ok {
            return bad(
                "table_prefix",
                format!(
                    "{p:?} must match [a-z][a-z0-9_]* and be at most {MAX_TABLE_PREFIX_LEN} bytes"
                ),
            );
        }
        Ok(())
    }
}

/// The database family a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `sqlite:` / `sqlite://`
    Sqlite,
    /// `mysql://` / `mariadb://`
    MySql,
    /// `postgres://` / `postgresql://`
    Postgres,
}

impl Dialect {
    /// The dialect of `url` from its scheme; the error names the scheme.
    pub fn of_url(url: &SecretUrl) -> Result<Dialect, Error> {
        match url.scheme().as_deref() {
            Some("sqlite") => Ok(Dialect::Sqlite),
            Some("mysql" | "mariadb") => Ok(Dialect::MySql),
            Some("postgres" | "postgresql") => Ok(Dialect::Postgres),
            Some(other) => Err(Error::new(
                ErrorKind::Config,
                format!(
                    "`{url}`: scheme `{other}` is not a SQL database (sqlite, mysql, mariadb, postgres, postgresql)"
                ),
            )),
            None => Err(Error::new(ErrorKind::Config, format!("`{url}` has no scheme"))),
        }
    }

    /// The backend name used in errors, logs and metrics.
    pub fn backend(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::MySql => "mysql",
            Dialect::Postgres => "postgres",
        }
    }

    /// The cargo feature that compiles this dialect's driver in.
    pub fn feature(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::MySql => "mysql",
            Dialect::Postgres => "postgres",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_choose_dialects() {
        let d = |u: &str| Dialect::of_url(&SecretUrl::new(u));
        assert_eq!(d("sqlite:x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(d("sqlite://x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(d("mariadb://root@h/db").unwrap(), Dialect::MySql);
        assert_eq!(d("MySQL://root@h/db").unwrap(), Dialect::MySql);
        assert_eq!(d("postgresql://u@h/db").unwrap(), Dialect::Postgres);
        let e = d("redis://u:pw@h/").unwrap_err();
        assert!(e.to_string().contains("redis"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        assert!(SqlOptions::default().validate().is_ok());
        for (opts, field) in [
            (SqlOptions { pool_size: 0, ..SqlOptions::default() }, "pool_size"),
            (SqlOptions { split_threshold: 1, ..SqlOptions::default() }, "split_threshold"),
            (SqlOptions { fold_changes: 0, ..SqlOptions::default() }, "fold_changes"),
            (SqlOptions { fold_slice_changes: 0, ..SqlOptions::default() }, "fold_slice_changes"),
            (SqlOptions::default().with_table_prefix("Bad"), "table_prefix"),
            (SqlOptions::default().with_table_prefix("a;drop"), "table_prefix"),
            (SqlOptions::default().with_table_prefix(""), "table_prefix"),
            (SqlOptions::default().with_table_prefix("x".repeat(41)), "table_prefix"),
        ] {
            let e = opts.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
        let c = Config { sql_pool_size: 3, sql_acquire_timeout_ms: 750, ..Config::default() };
        let o = SqlOptions::from_config(&c);
        assert_eq!((o.pool_size, o.acquire_timeout), (3, Duration::from_millis(750)));
    }
}
