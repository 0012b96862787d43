//! The change log and its fold: concurrent writers and folders sharing one prefix, background
//! folds, and a folder that died holding the lock (shared server, own prefixes).

mod common;

use std::time::{Duration, Instant};

use sync_engine_core::merkle::{diff, MemTree};
use sync_engine_core::store::{CacheEntry, CacheStore, MerkleExt};
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_redis::{RedisOptions, RedisStore};

use common::{count_keys, options, shared, store_with, Src, TestStore};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

fn log_len(url: &str, prefix: &str) -> u64 {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("LLEN").arg(format!("{prefix}{{{prefix}}}m:log")).query(&mut con).unwrap()
}

/// Two stores on one prefix (as two engines would be) write overlapping ids concurrently,
/// with background folds racing each other; the shadow ends exactly at the surviving items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_folders_keep_the_shadow_exact() {
    let Some(url) = shared() else { return };
    let opts = RedisOptions { fold_threshold: 300, bucket_cap: 8, ..options("race") };
    let a = store_with(&url, opts.clone()).await;
    let b = RedisStore::connect(&SecretUrl::new(&url), opts).await.unwrap();
    let writer = |store: RedisStore, seed: u64| async move {
        for round in 0..20u64 {
            let entries: Vec<CacheEntry> = (0..200u64)
                .map(|i| {
                    let n = (i * 7 + round * 13 + seed) % 500;
                    let item_id = id(&format!("w.g{}.k{n}", n % 5));
                    let version = round * 10 + seed;
                    let item = if (n + round) % 11 == 0 {
                        SyncItem::tombstone(item_id, version)
                    } else {
                        SyncItem::new(item_id, version, format!("{seed}:{round}:{n}"))
                    };
                    CacheEntry::new(item)
                })
                .collect();
            store.put_batch(&entries).await.unwrap();
        }
    };
    let (ra, rb) =
        tokio::join!(tokio::spawn(writer(a.store.clone(), 1)), tokio::spawn(writer(b.clone(), 2)));
    ra.unwrap();
    rb.unwrap();
    // The oracle: whatever is live in the cache now.
    let ids: Vec<ObjectId> = (0..500).map(|n| id(&format!("w.g{}.k{n}", n % 5))).collect();
    let live = a.get_many(&ids).await.unwrap();
    let tree =
        MemTree::from_items(live.iter().flatten().map(|i| (i.id().as_str(), i.leaf_digest())))
            .unwrap();
    assert_eq!(b.root_hash().await.unwrap(), tree.root_hash());
    let report = diff(&Src::of(&a), &tree, "").await.unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
}

#[tokio::test]
async fn writes_fold_in_the_background_past_the_threshold() {
    let Some(url) = shared() else { return };
    let opts = RedisOptions { fold_threshold: 50, ..options("bg") };
    let prefix = opts.prefix.clone();
    let store = store_with(&url, opts).await;
    let items: Vec<SyncItem> =
        (0..120).map(|n| SyncItem::new(id(&format!("bg.k{n}")), 1, "v")).collect();
    for chunk in items.chunks(40) {
        let entries: Vec<CacheEntry> = chunk.iter().cloned().map(CacheEntry::new).collect();
        store.put_batch(&entries).await.unwrap();
    }
    // No Merkle read: the log empties by itself.
    let started = Instant::now();
    while log_len(&url, &prefix) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the background fold never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(count_keys(&url, &prefix, 'n') > 0, "nodes were written");
    let tree =
        MemTree::from_items(items.iter().map(|i| (i.id().as_str(), i.leaf_digest()))).unwrap();
    assert_eq!(store.root_hash().await.unwrap(), tree.root_hash());
}

