//! The read path: tiers in order, promotion, coalescing, the filter, verify/repair on demand,
//! hot reload, health.

mod common;

use std::time::Duration;

use common::{id, Rig};
use sync_engine_core::engine::{BackpressureLevel, BreakerState};
use sync_engine_core::store::{ArchiveStore, CacheExt, CacheStore, MerkleExt};
use sync_engine_core::{SyncEngine, SyncItem};
use tokio::sync::watch;

#[tokio::test]
async fn l3_hits_are_promoted_to_l1_and_l2() {
    let rig = Rig::new();
    // Seeded before start: the filter learns it by its warm-up scan.
    rig.l3.inner().put_batch(&[SyncItem::new(id("p.1"), 7, "x")]).await.unwrap();
    let engine = rig.start().await;
    rig.l2.inner().clear();
    let got = engine.get("p.1").await.unwrap().unwrap();
    assert_eq!(got.version(), 7);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(rig.l2.inner().exists(&id("p.1")).await.unwrap(), "promoted to L2");
    let calls = (rig.l2.plan().calls(), rig.l3.plan().calls());
    assert_eq!(engine.get("p.1").await.unwrap().unwrap().version(), 7);
    assert_eq!((rig.l2.plan().calls(), rig.l3.plan().calls()), calls, "second read is an L1 hit");
}

#[tokio::test]
async fn concurrent_misses_of_one_id_share_one_backend_read() {
    let rig = Rig::new();
    rig.l3.inner().put_batch(&[SyncItem::new(id("c.1"), 1, "x")]).await.unwrap();
    let engine = rig.start().await;
    rig.l2.inner().clear();
    rig.l3.plan().set_latency(Duration::from_millis(100));
    rig.l2.plan().set_latency(Duration::from_millis(20));
    let before = rig.l3.plan().calls();
    let reads: Vec<_> = (0..20)
        .map(|_| {
            let e = engine.clone();
            tokio::spawn(async move { e.get("c.1").await })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap().unwrap().unwrap().version(), 1);
    }
    assert_eq!(rig.l3.plan().calls() - before, 1, "one L3 read for 20 concurrent misses");
}

#[tokio::test]
async fn get_many_answers_in_order_through_every_tier() {
    let rig = Rig::new();
    rig.l3.inner().put_batch(&[SyncItem::new(id("g.l3"), 1, "c")]).await.unwrap();
    let engine = rig.start().await;
    rig.l2.inner().clear();
    engine.submit("g.l1", "a").await.unwrap();
    let ids = [id("g.l3"), id("g.none"), id("g.l1")];
    let got = engine.get_many(&ids).await.unwrap();
    let versions: Vec<bool> = got.iter().map(Option::is_some).collect();
    assert_eq!(versions, [true, false, true]);
    assert_eq!(got[0].as_ref().unwrap().id(), &ids[0]);
}

#[tokio::test]
async fn verify_reports_and_repair_fixes_only_a_prefix() {
    let rig = Rig::new();
    let engine = rig.start().await;
    for t in ["t1", "t2"] {
        for i in 0..20 {
            engine.submit(&format!("{t}.u.{i}"), "x").await.unwrap();
        }
    }
    engine.flush().await.unwrap();
    rig.l2.inner().tamper(SyncItem::new(id("t1.u.3"), 1, "bad"));
    rig.l2.inner().tamper(SyncItem::new(id("t2.u.4"), 1, "bad"));
    let v = engine.verify("t1").await.unwrap();
    assert!(!v.in_sync);
    assert_eq!((v.differing, v.repaired), (1, 0), "{v:?}");
    assert_eq!(v.sample, ["t1.u.3"]);
    let r = engine.repair("t1").await.unwrap();
    assert_eq!(r.repaired, 1);
    assert!(engine.verify("t1").await.unwrap().in_sync);
    assert!(!engine.verify("t2").await.unwrap().in_sync, "t2 untouched by a t1 repair");
    engine.repair("").await.unwrap();
    assert_eq!(
        rig.l2.inner().root_hash().await.unwrap(),
        rig.l3.inner().root_hash().await.unwrap()
    );
}

