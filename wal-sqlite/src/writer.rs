//! The writer thread: the only code that writes the file after open.
//!
//! Group commit: the thread blocks for one command, then takes every command already waiting
//! in the channel (up to `max_group_bytes` of records), applies them in arrival order inside
//! ONE `BEGIN IMMEDIATE … COMMIT` (one fsync of the SQLite journal with `synchronous=FULL`),
//! and only then answers each caller. So an append's `Ok` always means "committed and
//! fsync'd", and N appenders waiting together cost one fsync instead of N.
//!
//! Gathering: the callers acknowledged by one commit resubmit a few microseconds apart, so
//! taking only what is already queued would alternate between a group of one and a group of
//! the rest. When the previous group held `k > 1` commands, the writer keeps collecting until
//! it has `k`, or nothing arrived for 200 µs, or 1 ms passed since the group's first command.
//! A lone appender (previous group of one) never waits.
//!
//! Bounds are checked here, serially, against the exact pending counts: an append that would
//! exceed them is refused with Backpressure and stores nothing, whatever else the group holds.
//! If any statement or the commit fails, the whole group is rolled back, the counters are
//! restored, and every caller of the group gets the error (an append may then be retried;
//! a duplicate is harmless under newer-wins).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use sync_engine_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;

use crate::errors::{file_error, sql_error};
use crate::file::LockFile;
use crate::record::{seal, LogState};
use crate::recover::{quarantine, write_state, Counters};
use crate::schema::SNAPSHOT_SLOT;
use crate::Shared;

/// Most commands one group commit takes, whatever their size.
const MAX_GROUP_COMMANDS: usize = 4096;
/// While gathering a group, stop when no new command arrived for this long...
const GATHER_IDLE: Duration = Duration::from_micros(200);
/// ... or when this long has passed since the group's first command.
const GATHER_MAX: Duration = Duration::from_millis(1);

/// A request to the writer thread.
pub(crate) enum WriteCmd {
    /// Append framed (unsealed) records; answers the last sequence number.
    Append { records: Vec<Vec<u8>>, bytes: u64, reply: oneshot::Sender<Result<u64>> },
    /// Remove every entry with `seq <= through`; answers how many were removed.
    RemoveThrough { through: u64, reply: oneshot::Sender<Result<u64>> },
    /// Replace the filter snapshot record.
    SaveSnapshot { record: Vec<u8>, reply: oneshot::Sender<Result<()>> },
    /// Move a pending entry that failed its check to the `damaged` table.
    Quarantine { seq: i64, reason: String, reply: oneshot::Sender<Result<()>> },
    /// Finish what is queued, close the connection, release the lock.
    Close { reply: oneshot::Sender<Result<()>> },
}

impl WriteCmd {
    fn weight(&self) -> usize {
        match self {
            WriteCmd::Append { bytes, .. } => usize::try_from(*bytes).unwrap_or(usize::MAX),
            WriteCmd::SaveSnapshot { record, .. } => record.len(),
            _ => 0,
        }
    }
}

/// What one command of a committed group gets back.
enum Outcome {
    Seq(u64),
    Count(u64),
    Done,
    Refused(Error),
}

/// The writer thread's state: the connection, the authoritative counters, the lock.
pub(crate) struct Writer {
    pub conn: Connection,
    pub path: PathBuf,
    pub state: LogState,
    pub counters: Counters,
    pub shared: Arc<Shared>,
    pub max_items: u64,
    pub max_bytes: u64,
    pub max_group_bytes: usize,
    pub lock: LockFile,
}

