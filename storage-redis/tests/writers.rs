//! Optimistic writes (`WATCH` of the write epoch + `MULTI`/`EXEC`) and script writes racing on
//! one prefix: whatever the arrival order, every id ends at the newest version written, and the
//! shadow at exactly the live items.

mod common;

use sync_engine_core::conformance::{cache_all, unique_ns};
use sync_engine_core::merkle::{diff, MemTree};
use sync_engine_core::store::{CacheEntry, CacheStore, MerkleExt};
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_redis::{RedisOptions, RedisStore};

use common::{options, shared, store_with, Src};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

#[tokio::test]
async fn cache_conformance_passes_with_script_writes_only() {
    let Some(url) = shared() else { return };
    let store =
        store_with(&url, RedisOptions { optimistic_writes: false, ..options("script") }).await;
    cache_all(&*store, &unique_ns("r")).await.unwrap();
}

/// Three stores on one prefix — two writing optimistically, one through the script only — each
/// send every version of every id in a scrambled order, concurrently, so older writes often
/// arrive after newer ones (and transactions are often interrupted).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_never_let_an_older_version_win() {
    let Some(url) = shared() else { return };
    const IDS: u64 = 200;
    const VERSIONS: u64 = 150;
    let opts = RedisOptions { fold_threshold: 200, bucket_cap: 4, ..options("writers") };
    let a = store_with(&url, opts.clone()).await;
    let b = RedisStore::connect(&SecretUrl::new(&url), opts.clone()).await.unwrap();
    let c = RedisStore::connect(
        &SecretUrl::new(&url),
        RedisOptions { optimistic_writes: false, ..opts },
    )
    .await
    .unwrap();
    let item = |n: u64, v: u64| {
        let item_id = id(&format!("r.g{}.k{n}", n % 3));
        if (n + v) % 7 == 0 {
            SyncItem::tombstone(item_id, v)
        } else {
            SyncItem::new(item_id, v, format!("{n}:{v}"))
        }
    };
    let writer = |store: RedisStore, seed: u64| async move {
        // Writer `seed` owns the versions v ≡ seed (mod 3), sent in a scrambled order.
        let mut versions: Vec<u64> = (0..VERSIONS).filter(|v| v % 3 == seed).collect();
        versions.sort_by_key(|v| (v * 7919 + seed * 104_729) % 101);
        for v in versions {
            let entries: Vec<CacheEntry> =
                (0..IDS).map(|n| CacheEntry::new(item((n * 13 + v) % IDS, v + 1))).collect();
            store.put_batch(&entries).await.unwrap();
        }
    };
    let (ra, rb, rc) = tokio::join!(
        tokio::spawn(writer(a.store.clone(), 0)),
        tokio::spawn(writer(b.clone(), 1)),
        tokio::spawn(writer(c.clone(), 2)),
    );
    ra.unwrap();
    rb.unwrap();
    rc.unwrap();
    let ids: Vec<ObjectId> = (0..IDS).map(|n| item(n, 0).id().clone()).collect();
    let got = a.get_many(&ids).await.unwrap();
    let mut live = Vec::new();
    for (n, got) in (0..IDS).zip(got) {
        let newest = item(n, VERSIONS);
        if newest.is_tombstone() {
            assert!(got.is_none(), "{n}: the newest version is a delete, got {got:?}");
        } else {
            let got = got.map(|i| (i.stamp(), i.content().clone()));
            let want = (newest.stamp(), newest.content().clone());
            assert_eq!(got, Some(want), "{n}: an older version won");
            live.push(newest);
        }
    }
    let tree =
        MemTree::from_items(live.iter().map(|i| (i.id().as_str(), i.leaf_digest()))).unwrap();
    assert_eq!(c.root_hash().await.unwrap(), tree.root_hash());
    let report = diff(&Src::of(&a), &tree, "").await.unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
}
