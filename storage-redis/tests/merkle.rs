//! The shape of the L2 shadow: bounded bucket listings for wide nodes, every listing agreeing
//! with a from-scratch computation, exact diffs, no garbage after deletes, and a model test
//! against the in-memory cache (shared server, own prefixes).

mod common;

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use sync_engine_core::conformance::unique_ns;
use sync_engine_core::memory::MemoryCache;
use sync_engine_core::merkle::{diff, Children, DiffKind, Entry, MemTree, NodeKey, NodeValue};
use sync_engine_core::store::{CacheEntry, CacheStore, MerkleExt, MerkleStore};
use sync_engine_core::{ObjectId, SyncItem};
use sync_engine_redis::RedisOptions;

use common::{count_keys, options, shared, store_with, Src};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

fn sum(vals: impl IntoIterator<Item = NodeValue>) -> NodeValue {
    vals.into_iter().fold(NodeValue::EMPTY, NodeValue::plus)
}

/// Walk every node under `start`, checking each answer against `oracle`; returns the largest
/// entry listing seen and the number of nodes visited.
async fn check_walk(store: &dyn MerkleStore, items: &[SyncItem], start: NodeKey) -> (usize, usize) {
    // An unsplit MemTree answers every key (narrowing its flat entries) and lists entries.
    let mut oracle = MemTree::with_cap(usize::MAX);
    for i in items {
        oracle.upsert(i.id().as_str(), i.leaf_digest()).unwrap();
    }
    let value_of = |k: &NodeKey| oracle.node(k).unwrap_or_default();
    let mut stack = vec![start];
    let (mut widest, mut visited) = (0, 0);
    let mut walked = Vec::new();
    while let Some(key) = stack.pop() {
        visited += 1;
        walked.push(key.clone());
        let value = store.node(&key).await.unwrap().unwrap_or_default();
        assert_eq!(value, value_of(&key), "node {key:?}");
        match store.children(&key).await.unwrap() {
            Children::Buckets(b) => {
                assert_eq!(sum(b.iter().map(|(_, v)| *v)), value, "buckets of {key:?} sum");
                for (n, v) in b {
                    let child = key.child_bucket(n);
                    assert_eq!(v, value_of(&child), "bucket {child:?}");
                    stack.push(child);
                }
            }
            Children::Entries(e) => {
                widest = widest.max(e.len());
                assert_eq!(sum(e.iter().map(|x| x.value())), value, "entries of {key:?} sum");
                let mut want = match oracle.children(&key) {
                    Children::Entries(e) => e,
                    Children::Buckets(_) => unreachable!("an unsplit tree lists entries"),
                };
                want.sort_by(|x, y| {
                    (x.segment(), matches!(x, Entry::Path { .. }))
                        .cmp(&(y.segment(), matches!(y, Entry::Path { .. })))
                });
                assert_eq!(e, want, "entries of {key:?}");
                for x in &e {
                    if let Entry::Path { segment, .. } = x {
                        stack.push(key.child_path(segment));
                    }
                }
                // A bucket below an unsplit node is answered by narrowing its entries.
                if key.bucket.len() < 20 {
                    for n in [0u8, 7, 15] {
                        let deeper = key.child_bucket(n);
                        walked.push(deeper.clone());
                        let got = store.node(&deeper).await.unwrap().unwrap_or_default();
                        assert_eq!(got, value_of(&deeper), "narrowed {deeper:?}");
                    }
                }
            }
        }
    }
    // Asked all at once (one pipeline per chunk), every node answers as asked alone.
    walked.push(NodeKey::path("no.such.path"));
    let many = store.children_many(&walked).await.unwrap();
    assert_eq!(many.len(), walked.len());
    for (key, got) in walked.iter().zip(many) {
        assert_eq!(got, store.children(key).await.unwrap(), "children_many of {key:?}");
    }
    (widest, visited)
}

