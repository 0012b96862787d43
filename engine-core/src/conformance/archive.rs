//! Conformance of [`ArchiveStore`] (and of its Merkle tree, for stores that keep one).

use bytes::Bytes;
use sync_engine_merkle::{MemTree, NodeKey};

use super::{backend, ensure, id, Check};
use crate::store::{ArchiveExt, ArchiveStore, KeyScan, MerkleStore};
use crate::{ObjectId, SyncItem};

/// Every archive check in turn; stops at the first failure.
pub async fn archive_all(store: &dyn ArchiveStore, ns: &str) -> Check {
    archive_newer_wins(store, &format!("{ns}.nw")).await?;
    archive_tombstones(store, &format!("{ns}.ts")).await?;
    archive_replay_is_harmless(store, &format!("{ns}.rp")).await?;
    archive_batches_are_atomic(store, &format!("{ns}.at")).await?;
    archive_keyset_scan_exactly_once(store, &format!("{ns}.ks")).await?;
    archive_filter_scan_covers_live_ids(store, &format!("{ns}.fs")).await?;
    archive_prefixes_are_exact(store, &format!("{ns}.px")).await?;
    archive_binary_round_trip(store, &format!("{ns}.bin")).await?;
    archive_purges_only_old_tombstones(store, &format!("{ns}.pg")).await?;
    Ok(())
}

async fn version_of(
    store: &dyn ArchiveStore,
    id: &ObjectId,
    p: &'static str,
) -> Result<Option<u64>, super::ConformanceFailure> {
    Ok(store.get(id).await.map_err(backend(p))?.map(|i| i.version()))
}

/// Newer wins: an older write never overwrites a newer one; equal versions tie-break the same
/// way whatever the arrival order.
pub async fn archive_newer_wins(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "newer wins";
    let a = id(ns, "a");
    store.put_batch(&[SyncItem::new(a.clone(), 2, "two")]).await.map_err(backend(P))?;
    let out = store.put_batch(&[SyncItem::new(a.clone(), 1, "one")]).await.map_err(backend(P))?;
    ensure!(version_of(store, &a, P).await? == Some(2), P, "version 1 overwrote version 2");
    ensure!(out.stale == 1 && out.applied == 0, P, "older write reported as {out:?}");
    store.put_batch(&[SyncItem::new(a.clone(), 3, "three")]).await.map_err(backend(P))?;
    let got = store.get(&a).await.map_err(backend(P))?;
    ensure!(
        got.as_ref().map(|i| i.content().as_ref()) == Some(&b"three"[..]),
        P,
        "version 3 not stored: {got:?}"
    );
    // Ties: same version, different content; both arrival orders must end equal.
    let (x, y) = (id(ns, "tie1"), id(ns, "tie2"));
    let (p, q) = (Bytes::from_static(b"p"), Bytes::from_static(b"q"));
    store.put_batch(&[SyncItem::new(x.clone(), 5, p.clone())]).await.map_err(backend(P))?;
    store.put_batch(&[SyncItem::new(x.clone(), 5, q.clone())]).await.map_err(backend(P))?;
    store.put_batch(&[SyncItem::new(y.clone(), 5, q.clone())]).await.map_err(backend(P))?;
    store.put_batch(&[SyncItem::new(y.clone(), 5, p.clone())]).await.map_err(backend(P))?;
    let gx = store.get(&x).await.map_err(backend(P))?.map(|i| i.content().clone());
    let gy = store.get(&y).await.map_err(backend(P))?.map(|i| i.content().clone());
    ensure!(
        gx.is_some() && gx == gy,
        P,
        "equal versions resolved by arrival order: {gx:?} vs {gy:?}"
    );
    // Within one batch, the newest stamp wins.
    let w = id(ns, "inbatch");
    store
        .put_batch(&[SyncItem::new(w.clone(), 9, "nine"), SyncItem::new(w.clone(), 4, "four")])
        .await
        .map_err(backend(P))?;
    ensure!(version_of(store, &w, P).await? == Some(9), P, "older item later in a batch won");
    Ok(())
}

