//! Deterministic interleavings (paused clock, fakes) of a read that is overtaken by a write:
//! the read's older answer must neither be cached (L1, L2) nor handed to a reader who asked
//! after the write was acknowledged, even when the write's L2 copy failed and L1 lost the
//! newer entry — what an empty Redis restart under load does.

mod common;

use std::time::Duration;

use common::{id, Rig};
use sync_engine_core::memory::MemoryBus;
use sync_engine_core::store::CacheExt;
use sync_engine_core::{SubmitOptions, SyncEngine};

const KEY: &str = "t.x";

async fn write(e: &SyncEngine, content: &str) -> u64 {
    e.submit_with(KEY, content.to_owned(), SubmitOptions::durable()).await.unwrap()
}

/// L1 loses everything (a bus gap clears it): stands in for eviction under memory pressure.
async fn drop_l1(bus: &MemoryBus) {
    bus.disconnect(0);
    tokio::time::sleep(Duration::from_millis(1)).await;
    bus.reconnect(0);
    tokio::time::sleep(Duration::from_millis(1)).await;
}

async fn version(e: &SyncEngine) -> Option<u64> {
    e.get(KEY).await.unwrap().map(|i| i.version())
}

async fn l2_version(rig: &Rig) -> Option<u64> {
    rig.l2.inner().get(&id(KEY)).await.unwrap().map(|i| i.version())
}

/// One engine on the fakes, with the bus whose gaps clear its L1.
async fn instance() -> (Rig, MemoryBus, SyncEngine) {
    let rig = Rig::new();
    let bus = MemoryBus::new();
    let e = rig.start_instance(Rig::config(), &bus).await;
    (rig, bus, e)
}

/// One durable write; then L1 and L2 lose it (an empty Redis restart, L1 evicting).
async fn written_then_redis_restarted_empty() -> (Rig, MemoryBus, SyncEngine, u64) {
    let (rig, bus, e) = instance().await;
    let v1 = write(&e, "one").await;
    drop_l1(&bus).await;
    rig.l2.inner().clear();
    (rig, bus, e, v1)
}

