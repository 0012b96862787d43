//! Every in-memory fake passes the conformance suite it shares with the real backends.

use std::sync::Arc;

use sync_engine_core::conformance::*;
use sync_engine_core::memory::{
    Faulty, MemoryArchive, MemoryBus, MemoryCache, MemorySnapshots, MemoryWal,
};
use sync_engine_core::store::Wal;

#[tokio::test]
async fn memory_archive_conforms() {
    let store = MemoryArchive::new();
    archive_all(&store, "conf.mem").await.unwrap();
    merkle_follows_data(&store, &store, "conf.mtree").await.unwrap();
}

#[tokio::test]
async fn faulty_wrapper_without_faults_conforms() {
    let store = Faulty::new(MemoryArchive::new(), 1);
    archive_all(&store, "conf.faulty").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn memory_cache_conforms() {
    let cache = MemoryCache::new();
    cache_all(&cache, "conf.cache").await.unwrap();
}

#[tokio::test]
async fn memory_wal_conforms() {
    let wal = MemoryWal::default();
    let opener = wal.clone();
    wal_keeps_order_across_reopen(move || {
        let w = opener.reopen();
        async move { Ok(Arc::new(w) as Arc<dyn Wal>) }
    })
    .await
    .unwrap();
    wal_drains_only_committed(&wal).await.unwrap();
    wal_refuses_beyond_bound(&MemoryWal::new(50, u64::MAX), 50).await.unwrap();
}

#[tokio::test]
async fn memory_snapshots_conform() {
    snapshots_round_trip(&MemorySnapshots::new()).await.unwrap();
}

#[tokio::test]
async fn memory_bus_conforms() {
    bus_all(&MemoryBus::new(), "conf.bus").await.unwrap();
}