/// A repair of more ids than several copy chunks at once (each an L3 read and two L2 writes,
/// overlapping) still rewrites every differing id from L3, removes every id L3 lacks, and
/// leaves the tiers equal.
#[tokio::test]
async fn a_repair_of_thousands_of_ids_rewrites_and_removes_every_one() {
    let rig = Rig::new();
    let engine = rig.start().await;
    let n = 9000;
    for i in 0..n {
        engine.submit(&format!("r.{i}"), format!("v{i}")).await.unwrap();
    }
    engine.flush().await.unwrap();
    let cache = rig.l2.inner();
    let missing: Vec<_> = (0..n).step_by(3).map(|i| id(&format!("r.{i}"))).collect();
    cache.remove_many(&missing).await.unwrap();
    for i in (1..n).step_by(3) {
        cache.tamper(SyncItem::new(id(&format!("r.{i}")), 1, "stale"));
    }
    for i in 0..2500 {
        cache.tamper(SyncItem::new(id(&format!("rogue.{i}")), 1, "not in L3"));
    }
    let r = engine.repair("").await.unwrap();
    assert_eq!((r.differing, r.repaired, r.removed, r.skipped_in_flight), (8500, 6000, 2500, 0));
    assert!(engine.verify("").await.unwrap().in_sync);
    assert_eq!(cache.root_hash().await.unwrap(), rig.l3.inner().root_hash().await.unwrap());
    for i in 0..n {
        let got = cache.get(&id(&format!("r.{i}"))).await.unwrap();
        assert_eq!(got.unwrap().content().as_ref(), format!("v{i}").as_bytes(), "r.{i}");
    }
    assert!(cache.get(&id("rogue.7")).await.unwrap().is_none(), "ids L3 lacks are removed");
}

/// Payloads changed behind L2's back leave its shadow as it was: the Merkle verify cannot see
/// them, the deep one names them (beside what the diff finds), and the deep repair rewrites
/// exactly those from L3.
#[tokio::test]
async fn deep_verify_finds_entries_changed_behind_the_shadow_and_deep_repair_fixes_them() {
    let rig = Rig::new();
    let engine = rig.start().await;
    for t in ["t1", "t2"] {
        for i in 0..20 {
            engine.submit(&format!("{t}.u.{i}"), format!("{t} {i}")).await.unwrap();
        }
    }
    engine.flush().await.unwrap();
    let cache = rig.l2.inner();
    for raw in ["t1.u.1", "t1.u.2", "t2.u.3"] {
        assert!(cache.corrupt(&id(raw), "changed behind the cache's back"));
    }
    let shallow = engine.verify("t1").await.unwrap();
    assert!(shallow.in_sync && !shallow.deep, "the shadow does not show raw changes: {shallow:?}");
    cache.tamper(SyncItem::new(id("t1.u.9"), 1, "rogue"));
    let v = engine.verify_deep("t1").await.unwrap();
    assert!(!v.in_sync && v.deep, "{v:?}");
    assert_eq!((v.differing, v.corrupt, v.audited, v.repaired), (3, 2, 20, 0), "{v:?}");
    let mut sample = v.sample.clone();
    sample.sort();
    assert_eq!(sample, ["t1.u.1", "t1.u.2", "t1.u.9"]);
    let r = engine.repair_deep("t1").await.unwrap();
    assert_eq!((r.differing, r.corrupt, r.repaired, r.removed), (3, 2, 3, 0), "{r:?}");
    let after = engine.verify_deep("t1").await.unwrap();
    assert!(after.in_sync && after.differing == 0, "{after:?}");
    for i in [1, 2, 9] {
        let got = cache.get(&id(&format!("t1.u.{i}"))).await.unwrap().unwrap();
        assert_eq!(got.content().as_ref(), format!("t1 {i}").as_bytes());
    }
    let t2 = engine.verify_deep("t2").await.unwrap();
    assert_eq!((t2.differing, t2.corrupt), (1, 1), "t2 untouched by a t1 repair: {t2:?}");
}

/// Polls `cond` for up to 2 s.
async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 2 s: {what}");
}

