//! Every startup path: WAL pending; snapshot valid, stale, corrupt; L2 empty, stale, down;
//! L3 down (failing, or starting degraded).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{id, Rig};
use sync_engine_core::engine::EngineState;
use sync_engine_core::store::{
    ArchiveExt, ArchiveStore, CacheExt, FilterSnapshot, MerkleExt, SnapshotStore, Wal,
};
use sync_engine_core::{ErrorKind, SyncItem};
use sync_engine_cuckoo::TrustState;

async fn seed_l3(rig: &Rig, n: u64) {
    let items: Vec<SyncItem> =
        (0..n).map(|i| SyncItem::new(id(&format!("s.{i}")), 1, format!("v{i}"))).collect();
    rig.l3.inner().put_batch(&items).await.unwrap();
}

#[tokio::test]
async fn pending_wal_entries_are_drained_before_ready() {
    let rig = Rig::new();
    let items: Vec<SyncItem> =
        (0..50).map(|i| SyncItem::new(id(&format!("w.{i}")), 5, "from wal")).collect();
    rig.wal.inner().append(&items).await.unwrap();
    let engine = rig.start().await;
    assert_eq!(engine.state(), EngineState::Ready);
    assert_eq!(rig.wal.inner().stats().await.unwrap().items, 0);
    assert_eq!(rig.l3.inner().count("w.").await.unwrap(), 50);
    assert_eq!(engine.health().wal_depth, 0);
}

#[tokio::test]
async fn valid_snapshot_is_restored_without_a_scan() {
    let rig = Rig::new();
    seed_l3(&rig, 200).await;
    let first = rig.start().await;
    assert_eq!(first.health().warmup_scanned, 200, "no snapshot at first: rebuilt by scan");
    first.shutdown().await.unwrap();
    assert!(rig.wal.inner().load_snapshot().await.unwrap().is_some(), "shutdown saved a snapshot");
    let scans_before = rig.l3.plan().calls();
    let second = rig.start().await;
    let h = second.health();
    assert_eq!(h.filter, TrustState::Trusted);
    assert_eq!(h.warmup_scanned, 0, "restored, not rescanned");
    assert!(rig.l3.plan().calls() - scans_before < 10, "startup made few L3 calls");
    // Trusted filter: absent ids cost no backend call.
    let calls = (rig.l3.plan().calls(), rig.l2.plan().calls());
    for i in 0..100 {
        assert_eq!(second.get(&format!("absent.{i}")).await.unwrap(), None);
    }
    assert_eq!(
        (rig.l3.plan().calls(), rig.l2.plan().calls()),
        calls,
        "absent lookups hit no backend"
    );
    assert!(second.get("s.7").await.unwrap().is_some());
}

#[tokio::test]
async fn stale_snapshot_is_not_trusted_and_the_filter_is_rebuilt() {
    let rig = Rig::new();
    seed_l3(&rig, 20).await;
    rig.start().await.shutdown().await.unwrap();
    // L3 changes behind the snapshot's back (another writer, a restore).
    rig.l3.inner().put_batch(&[SyncItem::new(id("late.arrival"), 1, "x")]).await.unwrap();
    let engine = rig.start().await;
    assert_eq!(engine.health().warmup_scanned, 21, "rebuilt by scan");
    assert!(
        engine.get("late.arrival").await.unwrap().is_some(),
        "no false 'absent' for the new id"
    );
}

#[tokio::test]
async fn corrupt_snapshot_is_rebuilt() {
    let rig = Rig::new();
    seed_l3(&rig, 20).await;
    let root = rig.l3.inner().root_hash().await.unwrap();
    let junk = FilterSnapshot {
        bytes: Bytes::from_static(b"not a filter"),
        merkle_root: root,
        entries: 20,
        taken_at_ms: 0,
    };
    rig.wal.inner().save_snapshot(&junk).await.unwrap();
    let engine = rig.start().await;
    assert_eq!(engine.health().filter, TrustState::Trusted);
    assert_eq!(engine.health().warmup_scanned, 20);
    assert!(engine.get("s.3").await.unwrap().is_some());
}

