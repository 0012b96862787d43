//! The Merkle leaf-change log and its fold (SQLite): a batch's leaf changes committed with its
//! items are never lost before they are folded (restart, crash), a damaged log row is reported
//! and changes nothing, a fold failing midway applies nothing, a v1 store is migrated, and the
//! entries table is checked.

mod common;

use std::collections::BTreeMap;

use common::options;
use sqlx::{AssertSqlSafe, Connection, SqliteConnection};
use sync_engine_core::merkle::{Digest, MemTree};
use sync_engine_core::store::{ArchiveExt, ArchiveStore, MerkleExt};
use sync_engine_core::{ErrorKind, ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::{SqlOptions, SqlStore};

fn item(id: &str, v: u64) -> SyncItem {
    SyncItem::new(ObjectId::new(id).unwrap(), v, format!("{id}@{v}"))
}

/// Batches of deep and flat ids, rewrites and tombstones among them.
fn batches() -> Vec<Vec<SyncItem>> {
    (0..6u64)
        .map(|b| {
            let mut batch: Vec<SyncItem> = (0..300u64)
                .map(|i| {
                    let n = (b * 97 + i * 31) % 700;
                    let id = if n % 2 == 0 {
                        format!("t{}.u{}.i{n}", n % 7, n % 13)
                    } else {
                        format!("flat.{n}")
                    };
                    item(&id, b + 1)
                })
                .collect();
            if b % 2 == 1 {
                let id = batch[0].id().clone();
                batch.push(SyncItem::tombstone(id, b + 10));
            }
            batch
        })
        .collect()
}

fn newest_wins(it: &SyncItem, old: Option<&SyncItem>) -> bool {
    sync_engine_core::newer_wins(&it.stamp(), old.map(|o| o.stamp()).as_ref())
}

/// The root a tree built from scratch over `items` (newest version of each id) has.
fn expected_root(written: &[Vec<SyncItem>]) -> Digest {
    let mut newest: BTreeMap<String, SyncItem> = BTreeMap::new();
    for it in written.iter().flatten() {
        let keep = newest_wins(it, newest.get(it.id().as_str()));
        if keep {
            newest.insert(it.id().as_str().to_owned(), it.clone());
        }
    }
    let mut tree = MemTree::new();
    for it in newest.values().filter(|i| !i.is_tombstone()) {
        tree.upsert(it.id().as_str(), it.leaf_digest()).unwrap();
    }
    tree.root_hash()
}

async fn store_at(dir: &tempfile::TempDir, opts: &SqlOptions) -> (SqlStore, SecretUrl) {
    let url = SecretUrl::new(format!("sqlite://{}/archive.db", dir.path().display()));
    (SqlStore::connect(&url, opts.clone()).await.unwrap(), url)
}

async fn raw(dir: &tempfile::TempDir) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}/archive.db", dir.path().display()))
        .await
        .unwrap()
}

async fn exec(conn: &mut SqliteConnection, sql: String) {
    sqlx::query(AssertSqlSafe(sql)).execute(conn).await.unwrap();
}

#[tokio::test]
async fn logged_changes_survive_a_crash_before_their_fold() {
    let dir = tempfile::tempdir().unwrap();
    // Never folds by itself: everything stays in the log until a Merkle read.
    let opts = SqlOptions { fold_changes: usize::MAX, ..options("crash", 8) };
    let (store, url) = store_at(&dir, &opts).await;
    let written = batches();
    for b in &written {
        store.put_batch(b).await.unwrap();
    }
    // A crash: the process is gone without a fold or a clean close.
    std::mem::forget(store);
    let store = SqlStore::connect(&url, opts.clone()).await.unwrap();
    assert_eq!(store.root_hash().await.unwrap(), expected_root(&written));
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(store.fold().await.unwrap(), 0, "the Merkle read folded everything");
    let last = written.last().unwrap();
    let got = store.get(last[1].id()).await.unwrap().unwrap();
    assert_eq!(got.content(), last[1].content());
}

#[tokio::test]
async fn merkle_reads_fold_first_and_periodic_folds_agree() {
    let dir = tempfile::tempdir().unwrap();
    let written = batches();
    let mut roots = Vec::new();
    for (n, fold_changes) in [1usize, 250, usize::MAX].into_iter().enumerate() {
        let opts = SqlOptions { fold_changes, ..options(&format!("every{n}"), 8) };
        let (store, _) = store_at(&dir, &opts).await;
        let mut so_far = Vec::new();
        for b in &written {
            store.put_batch(b).await.unwrap();
            so_far.push(b.clone());
            // Every Merkle answer describes every committed item, folded or not.
            assert_eq!(store.root_hash().await.unwrap(), expected_root(&so_far));
        }
        let check = store.verify_merkle().await.unwrap();
        assert!(check.is_ok(), "fold_changes {fold_changes}: {:?}", check.problems);
        roots.push(store.root_hash().await.unwrap());
    }
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");
}

