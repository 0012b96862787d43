//! Conformance of [`Wal`] and [`SnapshotStore`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use sync_engine_merkle::Digest;

use super::{backend, ensure, id, Check};
use crate::memory::{Faulty, MemoryArchive};
use crate::store::{ArchiveExt, FilterSnapshot, SnapshotStore, Wal, WalExt};
use crate::{ErrorKind, SyncItem};

/// Order survives reopen; removal is only on command. `open` must return a handle on the same
/// (initially empty) log each time it is called, as reopening a file after a restart would.
pub async fn wal_keeps_order_across_reopen<F, Fut>(open: F) -> Check
where
    F: Fn() -> Fut,
    Fut: Future<Output = crate::Result<Arc<dyn Wal>>>,
{
    const P: &str = "the WAL keeps order and survives reopen";
    let ns = "conf.wal";
    let items: Vec<SyncItem> = (0..25u64)
        .map(|i| {
            let id = id(ns, &format!("k{}", i % 7));
            if i % 6 == 5 {
                SyncItem::tombstone(id, i)
            } else {
                SyncItem::new(id, i, format!("v{i}"))
            }
        })
        .collect();
    {
        let wal = open().await.map_err(backend(P))?;
        let stats = wal.stats().await.map_err(backend(P))?;
        ensure!(stats.items == 0, P, "the log handed to the check is not empty: {stats:?}");
        for chunk in items.chunks(4) {
            wal.append(chunk).await.map_err(backend(P))?;
        }
    }
    let wal = open().await.map_err(backend(P))?;
    let entries = wal.peek(1000).await.map_err(backend(P))?;
    let got: Vec<SyncItem> = entries.iter().map(|e| e.item.clone()).collect();
    ensure!(
        got.len() == items.len(),
        P,
        "reopened log holds {} of {} entries",
        got.len(),
        items.len()
    );
    for (g, w) in got.iter().zip(&items) {
        ensure!(
            g.stamp() == w.stamp() && g.id() == w.id() && g.content() == w.content(),
            P,
            "entry {g:?} != appended {w:?}"
        );
    }
    ensure!(entries.windows(2).all(|w| w[0].seq < w[1].seq), P, "sequence numbers not increasing");
    let stats = wal.stats().await.map_err(backend(P))?;
    ensure!(stats.items == items.len() as u64, P, "stats report {} items", stats.items);
    let cut = entries[9].seq;
    let removed = wal.remove_through(cut).await.map_err(backend(P))?;
    ensure!(removed == 10, P, "remove_through removed {removed}, expected 10");
    drop(wal);
    let wal = open().await.map_err(backend(P))?;
    let rest = wal.peek(1000).await.map_err(backend(P))?;
    ensure!(
        rest.len() == 15 && rest[0].item.stamp() == items[10].stamp(),
        P,
        "after removal and reopen: {} entries",
        rest.len()
    );
    wal.remove_through(u64::MAX).await.map_err(backend(P))?;
    ensure!(
        wal.stats().await.map_err(backend(P))?.items == 0,
        P,
        "log not empty after removing all"
    );
    Ok(())
}

/// Draining removes entries only after the archive committed them: with the archive down,
/// nothing leaves the log; with it back, everything lands, newest version winning.
pub async fn wal_drains_only_committed(wal: &dyn Wal) -> Check {
    const P: &str = "the WAL drain removes only committed entries";
    let ns = "conf.drain";
    let items: Vec<SyncItem> = (0..30u64)
        .map(|i| SyncItem::new(id(ns, &format!("k{}", i % 10)), i, format!("v{i}")))
        .collect();
    wal.append(&items).await.map_err(backend(P))?;
    let archive = Faulty::new(MemoryArchive::new(), 7);
    archive.plan().set_down(true);
    ensure!(
        wal.drain_to(&archive, 8).await.is_err(),
        P,
        "drain into a down archive reported success"
    );
    let left = wal.stats().await.map_err(backend(P))?.items;
    ensure!(left == 30, P, "drain into a down archive removed entries ({left} left)");
    archive.plan().set_down(false);
    archive.plan().fail_every(3);
    // With every 3rd call failing, retry until drained.
    let mut rounds = 0;
    while wal.stats().await.map_err(backend(P))?.items > 0 && rounds < 50 {
        let _ = wal.drain_to(&archive, 8).await;
        rounds += 1;
    }
    ensure!(
        wal.stats().await.map_err(backend(P))?.items == 0,
        P,
        "log not drained after {rounds} rounds"
    );
    for k in 0..10u64 {
        let got = archive.inner().get(&id(ns, &format!("k{k}"))).await.map_err(backend(P))?;
        ensure!(
            got.as_ref().map(|i| i.version()) == Some(20 + k),
            P,
            "k{k} drained at {got:?}, expected version {}",
            20 + k
        );
    }
    Ok(())
}

/// Beyond `max_items` pending entries an append fails with Backpressure and stores nothing.
pub async fn wal_refuses_beyond_bound(wal: &dyn Wal, max_items: u64) -> Check {
    const P: &str = "the WAL is bounded";
    let ns = "conf.bound";
    let fill: Vec<SyncItem> =
        (0..max_items).map(|i| SyncItem::new(id(ns, &format!("k{i}")), 1, "x")).collect();
    wal.append(&fill).await.map_err(backend(P))?;
    let over = [SyncItem::new(id(ns, "over"), 1, "x"), SyncItem::new(id(ns, "over2"), 1, "x")];
    match wal.append(&over).await {
        Ok(_) => return Err(super::fail(P, "append beyond wal_max_items accepted")),
        Err(e) => ensure!(
            e.kind() == ErrorKind::Backpressure,
            P,
            "append beyond the bound failed with {e} instead of Backpressure"
        ),
    }
    let n = wal.stats().await.map_err(backend(P))?.items;
    ensure!(n == max_items, P, "refused append stored something: {n} pending");
    wal.remove_through(u64::MAX).await.map_err(backend(P))?;
    Ok(())
}

/// The last saved snapshot is the one loaded, byte for byte.
pub async fn snapshots_round_trip(store: &dyn SnapshotStore) -> Check {
    const P: &str = "snapshots round-trip";
    let first = FilterSnapshot {
        bytes: Bytes::from_static(b"one"),
        merkle_root: Digest([1; 32]),
        entries: 1,
        taken_at_ms: 10,
    };
    let second = FilterSnapshot {
        bytes: Bytes::from(vec![0u8, 255, 7, 0]),
        merkle_root: Digest([2; 32]),
        entries: 2,
        taken_at_ms: 20,
    };
    store.save_snapshot(&first).await.map_err(backend(P))?;
    store.save_snapshot(&second).await.map_err(backend(P))?;
    let got = store.load_snapshot().await.map_err(backend(P))?;
    ensure!(got.as_ref() == Some(&second), P, "loaded {got:?}, expected the last saved");
    Ok(())
}