#[tokio::test]
async fn empty_l2_is_repaired_at_start() {
    let rig = Rig::new();
    seed_l3(&rig, 40).await;
    let engine = rig.start().await;
    assert_eq!(
        rig.l2.inner().root_hash().await.unwrap(),
        rig.l3.inner().root_hash().await.unwrap()
    );
    let report = engine.health().last_repair.unwrap();
    assert_eq!((report.differing, report.repaired), (40, 40));
}

#[tokio::test]
async fn stale_l2_is_repaired_exactly_where_it_differs() {
    let rig = Rig::new();
    seed_l3(&rig, 100).await;
    rig.start().await.shutdown().await.unwrap();
    // Behind the engine's back: change 3 values, add 2 strays.
    for i in [5, 50, 95] {
        rig.l2.inner().tamper(SyncItem::new(id(&format!("s.{i}")), 99, "tampered"));
    }
    for k in ["stray.a", "stray.b"] {
        rig.l2.inner().tamper(SyncItem::new(id(k), 1, "stray"));
    }
    let engine = rig.start().await;
    let r = engine.health().last_repair.unwrap();
    assert_eq!(r.differing, 5, "{r:?}");
    assert_eq!((r.repaired, r.removed), (3, 2), "{r:?}");
    assert_eq!(rig.l2.inner().get(&id("s.50")).await.unwrap().unwrap().version(), 1);
    assert!(!rig.l2.inner().exists(&id("stray.a")).await.unwrap());
    assert_eq!(
        rig.l2.inner().root_hash().await.unwrap(),
        rig.l3.inner().root_hash().await.unwrap()
    );
}

#[tokio::test]
async fn l2_down_at_start_runs_without_it_then_repairs() {
    let rig = Rig::new();
    seed_l3(&rig, 10).await;
    rig.l2.plan().set_down(true);
    let engine = rig.start().await;
    assert_eq!(engine.state(), EngineState::Ready);
    engine.submit("x.1", "during l2 outage").await.unwrap();
    engine.flush().await.unwrap();
    assert!(engine.get("x.1").await.unwrap().is_some());
    rig.l2.plan().set_down(false);
    tokio::time::sleep(Duration::from_millis(60)).await;
    engine.tick().await.unwrap();
    assert!(rig.l2.inner().exists(&id("x.1")).await.unwrap());
    assert_eq!(
        rig.l2.inner().root_hash().await.unwrap(),
        rig.l3.inner().root_hash().await.unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn l3_down_at_start_fails_with_a_clear_error_by_default() {
    let rig = Rig::new();
    rig.l3.plan().set_down(true);
    let e = rig.start_with(Rig::config()).await.err().expect("start fails");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("L3 unreachable after 2 attempts"), "{e}");
}

#[tokio::test]
async fn l3_down_at_start_with_degraded_start_then_recovers() {
    let rig = Rig::new();
    seed_l3(&rig, 5).await;
    rig.l3.plan().set_down(true);
    let mut cfg = Rig::config();
    cfg.allow_degraded_start = true;
    let engine = rig.start_with(cfg).await.unwrap();
    assert_eq!(engine.state(), EngineState::Degraded);
    let v =
        engine.submit_with("deg.1", "x", sync_engine_core::SubmitOptions::durable()).await.unwrap();
    assert_eq!(rig.wal.inner().stats().await.unwrap().items, 1, "the write went to the WAL");
    assert_eq!(engine.get("deg.1").await.unwrap().map(|i| i.version()), Some(v));
    assert!(
        rig.l2.inner().exists(&id("s.1")).await.unwrap() || engine.get("s.1").await.is_err(),
        "reads come from L1/L2 while L3 is down"
    );
    rig.l3.plan().set_down(false);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = engine.tick().await.unwrap();
    assert!(report.resynced, "{report:?}");
    assert_eq!(engine.state(), EngineState::Running);
    assert!(rig.l3.inner().exists(&id("deg.1")).await.unwrap());
    assert_eq!(engine.health().filter, TrustState::Trusted);
    assert!(engine.get("s.1").await.unwrap().is_some());
}