/// One durable write, then L2 loses it, then a repair starts whose L3 read of the id takes
/// 100 ms to come back (returned running, 1 ms in).
async fn slow_repair_after_l2_loss() -> (
    Rig,
    MemoryBus,
    SyncEngine,
    tokio::task::JoinHandle<sync_engine_core::Result<sync_engine_core::engine::RepairReport>>,
) {
    let (rig, bus, e) = instance().await;
    write(&e, "one").await;
    rig.l2.inner().clear();
    rig.l3.plan().set_reply_delay(Duration::from_millis(100));
    let repair = tokio::spawn({
        let e = e.clone();
        async move { e.repair("").await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    rig.l3.plan().set_reply_delay(Duration::ZERO);
    (rig, bus, e, repair)
}

#[tokio::test(start_paused = true)]
async fn a_read_overtaken_by_a_write_is_not_cached_nor_shared_with_later_readers() {
    let (rig, bus, e, v1) = written_then_redis_restarted_empty().await;

    // Reader A reads L3 now; its answer takes 100 ms to come back.
    rig.l3.plan().set_reply_delay(Duration::from_millis(100));
    let a = tokio::spawn({
        let e = e.clone();
        async move { version(&e).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    rig.l3.plan().set_reply_delay(Duration::ZERO);

    // Meanwhile a newer write is acknowledged; its L2 copy fails, and L1 then loses it.
    rig.l2.plan().set_down(true);
    let v2 = write(&e, "two").await;
    assert!(v2 > v1);
    drop_l1(&bus).await;
    rig.l2.plan().set_down(false);

    // Reader B asks after the acknowledgement, while A's read is still on its way.
    let b = tokio::spawn({
        let e = e.clone();
        async move { version(&e).await }
    });
    let got_a = a.await.unwrap();
    assert!(got_a == Some(v1) || got_a == Some(v2), "A overlapped the write: either is right");
    assert_eq!(b.await.unwrap(), Some(v2), "B asked after the ack: it must see the write");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(version(&e).await, Some(v2), "nothing older was cached in L1");
    let cached = l2_version(&rig).await;
    assert!(cached.is_none() || cached == Some(v2), "L2 holds {cached:?}, not older than {v2}");
    e.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_late_promotion_over_a_failed_l2_write_is_never_served() {
    let (rig, bus, e, v1) = written_then_redis_restarted_empty().await;

    // A read finds the id in L3 only and promotes it to L2 in the background; that promotion
    // is slow on its way (100 ms), so it lands after what follows.
    assert_eq!(version(&e).await, Some(v1));
    rig.l2.plan().set_latency(Duration::from_millis(100));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    rig.l2.plan().set_latency(Duration::ZERO);

    // A newer write is acknowledged while L2 refuses writes; L1 then loses it.
    rig.l2.plan().set_down(true);
    let v2 = write(&e, "two").await;
    rig.l2.plan().set_down(false);
    drop_l1(&bus).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(l2_version(&rig).await, Some(v1), "setup: the late promotion left L2 older than L3");

    // Reads must not take L2's older value, and the read's own promotion repairs the id.
    assert_eq!(version(&e).await, Some(v2));
    drop_l1(&bus).await;
    assert_eq!(version(&e).await, Some(v2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(l2_version(&rig).await, Some(v2), "the read's promotion brought L2 up to date");
    assert_eq!(e.health().l2_missed, (0, false), "and cleared the mark");
    e.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_repair_lifts_the_marks_of_writes_l2_missed() {
    let rig = Rig::new();
    let e = rig.start().await;
    rig.l2.plan().set_down(true);
    for i in 0..5 {
        e.submit_with(&format!("t.k{i}"), "v", SubmitOptions::durable()).await.unwrap();
    }
    rig.l2.plan().set_down(false);
    assert_eq!(e.health().l2_missed, (5, false));
    tokio::time::sleep(Duration::from_millis(60)).await; // the L2 breaker's pause
    let report = e.repair("").await.unwrap();
    assert_eq!(report.repaired, 5);
    assert_eq!(e.health().l2_missed, (0, false));
    for i in 0..5 {
        let cached = rig.l2.inner().get(&id(&format!("t.k{i}"))).await.unwrap();
        assert!(cached.is_some(), "t.k{i} is in L2 after the repair");
    }
    e.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_write_racing_the_repair_of_its_id_is_not_undone_by_it() {
    let (rig, bus, e, repair) = slow_repair_after_l2_loss().await;

    // Meanwhile a newer write reaches L3 and L2; the repair then removes and rewrites the id
    // with what it read, older than that write.
    let v2 = write(&e, "two").await;
    let report = repair.await.unwrap().unwrap();
    assert_eq!(report.repaired, 1);
    assert!(l2_version(&rig).await < Some(v2), "setup: the repair left L2 older than L3");

    drop_l1(&bus).await;
    assert_eq!(version(&e).await, Some(v2), "reads do not take L2's older value");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(l2_version(&rig).await, Some(v2), "the read's promotion brought L2 up to date");
    e.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reads_that_skip_l2_do_not_keep_its_breaker_from_closing() {
    use sync_engine_core::engine::BreakerState;
    let (rig, bus, e) = instance().await;
    rig.l2.plan().set_down(true);
    let v = write(&e, "one").await;
    rig.l2.plan().set_down(false);
    tokio::time::sleep(Duration::from_millis(60)).await; // past the breaker's pause: half-open
    drop_l1(&bus).await;
    // Only reads of the marked id: they skip L2, and their promotion is the breaker's probe.
    assert_eq!(version(&e).await, Some(v));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let l2 = e.health().l2.expect("L2 configured");
    assert_eq!(l2.breaker, BreakerState::Closed);
    assert_eq!(l2_version(&rig).await, Some(v));
    e.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_repair_that_undoes_a_write_still_on_its_way_to_l3_is_not_forgotten() {
    let (rig, bus, e, repair) = slow_repair_after_l2_loss().await;

    // A newer write: its L2 copy lands at once, its L3 commit takes 200 ms; in between, the
    // repair removes the id from L2 and writes back what it read.
    rig.l3.plan().set_latency(Duration::from_millis(200));
    let w2 = tokio::spawn({
        let e = e.clone();
        async move { write(&e, "two").await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    rig.l3.plan().set_latency(Duration::ZERO);
    let report = repair.await.unwrap().unwrap();
    assert_eq!(report.repaired, 1, "setup: the repair rewrote the id");
    let v2 = w2.await.unwrap();
    assert!(l2_version(&rig).await < Some(v2), "setup: L2 is behind the acknowledged write");

    drop_l1(&bus).await;
    assert_eq!(version(&e).await, Some(v2), "reads do not take L2's older value");
    e.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_l3_only_write_is_not_hidden_by_an_older_copy_in_l2() {
    use sync_engine_core::Route;
    let (rig, bus, e) = instance().await;
    let v1 = write(&e, "one").await;
    assert_eq!(l2_version(&rig).await, Some(v1));
    let l3_only = SubmitOptions { route: Route::L3Only, ..SubmitOptions::durable() };
    let v2 = e.submit_with(KEY, "two", l3_only).await.unwrap();
    drop_l1(&bus).await;
    assert_eq!(version(&e).await, Some(v2), "L2's older copy is not served");
    e.shutdown().await.unwrap();
}
