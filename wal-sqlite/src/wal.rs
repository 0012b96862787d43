//! [`SqliteWal`]: opening the file and the async face of the two SQLite threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use sync_engine_core::store::{FilterSnapshot, SnapshotStore, Wal, WalEntry, WalStats};
use sync_engine_core::{Config, ErrorKind, Result, SyncItem};
use tokio::sync::oneshot;

use crate::errors::{file_error, io_error, record_error, sql_error, stopped};
use crate::file::{self, sibling};
use crate::reader::{DamagedRange, ReadCmd, Reader};
use crate::record::{encode_snapshot, frame_entry};
use crate::recover::{recover, Counters};
use crate::writer::{WriteCmd, Writer};
use crate::{schema, Shared, WalOptions};

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite write-ahead log and filter-snapshot store (see the crate docs and README.md).
///
/// Every SQLite call runs on one of two threads the log owns (a writer doing group commit,
/// a reader for `peek` and snapshot loads); the async methods only send a request and await
/// the answer, so they never block an executor thread. Dropping the handle stops both
/// threads (after the writer finishes what is queued) and releases the file lock; [`close`]
/// does the same and waits for it.
///
/// [`close`]: SqliteWal::close
pub struct SqliteWal {
    path: Arc<PathBuf>,
    writer: mpsc::Sender<WriteCmd>,
    reader: mpsc::Sender<ReadCmd>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWal").field("path", &self.path).finish_non_exhaustive()
    }
}

fn open_conn(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error("open", path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_error("open", path, e))?;
    conn.pragma_update(None, "cell_size_check", "ON").map_err(|e| sql_error("open", path, e))?;
    Ok(conn)
}

fn configure_writer(conn: &Connection, path: &Path) -> Result<()> {
    let sql = |e| sql_error("open", path, e);
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(file_error(
            ErrorKind::Io,
            "open",
            path,
            format!("SQLite refused WAL journal mode (got `{mode}`)"),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).map_err(sql)?;
    if sync != 2 {
        return Err(file_error(
            ErrorKind::Io,
            "open",
            path,
            format!("SQLite refused synchronous=FULL (got {sync})"),
        ));
    }
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).map_err(sql)?;
    let limit = file::journal_size_limit(u64::try_from(page_size).unwrap_or(4096));
    conn.pragma_update(None, "journal_size_limit", limit as i64).map_err(sql)?;
    Ok(())
}

impl SqliteWal {
    /// Open (creating it and its parent directories if absent) the log at `path`, on a
    /// dedicated thread: never blocks the async executor. See [`SqliteWal::open_blocking`].
    pub async fn open(path: impl AsRef<Path>, options: WalOptions) -> Result<SqliteWal> {
        let path = path.as_ref().to_path_buf();
        let (tx, rx) = oneshot::channel();
        let shown = path.clone();
        std::thread::Builder::new()
            .name("wal-open".into())
            .spawn(move || {
                let _ = tx.send(SqliteWal::open_blocking(&path, options));
            })
            .map_err(|e| io_error("open", &shown, "cannot start the open thread", e))?;
        rx.await.map_err(|_| stopped("open", &shown))?
    }

    /// [`SqliteWal::open`] with `Config::wal_path`, `wal_max_items` and `wal_max_bytes`.
    pub async fn open_from_config(config: &Config) -> Result<SqliteWal> {
        SqliteWal::open(&config.wal_path, WalOptions::from_config(config)).await
    }

    /// Open the log on the calling thread (for synchronous callers; it does file I/O and may
    /// wait up to `lock_timeout` for the lock, so do not call it on an async executor).
    ///
    /// - A missing file is created complete and atomically (parent directories too).
    /// - An empty, short, truncated, foreign (another SQLite application or not SQLite at all)
    ///   or newer-format file is refused with an error naming it, and left untouched.
    /// - A torn last transaction in SQLite's journal is dropped by SQLite (it was never
    ///   acknowledged) and the committed prefix kept.
    /// - With `verify_on_open`, every pending entry is checked; damaged ones are quarantined
    ///   with an ERROR log (see [`SqliteWal::damaged`]).
    #[tracing::instrument(skip_all, fields(path = %path.as_ref().display()))]
    pub fn open_blocking(path: impl AsRef<Path>, options: WalOptions) -> Result<SqliteWal> {
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| io_error("open", &path, "cannot create its directory", e))?;
        let lock = file::lock(&path, options.lock_timeout)?;
        let exists = path.try_exists().map_err(|e| io_error("open", &path, "cannot stat", e))?;
        if !exists {
            file::create(&path)?;
        }
        file::precheck(&path)?;
        let mut conn = open_conn(&path)?;
        schema::check_identity(&conn, &path)?;
        configure_writer(&conn, &path)?;
        let (state, counters) = recover(&mut conn, &path, options.verify_on_open)?;
        let reader_conn = open_conn(&path)?;
        reader_conn
            .pragma_update(None, "query_only", "ON")
            .map_err(|e| sql_error("open", &path, e))?;
        // SQLite created the `-wal` journal file: make its directory entry durable.
        file::sync_dir(&dir)
            .map_err(|e| io_error("open", &path, "cannot fsync its directory", e))?;
        if !sibling(&path, "-wal").exists() {
            tracing::debug!("no -wal file yet; SQLite creates it (and fsyncs the directory) at the first commit");
        }
        tracing::info!(
            pending = counters.items,
            bytes = counters.bytes,
            damaged = counters.damaged,
            last_seq = state.last_seq,
            "WAL opened"
        );

