//! The shared conformance suite and the cache promises, against the shared Redis server
//! (`SYNC_ENGINE_TEST_REDIS_URL`, set by `cargo xtask test`). Each test uses its own key prefix.

mod common;

use std::time::Duration;

use sync_engine_core::conformance::{cache_all, unique_ns};
use sync_engine_core::merkle::{diff, MemTree, NodeKey};
use sync_engine_core::store::{CacheEntry, CacheExt, CacheStore, MerkleExt, MerkleStore};
use sync_engine_core::{ErrorKind, ObjectId, SecretUrl, Status, SyncItem};
use sync_engine_redis::{RedisOptions, RedisStore};

use common::{count_keys, options, shared, store_with, Src};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

#[tokio::test]
async fn cache_conformance_suite_passes() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("conf")).await;
    cache_all(&*store, &unique_ns("r")).await.unwrap();
}

#[tokio::test]
async fn cache_conformance_passes_with_tiny_buckets() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, RedisOptions { bucket_cap: 1, ..options("conf1") }).await;
    cache_all(&*store, &unique_ns("r")).await.unwrap();
}

/// The cache counterpart of the core's `merkle_follows_data`: the shadow equals a tree built
/// from the live items written without TTL, after writes, overwrites, stale writes, TTL'd
/// writes, tombstones and removals, down to an exact diff.
#[tokio::test]
async fn merkle_shadow_follows_the_live_untimed_items() {
    let Some(url) = shared() else { return };
    for cap in [128, 2] {
        let store = store_with(&url, RedisOptions { bucket_cap: cap, ..options("mfd") }).await;
        let ns = unique_ns("m");
        let mut oracle = MemTree::default();
        let mut batch = Vec::new();
        for i in 0..30u64 {
            let item = SyncItem::new(id(&format!("{ns}.g{}.k{i}", i % 3)), i + 1, format!("v{i}"));
            let _ = oracle.upsert(item.id().as_str(), item.leaf_digest());
            batch.push(CacheEntry::new(item));
        }
        // An id that is also a path, and items with a TTL (never in the shadow).
        let both = SyncItem::new(id(&format!("{ns}.g0")), 1, "leaf and path");
        let _ = oracle.upsert(both.id().as_str(), both.leaf_digest());
        batch.push(CacheEntry::new(both));
        let ttl = Some(Duration::from_secs(60));
        batch.push(CacheEntry { item: SyncItem::new(id(&format!("{ns}.g1.ttl")), 1, "t"), ttl });
        store.put_batch(&batch).await.unwrap();

        let overwrite = SyncItem::new(id(&format!("{ns}.g1.k1")), 100, "new");
        let stale = SyncItem::new(id(&format!("{ns}.g2.k2")), 0, "stale");
        let delete = SyncItem::tombstone(id(&format!("{ns}.g0.k3")), 100);
        // A shadowed item rewritten with a TTL leaves the shadow.
        let to_ttl = SyncItem::new(id(&format!("{ns}.g2.k5")), 100, "now timed");
        let out = store
            .put_batch(&[
                CacheEntry::new(overwrite.clone()),
                CacheEntry::new(stale),
                CacheEntry::new(delete.clone()),
                CacheEntry { item: to_ttl.clone(), ttl },
            ])
            .await
            .unwrap();
        assert_eq!((out.applied, out.stale), (3, 1));
        let _ = oracle.upsert(overwrite.id().as_str(), overwrite.leaf_digest());
        let _ = oracle.remove(delete.id().as_str());
        let _ = oracle.remove(to_ttl.id().as_str());
        // remove_many drops leaves too.
        let gone = id(&format!("{ns}.g1.k4"));
        store.remove_many(std::slice::from_ref(&gone)).await.unwrap();
        let _ = oracle.remove(gone.as_str());

        let want = oracle.node(&NodeKey::path(&ns)).unwrap_or_default();
        let got = store.node(&NodeKey::path(&ns)).await.unwrap().unwrap_or_default();
        assert_eq!(got, want, "cap {cap}: subtree value");
        assert_eq!(store.root_hash().await.unwrap(), oracle.root_hash(), "cap {cap}: root");
        let report = diff(&Src::of(&store), &oracle, "").await.unwrap();
        assert!(report.differences.is_empty(), "cap {cap}: {:?}", report.differences);
    }
}