#[tokio::test]
async fn wide_nodes_answer_with_bounded_buckets_and_exact_diffs() {
    let Some(url) = shared() else { return };
    let cap = 8;
    let opts = RedisOptions { bucket_cap: cap, ..options("wide") };
    let prefix = opts.prefix.clone();
    let store = store_with(&url, opts).await;
    let ns = unique_ns("w");
    let mut items = Vec::new();
    for n in 0..3000u64 {
        items.push(SyncItem::new(id(&format!("{ns}.items.{n}")), 1, format!("flat {n}")));
    }
    for n in 0..300u64 {
        items.push(SyncItem::new(
            id(&format!("{ns}.t{}.u{}.i{n}", n % 3, n % 17)),
            2,
            format!("deep {n}"),
        ));
    }
    // Several batches (one of them larger than one script invocation).
    for chunk in items.chunks(1700) {
        let entries: Vec<CacheEntry> = chunk.iter().cloned().map(CacheEntry::new).collect();
        assert_eq!(store.put_batch(&entries).await.unwrap().applied, chunk.len());
    }
    // Fold first: asked right after the writes, a batch of questions sees all of them.
    let top = store.children_many(&[NodeKey::path(&ns)]).await.unwrap();
    let listed = match &top[..] {
        [Children::Buckets(b)] => sum(b.iter().map(|(_, v)| *v)),
        [Children::Entries(e)] => sum(e.iter().map(|x| x.value())),
        other => panic!("{} listings for one key", other.len()),
    };
    assert_eq!(listed.count, items.len() as u64, "children_many answered before the fold");
    let (widest, visited) = check_walk(&*store, &items, NodeKey::path(&ns)).await;
    assert!(widest <= cap, "an entry listing of {widest} entries exceeds the cap {cap}");
    assert!(visited > 3000 / cap, "the wide node was not split: {visited} nodes");

    // Diff against a tree with five differences finds exactly them, reading few nodes.
    let mut tree =
        MemTree::from_items(items.iter().map(|i| (i.id().as_str(), i.leaf_digest()))).unwrap();
    let changed = [format!("{ns}.items.5"), format!("{ns}.items.2999"), format!("{ns}.t1.u1.i1")];
    for c in &changed {
        tree.upsert(c, SyncItem::new(id(c), 9, "other").leaf_digest()).unwrap();
    }
    tree.remove(&format!("{ns}.items.77")).unwrap();
    tree.upsert(&format!("{ns}.items.new"), SyncItem::new(id("x"), 1, "x").leaf_digest()).unwrap();
    let report = diff(&Src::of(&store), &tree, &ns).await.unwrap();
    let mut want: Vec<(String, DiffKind)> =
        changed.iter().map(|c| (c.clone(), DiffKind::Different)).collect();
    want.push((format!("{ns}.items.77"), DiffKind::OnlyInA));
    want.push((format!("{ns}.items.new"), DiffKind::OnlyInB));
    want.sort();
    let got: Vec<(String, DiffKind)> =
        report.differences.iter().map(|d| (d.id.clone(), d.kind)).collect();
    assert_eq!(got, want);
    assert!(report.children_received < 600, "diff read {} children", report.children_received);

    // Deleting everything leaves no node record and no entry hash behind.
    let ids: Vec<ObjectId> = items.iter().map(|i| i.id().clone()).collect();
    let (tomb, rest) = ids.split_at(1000);
    let tombs: Vec<CacheEntry> =
        tomb.iter().map(|i| CacheEntry::new(SyncItem::tombstone(i.clone(), 50))).collect();
    store.put_batch(&tombs).await.unwrap();
    store.remove_many(rest).await.unwrap();
    assert_eq!(store.root_hash().await.unwrap(), sync_engine_core::merkle::Digest::ZERO);
    assert_eq!((count_keys(&url, &prefix, 'n'), count_keys(&url, &prefix, 'm')), (0, 0));
    assert_eq!(count_keys(&url, &prefix, 'd'), 1000, "tombstones are kept");
}

