//! The SQLite store (always run: a temporary file).
#![cfg(feature = "sqlite")]

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use sqlx::{Connection, Row};
use sync_engine_core::store::{ArchiveStore, MerkleExt};
use sync_engine_core::{Config, ErrorKind, ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::{SqlOptions, SqlStore, SCHEMA_VERSION};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[tokio::test]
async fn conformance_suite() {
    let (store, _dir) = sqlite_store(256).await;
    conformance(&store).await;
    // The same suite with a tiny split threshold, so every path node is split.
    let (store, _dir) = sqlite_store(2).await;
    conformance(&store).await;
}

#[tokio::test]
async fn payloads_and_ids_round_trip() {
    let (store, _dir) = sqlite_store(256).await;
    round_trips(&store).await;
}

#[tokio::test]
async fn wide_nodes_split_and_stay_bounded() {
    let (store, _dir) = sqlite_store(16).await;
    wide_node(&store, 16, 3000).await;
    let (store, _dir) = sqlite_store(256).await;
    wide_node(&store, 256, 5000).await;
}

#[tokio::test]
async fn a_fold_larger_than_one_statement_writes_every_row() {
    let opts = SqlOptions { fold_changes: usize::MAX, ..options("big", 2) };
    let (store, _dir) = sqlite_store_with(opts).await;
    large_fold::a_fold_larger_than_a_statement(&store).await;
}

#[tokio::test]
async fn four_concurrent_writers_lose_no_merkle_update() {
    let dir = tempfile::tempdir().unwrap();
    let url = SecretUrl::new(format!("sqlite:{}/conc.db", dir.path().display()));
    let opts = options("conc", 4);
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(reopen(&url, &opts).await);
    }
    concurrent_writers(stores).await;
}

#[tokio::test]
async fn interleaved_writers_invalidate_each_others_node_cache() {
    // A and B share the tables; each has its own node cache. Alternating writes must make each
    // notice the other's commits (the lock row's generation) and never reuse stale rows.
    let dir = tempfile::tempdir().unwrap();
    let url = SecretUrl::new(format!("sqlite:{}/alt.db", dir.path().display()));
    let opts = options("alt", 3);
    let a = reopen(&url, &opts).await;
    let b = reopen(&url, &opts).await;
    let uncached = reopen(&url, &SqlOptions { node_cache_rows: 0, ..opts.clone() }).await;
    for round in 0..20u64 {
        let writer = match round % 3 {
            0 => &a,
            1 => &b,
            _ => &uncached,
        };
        let items: Vec<SyncItem> = (0..15)
            .map(|i| {
                let id =
                    ObjectId::new(&format!("alt.p{}.k{}", i % 4, (i * 7 + round) % 23)).unwrap();
                if (i + round) % 5 == 0 {
                    SyncItem::tombstone(id, round + 1)
                } else {
                    SyncItem::new(id, round + 1, format!("r{round}i{i}"))
                }
            })
            .collect();
        writer.put_batch(&items).await.unwrap();
        let check = a.verify_merkle().await.unwrap();
        assert!(check.is_ok(), "round {round}: {:?}", check.problems);
        assert_eq!(a.root_hash().await.unwrap(), check.expected_root);
    }
}

#[tokio::test]
async fn batches_of_new_ids_and_of_stored_ids_alternate() {
    let (store, _dir) = sqlite_store(4).await;
    fresh::new_ids_then_stored_ids(&store).await;
}

#[tokio::test]
async fn purge_removes_only_old_tombstones() {
    let (store, _dir) = sqlite_store(256).await;
    purge(&store).await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// After random batches (writes, overwrites, deletes, ids that are prefixes of other ids)
    /// the SQL tree equals the in-memory reference: outcomes, reads, root, every node, diffs.
    #[test]
    fn merkle_tree_equals_the_reference(
        seed in any::<u64>(),
        threshold in prop::sample::select(vec![2usize, 3, 8, 256]),
        wide in 0usize..60,
        batches in 1usize..12,
        size in 1usize..40,
        slice in prop::sample::select(vec![1usize, 3, 8192]),
    ) {
        rt().block_on(async {
            // Folds in slices of one change, of a few, and in one piece: the same tree.
            let opts = SqlOptions { fold_slice_changes: slice, ..options("lite", threshold) };
            let (store, _dir) = sqlite_store_with(opts).await;
            let ns = sync_engine_core::conformance::unique_ns("prop");
            let universe = id_universe(&ns, wide);
            let ops = random_batches(seed, &universe, batches, size);
            check_against_reference(&store, &ns, &universe, &ops).await;
        });
    }
}