        let shared = Arc::new(Shared {
            stats: parking_lot::Mutex::new(counters),
            commits: AtomicU64::new(0),
        });
        let (wtx, wrx) = mpsc::channel();
        let (rtx, rrx) = mpsc::channel();
        let writer = Writer {
            conn,
            path: path.clone(),
            state,
            counters,
            shared: shared.clone(),
            max_items: options.max_items,
            max_bytes: options.max_bytes,
            max_group_bytes: options.max_group_bytes.max(1),
            lock,
        };
        let reader = Reader { conn: reader_conn, path: path.clone(), writer: wtx.clone() };
        std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(wrx))
            .map_err(|e| io_error("open", &path, "cannot start the writer thread", e))?;
        std::thread::Builder::new()
            .name("wal-reader".into())
            .spawn(move || reader.run(rrx))
            .map_err(|e| io_error("open", &path, "cannot start the reader thread", e))?;
        Ok(SqliteWal { path: Arc::new(path), writer: wtx, reader: rtx, shared })
    }

    /// The file this log lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries set aside as damaged (quarantined or missing), oldest first. Empty on a
    /// healthy file.
    pub async fn damaged(&self) -> Result<Vec<DamagedRange>> {
        let (reply, rx) = oneshot::channel();
        self.reader.send(ReadCmd::Damaged { reply }).map_err(|_| stopped("damaged", &self.path))?;
        rx.await.map_err(|_| stopped("damaged", &self.path))?
    }

    /// Transactions the writer committed since open. With concurrent appenders it grows
    /// slower than the number of appends: that is group commit at work.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Number of rows in the damaged table (0 on a healthy file); no I/O.
    pub fn damaged_count(&self) -> u64 {
        self.shared.stats.lock().damaged
    }

    /// Finish queued writes, close both connections and release the file lock, waiting for
    /// all of it. (Dropping the handle does the same without waiting.)
    pub async fn close(self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.reader.send(ReadCmd::Close { reply }).is_ok() {
            let _ = rx.await;
        }
        let (reply, rx) = oneshot::channel();
        self.writer.send(WriteCmd::Close { reply }).map_err(|_| stopped("close", &self.path))?;
        rx.await.map_err(|_| stopped("close", &self.path))?
    }

    async fn write<T>(
        &self,
        op: &'static str,
        cmd: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteCmd,
    ) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(cmd(reply)).map_err(|_| stopped(op, &self.path))?;
        rx.await.map_err(|_| stopped(op, &self.path))?
    }
}

#[async_trait]
impl Wal for SqliteWal {
    /// Durable on return (committed with `synchronous=FULL`), all or nothing, grouped with
    /// concurrent appends into one transaction; Backpressure beyond the bounds.
    #[tracing::instrument(skip_all, fields(items = items.len()))]
    async fn append(&self, items: &[SyncItem]) -> Result<u64> {
        let mut records = Vec::with_capacity(items.len());
        let mut bytes = 0u64;
        for item in items {
            let record = frame_entry(item).map_err(|e| {
                record_error("append", &self.path, &format!("cannot encode `{}`", item.id()), e)
            })?;
            bytes += record.len() as u64;
            records.push(record);
        }
        self.write("append", |reply| WriteCmd::Append { records, bytes, reply }).await
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn peek(&self, limit: usize) -> Result<Vec<WalEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.reader
            .send(ReadCmd::Peek { limit, reply })
            .map_err(|_| stopped("peek", &self.path))?;
        rx.await.map_err(|_| stopped("peek", &self.path))?
    }

    #[tracing::instrument(skip_all, fields(through))]
    async fn remove_through(&self, through: u64) -> Result<u64> {
        self.write("remove_through", |reply| WriteCmd::RemoveThrough { through, reply }).await
    }

    async fn stats(&self) -> Result<WalStats> {
        let c: Counters = *self.shared.stats.lock();
        Ok(WalStats { items: c.items, bytes: c.bytes })
    }
}

#[async_trait]
impl SnapshotStore for SqliteWal {
    /// Atomic (one transaction replacing one row) and durable on return.
    #[tracing::instrument(skip_all, fields(bytes = snapshot.bytes.len(), entries = snapshot.entries))]
    async fn save_snapshot(&self, snapshot: &FilterSnapshot) -> Result<()> {
        let record = encode_snapshot(snapshot).map_err(|e| {
            record_error("save_snapshot", &self.path, "cannot encode the snapshot", e)
        })?;
        self.write("save_snapshot", |reply| WriteCmd::SaveSnapshot { record, reply }).await
    }

    /// The last saved snapshot; a damaged one is a Corrupt error (never a wrong snapshot).
    #[tracing::instrument(skip_all)]
    async fn load_snapshot(&self) -> Result<Option<FilterSnapshot>> {
        let (reply, rx) = oneshot::channel();
        self.reader
            .send(ReadCmd::LoadSnapshot { reply })
            .map_err(|_| stopped("load_snapshot", &self.path))?;
        rx.await.map_err(|_| stopped("load_snapshot", &self.path))?
    }
}