/// Tombstones hide items and block older writes; a newer write after a delete wins.
pub async fn archive_tombstones(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "tombstones hide items and block older writes";
    let a = id(ns, "a");
    store.put_batch(&[SyncItem::new(a.clone(), 1, "v1")]).await.map_err(backend(P))?;
    store.delete(&a, 2).await.map_err(backend(P))?;
    ensure!(store.get(&a).await.map_err(backend(P))?.is_none(), P, "deleted item still readable");
    ensure!(!store.exists(&a).await.map_err(backend(P))?, P, "deleted item still exists");
    let c = store.count(ns).await.map_err(backend(P))?;
    ensure!(c == 0, P, "count includes the tombstone: {c}");
    let keys = store.all_keys(ns, 10).await.map_err(backend(P))?;
    ensure!(keys.is_empty(), P, "scan returns the tombstoned id: {keys:?}");
    store.put_batch(&[SyncItem::new(a.clone(), 1, "v1 again")]).await.map_err(backend(P))?;
    ensure!(
        store.get(&a).await.map_err(backend(P))?.is_none(),
        P,
        "older write resurrected a deleted item"
    );
    store.put_batch(&[SyncItem::new(a.clone(), 3, "v3")]).await.map_err(backend(P))?;
    ensure!(version_of(store, &a, P).await? == Some(3), P, "newer write after delete not visible");
    Ok(())
}

/// Replaying a batch (as a WAL drain after a crash does) changes nothing.
pub async fn archive_replay_is_harmless(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "replaying a batch is harmless";
    let batch: Vec<SyncItem> = (0..20)
        .map(|i| {
            let it = SyncItem::new(id(ns, &format!("k{i:02}")), 10 + i, format!("v{i}"));
            if i % 5 == 0 {
                SyncItem::tombstone(it.id().clone(), 10 + i)
            } else {
                it
            }
        })
        .collect();
    store.put_batch(&batch).await.map_err(backend(P))?;
    let ids: Vec<ObjectId> = batch.iter().map(|i| i.id().clone()).collect();
    let first = store.get_many(&ids).await.map_err(backend(P))?;
    let out = store.put_batch(&batch).await.map_err(backend(P))?;
    let second = store.get_many(&ids).await.map_err(backend(P))?;
    ensure!(first == second, P, "state changed on replay");
    ensure!(out.applied == 0, P, "replay applied {} items", out.applied);
    ensure!(store.count(ns).await.map_err(backend(P))? == 16, P, "count after replay is not 16");
    Ok(())
}

/// A reader sees all of a batch or none of it.
pub async fn archive_batches_are_atomic(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "batches are atomic";
    let ids: Vec<ObjectId> = (0..40).map(|i| id(ns, &format!("k{i:02}"))).collect();
    let batch = |v: u64| {
        ids.iter().map(|i| SyncItem::new(i.clone(), v, format!("v{v}"))).collect::<Vec<_>>()
    };
    store.put_batch(&batch(1)).await.map_err(backend(P))?;
    let writer = async {
        for v in 2..=20u64 {
            store.put_batch(&batch(v)).await?;
            tokio::task::yield_now().await;
        }
        Ok::<_, crate::Error>(())
    };
    let reader = async {
        let mut seen_mixed = None;
        for _ in 0..40 {
            let got = store.get_many(&ids).await?;
            let versions: Vec<u64> =
                got.iter().map(|i| i.as_ref().map_or(0, |i| i.version())).collect();
            if versions.iter().any(|v| *v != versions[0]) && seen_mixed.is_none() {
                seen_mixed = Some(versions);
            }
            tokio::task::yield_now().await;
        }
        Ok::<_, crate::Error>(seen_mixed)
    };
    let (w, r) = tokio::join!(writer, reader);
    w.map_err(backend(P))?;
    let mixed = r.map_err(backend(P))?;
    ensure!(mixed.is_none(), P, "a read saw a partly applied batch: versions {mixed:?}");
    Ok(())
}