#[tokio::test]
async fn a_cap_of_one_splits_down_to_the_hash_prefix_and_stays_exact() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, RedisOptions { bucket_cap: 1, ..options("cap1") }).await;
    let ns = unique_ns("c");
    let items: Vec<SyncItem> =
        (0..400u64).map(|n| SyncItem::new(id(&format!("{ns}.s{}.{n}", n % 2)), n, "v")).collect();
    for item in &items {
        // One at a time: every insert may split a bucket.
        store.put_batch(&[CacheEntry::new(item.clone())]).await.unwrap();
    }
    let (widest, _) = check_walk(&*store, &items, NodeKey::path(&ns)).await;
    assert!(widest <= 1, "{widest}");
}

#[derive(Debug, Clone)]
enum Step {
    Put(Vec<(usize, u64, u8, bool, bool)>),
    Remove(Vec<usize>),
}

const UNIVERSE: [&str; 9] = ["a", "b", "a.x", "a.y", "a.x.z", "c.d.e", "c.d.f", "c.g", "h"];

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let put = proptest::collection::vec(
        (0..UNIVERSE.len(), 0u64..4, 0u8..3, any::<bool>(), prop::bool::weighted(0.2)),
        1..8,
    )
    .prop_map(Step::Put);
    let remove = proptest::collection::vec(0..UNIVERSE.len(), 1..4).prop_map(Step::Remove);
    proptest::collection::vec(prop_oneof![4 => put, 1 => remove], 1..8)
}

/// Random batches (duplicates, stale writes, tombstones, TTL'd writes, removals) give the same
/// answers, outcomes and Merkle values as the in-memory cache.
#[test]
fn behaves_like_the_in_memory_cache() {
    let Some(url) = shared() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(store_with(&url, RedisOptions { bucket_cap: 2, ..options("model") }));
    let mut runner = TestRunner::new(PropConfig {
        cases: 48,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&steps(), |steps| {
        rt.block_on(async {
            let ns = unique_ns("p");
            let ids: Vec<ObjectId> = UNIVERSE.iter().map(|s| id(&format!("{ns}.{s}"))).collect();
            let model = MemoryCache::new();
            for step in &steps {
                match step {
                    Step::Put(ops) => {
                        let entries: Vec<CacheEntry> = ops
                            .iter()
                            .map(|&(i, v, c, tomb, ttl)| {
                                let item = if tomb {
                                    SyncItem::tombstone(ids[i].clone(), v)
                                } else {
                                    SyncItem::new(ids[i].clone(), v, vec![c; usize::from(c)])
                                };
                                CacheEntry { item, ttl: ttl.then_some(Duration::from_secs(60)) }
                            })
                            .collect();
                        let got = store.put_batch(&entries).await.unwrap();
                        let want = model.put_batch(&entries).await.unwrap();
                        prop_assert_eq!(got, want, "outcome of {:?}", ops);
                    }
                    Step::Remove(which) => {
                        let rm: Vec<ObjectId> = which.iter().map(|&i| ids[i].clone()).collect();
                        store.remove_many(&rm).await.unwrap();
                        model.remove_many(&rm).await.unwrap();
                    }
                }
                let got = store.get_many(&ids).await.unwrap();
                let want = model.get_many(&ids).await.unwrap();
                let stamps = |v: &[Option<SyncItem>]| {
                    v.iter()
                        .map(|i| i.as_ref().map(|i| (i.stamp(), i.content().clone())))
                        .collect::<Vec<_>>()
                };
                prop_assert_eq!(stamps(&got), stamps(&want));
                let key = NodeKey::path(&ns);
                prop_assert_eq!(store.node(&key).await.unwrap(), model.node(&key).await.unwrap());
            }
            let mem: Arc<dyn MerkleStore> = Arc::new(model.clone());
            let report = diff(&Src::of(&store), &Src(mem), &ns).await.unwrap();
            prop_assert!(report.differences.is_empty(), "{:?}", report.differences);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
