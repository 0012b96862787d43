//! The store's operations, written once over any [`Driver`]: the `put_batch` transaction (with
//! its deadlock retries), reads, scans, counts and purges.
//!
//! The `put_batch` protocol, in one transaction:
//! 1. begin and take the tree lock (serializes writers on the tree);
//! 2. read the stored stamps and leaf digests of the batch's ids;
//! 3. decide the winners (newer wins) and the Merkle change set;
//! 4. upsert the winners with the newer-wins comparison in the SQL itself, checking the database
//!    applied exactly them;
//! 5. read the touched node rows, write the new ones (phase A), split what grew (phase B);
//! 6. commit. Any error rolls everything back: never an item without its leaf.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sync_engine_core::store::{KeyScan, PutOutcome};
use sync_engine_core::{Error, ObjectId, SyncItem};

use crate::batch::Candidates;
use crate::codec::{prefix_successor, KeyRange};
use crate::driver::{Driver, StoredItem};
use crate::error::{is_conflict, ErrCtx, Failure, Fallible};
use crate::tree::{self, NodeCache};

/// Attempts of a `put_batch` transaction that keeps hitting deadlocks or lock timeouts.
pub(crate) const PUT_ATTEMPTS: u32 = 5;

/// Tombstones deleted per purge transaction (keeps the tree lock short).
const PURGE_CHUNK: usize = 5000;

/// One driver with the store's settings.
pub(crate) struct Core<D: Driver> {
    /// The driver.
    pub driver: D,
    /// Error context (backend, redacted URL, scrubber).
    pub ctx: ErrCtx,
    /// Split threshold of flat nodes.
    pub threshold: usize,
    /// Node rows valid at the tree generation this process last committed.
    pub cache: Mutex<NodeCache>,
    /// Conflicts are retried while the batch has run for less than this (the acquire timeout),
    /// so a caller waits for a failure about as long as for an unreachable database.
    pub retry_budget: Duration,
}

impl<D: Driver> Core<D> {
    fn err(&self, op: &'static str) -> impl Fn(Failure) -> Error + '_ {
        move |f| self.ctx.error(op, f)
    }

    /// Store a batch under newer-wins, with its Merkle update, in one transaction; retried on
    /// transaction conflicts (up to [`PUT_ATTEMPTS`] attempts within the retry budget).
    pub(crate) async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome, Error> {
        if items.is_empty() {
            return Ok(PutOutcome::default());
        }
        let candidates = Candidates::new(items).map_err(self.err("put_batch"))?;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match self.try_put(&candidates).await {
                Ok(outcome) => return Ok(outcome),
                Err(f)
                    if attempt < PUT_ATTEMPTS
                        && started.elapsed() < self.retry_budget
                        && is_conflict(D::NAME, &f) =>
                {
                    tracing::debug!(attempt, backend = D::NAME, "put_batch conflict; retrying");
                    let jitter = u64::from(std::process::id() % 7) + u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(5 * (1 << attempt) + jitter)).await;
                    attempt += 1;
                }
                Err(f) => {
                    let e = self.ctx.error("put_batch", f);
                    return Err(if attempt > 1 { e.persistent() } else { e });
                }
            }
        }
    }

    async fn try_put(&self, candidates: &Candidates<'_>) -> Fallible<PutOutcome> {
        let d = &self.driver;
        let start = Instant::now();
        let (mut tx, gen) = d.begin_write().await?;
        let locked = start.elapsed();
        let stored = d.read_stamps(&mut tx, &candidates.ids()).await?;
        let decision = candidates.decide(stored)?;
        let decided = start.elapsed();
        if decision.rows.is_empty() {
            tx.rollback().await?;
            return Ok(decision.outcome);
        }
        d.write_items(&mut tx, &decision.rows).await?;
        let items_written = start.elapsed();
        let touched =
            tree::apply(d, &mut tx, &decision.changes, self.threshold, &self.cache, gen).await?;
        d.set_generation(&mut tx, gen.wrapping_add(1)).await?;
        let tree_written = start.elapsed();
        let committed = tx.commit().await;
        tracing::debug!(
            target: "sync_engine_sql::timing",
            rows = decision.rows.len(),
            lock_us = locked.as_micros() as u64,
            decide_us = (decided - locked).as_micros() as u64,
            items_us = (items_written - decided).as_micros() as u64,
            tree_us = (tree_written - items_written).as_micros() as u64,
            commit_us = (start.elapsed() - tree_written).as_micros() as u64,
            "put_batch phases"
        );
        if let Ok(mut cache) = self.cache.lock() {
            match &committed {
                Ok(()) => cache.committed(gen, touched),
                // The outcome is unknown: trust nothing cached.
                Err(_) => cache.clear(),
            }
        }
        committed?;
        Ok(decision.outcome)
    }

    /// Live items by id, in the order asked.
    pub(crate) async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = ids.iter().map(ObjectId::as_str).collect();
        let rows = self.driver.get_many(&keys).await.map_err(self.err("get_many"))?;
        let by_id: std::collections::HashMap<String, StoredItem> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        let out = ids
            .iter()
            .map(|id| {
                by_id.get(id.as_str()).map(|r| {
                    SyncItem::from_stored(
                        id.clone(),
                        r.stamp,
                        r.updated_at,
                        r.content.clone(),
                        r.state.clone(),
                    )
                })
            })
            .collect();
        Ok(out)
    }

    /// One keyset page of live ids (`live_only`), or of every stored id, tombstones too.
    pub(crate) async fn scan_keys(
        &self,
        scan: &KeyScan,
        live_only: bool,
    ) -> Result<Vec<ObjectId>, Error> {
        let range = KeyRange::new(&scan.prefix, scan.after.as_ref().map(ObjectId::as_str));
        let ids = self
            .driver
            .scan_keys(&range, scan.limit.max(1), live_only)
            .await
            .map_err(self.err("scan_keys"))?;
        ids.into_iter()
            .map(|s| {
                ObjectId::with_max_len(&s, sync_engine_core::id::HARD_MAX_ID_LEN).map_err(|e| {
                    self.ctx
                        .error("scan_keys", Failure::Corrupt(format!("stored id is invalid: {e}")))
                })
            })
            .collect()
    }

    /// Number of live ids under `prefix`.
    pub(crate) async fn count(&self, prefix: &str) -> Result<u64, Error> {
        let upper = prefix_successor(prefix);
        self.driver.count(prefix, upper.as_deref()).await.map_err(self.err("count"))
    }

    /// Delete tombstones older than the cut-off, in short transactions under the tree lock.
    pub(crate) async fn purge_tombstones(&self, older_than_ms: u64) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let (deleted, examined) =
                self.purge_chunk(older_than_ms).await.map_err(self.err("purge_tombstones"))?;
            total += deleted;
            if examined < PURGE_CHUNK {
                return Ok(total);
            }
        }
    }

    async fn purge_chunk(&self, older_than_ms: u64) -> Fallible<(u64, usize)> {
        let (mut tx, _) = self.driver.begin_write().await?;
        let n = self.driver.purge_tombstones(&mut tx, older_than_ms, PURGE_CHUNK).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Reachability.
    pub(crate) async fn ping(&self) -> Result<(), Error> {
        self.driver.ping().await.map_err(self.err("ping"))
    }
}
