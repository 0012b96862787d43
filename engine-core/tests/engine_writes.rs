//! The write path: write-behind, durability, routing, deletes, outages, shutdown.

mod common;

use std::time::Duration;

use common::{id, Rig};
use sync_engine_core::store::{ArchiveExt, ArchiveStore, CacheExt, MerkleExt, Wal};
use sync_engine_core::{EngineState, ErrorKind, Route, SubmitOptions};

#[tokio::test(start_paused = true)]
async fn write_behind_flushes_by_age_without_run() {
    let rig = Rig::new();
    let engine = rig.start().await;
    engine.submit("a.b", "hello").await.unwrap();
    assert!(!rig.l3.inner().exists(&id("a.b")).await.unwrap(), "write-behind: not yet in L3");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rig.l3.inner().exists(&id("a.b")).await.unwrap(), "flushed by age without run()");
    assert!(rig.l2.inner().exists(&id("a.b")).await.unwrap());
}

#[tokio::test]
async fn shutdown_without_run_loses_nothing_and_is_idempotent() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.batch_max_age_ms = 60_000;
    cfg.batch_max_items = 1000;
    let engine = rig.start_with(cfg).await.unwrap();
    for i in 0..100 {
        engine.submit(&format!("k.{i}"), format!("v{i}")).await.unwrap();
    }
    engine.shutdown().await.unwrap();
    engine.shutdown().await.unwrap();
    assert_eq!(engine.state(), EngineState::Stopped);
    assert_eq!(rig.l3.inner().count("k.").await.unwrap(), 100);
    let e = engine.submit("k.x", "late").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ShuttingDown, "{e}");
}

#[tokio::test]
async fn durable_submit_returns_only_once_l3_holds_it() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.batch_max_age_ms = 60_000;
    let engine = rig.start_with(cfg).await.unwrap();
    engine.submit_with("d.1", "x", SubmitOptions::durable()).await.unwrap();
    assert!(rig.l3.inner().exists(&id("d.1")).await.unwrap());
}

#[tokio::test]
async fn full_batches_flush_off_the_callers_path() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.batch_max_age_ms = 60_000;
    cfg.batch_max_items = 10;
    let engine = rig.start_with(cfg).await.unwrap();
    rig.l3.plan().set_latency(Duration::from_millis(200));
    let started = std::time::Instant::now();
    for i in 0..30 {
        engine.submit(&format!("f.{i}"), "x").await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "submits waited for a flush: {:?}",
        started.elapsed()
    );
    engine.flush().await.unwrap();
    assert_eq!(rig.l3.inner().count("f.").await.unwrap(), 30);
}

#[tokio::test]
async fn l3_outage_mid_ingest_loses_nothing() {
    let rig = Rig::new();
    let engine = rig.start().await;
    let mut acked = Vec::new();
    for i in 0..300u64 {
        if i == 100 {
            rig.l3.plan().set_down(true);
        }
        let v = engine
            .submit_with(&format!("o.{i}"), format!("v{i}"), SubmitOptions::durable())
            .await
            .unwrap();
        acked.push((format!("o.{i}"), v));
    }
    assert!(
        rig.wal.inner().stats().await.unwrap().items > 0,
        "writes went to the WAL during the outage"
    );
    // Reads during the outage still see every acknowledged write.
    for (k, v) in acked.iter().step_by(17) {
        assert_eq!(engine.get(k).await.unwrap().map(|i| i.version()), Some(*v), "{k}");
    }
    rig.l3.plan().set_down(false);
    tokio::time::sleep(Duration::from_millis(60)).await;
    engine.tick().await.unwrap();
    assert_eq!(rig.wal.inner().stats().await.unwrap().items, 0, "WAL drained");
    for (k, v) in &acked {
        let got = rig.l3.inner().get(&id(k)).await.unwrap();
        assert_eq!(got.map(|i| i.version()), Some(*v), "{k} in L3 at its acknowledged version");
    }
    // L2 and L3 agree after maintenance.
    engine.tick().await.unwrap();
    assert_eq!(
        rig.l2.inner().root_hash().await.unwrap(),
        rig.l3.inner().root_hash().await.unwrap()
    );
}

