//! The conformance suite can fail: deliberately broken archives and caches are caught, each
//! by the promise it breaks.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use sync_engine_core::conformance::*;
use sync_engine_core::store::{ArchiveStore, CacheEntry, CacheStore, KeyScan, PutOutcome};
use sync_engine_core::{newer_wins, ObjectId, Result, SyncItem};

/// The bug a [`BrokenArchive`] has.
#[derive(Clone, Copy, PartialEq)]
enum Bug {
    /// Stores every write, older or not.
    OlderOverwrites,
    /// Prefix matching treats `_` as "any character", as an unescaped LIKE would.
    UnderscoreWildcard,
    /// Deletes rows instead of keeping tombstones, so an older write resurrects.
    ForgetsTombstones,
    /// Applies a batch one item at a time, yielding in between.
    TornBatches,
}

#[derive(Clone)]
struct BrokenArchive {
    rows: Arc<Mutex<BTreeMap<ObjectId, SyncItem>>>,
    bug: Bug,
}

impl BrokenArchive {
    fn new(bug: Bug) -> Self {
        BrokenArchive { rows: Arc::default(), bug }
    }

    fn matches(&self, id: &ObjectId, prefix: &str) -> bool {
        if self.bug != Bug::UnderscoreWildcard {
            return id.has_prefix(prefix);
        }
        let (id, p) = (id.as_str().as_bytes(), prefix.as_bytes());
        id.len() >= p.len() && p.iter().zip(id).all(|(p, c)| *p == b'_' || p == c)
    }
}

#[async_trait]
impl ArchiveStore for BrokenArchive {
    fn backend(&self) -> &str {
        "broken"
    }
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        let rows = self.rows.lock();
        Ok(ids.iter().map(|id| rows.get(id).filter(|i| !i.is_tombstone()).cloned()).collect())
    }
    async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome> {
        let mut out = PutOutcome::default();
        for item in items {
            {
                let mut rows = self.rows.lock();
                let stored = rows.get(item.id()).map(SyncItem::stamp);
                if self.bug != Bug::OlderOverwrites && !newer_wins(&item.stamp(), stored.as_ref()) {
                    out.stale += 1;
                    continue;
                }
                if item.is_tombstone() && self.bug == Bug::ForgetsTombstones {
                    rows.remove(item.id());
                } else {
                    rows.insert(item.id().clone(), item.clone());
                }
                out.applied += 1;
            }
            if self.bug == Bug::TornBatches {
                tokio::task::yield_now().await;
            }
        }
        Ok(out)
    }
    async fn scan_keys(&self, scan: &KeyScan) -> Result<Vec<ObjectId>> {
        let rows = self.rows.lock();
        Ok(rows
            .iter()
            .filter(|(id, i)| {
                !i.is_tombstone()
                    && self.matches(id, &scan.prefix)
                    && scan.after.as_ref().is_none_or(|a| *id > a)
            })
            .take(scan.limit)
            .map(|(id, _)| id.clone())
            .collect())
    }
    async fn count(&self, prefix: &str) -> Result<u64> {
        let rows = self.rows.lock();
        Ok(rows.iter().filter(|(id, i)| !i.is_tombstone() && self.matches(id, prefix)).count()
            as u64)
    }
    async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64> {
        let mut rows = self.rows.lock();
        let n = rows.len();
        rows.retain(|_, i| !(i.is_tombstone() && i.updated_at() < older_than_ms));
        Ok((n - rows.len()) as u64)
    }
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn older_overwriting_archive_fails_newer_wins() {
    let e = archive_all(&BrokenArchive::new(Bug::OlderOverwrites), "bug.a").await.unwrap_err();
    assert_eq!(e.promise, "newer wins", "{e}");
}

#[tokio::test]
async fn wildcard_prefix_archive_fails_exact_prefixes() {
    let e = archive_all(&BrokenArchive::new(Bug::UnderscoreWildcard), "bug.b").await.unwrap_err();
    assert_eq!(e.promise, "prefix scans are exact and case-sensitive", "{e}");
    assert!(e.detail.contains("userX1"), "the failure names the wrongly matched id: {e}");
}

#[tokio::test]
async fn tombstone_forgetting_archive_fails_tombstones() {
    let e = archive_all(&BrokenArchive::new(Bug::ForgetsTombstones), "bug.c").await.unwrap_err();
    assert_eq!(e.promise, "tombstones hide items and block older writes", "{e}");
}

#[tokio::test]
async fn torn_batch_archive_fails_atomicity() {
    let e = archive_batches_are_atomic(&BrokenArchive::new(Bug::TornBatches), "bug.d")
        .await
        .unwrap_err();
    assert_eq!(e.promise, "batches are atomic", "{e}");
}

/// A cache that ignores TTLs and versions.
#[derive(Default)]
struct ForgetfulCache(Mutex<BTreeMap<ObjectId, SyncItem>>);

#[async_trait]
impl CacheStore for ForgetfulCache {
    fn backend(&self) -> &str {
        "broken-cache"
    }
    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        let m = self.0.lock();
        Ok(ids.iter().map(|id| m.get(id).filter(|i| !i.is_tombstone()).cloned()).collect())
    }
    async fn put_batch(&self, entries: &[CacheEntry]) -> Result<PutOutcome> {
        let mut m = self.0.lock();
        for e in entries {
            let stored = m.get(e.item.id()).map(SyncItem::stamp);
            if newer_wins(&e.item.stamp(), stored.as_ref()) {
                m.insert(e.item.id().clone(), e.item.clone());
            }
        }
        Ok(PutOutcome { applied: entries.len(), stale: 0 })
    }
    async fn remove_many(&self, ids: &[ObjectId]) -> Result<()> {
        let mut m = self.0.lock();
        ids.iter().for_each(|id| {
            m.remove(id);
        });
        Ok(())
    }
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn cache_ignoring_ttl_fails_expiry() {
    let e = cache_ttl_expires(&ForgetfulCache::default(), "bug.e").await.unwrap_err();
    assert_eq!(e.promise, "caches expire TTL'd items", "{e}");
}