#[tokio::test]
async fn ids_with_key_syntax_characters_stay_in_their_namespace() {
    let Some(url) = shared() else { return };
    let opts = options("ids");
    let prefix = opts.prefix.clone();
    let store = store_with(&url, opts).await;
    let ns = unique_ns("c");
    let tricky = ["a:b", "{x}", "}{", "*", "n::", "e:0:", "d:x", "{t}.y", "x*y.z:{}", "?[a]\\"];
    let ids: Vec<ObjectId> = tricky.iter().map(|s| id(&format!("{ns}.{s}"))).collect();
    let mut tree = MemTree::default();
    let entries: Vec<CacheEntry> = ids
        .iter()
        .map(|i| {
            let item = SyncItem::new(i.clone(), 1, i.as_str().to_owned());
            let _ = tree.upsert(i.as_str(), item.leaf_digest());
            CacheEntry::new(item)
        })
        .collect();
    assert_eq!(store.put_batch(&entries).await.unwrap().applied, ids.len());
    let got = store.get_many(&ids).await.unwrap();
    for (want, got) in ids.iter().zip(&got) {
        let got = got.as_ref().unwrap();
        assert_eq!(got.id(), want);
        assert_eq!(got.content().as_ref(), want.as_str().as_bytes());
    }
    assert_eq!(count_keys(&url, &prefix, 'd'), ids.len(), "one data key per id, nothing more");
    assert_eq!(store.root_hash().await.unwrap(), tree.root_hash());
    let report = diff(&Src::of(&store), &tree, "").await.unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    // Removing them leaves no Merkle garbage behind.
    store.remove_many(&ids).await.unwrap();
    assert_eq!(store.get_many(&ids).await.unwrap(), vec![None; ids.len()]);
    assert_eq!(store.root_hash().await.unwrap(), sync_engine_core::merkle::Digest::ZERO);
    for kind in ['d', 'n', 'm'] {
        assert_eq!(count_keys(&url, &prefix, kind), 0, "keys of kind {kind} left");
    }
    assert!(count_keys(&url, &prefix, 'w') <= 1, "at most the write epoch is left");
}

#[tokio::test]
async fn payloads_and_state_tags_are_binary_safe() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("bin")).await;
    let ns = unique_ns("b");
    let mut big: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    big.extend_from_slice(b"\r\n$-1\r\n*0\r\n\0");
    let items = [
        SyncItem::new(id(&format!("{ns}.big")), 1, big),
        SyncItem::new(id(&format!("{ns}.empty")), 1, Vec::new()).with_state("é:{}*"),
        SyncItem::new(id(&format!("{ns}.nul")), u64::MAX, vec![0u8; 17]),
    ];
    let entries: Vec<CacheEntry> = items.iter().cloned().map(CacheEntry::new).collect();
    store.put_batch(&entries).await.unwrap();
    for item in &items {
        let got = store.get(item.id()).await.unwrap().unwrap();
        assert_eq!(
            (got.content(), got.stamp(), got.state(), got.updated_at()),
            (item.content(), item.stamp(), item.state(), item.updated_at())
        );
    }
}

#[tokio::test]
async fn newer_wins_whatever_the_arrival_order() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("order")).await;
    let ns = unique_ns("o");
    // Versions around 2^32 and 2^53 exercise the script's two-word comparison.
    let versions =
        [1u64, 2, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 53) + 1, u64::MAX - 1, u64::MAX];
    let a = id(&format!("{ns}.a"));
    for round in 0..4u64 {
        let mut order: Vec<u64> = versions.to_vec();
        order.rotate_left(round as usize * 3 % versions.len());
        if round % 2 == 1 {
            order.reverse();
        }
        let key = id(&format!("{ns}.r{round}"));
        for v in &order {
            store.put(SyncItem::new(key.clone(), *v, format!("v{v}")), None).await.unwrap();
        }
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.version(), u64::MAX, "round {round} order {order:?}");
    }
    // Equal versions: the larger content hash wins, in either order.
    let (x, y) = (SyncItem::new(a.clone(), 7, "x"), SyncItem::new(a.clone(), 7, "y"));
    let winner = if x.content_hash() > y.content_hash() { &x } else { &y };
    store.put(x.clone(), None).await.unwrap();
    store.put(y.clone(), None).await.unwrap();
    let b = id(&format!("{ns}.b"));
    store.put(SyncItem::new(b.clone(), 7, "y"), None).await.unwrap();
    store.put(SyncItem::new(b.clone(), 7, "x"), None).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().unwrap().content(), winner.content());
    assert_eq!(store.get(&b).await.unwrap().unwrap().content(), winner.content());
    // A tombstone beats an empty write of the same version.
    store.put(SyncItem::new(a.clone(), 9, ""), None).await.unwrap();
    store.delete(&a, 9).await.unwrap();
    assert!(!store.exists(&a).await.unwrap());
}

#[tokio::test]
async fn ttl_items_expire_and_never_enter_the_shadow() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("ttl")).await;
    let ns = unique_ns("t");
    let (a, b) = (id(&format!("{ns}.a")), id(&format!("{ns}.b")));
    let short = Some(Duration::from_millis(300));
    store.put(SyncItem::new(a.clone(), 5, "timed"), short).await.unwrap();
    store.put(SyncItem::new(b.clone(), 1, "kept"), None).await.unwrap();
    let only_b =
        MemTree::from_items([(b.as_str(), SyncItem::new(b.clone(), 1, "kept").leaf_digest())])
            .unwrap();
    assert!(store.exists(&a).await.unwrap());
    assert_eq!(store.root_hash().await.unwrap(), only_b.root_hash(), "TTL'd item in the shadow");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!store.exists(&a).await.unwrap(), "TTL'd item still there");
    assert!(store.exists(&b).await.unwrap());
    // Expired entries no longer block older writes (as in the in-memory cache).
    let out = store.put(SyncItem::new(a.clone(), 1, "older"), None).await.unwrap();
    assert_eq!(out.applied, 1);
    assert_eq!(store.get(&a).await.unwrap().unwrap().version(), 1);
}