#[tokio::test]
async fn delete_cancels_a_pending_write_and_later_writes_win_only_if_newer() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.batch_max_age_ms = 60_000;
    let engine = rig.start_with(cfg).await.unwrap();
    engine
        .submit_with("r.1", "v", SubmitOptions { version: Some(10), ..Default::default() })
        .await
        .unwrap();
    engine
        .delete_with("r.1", SubmitOptions { version: Some(11), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(engine.get("r.1").await.unwrap(), None, "deleted before flush");
    engine.flush().await.unwrap();
    assert_eq!(rig.l3.inner().get(&id("r.1")).await.unwrap(), None);
    assert!(rig.l3.inner().raw(&id("r.1")).unwrap().is_tombstone(), "the tombstone reached L3");
    // An older write after the delete does not resurrect it.
    engine
        .submit_with(
            "r.1",
            "old",
            SubmitOptions { version: Some(9), durable: true, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(rig.l3.inner().get(&id("r.1")).await.unwrap(), None);
    assert_eq!(engine.get("r.1").await.unwrap(), None);
    // A newer one does.
    engine
        .submit_with(
            "r.1",
            "new",
            SubmitOptions { version: Some(12), durable: true, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(rig.l3.inner().get(&id("r.1")).await.unwrap().map(|i| i.version()), Some(12));
}

#[tokio::test(start_paused = true)]
async fn routes_reach_only_their_tiers() {
    let rig = Rig::new();
    let engine = rig.start().await;
    let l2_only = SubmitOptions {
        route: Route::L2Only,
        ttl: Some(Duration::from_secs(5)),
        durable: true,
        ..Default::default()
    };
    engine.submit_with("route.l2", "x", l2_only).await.unwrap();
    engine
        .submit_with(
            "route.l3",
            "y",
            SubmitOptions { route: Route::L3Only, durable: true, ..Default::default() },
        )
        .await
        .unwrap();
    engine.flush().await.unwrap();
    assert!(rig.l2.inner().exists(&id("route.l2")).await.unwrap());
    assert!(!rig.l3.inner().exists(&id("route.l2")).await.unwrap());
    assert!(rig.l3.inner().exists(&id("route.l3")).await.unwrap());
    assert!(!rig.l2.inner().exists(&id("route.l3")).await.unwrap());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!rig.l2.inner().exists(&id("route.l2")).await.unwrap(), "TTL applied");
}

#[tokio::test]
async fn bad_input_is_rejected_by_name_and_stores_nothing() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.max_payload_bytes = 8;
    let engine = rig.start_with(cfg).await.unwrap();
    for bad in ["", "a..b", "a b", "a\u{0}b", &"x".repeat(300)] {
        let e = engine.submit(bad, "x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}: {e}");
    }
    let e = engine.submit("big", vec![0u8; 9]).await.unwrap_err();
    assert!(e.to_string().contains("max_payload_bytes"), "{e}");
    engine.shutdown().await.unwrap();
    assert_eq!(rig.l3.inner().rows(), 0);
    assert!(rig.l2.inner().is_empty());
}

#[tokio::test]
async fn backpressure_rejects_with_a_named_level_when_nothing_drains() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.l1_max_bytes = 64 * 1024;
    let engine = rig.start_with(cfg).await.unwrap();
    rig.l3.plan().set_down(true);
    rig.wal.plan().set_down(true);
    let mut rejected = None;
    let mut accepted = 0u64;
    for i in 0..2000 {
        match engine.submit(&format!("bp.{i}"), vec![1u8; 512]).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                rejected = Some(e);
                break;
            }
        }
    }
    let e = rejected.expect("writes are refused before memory grows without bound");
    assert_eq!(e.kind(), ErrorKind::Backpressure);
    assert!(e.to_string().contains("reject"), "{e}");
    // Nothing acknowledged is lost once the backends return.
    rig.l3.plan().set_down(false);
    rig.wal.plan().set_down(false);
    engine.shutdown().await.unwrap();
    let n = rig.l3.inner().count("bp.").await.unwrap();
    assert_eq!(n, accepted, "every accepted write reached L3 once the backends returned");
}
