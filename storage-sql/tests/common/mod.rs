//! Helpers shared by the per-database test files: stores on unique tables, a diff adapter, and
//! the suites every database runs (conformance, round trips, Merkle properties, concurrency).
#![allow(dead_code)]

pub mod fresh;
pub mod large_fold;
mod server_suite;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_engine_core::conformance::{archive_all, merkle_follows_data, server_url, unique_ns};
use sync_engine_core::memory::MemoryArchive;
use sync_engine_core::merkle::{
    diff, Children, ChildrenSource, DiffKind, Digest, MemTree, NodeKey, NodeValue,
};
use sync_engine_core::store::{ArchiveExt, ArchiveStore, MerkleExt, MerkleStore};
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::{SqlOptions, SqlStore};

/// A table prefix unique to this process and call.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("se_{tag}_{}_{n}_", std::process::id())
}

/// Options for tests: small pool, given split threshold, unique tables.
pub fn options(tag: &str, threshold: usize) -> SqlOptions {
    SqlOptions {
        pool_size: 4,
        split_threshold: threshold,
        ..SqlOptions::default().with_table_prefix(unique_prefix(tag))
    }
}

/// A SQLite store in a fresh temporary directory (kept alive by the returned guard).
pub async fn sqlite_store(threshold: usize) -> (SqlStore, tempfile::TempDir) {
    sqlite_store_with(options("lite", threshold)).await
}

/// A SQLite store with `opts` in a fresh temporary directory.
pub async fn sqlite_store_with(opts: SqlOptions) -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = SecretUrl::new(format!("sqlite://{}/nested/dir/archive.db", dir.path().display()));
    let store = SqlStore::connect(&url, opts).await.unwrap();
    (store, dir)
}

/// A store on the server named by `var`, on unique tables; None (loudly) when unset.
pub async fn server_store(var: &str, tag: &str, threshold: usize) -> Option<SqlStore> {
    let url = server_url(var)?;
    Some(SqlStore::connect(&SecretUrl::new(url), options(tag, threshold)).await.unwrap())
}

/// Reopen the same tables with another pool (another "engine instance").
pub async fn reopen(url: &SecretUrl, opts: &SqlOptions) -> SqlStore {
    SqlStore::connect(url, opts.clone()).await.unwrap()
}

/// A [`MerkleStore`] as a diff source.
pub struct Src<'a>(pub &'a dyn MerkleStore);

impl ChildrenSource for Src<'_> {
    type Error = sync_engine_core::Error;

    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>, Self::Error> {
        self.0.node(key).await
    }

    async fn children(&self, key: &NodeKey) -> Result<Children, Self::Error> {
        self.0.children(key).await
    }

    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>, Self::Error> {
        self.0.children_many(keys).await
    }
}

/// `children_many` answers exactly what `children` answers for each key, in order: asked
/// for `keys`, for the sub-buckets and a deeper bucket of each, twice each, and for keys
/// that do not exist.
pub async fn children_many_agrees(store: &SqlStore, keys: &[NodeKey]) {
    let mut asked = Vec::new();
    for k in keys {
        asked.push(k.clone());
        for n in [0u8, 5, 15] {
            asked.push(k.child_bucket(n));
        }
        asked.push(k.child_bucket(3).child_bucket(9).child_bucket(1));
        asked.push(k.clone());
    }
    asked.push(NodeKey::path("no.such.path"));
    asked.push(NodeKey { path: "no..path".into(), bucket: vec![1] });
    let mut one_by_one = Vec::new();
    for k in &asked {
        one_by_one.push(store.children(k).await.unwrap());
    }
    let many = store.children_many(&asked).await.unwrap();
    assert_eq!(many.len(), asked.len());
    for ((k, a), b) in asked.iter().zip(&many).zip(&one_by_one) {
        assert_eq!(a, b, "children_many and children disagree on {k:?}");
    }
    assert!(store.children_many(&[]).await.unwrap().is_empty());
}

