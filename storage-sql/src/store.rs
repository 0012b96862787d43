//! [`SqlStore`]: the public handle, one typed driver behind it, chosen from the URL's scheme.

use std::fmt;

use async_trait::async_trait;
use sync_engine_core::merkle::{Children, NodeKey, NodeValue};
use sync_engine_core::store::{ArchiveStore, KeyScan, MerkleStore, PutOutcome};
use sync_engine_core::{Config, Error, ErrorKind, ObjectId, SecretUrl, SyncItem};

use crate::error::{ErrCtx, Scrubber};
use crate::ops::Core;
use crate::options::{Dialect, SqlOptions};
use crate::verify::MerkleCheck;

#[cfg(test)]
#[path = "enforce_tests.rs"]
mod enforce_tests;

/// The version of the schema this build creates and reads (recorded in the `meta` table).
pub const SCHEMA_VERSION: i64 = 2;

enum Inner {
    #[cfg(feature = "sqlite")]
    Sqlite(Box<Core<crate::sqlite::SqliteDriver>>),
    #[cfg(feature = "mysql")]
    MySql(Box<Core<crate::mysql::MySqlDriver>>),
    #[cfg(feature = "postgres")]
    Postgres(Box<Core<crate::postgres::PgDriver>>),
    /// No driver compiled in: never constructed.
    #[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
    #[allow(dead_code)]
    NoDriver(std::convert::Infallible),
}

/// Run `$body` with `$core` bound to whichever driver's [`Core`] the store holds.
macro_rules! dispatch {
    ($self:expr, $core:ident => $body:expr) => {
        match &$self.inner {
            #[cfg(feature = "sqlite")]
            Inner::Sqlite($core) => $body,
            #[cfg(feature = "mysql")]
            Inner::MySql($core) => $body,
            #[cfg(feature = "postgres")]
            Inner::Postgres($core) => $body,
            #[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
            Inner::NoDriver(never) => match *never {},
        }
    };
}

/// The L3 archive and its Merkle tree on SQLite, MySQL/MariaDB or PostgreSQL.
///
/// Promises, beyond the [`ArchiveStore`] and [`MerkleStore`] contracts:
/// - the schema is created (or checked) at connect and its version recorded;
/// - every batch logs its Merkle leaf changes in the same transaction as its items (never an
///   item without its leaf change), writers serialized on a tree lock, so concurrent writers
///   (several engines) never lose a Merkle update; the log is folded into the node rows in
///   batches and before every Merkle read, so every Merkle answer describes every item
///   committed before the question;
/// - no password appears in an error, a log line or a span (messages name the redacted URL).
///
/// Cheap to share behind an `Arc`; the pool inside is shared by every call.
pub struct SqlStore {
    inner: Inner,
    dialect: Dialect,
    url: String,
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore").field("dialect", &self.dialect).field("url", &self.url).finish()
    }
}

