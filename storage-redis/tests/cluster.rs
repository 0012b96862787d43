//! The Redis conformance suite on a Redis Cluster (feature `redis-cluster`): several stores,
//! whose prefixes hash to slots on different primaries, each pass the cache, Merkle-shadow and
//! invalidation-bus promises. `cargo xtask test` starts a local 3-primary cluster and sets
//! `SYNC_ENGINE_TEST_REDIS_CLUSTER_URL`.
#![cfg(feature = "redis-cluster")]

mod common;

use std::collections::BTreeSet;

use sync_engine_core::conformance::{bus_all, cache_all, server_url, unique_ns};
use sync_engine_core::memory::MemoryCache;
use sync_engine_core::store::{CacheEntry, CacheStore, MerkleExt};
use sync_engine_core::{ObjectId, SecretUrl, SyncItem};
use sync_engine_redis::RedisStore;

#[tokio::test]
async fn conformance_on_a_cluster() {
    let Some(seed) = server_url("SYNC_ENGINE_TEST_REDIS_CLUSTER_URL") else { return };
    let mut owners = BTreeSet::new();
    for n in 0..6 {
        let opts = common::options(&format!("cluster{n}"));
        let store = RedisStore::connect_cluster(&SecretUrl::new(&seed), opts).await.unwrap();
        owners.insert(store.server_addr());
        let ns = unique_ns("c");
        cache_all(&store, &ns).await.unwrap();
        // The Merkle shadow follows the data exactly as the in-memory reference does.
        store.clear_namespace().await.unwrap();
        let reference = MemoryCache::new();
        let entries: Vec<CacheEntry> = (0..200)
            .map(|i| {
                let id = ObjectId::new(&format!("{ns}.t{}.x{i}", i % 7)).unwrap();
                CacheEntry::new(if i % 11 == 0 {
                    SyncItem::tombstone(id, i)
                } else {
                    SyncItem::new(id, i, format!("v{i}"))
                })
            })
            .collect();
        store.put_batch(&entries).await.unwrap();
        reference.put_batch(&entries).await.unwrap();
        assert_eq!(store.root_hash().await.unwrap(), reference.root_hash().await.unwrap());
        bus_all(&store.invalidation_bus(), &format!("{ns}b")).await.unwrap();
        store.clear_namespace().await.unwrap();
    }
    assert!(owners.len() >= 2, "the stores landed on several primaries: {owners:?}");
}

/// The deep audit on a cluster store (its slot's owner): a raw change is named and evicted,
/// and the shadow stays exact.
#[tokio::test]
async fn the_audit_finds_raw_changes_on_a_cluster() {
    let Some(seed) = server_url("SYNC_ENGINE_TEST_REDIS_CLUSTER_URL") else { return };
    let opts = common::options("cluster-audit");
    let prefix = opts.prefix.clone();
    let store = RedisStore::connect_cluster(&SecretUrl::new(&seed), opts).await.unwrap();
    let entries: Vec<CacheEntry> = (0..50)
        .map(|i| {
            let id = ObjectId::new(&format!("au.g{}.x{i}", i % 3)).unwrap();
            CacheEntry::new(SyncItem::new(id, 1 + i, format!("v{i}")))
        })
        .collect();
    store.put_batch(&entries).await.unwrap();
    let reference = MemoryCache::new();
    reference.put_batch(&entries).await.unwrap();
    let target = entries[7].item.id().clone();
    let owner = redis::Client::open(format!("redis://{}/", store.server_addr())).unwrap();
    let mut con = owner.get_connection().unwrap();
    let key = format!("{prefix}{{{prefix}}}d:{target}");
    let _: u64 = redis::cmd("SETRANGE").arg(&key).arg(84).arg("X").query(&mut con).unwrap();
    let r = store.audit("", true).await.unwrap();
    assert_eq!((r.checked, r.corrupt.clone(), r.evicted), (50, vec![target.clone()], vec![target]));
    store.put_batch(&entries[7..8]).await.unwrap();
    assert_eq!(store.root_hash().await.unwrap(), reference.root_hash().await.unwrap());
    assert!(store.audit("", false).await.unwrap().corrupt.is_empty());
    store.clear_namespace().await.unwrap();
}