fn oid(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

/// The conformance suite and the Merkle conformance check.
pub async fn conformance(store: &SqlStore) {
    let ns = unique_ns("sql");
    archive_all(store, &ns).await.unwrap();
    merkle_follows_data(store, store, &format!("{ns}.mk")).await.unwrap();
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

/// Binary, JSON, maximum-size payloads and maximum-length ids round-trip exactly.
pub async fn round_trips(store: &SqlStore) {
    let ns = unique_ns("rt");
    let all: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let json = r#"{"k":"\u00e9\u4e2d","n":[1,2.5,null,true],"s":"quote\" back\\ slash","e":{}}"#;
    let big: Vec<u8> =
        (0..16 * 1024 * 1024).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let long_id = format!("{ns}.{}", "x".repeat(1024 - ns.len() - 1));
    let default_max = format!("{ns}.{}", "y".repeat(255 - ns.len() - 1));
    let items = vec![
        SyncItem::new(oid(&format!("{ns}.bin")), 1, all.clone()),
        SyncItem::new(oid(&format!("{ns}.json")), 1, json).with_state("état-Ω"),
        SyncItem::new(oid(&format!("{ns}.empty")), 1, Vec::new()),
        SyncItem::new(
            ObjectId::with_max_len(&long_id, 1024).unwrap(),
            u64::MAX,
            "long id, max version",
        ),
        SyncItem::new(oid(&default_max), 1, "255 bytes"),
    ];
    store.put_batch(&items).await.unwrap();
    store.put_batch(&[SyncItem::new(oid(&format!("{ns}.big")), 1, big.clone())]).await.unwrap();
    for want in &items {
        let got = store.get(want.id()).await.unwrap().expect("stored");
        assert_eq!(got.content(), want.content(), "{}", want.id());
        assert_eq!(got.stamp(), want.stamp());
        assert_eq!(got.state(), want.state());
        assert_eq!(got.updated_at(), want.updated_at());
    }
    let got = store.get(&oid(&format!("{ns}.big"))).await.unwrap().expect("big stored");
    assert!(got.content().as_ref() == big.as_slice(), "16 MiB payload changed");
    // A newer small write replaces the big one, and the big one comes back after.
    store.put_batch(&[SyncItem::new(oid(&format!("{ns}.big")), 2, "small")]).await.unwrap();
    let got = store.get(&oid(&format!("{ns}.big"))).await.unwrap().unwrap();
    assert_eq!(got.content().as_ref(), b"small");
    store.put_batch(&[SyncItem::new(oid(&format!("{ns}.big")), 3, big.clone())]).await.unwrap();
    let got = store.get(&oid(&format!("{ns}.big"))).await.unwrap().unwrap();
    assert!(got.content().as_ref() == big.as_slice());
    // u64::MAX versions order correctly: an older write loses.
    let lid = ObjectId::with_max_len(&long_id, 1024).unwrap();
    let out = store.put_batch(&[SyncItem::new(lid.clone(), u64::MAX - 1, "older")]).await.unwrap();
    assert_eq!((out.applied, out.stale), (0, 1));
    assert_eq!(store.all_keys(&ns, 2).await.unwrap().len(), 6);
    // Ids over the id column are refused with nothing stored.
    let too_long = ObjectId::with_max_len(&format!("{ns}.{}", "z".repeat(1030)), 2000).unwrap();
    let e = store.put_batch(&[SyncItem::new(too_long, 1, "x")]).await.unwrap_err();
    assert!(!e.is_retryable() && e.to_string().contains("1024"), "{e}");
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

/// One random operation of the property tests.
#[derive(Debug, Clone)]
pub enum Op {
    Put(String, u64, u8),
    Delete(String, u64),
}

/// Ids over a small alphabet so that ids are prefixes of other ids (`a`, `a.b`, `a.b.c`).
pub fn id_universe(ns: &str, wide: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for a in ["a", "b", "ab"] {
        ids.push(format!("{ns}.{a}"));
        for b in ["a", "b", "c"] {
            ids.push(format!("{ns}.{a}.{b}"));
            ids.push(format!("{ns}.{a}.{b}.x"));
        }
    }
    for i in 0..wide {
        ids.push(format!("{ns}.w.k{i}"));
    }
    ids
}

/// Apply `batches` to the store and to the in-memory reference archive, checking after each
/// batch that outcomes, reads, the root, every node and diffs agree.
pub async fn check_against_reference(
    store: &SqlStore,
    ns: &str,
    universe: &[String],
    batches: &[Vec<Op>],
) {
    let reference = MemoryArchive::new();
    let ids: Vec<ObjectId> = universe.iter().map(|s| oid(s)).collect();
    for batch in batches {
        let items: Vec<SyncItem> = batch
            .iter()
            .map(|op| match op {
                Op::Put(id, v, c) => SyncItem::new(oid(id), *v, vec![*c; usize::from(*c % 7)]),
                Op::Delete(id, v) => SyncItem::tombstone(oid(id), *v),
            })
            .collect();
        let ours = store.put_batch(&items).await.unwrap();
        let theirs = reference.put_batch(&items).await.unwrap();
        assert_eq!(ours, theirs, "outcome of {batch:?}");
        assert_eq!(store.get_many(&ids).await.unwrap(), reference.get_many(&ids).await.unwrap());
        let key = NodeKey::path(ns);
        assert_eq!(
            store.node(&key).await.unwrap(),
            reference.node(&key).await.unwrap(),
            "subtree {ns}"
        );
        for id in universe {
            let (parent, _) = id.rsplit_once('.').unwrap();
            let k = NodeKey::path(parent);
            assert_eq!(
                store.node(&k).await.unwrap(),
                reference.node(&k).await.unwrap(),
                "node {parent}"
            );
        }
        let d = diff(&Src(store), &Src(&reference), ns).await.unwrap();
        assert!(d.differences.is_empty(), "diff of equal trees: {:?}", d.differences);
        let mut keys = vec![NodeKey::path(ns)];
        for id in universe {
            keys.push(NodeKey::path(id.rsplit_once('.').map_or("", |(p, _)| p)));
        }
        children_many_agrees(store, &keys).await;
    }
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    // A perturbed copy differs in exactly the perturbed ids.
    let live: BTreeMap<String, Digest> = reference_leaves(&reference, &ids).await;
    let mut other = MemTree::new();
    for (id, d) in &live {
        other.upsert(id, *d).unwrap();
    }
    let mut want = Vec::new();
    if let Some((first, _)) = live.iter().next() {
        other.remove(first).unwrap();
        want.push((first.clone(), DiffKind::OnlyInA));
    }
    let extra = format!("{ns}.zz.extra");
    other.upsert(&extra, Digest([7; 32])).unwrap();
    want.push((extra, DiffKind::OnlyInB));
    want.sort();
    let d = diff(&Src(store), &other, ns).await.unwrap();
    let mut got: Vec<(String, DiffKind)> =
        d.differences.iter().map(|x| (x.id.clone(), x.kind)).collect();
    got.sort();
    assert_eq!(got, want);
}

async fn reference_leaves(reference: &MemoryArchive, ids: &[ObjectId]) -> BTreeMap<String, Digest> {
    let got = reference.get_many(ids).await.unwrap();
    got.into_iter().flatten().map(|i| (i.id().to_string(), i.leaf_digest())).collect()
}

/// Random batches over the universe: writes, overwrites (small versions, so ties and stale
/// writes happen), deletes.
pub fn random_batches(seed: u64, universe: &[String], batches: usize, size: usize) -> Vec<Vec<Op>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..batches)
        .map(|_| {
            (0..rng.random_range(1..=size))
                .map(|_| {
                    let id = universe[rng.random_range(0..universe.len())].clone();
                    let v = rng.random_range(0..6);
                    if rng.random_ratio(1, 4) {
                        Op::Delete(id, v)
                    } else {
                        Op::Put(id, v, rng.random())
                    }
                })
                .collect()
        })
        .collect()
}

/// A wide flat node: splits into nested buckets, `children` stays bounded, deletes shrink it.
pub async fn wide_node(store: &SqlStore, threshold: usize, n: usize) {
    let ns = unique_ns("wide");
    let mut reference = MemTree::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let items: Vec<SyncItem> = chunk
            .iter()
            .map(|i| SyncItem::new(oid(&format!("{ns}.items.{i}")), 1, format!("v{i}")))
            .collect();
        store.put_batch(&items).await.unwrap();
        for it in &items {
            reference.upsert(it.id().as_str(), it.leaf_digest()).unwrap();
        }
    }
    let path = format!("{ns}.items");
    // Walk the stored tree under the wide node: every listing is bounded.
    let mut stack = vec![NodeKey::path(path.clone())];
    let mut leaves = 0;
    let mut walked = Vec::new();
    while let Some(k) = stack.pop() {
        walked.push(k.clone());
        match store.children(&k).await.unwrap() {
            Children::Buckets(b) => {
                assert!(b.len() <= 16);
                let sum = b.iter().fold(NodeValue::EMPTY, |a, (_, v)| a.plus(*v));
                assert_eq!(Some(sum), store.node(&k).await.unwrap(), "buckets sum to the node");
                stack.extend(b.iter().map(|(nib, _)| k.child_bucket(*nib)));
            }
            Children::Entries(e) => {
                assert!(
                    e.len() <= threshold,
                    "a flat node lists {} > {threshold} entries",
                    e.len()
                );
                leaves += e.len();
            }
        }
    }
    assert_eq!(leaves, n);
    children_many_agrees(store, &walked).await;
    assert_eq!(
        store.subtree_hash(&path).await.unwrap(),
        reference.node(&NodeKey::path(path.clone())).unwrap().hash()
    );
    // Delete most of them: the tree follows.
    let dels: Vec<SyncItem> = (0..n)
        .filter(|i| i % 10 != 0)
        .map(|i| SyncItem::tombstone(oid(&format!("{ns}.items.{i}")), 2))
        .collect();
    for chunk in dels.chunks(700) {
        store.put_batch(chunk).await.unwrap();
        for it in chunk {
            reference.remove(it.id().as_str()).unwrap();
        }
    }
    assert_eq!(
        store.subtree_hash(&path).await.unwrap(),
        reference.node(&NodeKey::path(path.clone())).unwrap().hash()
    );
    let d = diff(&Src(store), &reference, &ns).await.unwrap();
    assert!(d.differences.is_empty(), "{:?}", d.differences);
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

/// Four writers on four stores (four pools, as four engine instances) write overlapping ids at
/// once; afterwards the stored tree equals a from-scratch build of the stored items, and the
/// items equal the newer-wins result of every write.
pub async fn concurrent_writers(stores: Vec<SqlStore>) {
    let ns = unique_ns("conc");
    let universe: Vec<String> = (0..300)
        .map(|i| match i % 3 {
            0 => format!("{ns}.t{}.u{}", i % 7, i),
            1 => format!("{ns}.flat.k{i}"),
            _ => format!("{ns}.t{}", i % 11),
        })
        .collect();
    let stores: Vec<std::sync::Arc<SqlStore>> =
        stores.into_iter().map(std::sync::Arc::new).collect();
    let mut handles = Vec::new();
    let mut all_items = Vec::new();
    for (w, store) in stores.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(w as u64);
        let batches: Vec<Vec<SyncItem>> = (0..30)
            .map(|b| {
                (0..40)
                    .map(|_| {
                        let id = oid(&universe[rng.random_range(0..universe.len())]);
                        let v = rng.random_range(0..1000);
                        if rng.random_ratio(1, 5) {
                            SyncItem::tombstone(id, v)
                        } else {
                            SyncItem::new(id, v, format!("w{w}b{b}v{v}"))
                        }
                    })
                    .collect()
            })
            .collect();
        all_items.extend(batches.iter().flatten().cloned());
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for batch in batches {
                store.put_batch(&batch).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let reference = MemoryArchive::new();
    reference.put_batch(&all_items).await.unwrap();
    let ids: Vec<ObjectId> = universe.iter().map(|s| oid(s)).collect();
    for store in &stores {
        assert_eq!(store.get_many(&ids).await.unwrap(), reference.get_many(&ids).await.unwrap());
        assert_eq!(
            store.root_hash().await.unwrap(),
            reference.root_hash().await.unwrap(),
            "root after concurrent writers"
        );
    }
    let check = stores[0].verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

/// Tombstones older than the cut-off are purged, younger ones and live items kept, the tree
/// untouched.
pub async fn purge(store: &SqlStore) {
    let ns = unique_ns("purge");
    let live = oid(&format!("{ns}.live"));
    let old: Vec<ObjectId> = (0..7000).map(|i| oid(&format!("{ns}.old{i}"))).collect();
    let young = oid(&format!("{ns}.young"));
    let mut items = vec![SyncItem::new(live.clone(), 1, "x").with_updated_at(10)];
    items.extend(old.iter().map(|id| SyncItem::tombstone(id.clone(), 1).with_updated_at(10)));
    items.push(SyncItem::tombstone(young.clone(), 1).with_updated_at(u64::MAX - 5));
    let revived = oid(&format!("{ns}.revived"));
    items.push(SyncItem::tombstone(revived.clone(), 1).with_updated_at(10));
    store.put_batch(&items).await.unwrap();
    // A live write over an old tombstone, itself with an old timestamp: never purged.
    store
        .put_batch(&[SyncItem::new(revived.clone(), 2, "back").with_updated_at(10)])
        .await
        .unwrap();
    let root = store.root_hash().await.unwrap();
    let n = store.purge_tombstones(1_000).await.unwrap();
    assert!(n >= 7000, "purged {n}");
    assert_eq!(store.root_hash().await.unwrap(), root, "purge does not touch the tree");
    assert!(store.exists(&live).await.unwrap());
    assert!(store.exists(&revived).await.unwrap(), "a live item over an old tombstone was purged");
    let out = store.put_batch(&[SyncItem::new(young.clone(), 0, "old write")]).await.unwrap();
    assert_eq!(out.stale, 1, "the young tombstone still blocks");
    let out =
        store.put_batch(&[SyncItem::new(old[0].clone(), 0, "after retention")]).await.unwrap();
    assert_eq!(out.applied, 1, "a purged tombstone no longer blocks");
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}

/// A closed port is reported quickly, as Temporary, naming the redacted URL only.
pub async fn dead_server(url: &str) {
    let opts = SqlOptions { acquire_timeout: Duration::from_millis(2000), ..SqlOptions::default() };
    let start = std::time::Instant::now();
    let e = SqlStore::connect(&SecretUrl::new(url), opts).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2200), "took {took:?}");
    assert!(e.is_retryable(), "{e}");
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("hunter2"), "password leaked: {shown}");
    assert!(shown.contains("***"), "the redacted URL is named: {shown}");
}