/// The filter scan pages (small pages, so every page boundary is crossed) return, ascending and
/// each once, every live id, possibly tombstoned ids, and nothing else.
pub async fn archive_filter_scan_covers_live_ids(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "filter scans cover every live id";
    let ids: Vec<ObjectId> = (0..23).map(|i| id(ns, &format!("f{i:02}"))).collect();
    let items: Vec<SyncItem> = ids.iter().map(|i| SyncItem::new(i.clone(), 1, "x")).collect();
    store.put_batch(&items).await.map_err(backend(P))?;
    let deleted: Vec<SyncItem> =
        ids.iter().step_by(3).map(|i| SyncItem::tombstone(i.clone(), 2)).collect();
    store.put_batch(&deleted).await.map_err(backend(P))?;
    let mut seen: Vec<ObjectId> = Vec::new();
    let mut scan = KeyScan::prefix(ns, 4);
    loop {
        let page = store.scan_filter_keys(&scan).await.map_err(backend(P))?;
        let Some(last) = page.last().cloned() else { break };
        let full = page.len() >= scan.limit;
        seen.extend(page);
        if !full {
            break;
        }
        scan = scan.next_page(&last);
    }
    ensure!(seen.windows(2).all(|w| w[0] < w[1]), P, "pages not strictly ascending");
    for (i, o) in ids.iter().enumerate() {
        ensure!(i % 3 == 0 || seen.contains(o), P, "live id {o} missing from the filter scan");
    }
    ensure!(seen.iter().all(|s| ids.contains(s)), P, "the filter scan returned an unknown id");
    Ok(())
}

/// Keyset pages return every id present for the whole scan exactly once, in order, even while
/// other ids are inserted.
pub async fn archive_keyset_scan_exactly_once(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "keyset scans return every key exactly once";
    let original: Vec<ObjectId> = (0..57).map(|i| id(ns, &format!("k{i:03}"))).collect();
    let items: Vec<SyncItem> = original.iter().map(|i| SyncItem::new(i.clone(), 1, "x")).collect();
    store.put_batch(&items).await.map_err(backend(P))?;
    let scanner = async {
        let mut seen = Vec::new();
        let mut scan = KeyScan::prefix(ns, 7);
        loop {
            let page = store.scan_keys(&scan).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let full = page.len() >= scan.limit;
            seen.extend(page);
            if !full {
                break;
            }
            scan = scan.next_page(&last);
            tokio::task::yield_now().await;
        }
        Ok::<_, crate::Error>(seen)
    };
    let inserter = async {
        for i in 0..30 {
            // Interleave new ids before, between and after the original ones.
            let extra = id(ns, &format!("k{:03}x", (i * 7) % 60));
            store.put_batch(&[SyncItem::new(extra, 1, "y")]).await?;
            tokio::task::yield_now().await;
        }
        Ok::<_, crate::Error>(())
    };
    let (seen, ins) = tokio::join!(scanner, inserter);
    ins.map_err(backend(P))?;
    let seen = seen.map_err(backend(P))?;
    ensure!(
        seen.windows(2).all(|w| w[0] < w[1]),
        P,
        "pages not strictly ascending (duplicate or disorder)"
    );
    for o in &original {
        ensure!(seen.contains(o), P, "id {o} missing from the scan");
    }
    ensure!(seen.iter().all(|s| s.has_prefix(ns)), P, "scan returned ids outside the prefix");
    Ok(())
}

/// Prefix scans and counts are byte-exact and case-sensitive; `_` and `%` are not wildcards.
pub async fn archive_prefixes_are_exact(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "prefix scans are exact and case-sensitive";
    let names = ["user_1", "user_10", "userX1", "USER_1", "user%1", "user%X", "userx%1", "user\\1"];
    let items: Vec<SyncItem> = names.iter().map(|n| SyncItem::new(id(ns, n), 1, *n)).collect();
    store.put_batch(&items).await.map_err(backend(P))?;
    let cases: [(&str, &[&str]); 5] = [
        ("user_1", &["user_1", "user_10"]),
        ("user%", &["user%1", "user%X"]),
        ("USER", &["USER_1"]),
        ("user\\", &["user\\1"]),
        ("user_", &["user_1", "user_10"]),
    ];
    for (prefix, expected) in cases {
        let full = format!("{ns}.{prefix}");
        let got = store.all_keys(&full, 3).await.map_err(backend(P))?;
        let want: Vec<ObjectId> = expected.iter().map(|n| id(ns, n)).collect();
        ensure!(got == want, P, "prefix `{full}` returned {got:?}, expected {want:?}");
        let n = store.count(&full).await.map_err(backend(P))?;
        ensure!(n == want.len() as u64, P, "count(`{full}`) = {n}, expected {}", want.len());
    }
    let d = store.delete_prefix(&format!("{ns}.user_1"), 2, 10).await.map_err(backend(P))?;
    ensure!(d == 2, P, "delete_prefix(user_1) deleted {d}, expected 2");
    let left = store.count(ns).await.map_err(backend(P))?;
    ensure!(
        left == names.len() as u64 - 2,
        P,
        "delete_prefix touched ids outside the prefix ({left} left)"
    );
    ensure!(
        store.delete_prefix("", 3, 10).await.is_err(),
        P,
        "an empty prefix was accepted by delete_prefix"
    );
    Ok(())
}

