//! The reader thread: `peek`, snapshot loads and the damage report, on a second connection
//! (`query_only`), so reads never wait behind a group commit's fsync and never run on the
//! async executor.
//!
//! SQLite's WAL mode gives every statement a snapshot of the last commit: an entry is visible
//! to `peek` as soon as its append returned, and gone as soon as `remove_through` returned.

use std::path::PathBuf;

use rusqlite::Connection;
use std::sync::mpsc;
use sync_engine_core::store::{FilterSnapshot, WalEntry};
use sync_engine_core::{ErrorKind, Result};

use tokio::sync::oneshot;

use crate::errors::{file_error, record_error, sql_error, stopped};
use crate::record::{decode_record, decode_snapshot, RecordError};
use crate::schema::SNAPSHOT_SLOT;
use crate::writer::WriteCmd;

/// A row of the `damaged` table: one quarantined entry, or a range of missing ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// First sequence number concerned.
    pub first_seq: i64,
    /// Last sequence number concerned (equal to `first_seq` for a quarantined entry).
    pub last_seq: i64,
    /// True when the raw bytes of the entry are kept (a quarantined entry); false for a
    /// range found missing.
    pub has_record: bool,
    /// Why it was set aside.
    pub reason: String,
    /// When, unix ms.
    pub detected_at_ms: i64,
}

/// A request to the reader thread.
pub(crate) enum ReadCmd {
    Peek { limit: usize, reply: oneshot::Sender<Result<Vec<WalEntry>>> },
    LoadSnapshot { reply: oneshot::Sender<Result<Option<FilterSnapshot>>> },
    Damaged { reply: oneshot::Sender<Result<Vec<DamagedRange>>> },
    Close { reply: oneshot::Sender<()> },
}

/// The reader thread's state.
pub(crate) struct Reader {
    pub conn: Connection,
    pub path: PathBuf,
    /// To ask the writer to quarantine an entry found damaged.
    pub writer: mpsc::Sender<WriteCmd>,
}

impl Reader {
    /// Serve requests until the channel closes or a Close arrives.
    pub fn run(self, rx: mpsc::Receiver<ReadCmd>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                ReadCmd::Peek { limit, reply } => {
                    let _ = reply.send(self.peek(limit));
                }
                ReadCmd::LoadSnapshot { reply } => {
                    let _ = reply.send(self.load_snapshot());
                }
                ReadCmd::Damaged { reply } => {
                    let _ = reply.send(self.damaged());
                }
                ReadCmd::Close { reply } => {
                    drop(self);
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn peek(&self, limit: usize) -> Result<Vec<WalEntry>> {
        let sql = |e| sql_error("peek", &self.path, e);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // The entry last sent to quarantine: met again, the move did not happen (a damaged
        // B-tree whose key lookup misses a row its scan returns), and looping would never end.
        let mut quarantined: Option<i64> = None;
        loop {
            let mut out = Vec::new();
            let mut bad = None;
            {
                let mut stmt = self
                    .conn
                    .prepare_cached("SELECT seq, record FROM entries ORDER BY seq LIMIT ?1")
                    .map_err(sql)?;
                let mut rows = stmt.query([limit]).map_err(sql)?;
                while let Some(row) = rows.next().map_err(sql)? {
                    let seq: i64 = row.get(0).map_err(sql)?;
                    let decoded = match (u64::try_from(seq), row.get_ref(1).map_err(sql)?) {
                        (Ok(useq), rusqlite::types::ValueRef::Blob(b)) => decode_record(useq, b)
                            .map(|item| WalEntry { seq: useq, item })
                            .map_err(|e| e.to_string()),
                        (Err(_), _) => Err(format!("negative sequence number {seq}")),
                        _ => Err("record is not a blob".to_string()),
                    };
                    match decoded {
                        Ok(entry) => out.push(entry),
                        Err(reason) => {
                            bad = Some((seq, reason));
                            break;
                        }
                    }
                }
            }
            let Some((seq, reason)) = bad else {
                return Ok(out);
            };
            if quarantined == Some(seq) {
                let msg = format!(
                    "entry {seq} is damaged ({reason}) and could not be moved to the `damaged` table: the file's structure is corrupt; move the file aside (it holds unsent writes) and restore it or start with a new WAL"
                );
                tracing::error!(path = %self.path.display(), seq, "{msg}");
                return Err(file_error(ErrorKind::Corrupt, "peek", &self.path, msg));
            }
            quarantined = Some(seq);
            tracing::error!(path = %self.path.display(), seq, reason = %reason, "WAL entry failed its check at peek: quarantined into the `damaged` table, NOT drained");
            let (reply, wait) = oneshot::channel();
            self.writer
                .send(WriteCmd::Quarantine { seq, reason, reply })
                .map_err(|_| stopped("peek", &self.path))?;
            wait.blocking_recv().map_err(|_| stopped("peek", &self.path))??;
        }
    }

    fn load_snapshot(&self) -> Result<Option<FilterSnapshot>> {
        let sql = |e| sql_error("load_snapshot", &self.path, e);
        let mut stmt =
            self.conn.prepare_cached("SELECT record FROM meta WHERE slot = ?1").map_err(sql)?;
        let mut rows = stmt.query([SNAPSHOT_SLOT]).map_err(sql)?;
        let Some(row) = rows.next().map_err(sql)? else {
            return Ok(None);
        };
        let decoded = match row.get_ref(0).map_err(sql)? {
            rusqlite::types::ValueRef::Blob(raw) => decode_snapshot(raw),
            _ => Err(RecordError::Decode("the stored snapshot is not a blob".into())),
        };
        decoded.map(Some).map_err(|e| {
            let err = record_error(
                "load_snapshot",
                &self.path,
                "the stored filter snapshot is damaged",
                e,
            );
            tracing::error!(error = %err, "filter snapshot unreadable");
            err
        })
    }

    fn damaged(&self) -> Result<Vec<DamagedRange>> {
        let sql = |e| sql_error("damaged", &self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT first_seq, last_seq, record IS NOT NULL, reason, detected_at_ms FROM damaged ORDER BY first_seq",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(DamagedRange {
                    first_seq: r.get(0)?,
                    last_seq: r.get(1)?,
                    has_record: r.get(2)?,
                    reason: r.get(3)?,
                    detected_at_ms: r.get(4)?,
                })
            })
            .map_err(sql)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql)
    }
}
