//! Files that are not a usable WAL are refused with an error naming them, and left untouched;
//! two handles on one file are refused.

#[path = "support/util.rs"]
mod util;

use std::time::Duration;

use sync_engine_core::store::Wal;
use sync_engine_core::{ErrorKind, Status};
use sync_engine_wal::{SqliteWal, WalOptions, FORMAT_VERSION};
use util::{item, sibling};

fn assert_refused(
    path: &std::path::Path,
    e: &sync_engine_core::Error,
    kind: ErrorKind,
    words: &str,
) {
    let msg = e.to_string();
    assert_eq!(e.kind(), kind, "{msg}");
    assert!(msg.contains(&path.display().to_string()), "error does not name the file: {msg}");
    assert!(msg.contains(words), "error does not say `{words}`: {msg}");
}

#[tokio::test]
async fn a_foreign_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = b"these are someone's notes, not a database\n".repeat(10);
    std::fs::write(&path, &text).unwrap();
    let e = SqliteWal::open(&path, WalOptions::default()).await.unwrap_err();
    assert_refused(&path, &e, ErrorKind::Corrupt, "not a SQLite database");
    assert_eq!(std::fs::read(&path).unwrap(), text);
    assert!(!sibling(&path, "-wal").exists());
}

#[tokio::test]
async fn another_applications_sqlite_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ada');")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let e = SqliteWal::open(&path, WalOptions::default()).await.unwrap_err();
    assert_refused(&path, &e, ErrorKind::Corrupt, "not a sync-engine WAL");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a foreign database must not be modified");
}

#[tokio::test]
async fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal = SqliteWal::open(&path, WalOptions::default()).await.unwrap();
    wal.append(&[item(1)]).await.unwrap();
    wal.close().await.unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", FORMAT_VERSION + 1).unwrap();
    }
    let e = SqliteWal::open(&path, WalOptions::default()).await.unwrap_err();
    assert_refused(&path, &e, ErrorKind::Unsupported, "newer than this build supports");
}

#[tokio::test]
async fn an_empty_file_is_damage_not_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    std::fs::write(&path, b"").unwrap();
    let e = SqliteWal::open(&path, WalOptions::default()).await.unwrap_err();
    assert_refused(&path, &e, ErrorKind::Corrupt, "empty (0 bytes)");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[tokio::test]
async fn an_orphaned_journal_is_not_overwritten_by_a_new_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    std::fs::write(sibling(&path, "-wal"), b"journal bytes of a deleted log").unwrap();
    let e = SqliteWal::open(&path, WalOptions::default()).await.unwrap_err();
    assert_refused(&path, &e, ErrorKind::Corrupt, "orphaned journal");
    assert!(!path.exists(), "no new log created over the orphaned journal");
}

#[tokio::test]
async fn a_second_handle_on_one_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let first = SqliteWal::open(&path, WalOptions::default()).await.unwrap();
    let opts = WalOptions { lock_timeout: Duration::from_millis(100), ..WalOptions::default() };
    let e = SqliteWal::open(&path, opts.clone()).await.unwrap_err();
    assert_refused(&path, &e, ErrorKind::Unavailable, "in use by another handle");
    assert_eq!(e.status(), Status::Temporary);
    first.close().await.unwrap();
    // Once closed, the lock is free.
    SqliteWal::open(&path, opts).await.unwrap().close().await.unwrap();
}

#[tokio::test]
async fn a_dropped_handle_releases_the_file_for_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    for round in 0..5u64 {
        let wal = SqliteWal::open(&path, WalOptions::default()).await.unwrap();
        wal.append(&[item(round)]).await.unwrap();
        assert_eq!(wal.stats().await.unwrap().items, round + 1);
        drop(wal); // no close: the next open waits for the threads to let go
    }
}

#[test]
fn open_blocking_works_without_a_runtime_and_creates_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/wal.db");
    let wal = SqliteWal::open_blocking(&path, WalOptions::default()).unwrap();
    assert!(path.exists());
    assert_eq!(wal.path(), path.as_path());
    drop(wal);
}

#[tokio::test]
async fn open_from_config_uses_the_configured_path_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let config = sync_engine_core::Config {
        wal_path: dir.path().join("cfg/wal.db"),
        wal_max_items: 2,
        ..sync_engine_core::Config::default()
    };
    let wal = SqliteWal::open_from_config(&config).await.unwrap();
    wal.append(&[item(1), item(2)]).await.unwrap();
    let e = wal.append(&[item(3)]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backpressure);
    assert!(config.wal_path.exists());
}
