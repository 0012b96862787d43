//! The SQLite WAL passes the conformance suite every `Wal` / `SnapshotStore` runs.

use std::sync::Arc;

use sync_engine_core::conformance::*;
use sync_engine_core::store::{SnapshotStore, Wal};
use sync_engine_wal::{SqliteWal, WalOptions};

#[tokio::test]
async fn wal_keeps_order_across_reopen_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    // A nested path: open creates the parent directories.
    let path = dir.path().join("nested/dirs/wal.db");
    wal_keeps_order_across_reopen(move || {
        let path = path.clone();
        async move { Ok(Arc::new(SqliteWal::open(&path, WalOptions::default()).await?) as Arc<dyn Wal>) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wal_drains_only_committed_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let wal = SqliteWal::open(dir.path().join("wal.db"), WalOptions::default()).await.unwrap();
    wal_drains_only_committed(&wal).await.unwrap();
    wal.close().await.unwrap();
}

#[tokio::test]
async fn wal_refuses_beyond_bound_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions::default().with_bounds(50, u64::MAX);
    let wal = SqliteWal::open(dir.path().join("wal.db"), opts).await.unwrap();
    wal_refuses_beyond_bound(&wal, 50).await.unwrap();
    wal.close().await.unwrap();
}

#[tokio::test]
async fn snapshots_round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal = SqliteWal::open(&path, WalOptions::default()).await.unwrap();
    snapshots_round_trip(&wal).await.unwrap();
    wal.close().await.unwrap();
    // The snapshot lives in the file: it survives reopen.
    let wal = SqliteWal::open(&path, WalOptions::default()).await.unwrap();
    let got = wal.load_snapshot().await.unwrap().expect("snapshot kept across reopen");
    assert_eq!(got.entries, 2);
    assert_eq!(&got.bytes[..], &[0u8, 255, 7, 0]);
}
