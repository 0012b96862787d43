//! The fault wrapper fails calls as planned and replays the same failures for the same seed.

use std::time::Duration;

use sync_engine_core::memory::{Faulty, MemoryArchive};
use sync_engine_core::store::{ArchiveExt, ArchiveStore};
use sync_engine_core::{ErrorKind, ObjectId, Status, SyncItem};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

#[tokio::test]
async fn down_and_back_up() {
    let store = Faulty::new(MemoryArchive::new(), 1);
    store.plan().set_down(true);
    let e = store.put_batch(&[SyncItem::new(id("a"), 1, "x")]).await.unwrap_err();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Unavailable, Status::Temporary));
    assert_eq!(store.inner().rows(), 0, "a failed call stores nothing");
    store.plan().set_down(false);
    store.put_batch(&[SyncItem::new(id("a"), 1, "x")]).await.unwrap();
    assert!(store.exists(&id("a")).await.unwrap());
}

#[tokio::test]
async fn every_nth_call_fails() {
    let store = Faulty::new(MemoryArchive::new(), 1);
    store.plan().fail_every(3);
    let results: Vec<bool> = pings(&store, 9).await;
    assert_eq!(results, [true, true, false, true, true, false, true, true, false]);
    assert_eq!(store.plan().failures(), 3);
}

async fn pings(store: &Faulty<MemoryArchive>, n: usize) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(store.ping().await.is_ok());
    }
    out
}

#[tokio::test]
async fn seeded_fraction_replays_identically() {
    let run = |seed| async move {
        let store = Faulty::new(MemoryArchive::new(), seed);
        store.plan().fail_fraction(0.3);
        pings(&store, 200).await
    };
    let (a, b, c) = (run(42).await, run(42).await, run(43).await);
    assert_eq!(a, b, "same seed, same failures");
    assert_ne!(a, c, "another seed, other failures");
    let failed = a.iter().filter(|ok| !**ok).count();
    assert!((30..=90).contains(&failed), "about 30% fail: {failed}/200");
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_on_tokio_time() {
    let store = Faulty::new(MemoryArchive::new(), 1);
    store.plan().set_latency(Duration::from_secs(5));
    let start = tokio::time::Instant::now();
    store.ping().await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(5));
}