impl Writer {
    /// Serve commands until the channel closes or a Close arrives.
    pub fn run(mut self, rx: mpsc::Receiver<WriteCmd>) {
        let mut close_reply = None;
        let mut last_group = 1usize;
        while close_reply.is_none() {
            let Ok(first) = rx.recv() else {
                break;
            };
            let started = Instant::now();
            let mut group = Vec::new();
            let mut weight = 0usize;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                if let WriteCmd::Close { reply } = cmd {
                    close_reply = Some(reply);
                    break;
                }
                weight = weight.saturating_add(cmd.weight());
                group.push(cmd);
                if weight >= self.max_group_bytes || group.len() >= MAX_GROUP_COMMANDS {
                    break;
                }
                next = match rx.try_recv() {
                    Ok(cmd) => Some(cmd),
                    Err(mpsc::TryRecvError::Empty) if group.len() < last_group => {
                        // Wait (woken on arrival) for the rest of the previous group's callers.
                        let left = GATHER_MAX.saturating_sub(started.elapsed());
                        rx.recv_timeout(GATHER_IDLE.min(left)).ok()
                    }
                    Err(_) => None,
                };
            }
            if !group.is_empty() {
                last_group = group.len();
                self.commit_group(group);
            }
        }
        let Writer { conn, path, lock, .. } = self;
        let closed = conn.close().map_err(|(_, e)| sql_error("close", &path, e));
        drop(lock);
        tracing::debug!(path = %path.display(), "WAL writer stopped");
        if let Some(reply) = close_reply {
            let _ = reply.send(closed);
        }
    }

    fn commit_group(&mut self, mut group: Vec<WriteCmd>) {
        let span =
            tracing::debug_span!("wal.commit", path = %self.path.display(), commands = group.len());
        let _enter = span.enter();
        let before = (self.state, self.counters);
        let result = self.apply(&mut group);
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                self.state = before.0;
                self.counters = before.1;
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                let err = sql_error("commit", &self.path, e);
                tracing::error!(error = %err, "WAL group commit failed; every request of the group gets the error");
                for cmd in group {
                    reply_err(cmd, &err);
                }
                return;
            }
        };
        *self.shared.stats.lock() = self.counters;
        self.shared.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (cmd, outcome) in group.into_iter().zip(outcomes) {
            reply(cmd, outcome);
        }
    }

    fn apply(&mut self, group: &mut [WriteCmd]) -> rusqlite::Result<Vec<Outcome>> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut state_dirty = false;
        for cmd in group.iter_mut() {
            let outcome = match cmd {
                WriteCmd::Append { records, bytes, .. } => {
                    let n = records.len() as u64;
                    let items_after = self.counters.items.saturating_add(n);
                    let bytes_after = self.counters.bytes.saturating_add(*bytes);
                    if n > 0 && (items_after > self.max_items || bytes_after > self.max_bytes) {
                        outcomes.push(Outcome::Refused(backpressure(
                            &self.path,
                            &self.counters,
                            n,
                            *bytes,
                            self.max_items,
                            self.max_bytes,
                        )));
                        continue;
                    }
                    let mut stmt =
                        tx.prepare_cached("INSERT INTO entries(seq, record) VALUES (?1, ?2)")?;
                    for record in records.iter_mut() {
                        let seq = self.state.last_seq + 1;
                        seal(record, seq);
                        stmt.execute(params![seq as i64, record.as_slice()])?;
                        self.state.last_seq = seq;
                    }
                    self.counters.items = items_after;
                    self.counters.bytes = bytes_after;
                    state_dirty |= n > 0;
                    Outcome::Seq(self.state.last_seq)
                }
                WriteCmd::RemoveThrough { through, .. } => {
                    let t = (*through).min(self.state.last_seq);
                    let (n, b): (i64, i64) = tx
                        .prepare_cached("SELECT count(*), coalesce(sum(length(record)), 0) FROM entries WHERE seq <= ?1")?
                        .query_row([t as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    tx.prepare_cached("DELETE FROM entries WHERE seq <= ?1")?
                        .execute([t as i64])?;
                    let (n, b) = (u64::try_from(n).unwrap_or(0), u64::try_from(b).unwrap_or(0));
                    self.counters.items = self.counters.items.saturating_sub(n);
                    self.counters.bytes = self.counters.bytes.saturating_sub(b);
                    if t > self.state.last_removed {
                        self.state.last_removed = t;
                        state_dirty = true;
                    }
                    Outcome::Count(n)
                }
                WriteCmd::SaveSnapshot { record, .. } => {
                    tx.prepare_cached("INSERT OR REPLACE INTO meta(slot, record) VALUES (?1, ?2)")?
                        .execute(params![SNAPSHOT_SLOT, record.as_slice()])?;
                    Outcome::Done
                }
                WriteCmd::Quarantine { seq, reason, .. } => {
                    if let Some(len) = quarantine(&tx, *seq, reason)? {
                        self.counters.items = self.counters.items.saturating_sub(1);
                        self.counters.bytes = self.counters.bytes.saturating_sub(len);
                        self.counters.damaged += 1;
                    }
                    Outcome::Done
                }
                WriteCmd::Close { .. } => Outcome::Done,
            };
            outcomes.push(outcome);
        }
        if state_dirty {
            write_state(&tx, &self.state)?;
        }
        tx.commit()?;
        Ok(outcomes)
    }
}

fn backpressure(
    path: &Path,
    c: &Counters,
    n: u64,
    bytes: u64,
    max_items: u64,
    max_bytes: u64,
) -> Error {
    file_error(
        ErrorKind::Backpressure,
        "append",
        path,
        format!(
            "WAL full: {} items / {} bytes pending, appending {n} items / {bytes} bytes would exceed the limits of {max_items} items / {max_bytes} bytes (nothing stored)",
            c.items, c.bytes
        ),
    )
}

/// The same error for another caller of the group (the source's text folded into the message).
fn copy_err(e: &Error) -> Error {
    let detail = std::error::Error::source(e).map(|s| format!(": {s}")).unwrap_or_default();
    Error::new(e.kind(), format!("{}{detail}", e.message()))
        .with_status(e.status())
        .with_operation(e.operation().to_string())
        .with_backend(e.backend().to_string())
}

fn reply_err(cmd: WriteCmd, e: &Error) {
    match cmd {
        WriteCmd::Append { reply, .. } | WriteCmd::RemoveThrough { reply, .. } => {
            let _ = reply.send(Err(copy_err(e)));
        }
        WriteCmd::SaveSnapshot { reply, .. }
        | WriteCmd::Quarantine { reply, .. }
        | WriteCmd::Close { reply } => {
            let _ = reply.send(Err(copy_err(e)));
        }
    }
}

fn reply(cmd: WriteCmd, outcome: Outcome) {
    match (cmd, outcome) {
        (WriteCmd::Append { reply, .. } | WriteCmd::RemoveThrough { reply, .. }, o) => {
            let _ = reply.send(match o {
                Outcome::Seq(n) | Outcome::Count(n) => Ok(n),
                Outcome::Refused(e) => Err(e),
                Outcome::Done => Ok(0),
            });
        }
        (
            WriteCmd::SaveSnapshot { reply, .. }
            | WriteCmd::Quarantine { reply, .. }
            | WriteCmd::Close { reply },
            o,
        ) => {
            let _ = reply.send(match o {
                Outcome::Refused(e) => Err(e),
                _ => Ok(()),
            });
        }
    }
}