#[tokio::test]
async fn without_a_threshold_the_log_waits_for_a_read_or_an_explicit_fold() {
    let Some(url) = shared() else { return };
    let opts = RedisOptions { fold_threshold: 0, ..options("nofold") };
    let prefix = opts.prefix.clone();
    let store = store_with(&url, opts).await;
    let items: Vec<CacheEntry> =
        (0..30).map(|n| CacheEntry::new(SyncItem::new(id(&format!("nf.k{n}")), 1, "v"))).collect();
    store.put_batch(&items[..10]).await.unwrap();
    store.put_batch(&items[10..]).await.unwrap();
    assert_eq!(log_len(&url, &prefix), 2, "one log blob per written batch");
    assert_eq!(count_keys(&url, &prefix, 'n'), 0, "nothing folded yet");
    assert_eq!(store.fold().await.unwrap(), 30);
    assert_eq!(log_len(&url, &prefix), 0);
    assert_eq!(store.fold().await.unwrap(), 0, "folding an empty log does nothing");
}

/// A folder that died holding the lock blocks folds only until the lock expires.
#[tokio::test]
async fn a_dead_folders_lock_expires() {
    let Some(url) = shared() else { return };
    let opts = RedisOptions { fold_threshold: 0, ..options("dead") };
    let prefix = opts.prefix.clone();
    let store = store_with(&url, opts).await;
    store.put_batch(&[CacheEntry::new(SyncItem::new(id("d.a"), 1, "v"))]).await.unwrap();
    let mut con = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let lock = format!("{prefix}{{{prefix}}}m:lock");
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("someone-else")
        .arg("PX")
        .arg(400)
        .query(&mut con)
        .unwrap();
    let started = Instant::now();
    assert_eq!(store.fold().await.unwrap(), 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "folded under someone else's lock after {waited:?}"
    );
    let tree =
        MemTree::from_items([("d.a", SyncItem::new(id("d.a"), 1, "v").leaf_digest())]).unwrap();
    assert_eq!(store.root_hash().await.unwrap(), tree.root_hash());
}

/// A store with one logged change under its own prefix, and another connection holding that
/// prefix's fold lock for `px` ms under a value naming its client id (as a folder's does).
async fn store_with_held_lock(
    url: &str,
    name: &str,
    px: u64,
) -> (TestStore, redis::Connection, i64) {
    let opts = RedisOptions { fold_threshold: 0, ..options(name) };
    let prefix = opts.prefix.clone();
    let store = store_with(url, opts).await;
    store.put_batch(&[CacheEntry::new(SyncItem::new(id("h.a"), 1, "v"))]).await.unwrap();
    let mut holder = redis::Client::open(url).unwrap().get_connection().unwrap();
    let holder_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut holder).unwrap();
    let lock = format!("{prefix}{{{prefix}}}m:lock");
    let value = format!("{name}-1@{holder_id}");
    let _: () =
        redis::cmd("SET").arg(&lock).arg(value).arg("PX").arg(px).query(&mut holder).unwrap();
    (store, holder, holder_id)
}

/// A folder that died holding the lock (its process killed: Redis drops its connection) does
/// not block folds until the lock expires: the waiter sees the holder's client is gone.
#[tokio::test]
async fn a_killed_folders_lock_is_taken_at_once() {
    let Some(url) = shared() else { return };
    let (store, _holder, holder_id) = store_with_held_lock(&url, "killed", 30_000).await;
    let mut admin = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let _: () =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(holder_id).query(&mut admin).unwrap();
    let started = Instant::now();
    assert_eq!(store.fold().await.unwrap(), 1);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "waited {waited:?} for a dead holder's lock");
}

/// A holder that is still connected keeps its lock until it releases it or it expires.
#[tokio::test]
async fn a_live_folders_lock_is_respected() {
    let Some(url) = shared() else { return };
    let (store, _holder, _) = store_with_held_lock(&url, "live", 1_000).await;
    let started = Instant::now();
    assert_eq!(store.fold().await.unwrap(), 1);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(800), "took a live holder's lock after {waited:?}");
}

