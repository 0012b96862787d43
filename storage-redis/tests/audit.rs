//! The deep audit against the shared server: raw changes made with plain Redis commands behind
//! the store's back (which its Merkle shadow does not see) are named exactly, nothing else is;
//! eviction leaves the shadow exact, so rewriting the entries brings the root back.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use sync_engine_core::merkle::MemTree;
use sync_engine_core::store::{CacheEntry, CacheExt, CacheStore, MerkleExt};
use sync_engine_core::{ErrorKind, ObjectId, SyncItem};
use sync_engine_redis::RedisOptions;

use common::{options, shared, store_with, TestStore};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

fn tree<'a>(items: impl IntoIterator<Item = &'a SyncItem>) -> MemTree {
    MemTree::from_items(items.into_iter().map(|i| (i.id().as_str(), i.leaf_digest()))).unwrap()
}

fn data_key(prefix: &str, id: &str) -> String {
    format!("{prefix}{{{prefix}}}d:{id}")
}

fn con(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn raw_get(url: &str, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET").arg(key).query(&mut con(url)).unwrap()
}

fn raw_set(url: &str, key: &str, v: &[u8]) {
    let _: () = redis::cmd("SET").arg(key).arg(v).query(&mut con(url)).unwrap();
}

fn setrange(url: &str, key: &str, at: usize, v: &[u8]) {
    let _: u64 = redis::cmd("SETRANGE").arg(key).arg(at).arg(v).query(&mut con(url)).unwrap();
}

/// The stored bytes of `item` written by another store (values do not hold their key).
async fn encoded(url: &str, item: SyncItem, ttl: Option<Duration>) -> Vec<u8> {
    let other = store_with(url, options("audit-src")).await;
    other.put(item.clone(), ttl).await.unwrap();
    raw_get(url, &data_key(&other.options().prefix, item.id().as_str())).unwrap()
}

struct Rig {
    url: String,
    store: TestStore,
    prefix: String,
    items: Vec<SyncItem>,
}

async fn rig(bucket_cap: usize) -> Option<Rig> {
    let url = shared()?;
    let store = store_with(&url, RedisOptions { bucket_cap, ..options("audit") }).await;
    let prefix = store.options().prefix.clone();
    let items: Vec<SyncItem> = (0..60)
        .map(|i| SyncItem::new(id(&format!("a.g{}.i{i}", i % 3)), 10 + i, format!("value {i}")))
        .chain((0..5).map(|i| SyncItem::new(id(&format!("b.i{i}")), 7, "outside")))
        .collect();
    let entries: Vec<CacheEntry> = items.iter().cloned().map(CacheEntry::new).collect();
    store.put_batch(&entries).await.unwrap();
    // A TTL'd item and a tombstone: outside the shadow, healthy.
    store.put(SyncItem::new(id("a.g0.ttl"), 1, "t"), Some(Duration::from_secs(600))).await.unwrap();
    store.delete(&id("a.g1.gone"), 3).await.unwrap();
    Some(Rig { url, store, prefix, items })
}

/// Every kind of raw change; returns the ids changed under `a`.
async fn tamper(r: &Rig) -> BTreeSet<String> {
    let (url, p) = (r.url.as_str(), r.prefix.as_str());
    let key = |i: usize| data_key(p, r.items[i].id().as_str());
    let mut changed = BTreeSet::new();
    let mut mark = |i: usize| changed.insert(r.items[i].id().to_string());
    // The last payload byte (the content hash no longer matches).
    let v = raw_get(url, &key(0)).unwrap();
    setrange(url, &key(0), v.len() - 1, &[v[v.len() - 1] ^ 1]);
    mark(0);
    // The version (the leaf digest no longer matches).
    setrange(url, &key(1), 9, &[0xff]);
    mark(1);
    // The stored leaf digest: a plain removal would log this digest, not the shadow's.
    setrange(url, &key(2), 50, &[0xab; 32]);
    mark(2);
    // Deleted behind the store's back: the shadow keeps the leaf.
    let _: u64 = redis::cmd("DEL").arg(key(3)).query(&mut con(url)).unwrap();
    mark(3);
    // A valid-looking item with another version whose shadow leaf was not updated.
    let it = &r.items[4];
    let forged = SyncItem::new(it.id().clone(), it.version() + 5, "forged");
    raw_set(url, &key(4), &encoded(url, forged, None).await);
    mark(4);
    // A valid item written as if with a TTL (no leaf expected) over one in the shadow.
    let ttl_form = encoded(url, r.items[5].clone(), Some(Duration::from_secs(600))).await;
    raw_set(url, &key(5), &ttl_form);
    mark(5);
    // Not an item at all; and another type of key.
    raw_set(url, &key(6), b"hello");
    mark(6);
    let _: () = redis::cmd("DEL").arg(key(7)).query(&mut con(url)).unwrap();
    let _: u64 = redis::cmd("RPUSH").arg(key(7)).arg("x").query(&mut con(url)).unwrap();
    mark(7);
    // A new id that the shadow never saw.
    let new = SyncItem::new(id("a.g2.new"), 1, "smuggled");
    raw_set(url, &data_key(p, "a.g2.new"), &encoded(url, new, None).await);
    changed.insert("a.g2.new".into());
    // Outside the audited prefix.
    let b0 = data_key(p, "b.i0");
    let v = raw_get(url, &b0).unwrap();
    setrange(url, &b0, v.len() - 1, &[v[v.len() - 1] ^ 1]);
    changed
}

fn names(ids: &[ObjectId]) -> BTreeSet<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

async fn found_exactly_and_evicted(bucket_cap: usize) {
    let Some(r) = rig(bucket_cap).await else { return };
    let clean = r.store.audit("a", false).await.unwrap();
    assert!(clean.corrupt.is_empty(), "an untouched store: {clean:?}");
    assert_eq!(clean.checked, 62, "60 items, a TTL'd one and a tombstone under `a`");
    let root_before = r.store.root_hash().await.unwrap();

    let changed = tamper(&r).await;
    assert_eq!(r.store.root_hash().await.unwrap(), root_before, "the shadow did not see it");
    let found = r.store.audit("a", false).await.unwrap();
    assert_eq!(names(&found.corrupt), changed);
    assert!(found.evicted.is_empty());
    assert_eq!(found.changing, 0);
    // A narrower prefix names only its own; a verify-only audit changed nothing.
    let g0 = r.store.audit("a.g0", false).await.unwrap();
    let in_g0: BTreeSet<String> =
        changed.iter().filter(|i| i.starts_with("a.g0.")).cloned().collect();
    assert_eq!(names(&g0.corrupt), in_g0);
    assert_eq!(names(&r.store.audit("a", false).await.unwrap().corrupt), changed);
    let all = r.store.audit("", false).await.unwrap();
    assert_eq!(all.corrupt.len(), changed.len() + 1, "`` covers b.i0 too");

    // The same checks for chosen ids (self-healing reads use this).
    let some = [r.items[0].id().clone(), r.items[3].id().clone(), r.items[10].id().clone()];
    let picked = r.store.audit_ids(&some, false).await.unwrap();
    assert_eq!(names(&picked.corrupt), names(&some[..2]));
    assert_eq!(picked.checked, 3);

    let healed = r.store.audit("a", true).await.unwrap();
    assert_eq!(names(&healed.evicted), changed);
    assert!(r.store.audit("a", false).await.unwrap().corrupt.is_empty());
    // The shadow lists exactly what is left (tampered entries gone, b.i0 still counted)...
    let left: Vec<&SyncItem> =
        r.items.iter().filter(|i| !changed.contains(i.id().as_str())).collect();
    assert_eq!(r.store.root_hash().await.unwrap(), tree(left).root_hash());
    // ...so rewriting the originals brings the old root back.
    let back: Vec<CacheEntry> = r
        .items
        .iter()
        .filter(|i| changed.contains(i.id().as_str()))
        .cloned()
        .map(CacheEntry::new)
        .collect();
    r.store.put_batch(&back).await.unwrap();
    assert_eq!(r.store.root_hash().await.unwrap(), root_before);
    for it in &r.items[..8] {
        assert_eq!(r.store.get(it.id()).await.unwrap().as_ref(), Some(it));
    }
    assert_eq!(r.store.get(&id("a.g2.new")).await.unwrap(), None);
}

#[tokio::test]
async fn raw_tampering_is_found_exactly_and_evicted_with_an_exact_shadow() {
    found_exactly_and_evicted(128).await;
}

#[tokio::test]
async fn the_audit_works_through_split_buckets() {
    found_exactly_and_evicted(1).await;
}

#[tokio::test]
async fn a_bad_prefix_is_refused_before_anything_is_read() {
    let Some(url) = shared() else { return };
    let store = store_with(&url, options("audit-bad")).await;
    let e = store.audit("a..b", true).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("a..b"), "{e}");
}

/// Keys whose prefix holds glob characters: the audit's `SCAN MATCH` stays in its store.
#[tokio::test]
async fn glob_characters_in_the_prefix_stay_literal() {
    let Some(url) = shared() else { return };
    let base = options("audit-glob").prefix;
    let star = store_with(&url, RedisOptions { prefix: format!("{base}*"), ..options("x") }).await;
    let plain = store_with(&url, RedisOptions { prefix: format!("{base}x"), ..options("x") }).await;
    plain.put(SyncItem::new(id("a.b"), 1, "v"), None).await.unwrap();
    raw_set(&url, &data_key(&plain.options().prefix, "a.b"), b"garbage");
    let r = star.audit("", false).await.unwrap();
    assert_eq!((r.checked, r.corrupt.len()), (0, 0), "{r:?}");
    assert_eq!(plain.audit("", false).await.unwrap().corrupt.len(), 1);
}
