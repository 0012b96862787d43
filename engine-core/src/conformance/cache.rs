//! Conformance of [`CacheStore`].

use std::time::Duration;

use super::{backend, ensure, id, Check};
use crate::store::{CacheEntry, CacheExt, CacheStore};
use crate::{ErrorKind, ObjectId, SyncItem};

/// Every cache check in turn; stops at the first failure.
pub async fn cache_all(store: &dyn CacheStore, ns: &str) -> Check {
    cache_newer_wins(store, &format!("{ns}.nw")).await?;
    cache_tombstones(store, &format!("{ns}.ts")).await?;
    cache_ttl_expires(store, &format!("{ns}.ttl")).await?;
    cache_remove_and_order(store, &format!("{ns}.rm")).await?;
    cache_binary_safe(store, &format!("{ns}.bin")).await?;
    cache_audit_untouched(store, &format!("{ns}.audit")).await?;
    Ok(())
}

/// Newer wins inside the cache, replay is harmless, and batches keep the newest per id.
pub async fn cache_newer_wins(store: &dyn CacheStore, ns: &str) -> Check {
    const P: &str = "newer wins in the cache";
    let a = id(ns, "a");
    store.put(SyncItem::new(a.clone(), 5, "five"), None).await.map_err(backend(P))?;
    let out = store.put(SyncItem::new(a.clone(), 4, "four"), None).await.map_err(backend(P))?;
    let got = store.get(&a).await.map_err(backend(P))?.map(|i| i.version());
    ensure!(got == Some(5), P, "older write overwrote: got {got:?}");
    ensure!(out.stale == 1, P, "older write not reported stale: {out:?}");
    let replay = store.put(SyncItem::new(a.clone(), 5, "five"), None).await.map_err(backend(P))?;
    ensure!(replay.applied == 0, P, "replay applied");
    let b = id(ns, "b");
    store
        .put_batch(&[
            CacheEntry::new(SyncItem::new(b.clone(), 8, "eight")),
            CacheEntry::new(SyncItem::new(b.clone(), 7, "seven")),
        ])
        .await
        .map_err(backend(P))?;
    let got = store.get(&b).await.map_err(backend(P))?.map(|i| i.version());
    ensure!(got == Some(8), P, "older item later in the batch won: {got:?}");
    Ok(())
}

/// Tombstones hide items and block older writes while kept.
pub async fn cache_tombstones(store: &dyn CacheStore, ns: &str) -> Check {
    const P: &str = "tombstones hide items in the cache";
    let a = id(ns, "a");
    store.put(SyncItem::new(a.clone(), 1, "x"), None).await.map_err(backend(P))?;
    store.delete(&a, 2).await.map_err(backend(P))?;
    ensure!(!store.exists(&a).await.map_err(backend(P))?, P, "deleted item still cached");
    store.put(SyncItem::new(a.clone(), 1, "x"), None).await.map_err(backend(P))?;
    ensure!(
        !store.exists(&a).await.map_err(backend(P))?,
        P,
        "older write resurrected a deleted item"
    );
    store.put(SyncItem::new(a.clone(), 3, "y"), None).await.map_err(backend(P))?;
    ensure!(store.exists(&a).await.map_err(backend(P))?, P, "newer write after delete not visible");
    Ok(())
}

/// An entry written with a TTL is gone once the TTL passed; one without stays.
pub async fn cache_ttl_expires(store: &dyn CacheStore, ns: &str) -> Check {
    const P: &str = "caches expire TTL'd items";
    let (short, forever) = (id(ns, "short"), id(ns, "forever"));
    store
        .put_batch(&[
            CacheEntry {
                item: SyncItem::new(short.clone(), 1, "x"),
                ttl: Some(Duration::from_millis(300)),
            },
            CacheEntry::new(SyncItem::new(forever.clone(), 1, "y")),
        ])
        .await
        .map_err(backend(P))?;
    ensure!(store.exists(&short).await.map_err(backend(P))?, P, "TTL'd item missing before expiry");
    tokio::time::sleep(Duration::from_millis(700)).await;
    ensure!(
        !store.exists(&short).await.map_err(backend(P))?,
        P,
        "TTL'd item still there after its TTL"
    );
    ensure!(store.exists(&forever).await.map_err(backend(P))?, P, "item without TTL expired");
    Ok(())
}