/// A folder that loses its lock mid-fold (it expired and another process took it) writes
/// nothing; the log stays for the next fold, which then makes the shadow exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_that_lost_its_lock_writes_nothing() {
    let Some(url) = shared() else { return };
    lost_lock(&url, "lost", |n| format!("l.t{}.u{}.i{n}", n % 100, n / 100), false).await;
}

/// The same with one wide node of 16,000 leaves of 250-byte segments, whose fold queues ~4.5
/// MB of node writes in several messages inside its transaction: the lock is taken from it
/// while its writes are being queued (its connection seen inside `MULTI` with commands
/// queued), and nothing is written; the next fold writes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fold_that_lost_its_lock_while_queueing_writes_nothing() {
    let Some(url) = shared() else { return };
    use redis::Commands;
    let store = lost_lock(&url, "lostwide", |n| format!("w.{n:0250}"), true).await;
    let mut con = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let pattern = format!("{p}{{{p}}}n:*", p = store.prefix);
    let keys: Vec<String> = con.scan_match(&pattern).unwrap().map(Result::unwrap).collect();
    let mut bytes = 0u64;
    for k in keys {
        bytes += redis::cmd("STRLEN").arg(&k).query::<u64>(&mut con).unwrap() + k.len() as u64;
    }
    assert!(bytes > 2 << 20, "the fold wrote {bytes} bytes of nodes: one message");
}

/// Whether the client named in the fold lock's value `holder` (`token@client-id`) is inside
/// `MULTI` with commands queued.
fn queueing(con: &mut redis::Connection, holder: &str) -> bool {
    let Some((_, id)) = holder.rsplit_once('@') else { return false };
    let list: String = redis::cmd("CLIENT").arg("LIST").arg("ID").arg(id).query(con).unwrap();
    list.split_whitespace()
        .find_map(|f| f.strip_prefix("multi="))
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|n| n > 0)
}

/// 16 batches of 1000 items named by `name`, a fold whose lock is taken from it while it runs
/// (once it queues its writes, if `in_multi`), then the checks; returns the store (its keys are
/// deleted when it is dropped).
async fn lost_lock(url: &str, tag: &str, name: fn(u64) -> String, in_multi: bool) -> TestStore {
    let opts = RedisOptions { fold_threshold: 0, ..options(tag) };
    let prefix = opts.prefix.clone();
    let store = store_with(url, opts).await;
    let mut items = Vec::new();
    for b in 0..16u64 {
        let batch: Vec<SyncItem> =
            (0..1000).map(|i| SyncItem::new(id(&name(b * 1000 + i)), 1, "v")).collect();
        let entries: Vec<CacheEntry> = batch.iter().cloned().map(CacheEntry::new).collect();
        store.put_batch(&entries).await.unwrap();
        items.extend(batch);
    }
    let logged = log_len(url, &prefix);
    let folder = store.store.clone();
    let fold = tokio::spawn(async move { folder.fold().await });
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let lock = format!("{prefix}{{{prefix}}}m:lock");
    let started = Instant::now();
    loop {
        let holder: Option<String> = redis::cmd("GET").arg(&lock).query(&mut con).unwrap();
        if holder.is_some_and(|h| !in_multi || queueing(&mut con, &h)) {
            let _: () = redis::cmd("SET").arg(&lock).arg("usurper").query(&mut con).unwrap();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10) && !fold.is_finished(),
            "the fold ended before its lock was taken from it"
        );
    }
    let e = fold.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("lock"), "{e}");
    assert_eq!(log_len(url, &prefix), logged, "a fold without its lock trimmed the log");
    assert_eq!(count_keys(url, &prefix, 'n'), 0, "a fold without its lock wrote nodes");
    let _: () = redis::cmd("DEL").arg(&lock).query(&mut con).unwrap();
    let tree =
        MemTree::from_items(items.iter().map(|i| (i.id().as_str(), i.leaf_digest()))).unwrap();
    assert_eq!(store.root_hash().await.unwrap(), tree.root_hash());
    assert_eq!(log_len(url, &prefix), 0);
    store
}