/// Binary payloads with every byte value, and empty payloads, round-trip exactly.
pub async fn archive_binary_round_trip(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "payloads round-trip byte for byte";
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let items = vec![
        SyncItem::new(id(ns, "bytes"), 1, all.clone()).with_state("state-tag"),
        SyncItem::new(id(ns, "empty"), 1, Bytes::new()),
        SyncItem::new(id(ns, "json"), 1, r#"{"a":[1,2,{"b":"\u00e9"}],"c":null}"#),
    ];
    store.put_batch(&items).await.map_err(backend(P))?;
    for want in &items {
        let got = store.get(want.id()).await.map_err(backend(P))?;
        let Some(got) = got else {
            return Err(super::fail(P, format!("{} missing", want.id())));
        };
        ensure!(got.content() == want.content(), P, "content of {} changed", want.id());
        ensure!(got.content_hash() == want.content_hash(), P, "hash of {} changed", want.id());
        ensure!(
            got.state() == want.state(),
            P,
            "state of {} changed: {:?}",
            want.id(),
            got.state()
        );
        ensure!(got.version() == want.version(), P, "version of {} changed", want.id());
    }
    Ok(())
}

/// Purge removes only tombstones older than the cut-off, never live items.
pub async fn archive_purges_only_old_tombstones(store: &dyn ArchiveStore, ns: &str) -> Check {
    const P: &str = "purge removes only old tombstones";
    let (live, old, young) = (id(ns, "live"), id(ns, "old"), id(ns, "young"));
    store
        .put_batch(&[
            SyncItem::new(live.clone(), 1, "x").with_updated_at(1_000),
            SyncItem::tombstone(old.clone(), 1).with_updated_at(1_000),
            SyncItem::tombstone(young.clone(), 1).with_updated_at(u64::MAX / 4),
        ])
        .await
        .map_err(backend(P))?;
    store.purge_tombstones(2_000).await.map_err(backend(P))?;
    ensure!(store.exists(&live).await.map_err(backend(P))?, P, "purge removed a live item");
    // The young tombstone must still block an older write; the old one is gone, so an old
    // write may now land (that is what retention means).
    store.put_batch(&[SyncItem::new(young.clone(), 0, "old")]).await.map_err(backend(P))?;
    ensure!(!store.exists(&young).await.map_err(backend(P))?, P, "a young tombstone was purged");
    Ok(())
}

/// The Merkle tree kept beside the data covers exactly the live items: the subtree under `ns`
/// equals a tree built from the live items alone, after writes, overwrites and deletes.
pub async fn merkle_follows_data(
    store: &dyn ArchiveStore,
    tree: &dyn MerkleStore,
    ns: &str,
) -> Check {
    const P: &str = "the Merkle tree follows the data";
    let mut oracle = MemTree::default();
    let mut batch = Vec::new();
    for i in 0..30u64 {
        let item = SyncItem::new(id(ns, &format!("g{}.k{i}", i % 3)), i + 1, format!("v{i}"));
        batch.push(item);
    }
    // An id that is also a path: ns.g0 beside ns.g0.k0.
    batch.push(SyncItem::new(id(ns, "g0"), 1, "leaf and path"));
    store.put_batch(&batch).await.map_err(backend(P))?;
    for item in &batch {
        let _ = oracle.upsert(item.id().as_str(), item.leaf_digest());
    }
    let overwrite = SyncItem::new(id(ns, "g1.k1"), 100, "new");
    let stale = SyncItem::new(id(ns, "g2.k2"), 0, "stale");
    let delete = SyncItem::tombstone(id(ns, "g0.k3"), 100);
    store.put_batch(&[overwrite.clone(), stale, delete.clone()]).await.map_err(backend(P))?;
    let _ = oracle.upsert(overwrite.id().as_str(), overwrite.leaf_digest());
    let _ = oracle.remove(delete.id().as_str());
    let want = oracle.node(&NodeKey::path(ns)).unwrap_or_default().hash();
    let got = tree.node(&NodeKey::path(ns)).await.map_err(backend(P))?.unwrap_or_default().hash();
    ensure!(got == want, P, "subtree hash {got} != hash of the live items {want}");
    Ok(())
}