impl SqlStore {
    /// Connect to the database `url` names (`sqlite:`, `mysql://`, `mariadb://`, `postgres://`,
    /// `postgresql://`), create or check the schema, and return the store.
    ///
    /// Fails fast: an unreachable server is reported (status Temporary) within the acquire
    /// timeout; a scheme whose driver is not compiled in is `Unsupported`; bad options are
    /// `Config` errors naming the field. SQLite creates the file and its parent directory.
    #[tracing::instrument(skip_all, fields(url = %url, backend))]
    pub async fn connect(url: &SecretUrl, options: SqlOptions) -> Result<SqlStore, Error> {
        options.validate()?;
        let dialect = Dialect::of_url(url)?;
        tracing::Span::current().record("backend", dialect.backend());
        let ctx = ErrCtx {
            backend: dialect.backend(),
            redacted_url: url.redacted(),
            scrubber: Scrubber::for_url(url.expose()),
            acquire_timeout_ms: u64::try_from(options.acquire_timeout.as_millis())
                .unwrap_or(u64::MAX),
        };
        let inner = match dialect {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                let driver = crate::sqlite::SqliteDriver::connect(url, &options, &ctx).await?;
                Inner::Sqlite(Box::new(Core::new(driver, ctx, &options)))
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                let driver = crate::mysql::MySqlDriver::connect(url, &options, &ctx).await?;
                Inner::MySql(Box::new(Core::new(driver, ctx, &options)))
            }
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                let driver = crate::postgres::PgDriver::connect(url, &options, &ctx).await?;
                Inner::Postgres(Box::new(Core::new(driver, ctx, &options)))
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "`{url}` needs the `{}` driver, which this build does not include \
                         (enable the `{}` feature of sync-engine-sql)",
                        other.backend(),
                        other.feature()
                    ),
                )
                .with_operation("connect")
                .with_backend(other.backend()));
            }
        };
        Ok(SqlStore { inner, dialect, url: url.redacted() })
    }

    /// Connect with `config.sql_url`, `sql_pool_size` and `sql_acquire_timeout_ms`.
    pub async fn from_config(config: &Config) -> Result<SqlStore, Error> {
        SqlStore::connect(&config.sql_url, SqlOptions::from_config(config)).await
    }

    /// The database family.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.url
    }

    /// Compare every stored Merkle node and leaf column with a tree built from scratch from the
    /// stored items. Reads everything into memory: for tests, audits and maintenance.
    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend()))]
    pub async fn verify_merkle(&self) -> Result<MerkleCheck, Error> {
        dispatch!(self, c => {
            c.fold_pending().await?;
            crate::verify::verify(&c.driver).await.map_err(|f| c.ctx.error("verify_merkle", f))
        })
    }

    /// Fold the Merkle leaf-change log into the node rows now; returns the number of ids whose
    /// leaves it applied (0 when the log was empty). `put_batch` folds by itself every
    /// `fold_changes` changes and every Merkle read folds first, so calling this is never
    /// needed for a right answer: it moves the work to a moment the caller chooses (benchmarks
    /// time it, an idle period can absorb it).
    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend()))]
    pub async fn fold(&self) -> Result<usize, Error> {
        dispatch!(self, c => c.fold().await)
    }

    /// Drop every table of this store (its prefix), destroying its data. For tests and
    /// benchmarks that share a database; the store is unusable afterwards.
    pub async fn drop_tables(&self) -> Result<(), Error> {
        use crate::driver::Driver as _;
        dispatch!(self, c => c.driver.drop_tables().await.map_err(|f| c.ctx.error("drop_tables", f)))
    }

    /// Close the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        use crate::driver::Driver as _;
        dispatch!(self, c => c.driver.pool().close().await)
    }
}

#[async_trait]
impl ArchiveStore for SqlStore {
    fn backend(&self) -> &str {
        self.dialect.backend()
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend(), n = ids.len()))]
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>, Error> {
        dispatch!(self, c => c.get_many(ids).await)
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend(), n = items.len()))]
    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome, Error> {
        dispatch!(self, c => c.put_batch(items).await)
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend(), limit = scan.limit))]
    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>, Error> {
        dispatch!(self, c => c.scan_keys(scan, true).await)
    }

    /// Every stored id, tombstones too: an index-only scan of the primary key.
    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend(), limit = scan.limit))]
    async fn scan_filter_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>, Error> {
        dispatch!(self, c => c.scan_keys(scan, false).await)
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend()))]
    async fn count(&self, prefix: &str) -> Result<u64, Error> {
        dispatch!(self, c => c.count(prefix).await)
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend(), older_than_ms))]
    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64, Error> {
        dispatch!(self, c => c.purge_tombstones(older_than_ms).await)
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend()))]
    async fn ping(&self) -> Result<(), Error> {
        dispatch!(self, c => c.ping().await)
    }
}

#[async_trait]
impl MerkleStore for SqlStore {
    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend()))]
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>, Error> {
        dispatch!(self, c => {
            c.fold_pending().await?;
            crate::tree::node(&c.driver, key).await.map_err(|f| c.ctx.error("merkle_node", f))
        })
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend()))]
    async fn children(&self, key: &NodeKey) -> Result<Children, Error> {
        dispatch!(self, c => {
            c.fold_pending().await?;
            crate::tree::children(&c.driver, key).await.map_err(|f| c.ctx.error("merkle_children", f))
        })
    }

    #[tracing::instrument(skip_all, fields(backend = self.dialect.backend(), nodes = keys.len()))]
    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>, Error> {
        dispatch!(self, c => {
            c.fold_pending().await?;
            crate::tree::children_many(&c.driver, keys).await.map_err(|f| c.ctx.error("merkle_children", f))
        })
    }
}
