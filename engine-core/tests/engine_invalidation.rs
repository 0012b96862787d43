//! Several engines over one L2/L3 with an invalidation bus (in-memory fakes): writes and
//! deletes reach the other instances' L1 and filter, own messages are skipped, a gap bypasses
//! L1 and untrusts the filter until the bus is back, and `l1_ttl_ms` bounds staleness without
//! a bus.

mod common;

use std::time::Duration;

use common::Rig;
use sync_engine_core::memory::MemoryBus;
use sync_engine_core::store::MerkleExt;
use sync_engine_core::{Config, SyncEngine};
use sync_engine_cuckoo::TrustState;

/// Engines sharing L2, L3 and the bus, each with its own WAL and L1.
struct Cluster {
    rig: Rig,
    bus: MemoryBus,
    engines: Vec<SyncEngine>,
}

async fn cluster(n: usize, config: Config) -> Cluster {
    let rig = Rig::new();
    let bus = MemoryBus::new();
    let mut engines = Vec::new();
    for _ in 0..n {
        let e = rig.start_instance(config.clone(), &bus).await;
        engines.push(e);
    }
    Cluster { rig, bus, engines }
}

/// Flush every engine and give the listeners time to apply what was published.
async fn settle(c: &Cluster) {
    for e in &c.engines {
        e.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn version(e: &SyncEngine, id: &str) -> Option<u64> {
    e.get(id).await.unwrap().map(|i| i.version())
}

#[tokio::test(start_paused = true)]
async fn a_write_on_one_instance_replaces_the_others_cached_value() {
    let c = cluster(3, Rig::config()).await;
    let v1 = c.engines[0].submit("u.1", "one").await.unwrap();
    settle(&c).await;
    // Every instance caches v1 in its L1.
    for e in &c.engines {
        assert_eq!(version(e, "u.1").await, Some(v1));
    }
    let v2 = c.engines[1].submit("u.1", "two").await.unwrap();
    assert!(v2 > v1);
    settle(&c).await;
    for (i, e) in c.engines.iter().enumerate() {
        let got = e.get("u.1").await.unwrap().unwrap();
        assert_eq!((i, got.version(), &got.content()[..]), (i, v2, &b"two"[..]));
    }
}

#[tokio::test(start_paused = true)]
async fn a_delete_on_one_instance_hides_the_item_everywhere() {
    let c = cluster(3, Rig::config()).await;
    c.engines[0].submit("d.1", "x").await.unwrap();
    settle(&c).await;
    for e in &c.engines {
        assert!(e.get("d.1").await.unwrap().is_some());
    }
    c.engines[2].delete("d.1").await.unwrap();
    settle(&c).await;
    for (i, e) in c.engines.iter().enumerate() {
        assert_eq!((i, e.get("d.1").await.unwrap()), (i, None));
    }
}

#[tokio::test(start_paused = true)]
async fn an_id_created_elsewhere_is_never_answered_absent() {
    let c = cluster(3, Rig::config()).await;
    for e in &c.engines {
        assert_eq!(e.health().filter, TrustState::Trusted, "filters trusted after warm-up");
    }
    // Ask first: the trusted filter answers "absent" (correctly, nothing is written yet).
    assert_eq!(version(&c.engines[1], "n.1").await, None);
    let v = c.engines[0].submit("n.1", "new").await.unwrap();
    settle(&c).await;
    for e in &c.engines[1..] {
        assert_eq!(e.health().filter, TrustState::Trusted);
        assert_eq!(version(e, "n.1").await, Some(v), "the filter learnt the id from the bus");
    }
}

#[tokio::test(start_paused = true)]
async fn a_gap_bypasses_l1_and_untrusts_the_filter_until_reconnected_and_rebuilt() {
    let c = cluster(2, Rig::config()).await;
    let v1 = c.engines[0].submit("g.1", "one").await.unwrap();
    settle(&c).await;
    assert_eq!(version(&c.engines[1], "g.1").await, Some(v1), "cached in engine 1's L1");
    // Engine 1 misses messages.
    c.bus.disconnect(1);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let h = c.engines[1].health();
    assert_eq!((h.bus_connected, h.filter), (Some(false), TrustState::Untrusted));
    let v2 = c.engines[0].submit("g.1", "two").await.unwrap();
    c.engines[0].submit("g.2", "created while cut").await.unwrap();
    settle(&c).await;
    // Not told, but not served from L1 either: the read goes to L2/L3.
    assert_eq!(version(&c.engines[1], "g.1").await, Some(v2));
    assert!(c.engines[1].get("g.2").await.unwrap().is_some());
    c.bus.reconnect(1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let h = c.engines[1].health();
    assert_eq!((h.bus_connected, h.filter), (Some(true), TrustState::Trusted), "rebuilt");
    assert!(c.engines[1].get("g.2").await.unwrap().is_some(), "rebuilt filter holds g.2");
    assert_eq!(version(&c.engines[1], "g.1").await, Some(v2));
}

#[tokio::test(start_paused = true)]
async fn a_bus_down_at_start_serves_nothing_stale_and_recovers() {
    let rig = Rig::new();
    let bus = MemoryBus::new();
    bus.set_down(true);
    let a = rig.start().await; // no bus: writes straight to the tiers
    let b = rig.start_instance(Rig::config(), &bus).await;
    assert_eq!(b.health().bus_connected, Some(false));
    assert_ne!(b.health().filter, TrustState::Trusted, "no 'absent' while disconnected");
    let v = a.submit("s.1", "x").await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(version(&b, "s.1").await, Some(v));
    let v2 = a.submit("s.1", "y").await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(version(&b, "s.1").await, Some(v2), "L1 bypassed while disconnected");
    bus.set_down(false);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let h = b.health();
    assert_eq!((h.bus_connected, h.filter), (Some(true), TrustState::Trusted));
}

#[tokio::test(start_paused = true)]
async fn a_publish_failure_does_not_fail_the_write() {
    let c = cluster(2, Rig::config()).await;
    c.bus.set_down(true);
    let v = c.engines[0].submit_with("p.1", "x", sync_engine_core::SubmitOptions::durable());
    let v = v.await.unwrap();
    c.bus.set_down(false);
    settle(&c).await;
    assert_eq!(version(&c.engines[1], "p.1").await, Some(v));
}

#[tokio::test(start_paused = true)]
async fn l1_ttl_bounds_staleness_without_any_bus() {
    let rig = Rig::new();
    let config = Config { l1_ttl_ms: 500, filter_enabled: false, ..Rig::config() };
    let a = rig.start_with(config.clone()).await.unwrap();
    let b = rig.start_with(config).await.unwrap();
    let v1 = a.submit("t.1", "one").await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(version(&b, "t.1").await, Some(v1));
    let v2 = a.submit("t.1", "two").await.unwrap();
    a.flush().await.unwrap();
    assert_eq!(version(&b, "t.1").await, Some(v1), "no bus: b's L1 is stale ...");
    tokio::time::sleep(Duration::from_millis(501)).await;
    assert_eq!(version(&b, "t.1").await, Some(v2), "... but never beyond l1_ttl_ms");
}

#[tokio::test(start_paused = true)]
async fn concurrent_writers_converge_and_roots_agree() {
    let c = cluster(3, Rig::config()).await;
    for round in 0..5u8 {
        for (i, e) in c.engines.iter().enumerate() {
            e.submit("w.same", format!("{round}-{i}")).await.unwrap();
        }
    }
    settle(&c).await;
    let newest = c.rig.l3.inner().raw(&common::id("w.same")).unwrap();
    for e in &c.engines {
        assert_eq!(e.get("w.same").await.unwrap().unwrap(), newest);
    }
    let (l2, l3) = (c.rig.l2.inner().root_hash().await, c.rig.l3.inner().root_hash().await);
    assert_eq!(l2.unwrap(), l3.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_batch_read_racing_an_invalidation_does_not_cache_the_older_value() {
    use sync_engine_core::store::CacheExt;
    use sync_engine_core::{Route, SubmitOptions};
    let c = cluster(2, Rig::config()).await;
    let v1 = c.engines[0].submit_with("r.1", "one", SubmitOptions::durable()).await.unwrap();
    settle(&c).await;
    // Engine 1 starts a slow batch read; L2 will answer v1 ...
    c.rig.l2.plan().set_latency(Duration::from_millis(100));
    let reader = c.engines[1].clone();
    let read = tokio::spawn(async move { reader.get_many(&[common::id("r.1")]).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // ... because v2 goes to L3 only, and is announced while the read is in flight.
    let l3_only = SubmitOptions { route: Route::L3Only, ..SubmitOptions::durable() };
    let v2 = c.engines[0].submit_with("r.1", "two", l3_only).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let got = read.await.unwrap().unwrap();
    let racing = got[0].as_ref().map(|i| i.version());
    assert!(racing == Some(v1) || racing == Some(v2), "the racing read overlapped v2: {racing:?}");
    // L2 catches up; engine 1 must not answer from an L1 that cached the racing v1.
    c.rig.l2.plan().set_latency(Duration::ZERO);
    let newest = c.rig.l3.inner().raw(&common::id("r.1")).unwrap();
    c.rig.l2.inner().put(newest, None).await.unwrap();
    assert_eq!(version(&c.engines[1], "r.1").await, Some(v2));
}