#[tokio::test]
async fn a_damaged_log_row_is_reported_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqlOptions { fold_changes: usize::MAX, ..options("damage", 8) };
    let (store, _) = store_at(&dir, &opts).await;
    let written = batches();
    store.put_batch(&written[0]).await.unwrap();
    let root = store.root_hash().await.unwrap();
    store.put_batch(&written[1]).await.unwrap();
    let p = &opts.table_prefix;
    let mut conn = raw(&dir).await;
    // Cut the newest log row short inside a change.
    exec(
        &mut conn,
        format!(
            "UPDATE {p}leaflog SET changes = substr(changes, 1, 40) \
             WHERE seq = (SELECT max(seq) FROM {p}leaflog)"
        ),
    )
    .await;
    let e = store.root_hash().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("change-log"), "{e}");
    // Nothing stored changed: the node rows still describe the first batch, items are served.
    let nodes = format!("SELECT count(*) FROM {p}leaflog");
    let left: i64 = sqlx::query_scalar(AssertSqlSafe(nodes)).fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 1, "the damaged row stays for an operator to see");
    assert!(store.get(written[1][1].id()).await.unwrap().is_some());
    exec(&mut conn, format!("DELETE FROM {p}leaflog")).await;
    assert_eq!(store.root_hash().await.unwrap(), root);
}

#[tokio::test]
async fn a_version_1_store_is_migrated_and_its_entries_listed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options("migrate", 8);
    let (store, url) = store_at(&dir, &opts).await;
    let written = batches();
    for b in &written {
        store.put_batch(b).await.unwrap();
    }
    let root = store.root_hash().await.unwrap();
    store.close().await;
    // Back to the version-1 schema: no log, no entries table, the items' entries index.
    let p = &opts.table_prefix;
    let mut conn = raw(&dir).await;
    exec(&mut conn, format!("DROP TABLE {p}leaflog")).await;
    exec(&mut conn, format!("DROP TABLE {p}entries")).await;
    exec(
        &mut conn,
        format!("CREATE INDEX {p}items_entries ON {p}items (parent, seghash) WHERE tombstone = 0"),
    )
    .await;
    exec(&mut conn, format!("UPDATE {p}meta SET value = 1 WHERE name = 'schema_version'")).await;
    let store = SqlStore::connect(&url, opts.clone()).await.unwrap();
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(store.root_hash().await.unwrap(), root);
    assert!(check.live_items > 0);
    // The check reads the entries table: a missing or extra entry is named.
    let first = format!("SELECT id FROM {p}entries ORDER BY id LIMIT 1");
    let gone: String = sqlx::query_scalar(AssertSqlSafe(first)).fetch_one(&mut conn).await.unwrap();
    exec(&mut conn, format!("DELETE FROM {p}entries WHERE id = '{gone}'")).await;
    exec(
        &mut conn,
        format!(
            "INSERT INTO {p}entries (parent, seghash, id, leaf) \
             SELECT parent, seghash, 'flat.ghost', leaf FROM {p}entries LIMIT 1"
        ),
    )
    .await;
    let check = store.verify_merkle().await.unwrap();
    let problems = check.problems.join("\n");
    assert!(problems.contains(&format!("{gone:?} has no entry")), "{problems}");
    assert!(problems.contains("\"flat.ghost\""), "{problems}");
}

#[tokio::test]
async fn a_fold_that_fails_midway_applies_nothing_and_loses_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqlOptions { fold_changes: usize::MAX, ..options("midway", 8) };
    let (store, _) = store_at(&dir, &opts).await;
    let written = batches();
    store.put_batch(&written[0]).await.unwrap();
    store.fold().await.unwrap();
    for b in &written[1..] {
        store.put_batch(b).await.unwrap();
    }
    let p = &opts.table_prefix;
    let mut conn = raw(&dir).await;
    let count = |table: &str| format!("SELECT count(*) FROM {p}{table}");
    let scalar = |sql: String| sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql));
    let log_rows = scalar(count("leaflog")).fetch_one(&mut conn).await.unwrap();
    // An entry in the way of a leaf the log adds: the fold fails on it (after reading and
    // merging the log) and must leave the log, the entries and the node rows as they were.
    let tombstoned =
        |id: &ObjectId| written.iter().flatten().any(|i| i.id() == id && i.is_tombstone());
    let fresh = written[1..]
        .iter()
        .flatten()
        .find(|i| !written[0].iter().any(|o| o.id() == i.id()) && !tombstoned(i.id()))
        .unwrap()
        .id()
        .as_str()
        .to_owned();
    let (parent, _) = fresh.rsplit_once('.').unwrap();
    exec(
        &mut conn,
        format!(
            "INSERT INTO {p}entries (parent, seghash, id, leaf) \
             SELECT '{parent}', seghash, '{fresh}', zeroblob(32) FROM {p}items WHERE id = '{fresh}'"
        ),
    )
    .await;
    let entries = scalar(count("entries")).fetch_one(&mut conn).await.unwrap();
    let paths = scalar(count("paths")).fetch_one(&mut conn).await.unwrap();
    let e = store.fold().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Contract, "{e}");
    assert!(e.to_string().contains("entries table"), "{e}");
    assert_eq!(scalar(count("leaflog")).fetch_one(&mut conn).await.unwrap(), log_rows);
    assert_eq!(scalar(count("entries")).fetch_one(&mut conn).await.unwrap(), entries);
    assert_eq!(scalar(count("paths")).fetch_one(&mut conn).await.unwrap(), paths);
    assert!(store.root_hash().await.is_err(), "no Merkle answer from a tree that cannot fold");
    // The obstacle gone, the next fold applies every logged change.
    exec(&mut conn, format!("DELETE FROM {p}entries WHERE id = '{fresh}'")).await;
    assert_eq!(store.root_hash().await.unwrap(), expected_root(&written));
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}