/// A read that L2 refuses (a value changed behind its back) is served from L3 without counting
/// as an L2 outage, and heals L2: the damaged entry is evicted and L3's value written instead.
#[tokio::test]
async fn reads_of_damaged_l2_values_serve_l3_and_heal_l2() {
    let rig = Rig::new();
    let engine = rig.start().await;
    for i in 1..=3 {
        engine.submit(&format!("h.{i}"), format!("good {i}")).await.unwrap();
    }
    engine.flush().await.unwrap();
    engine.shutdown().await.unwrap();
    drop(engine);
    let cache = rig.l2.inner();
    for i in 1..=3 {
        assert!(cache.corrupt(&id(&format!("h.{i}")), "damaged"));
    }
    let engine = rig.start().await; // an empty L1: reads reach L2
    let one = engine.get("h.1").await.unwrap().unwrap();
    assert_eq!(one.content().as_ref(), b"good 1");
    let many = engine.get_many(&[id("h.2"), id("h.3")]).await.unwrap();
    let contents: Vec<_> = many.iter().map(|i| i.as_ref().unwrap().content().clone()).collect();
    assert_eq!(contents, ["good 2", "good 3"]);
    assert_eq!(
        engine.health().l2.map(|h| h.breaker),
        Some(BreakerState::Closed),
        "a damaged value is not an outage"
    );
    for i in 1..=3 {
        let want = format!("good {i}");
        eventually(&format!("h.{i} healed in L2"), async || {
            let got = cache.get(&id(&format!("h.{i}"))).await;
            matches!(got, Ok(Some(item)) if item.content().as_ref() == want.as_bytes())
        })
        .await;
    }
    assert_eq!(cache.root_hash().await.unwrap(), rig.l3.inner().root_hash().await.unwrap());
    assert!(engine.verify_deep("").await.unwrap().in_sync);
}

#[tokio::test]
async fn hot_reload_applies_batch_thresholds() {
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.batch_max_age_ms = 60_000;
    cfg.batch_max_items = 1000;
    let (tx, rx) = watch::channel(cfg.clone());
    let engine = SyncEngine::builder(cfg.clone())
        .archive(rig.l3.clone())
        .cache(rig.l2.clone())
        .wal(rig.wal.clone())
        .reload(rx)
        .start()
        .await
        .unwrap();
    let mut next = cfg.clone();
    next.batch_max_items = 5;
    tx.send(next).unwrap();
    assert!(engine.tick().await.unwrap().reloaded);
    assert_eq!(engine.config().batch_max_items, 5);
    for i in 0..5 {
        engine.submit(&format!("h.{i}"), "x").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(rig.l3.inner().count("h.").await.unwrap(), 5, "a 5-item batch flushed at once");
    let mut bad = cfg;
    bad.batch_max_items = 0;
    tx.send(bad).unwrap();
    assert!(!engine.tick().await.unwrap().reloaded, "invalid reload ignored");
    assert_eq!(engine.config().batch_max_items, 5);
}

#[tokio::test]
async fn health_is_cheap_and_complete() {
    let rig = Rig::new();
    let engine = rig.start().await;
    let calls = rig.l3.plan().calls();
    let h = engine.health();
    assert!(h.is_ready());
    assert_eq!(h.backpressure, BackpressureLevel::Accept);
    assert_eq!(h.l3.backend, "memory");
    assert!(h.l2.is_some());
    assert_eq!(rig.l3.plan().calls(), calls, "health does no I/O");
}

#[tokio::test]
async fn with_the_filter_disabled_foreign_writes_are_visible() {
    // The filter only knows ids this engine wrote or scanned: when something else writes to
    // L3, run with `filter_enabled = false` (or the multi-instance invalidation channel).
    let rig = Rig::new();
    let mut cfg = Rig::config();
    cfg.filter_enabled = false;
    let engine = rig.start_with(cfg).await.unwrap();
    rig.l3.inner().put_batch(&[SyncItem::new(id("foreign.1"), 1, "x")]).await.unwrap();
    assert!(engine.get("foreign.1").await.unwrap().is_some());
    assert_eq!(engine.health().filter, sync_engine_cuckoo::TrustState::Untrusted);
}
