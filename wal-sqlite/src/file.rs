//! The file on disk before SQLite touches it: the lock, atomic creation, and the checks that
//! turn an empty, truncated or foreign file into a clear error instead of a fresh empty log.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use sync_engine_core::{ErrorKind, Result};

use crate::errors::{file_error, io_error, sql_error};
use crate::record::{encode_state, LogState};
use crate::schema;

const OP: &str = "open";
/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The two magics of a SQLite `-wal` file header (big-endian u32, checksum byte order).
const WAL_MAGICS: [u32; 2] = [0x377f_0682, 0x377f_0683];

/// `path` with `suffix` appended to its file name (`wal.db` → `wal.db-wal`).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// An exclusive advisory lock on `<path>.lock`, held for the life of the log. It keeps two
/// handles (in this process or another) from appending to one file with separate counters.
/// The kernel releases it when the holder exits, even by SIGKILL.
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

/// Take the lock, waiting up to `timeout` for a previous holder (a handle still closing) to
/// release it.
pub(crate) fn lock(path: &Path, timeout: Duration) -> Result<LockFile> {
    let lock_path = sibling(path, ".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            io_error(OP, path, &format!("cannot create the lock file {}", lock_path.display()), e)
        })?;
    let start = Instant::now();
    loop {
        match try_lock(&file) {
            Ok(true) => return Ok(LockFile { _file: file }),
            Ok(false) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            Ok(false) => {
                return Err(file_error(
                    ErrorKind::Unavailable,
                    OP,
                    path,
                    format!(
                        "in use by another handle or process (lock {} still held after {:?})",
                        lock_path.display(),
                        timeout
                    ),
                ))
            }
            Err(e) => return Err(io_error(OP, path, "cannot lock the lock file", e)),
        }
    }
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own for the duration of the call; no memory is
    // passed to the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// fsync a directory so that a created or renamed entry in it survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Create a new, empty log at `path` atomically: build it complete under a temporary name
/// (rollback journal, synchronous FULL), fsync it, rename it into place and fsync the
/// directory. So a file at `path` is always a complete log, and an empty or short file there
/// is damage, never a log that was being created.
pub(crate) fn create(path: &Path) -> Result<()> {
    let dir = parent(path);
    fs::create_dir_all(&dir).map_err(|e| io_error(OP, path, "cannot create its directory", e))?;
    let wal = sibling(path, "-wal");
    if wal.exists() {
        return Err(file_error(
            ErrorKind::Corrupt,
            OP,
            path,
            format!(
                "is missing but its journal {} exists: refusing to create a new log over an orphaned journal (move it aside)",
                wal.display()
            ),
        ));
    }
    let tmp = sibling(path, ".creating");
    for leftover in
        [tmp.clone(), sibling(&tmp, "-journal"), sibling(&tmp, "-wal"), sibling(&tmp, "-shm")]
    {
        remove_if_present(&leftover).map_err(|e| {
            io_error(OP, path, "cannot remove a leftover of an earlier creation", e)
        })?;
    }
    let sql = |e| sql_error(OP, &tmp, e);
    let mut conn = Connection::open(&tmp).map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
    let state = encode_state(&LogState::default())
        .map_err(|e| file_error(ErrorKind::Io, OP, path, e.to_string()))?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(&schema::create_sql()).map_err(sql)?;
    tx.execute(
        "INSERT INTO meta(slot, record) VALUES (?1, ?2)",
        rusqlite::params![schema::STATE_SLOT, state],
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(OP, path, "cannot fsync the new log", e))?;
    fs::rename(&tmp, path)
        .map_err(|e| io_error(OP, path, "cannot move the new log into place", e))?;
    sync_dir(&dir).map_err(|e| io_error(OP, path, "cannot fsync its directory", e))?;
    tracing::info!(path = %path.display(), "created a new WAL file");
    Ok(())
}

/// Checks on the raw bytes before SQLite opens the file: an empty, short, foreign or
/// truncated file is a clear error naming it (and the file is left untouched).
pub(crate) fn precheck(path: &Path) -> Result<()> {
    let corrupt = |msg: String| file_error(ErrorKind::Corrupt, OP, path, msg);
    let mut file = File::open(path).map_err(|e| io_error(OP, path, "cannot open", e))?;
    let len = file.metadata().map_err(|e| io_error(OP, path, "cannot stat", e))?.len();
    if len == 0 {
        return Err(corrupt(
            "is empty (0 bytes): truncated or not a WAL file; a new log is only ever created complete, so this is damage (file left untouched)".into(),
        ));
    }
    let mut header = [0u8; 100];
    let mut got = 0;
    while got < header.len() {
        match file.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(io_error(OP, path, "cannot read the header", e)),
        }
    }
    if got < header.len() || !header.starts_with(SQLITE_MAGIC) {
        return Err(corrupt(format!(
            "is not a SQLite database ({len} bytes, no SQLite header): a foreign or damaged file (left untouched)"
        )));
    }
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let page_count =
        u64::from(u32::from_be_bytes([header[28], header[29], header[30], header[31]]));
    // The in-header page count is trustworthy only when its "version-valid-for" number equals
    // the change counter (always so for files written by SQLite >= 3.7).
    let count_valid = header[92..96] == header[24..28];
    let wal_len = fs::metadata(sibling(path, "-wal")).map(|m| m.len()).unwrap_or(0);
    if wal_len == 0 && count_valid && len < page_count.saturating_mul(page_size) {
        return Err(corrupt(format!(
            "is truncated: its header promises {page_count} pages of {page_size} bytes ({} bytes) but the file has {len} bytes (left untouched)",
            page_count.saturating_mul(page_size)
        )));
    }
    warn_if_torn(path, wal_len);
    Ok(())
}

/// SQLite ignores every frame of its `-wal` file after the last intact commit, so a torn last
/// transaction (never acknowledged: the ack waits for its fsync) is dropped and the committed
/// prefix kept. This only makes it visible: a file ending in a partial frame was cut mid-write.
fn warn_if_torn(path: &Path, wal_len: u64) {
    let wal = sibling(path, "-wal");
    let mut head = [0u8; 32];
    let Ok(mut f) = File::open(&wal) else { return };
    if wal_len < 32 || f.read_exact(&mut head).is_err() {
        return;
    }
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let page_size = u64::from(u32::from_be_bytes([head[8], head[9], head[10], head[11]]));
    if !WAL_MAGICS.contains(&magic) || page_size == 0 {
        return;
    }
    let frame = 24 + page_size;
    let partial = (wal_len - 32) % frame;
    if partial != 0 {
        tracing::warn!(
            path = %wal.display(),
            bytes = partial,
            "the SQLite journal ends in a torn frame (a write cut by a crash); SQLite keeps every transaction committed before it and drops the unacknowledged tail"
        );
    }
}

/// A journal size limit that is a whole number of frames, so a journal truncated to it does
/// not look torn to [`warn_if_torn`].
pub(crate) fn journal_size_limit(page_size: u64) -> u64 {
    32 + 16_384 * (24 + page_size)
}