/// `remove_many` forgets unconditionally; `get_many` answers in the order asked.
pub async fn cache_remove_and_order(store: &dyn CacheStore, ns: &str) -> Check {
    const P: &str = "remove forgets and get_many keeps order";
    let ids: Vec<ObjectId> = (0..10).map(|i| id(ns, &format!("k{i}"))).collect();
    let entries: Vec<CacheEntry> = ids
        .iter()
        .map(|i| CacheEntry::new(SyncItem::new(i.clone(), 1, i.as_str().to_owned())))
        .collect();
    store.put_batch(&entries).await.map_err(backend(P))?;
    let mut asked = ids.clone();
    asked.reverse();
    asked.push(id(ns, "absent"));
    let got = store.get_many(&asked).await.map_err(backend(P))?;
    for (want, got) in asked.iter().zip(&got) {
        let ok = match got {
            Some(item) => item.id() == want && item.content().as_ref() == want.as_str().as_bytes(),
            None => want.as_str().ends_with("absent"),
        };
        ensure!(ok, P, "get_many answered {got:?} for {want}");
    }
    ensure!(
        got.len() == asked.len(),
        P,
        "get_many returned {} answers for {} ids",
        got.len(),
        asked.len()
    );
    store.remove_many(&ids[..5]).await.map_err(backend(P))?;
    let got = store.get_many(&ids).await.map_err(backend(P))?;
    let present: Vec<bool> = got.iter().map(Option::is_some).collect();
    ensure!(
        present == [false, false, false, false, false, true, true, true, true, true],
        P,
        "after remove_many: {present:?}"
    );
    Ok(())
}

/// Payloads with every byte value round-trip exactly.
pub async fn cache_binary_safe(store: &dyn CacheStore, ns: &str) -> Check {
    const P: &str = "cache payloads are binary-safe";
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let item = SyncItem::new(id(ns, "bytes"), 1, all).with_state("s");
    store.put(item.clone(), None).await.map_err(backend(P))?;
    let got = store.get(item.id()).await.map_err(backend(P))?;
    ensure!(
        got.as_ref() == Some(&item)
            || got.as_ref().map(|g| (g.content(), g.stamp(), g.state()))
                == Some((item.content(), item.stamp(), item.state())),
        P,
        "payload changed: {got:?}"
    );
    Ok(())
}

/// The audit of entries nobody tampered with finds nothing, checks every entry under the
/// prefix (TTL'd ones and tombstones too) and none outside it, evicts nothing, and refuses a
/// bad prefix. A store that cannot audit must answer Unsupported (then nothing else is checked).
pub async fn cache_audit_untouched(store: &dyn CacheStore, ns: &str) -> Check {
    const P: &str = "an audit of untouched entries finds nothing";
    let (a, b, c) = (id(ns, "in.a"), id(ns, "in.b"), id(ns, "in.c"));
    store
        .put_batch(&[
            CacheEntry::new(SyncItem::new(a.clone(), 1, "a")),
            CacheEntry {
                item: SyncItem::new(b.clone(), 1, "b"),
                ttl: Some(Duration::from_secs(600)),
            },
            CacheEntry::new(SyncItem::tombstone(c.clone(), 2)),
            CacheEntry::new(SyncItem::new(id(ns, "out"), 1, "outside the prefix")),
        ])
        .await
        .map_err(backend(P))?;
    let report = match store.audit(&format!("{ns}.in"), true).await {
        Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(()),
        other => other.map_err(backend(P))?,
    };
    ensure!(
        report.corrupt.is_empty() && report.evicted.is_empty(),
        P,
        "untouched entries reported: {report:?}"
    );
    ensure!(report.checked == 3, P, "checked {} entries under the prefix, not 3", report.checked);
    ensure!(store.exists(&a).await.map_err(backend(P))?, P, "the audit lost an entry");
    match store.audit(&format!("{ns}..x"), false).await {
        Err(e) if e.kind() == ErrorKind::InvalidInput => Ok(()),
        other => Err(super::fail(P, format!("a bad prefix was answered {other:?}"))),
    }
}