#[tokio::test]
async fn tombstones_block_older_writes_for_the_tombstone_ttl() {
    let Some(url) = shared() else { return };
    let opts = RedisOptions { tombstone_ttl: Some(Duration::from_millis(400)), ..options("tomb") };
    let store = store_with(&url, opts).await;
    let a = id(&format!("{}.a", unique_ns("d")));
    store.put(SyncItem::new(a.clone(), 1, "x"), None).await.unwrap();
    store.delete(&a, 2).await.unwrap();
    let out = store.put(SyncItem::new(a.clone(), 1, "x"), None).await.unwrap();
    assert_eq!((out.applied, out.stale), (0, 1), "older write passed a fresh tombstone");
    assert!(!store.exists(&a).await.unwrap());
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The tombstone is gone: the cache forgot the delete (L3 still has it; the shadow diff
    // against L3 repairs such a late write).
    let out = store.put(SyncItem::new(a.clone(), 1, "x"), None).await.unwrap();
    assert_eq!(out.applied, 1);
}

#[tokio::test]
async fn prefixes_isolate_stores() {
    let Some(url) = shared() else { return };
    let (s1, s2) = (store_with(&url, options("iso")).await, store_with(&url, options("iso")).await);
    let a = id(&format!("{}.a", unique_ns("i")));
    s1.put(SyncItem::new(a.clone(), 1, "one"), None).await.unwrap();
    assert!(s2.get(&a).await.unwrap().is_none());
    assert_eq!(s2.root_hash().await.unwrap(), sync_engine_core::merkle::Digest::ZERO);
    s2.put(SyncItem::new(a.clone(), 1, "two"), None).await.unwrap();
    assert!(s2.clear_namespace().await.unwrap() > 0);
    assert_eq!(s1.get(&a).await.unwrap().unwrap().content().as_ref(), b"one");
    assert!(s2.get(&a).await.unwrap().is_none());
}

#[tokio::test]
async fn foreign_values_are_reported_corrupt_and_block_nothing_else() {
    let Some(url) = shared() else { return };
    let opts = options("corrupt");
    let prefix = opts.prefix.clone();
    let store = store_with(&url, opts).await;
    let ns = unique_ns("x");
    let (bad, good) = (id(&format!("{ns}.bad")), id(&format!("{ns}.good")));
    let mut con = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
    let key = format!("{prefix}{{{prefix}}}d:{}", bad.as_str());
    let _: () = redis::cmd("SET").arg(&key).arg("not an item").query(&mut con).unwrap();
    let e = store.get(&bad).await.unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Corrupt, Status::Permanent), "{e}");
    let e = store
        .put_batch(&[
            CacheEntry::new(SyncItem::new(good.clone(), 1, "g")),
            CacheEntry::new(SyncItem::new(bad.clone(), 1, "b")),
        ])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(store.get(&good).await.unwrap().is_none(), "a failed batch wrote part of itself");
    assert_eq!(store.root_hash().await.unwrap(), sync_engine_core::merkle::Digest::ZERO);
    store.remove_many(std::slice::from_ref(&bad)).await.unwrap();
    assert!(store.get(&bad).await.unwrap().is_none());
    store.put(SyncItem::new(bad.clone(), 1, "b"), None).await.unwrap();
    assert!(store.exists(&bad).await.unwrap());
}

#[tokio::test]
async fn bad_options_and_keys_are_refused_by_name() {
    let url = SecretUrl::new("redis://:hunter2@127.0.0.1:1/");
    let e =
        RedisStore::connect(&url, RedisOptions::default().with_prefix("a{b")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("redis_prefix"), "{e}");
    let e = RedisStore::connect(&SecretUrl::new("http://:hunter2@x/"), RedisOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(!format!("{e} {e:?}").contains("hunter2"), "password leaked: {e}");
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("keys")).await;
    let e = store.node(&NodeKey::path("a..b")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = store.children(&NodeKey { path: String::new(), bucket: vec![16] }).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn get_many_answers_in_order_with_repeats() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("many")).await;
    let ns = unique_ns("g");
    let (a, b, c) = (id(&format!("{ns}.a")), id(&format!("{ns}.b")), id(&format!("{ns}.c")));
    store.put(SyncItem::new(a.clone(), 1, "A"), None).await.unwrap();
    store.put(SyncItem::new(b.clone(), 1, "B"), None).await.unwrap();
    let got = store.get_many(&[b.clone(), c.clone(), a.clone(), b.clone()]).await.unwrap();
    let contents: Vec<Option<&[u8]>> =
        got.iter().map(|g| g.as_ref().map(|i| i.content().as_ref())).collect();
    assert_eq!(contents, [Some(&b"B"[..]), None, Some(&b"A"[..]), Some(&b"B"[..])]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    store.ping().await.unwrap();
}