#[tokio::test]
async fn file_and_directory_are_created_in_wal_mode_with_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/c/archive.db");
    let url = SecretUrl::new(format!("sqlite://{}", path.display()));
    let opts = options("schema", 256);
    let store = SqlStore::connect(&url, opts.clone()).await.unwrap();
    assert!(path.exists(), "the file and its parent directories are created");
    store.close().await;
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let mode: String =
        sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    let meta = format!("SELECT value FROM {}meta WHERE name = 'schema_version'", opts.table_prefix);
    let v: i64 = sqlx::query(sqlx::AssertSqlSafe(meta)).fetch_one(&mut conn).await.unwrap().get(0);
    assert_eq!(v, SCHEMA_VERSION);
    // Reconnecting to an existing schema works; a newer schema is refused.
    SqlStore::connect(&url, opts.clone()).await.unwrap().close().await;
    let bump =
        format!("UPDATE {}meta SET value = 99 WHERE name = 'schema_version'", opts.table_prefix);
    sqlx::query(sqlx::AssertSqlSafe(bump)).execute(&mut conn).await.unwrap();
    let e = SqlStore::connect(&url, opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("99"), "{e}");
}

#[tokio::test]
async fn from_config_and_in_memory_urls() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        sql_url: SecretUrl::new(format!("sqlite:{}/cfg/x.db", dir.path().display())),
        sql_pool_size: 2,
        ..Config::default()
    };
    let store = SqlStore::from_config(&config).await.unwrap();
    store.ping().await.unwrap();
    let mem =
        SqlStore::connect(&SecretUrl::new("sqlite::memory:"), SqlOptions::default()).await.unwrap();
    let id = ObjectId::new("m.a").unwrap();
    mem.put_batch(&[SyncItem::new(id.clone(), 1, "x")]).await.unwrap();
    assert_eq!(mem.count("m.").await.unwrap(), 1);
    assert_ne!(mem.root_hash().await.unwrap(), sync_engine_core::merkle::Digest::ZERO);
}

#[tokio::test]
async fn bad_urls_and_options_are_refused_by_name() {
    let e = SqlStore::connect(&SecretUrl::new("redis://u:hunter2@h/"), SqlOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let opts = SqlOptions { pool_size: 0, ..SqlOptions::default() };
    let e = SqlStore::connect(&SecretUrl::new("sqlite::memory:"), opts).await.unwrap_err();
    assert!(e.to_string().contains("pool_size"), "{e}");
    let e = SqlStore::connect(&SecretUrl::new("sqlite:x.db?mode=bogus"), SqlOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

#[cfg(not(feature = "mysql"))]
#[tokio::test]
async fn a_driver_not_compiled_in_is_unsupported() {
    let e =
        SqlStore::connect(&SecretUrl::new("mysql://root@127.0.0.1/test"), SqlOptions::default())
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("mysql"), "{e}");
}

#[tokio::test]
async fn a_busy_database_is_temporary_not_lost() {
    // Another connection holds the write lock longer than the busy timeout: put_batch reports
    // a retryable error and stores nothing; after the lock is released the write goes through.
    let dir = tempfile::tempdir().unwrap();
    let file = format!("{}/busy.db", dir.path().display());
    let opts = SqlOptions { busy_timeout: Duration::from_millis(100), ..options("busy", 256) };
    let store = SqlStore::connect(&SecretUrl::new(format!("sqlite:{file}")), opts).await.unwrap();
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite:{file}")).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut blocker).await.unwrap();
    let id = ObjectId::new("busy.a").unwrap();
    let e = store.put_batch(&[SyncItem::new(id.clone(), 1, "x")]).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert_eq!(store.count("busy.").await.unwrap(), 0);
    store.put_batch(&[SyncItem::new(id, 1, "x")]).await.unwrap();
    assert_eq!(store.count("busy.").await.unwrap(), 1);
}
