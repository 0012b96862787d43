//! The store's operations, written once over any [`Driver`]: the `put_batch` transaction (with
//! its deadlock retries), reads, scans, counts and purges.
//!
//! The `put_batch` protocol, in one transaction:
//! 1. begin and take the tree lock (serializes writers on the tree);
//! 2. read the stored stamps and leaf digests of the batch's ids — skipped while this process's
//!    last read found none of its batch's ids (an ingest of new ids): the batch is then
//!    decided as if nothing were stored and written with plain `INSERT`s, and if one of its ids
//!    does have a row (a unique violation), the transaction is rolled back and the batch is
//!    written again with the read;
//! 3. decide the winners (newer wins) and the Merkle change set;
//! 4. upsert the winners with the newer-wins comparison in the SQL itself, checking the database
//!    applied exactly them;
//! 5. append the batch's leaf changes (old and new digest per id) to the change log;
//! 6. commit. Any error rolls everything back: never an item without its leaf change.
//!
//! The fold, in one transaction under the same lock: read the whole change log, merge it in
//! commit order, write the leaf entries (the `entries` table), read the touched node rows,
//! write the new ones (phase A), split what grew (phase B), delete the folded log rows, bump the
//! tree generation, commit. It runs after a process has logged `fold_changes` changes, and
//! before every Merkle read, so a Merkle answer always describes every item committed before it
//! was asked; many batches touching the same node rows cost one write of each.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sync_engine_core::store::{KeyScan, PutOutcome};
use sync_engine_core::{Error, ObjectId, SyncItem};

use crate::batch::Candidates;
use crate::codec::{prefix_successor, KeyRange};
use crate::driver::{item_size, Driver, StoredItem, Tx};
use crate::error::{is_conflict, ErrCtx, Failure, Fallible};
use crate::options::SqlOptions;
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
    /// Leaf changes this process logs before it folds the log ([`SqlOptions::fold_changes`]).
    ///
    /// [`SqlOptions::fold_changes`]: crate::SqlOptions::fold_changes
    pub fold_changes: usize,
    /// Leaf changes a fold applies at a time ([`SqlOptions::fold_slice_changes`]).
    pub fold_slice: usize,
    /// Leaf changes this process logged since its last fold.
    pub unfolded: AtomicUsize,
    /// The last stamp read of a batch found none of its ids: the next batch is first tried
    /// without one (every id assumed new).
    pub assume_new: AtomicBool,
}

impl<D: Driver> Core<D> {
    /// The store's settings around a connected driver.
    pub(crate) fn new(driver: D, ctx: ErrCtx, options: &SqlOptions) -> Core<D> {
        Core {
            driver,
            ctx,
            threshold: options.split_threshold,
            cache: Mutex::new(NodeCache::new(options.node_cache_rows)),
            retry_budget: options.acquire_timeout,
            fold_changes: options.fold_changes,
            fold_slice: options.fold_slice_changes,
            unfolded: AtomicUsize::new(0),
            assume_new: AtomicBool::new(true),
        }
    }

    fn err(&self, op: &'static str) -> impl Fn(Failure) -> Error + '_ {
        move |f| self.ctx.error(op, f)
    }

    /// Run `attempt` until it succeeds, retrying transaction conflicts (up to [`PUT_ATTEMPTS`]
    /// attempts within the retry budget); errors are reported as operation `op`.
    async fn retrying<T, F, Fut>(&self, op: &'static str, mut attempt_once: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Fallible<T>>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match attempt_once().await {
                Ok(done) => return Ok(done),
                Err(f)
                    if attempt < PUT_ATTEMPTS
                        && started.elapsed() < self.retry_budget
                        && is_conflict(D::NAME, &f) =>
                {
                    tracing::debug!(attempt, backend = D::NAME, op, "conflict; retrying");
                    let jitter = u64::from(std::process::id() % 7) + u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(5 * (1 << attempt) + jitter)).await;
                    attempt += 1;
                }
                Err(f) => {
                    let e = self.ctx.error(op, f);
                    return Err(if attempt > 1 { e.persistent() } else { e });
                }
            }
        }
    }

    /// Store a batch under newer-wins, with its Merkle leaf changes logged, in one transaction;
    /// retried on transaction conflicts. Once this process has logged
    /// [`Core::fold_changes`] changes since its last fold, folds the log into the node rows
    /// (after the batch committed: a failed fold is logged and left for the next one).
    pub(crate) async fn put_batch(&self, items: &[SyncItem]) -> Result<PutOutcome, Error> {
        if items.is_empty() {
            return Ok(PutOutcome::default());
        }
        let candidates = Candidates::new(items).map_err(self.err("put_batch"))?;
        let (outcome, logged) = self.retrying("put_batch", || self.try_put(&candidates)).await?;
        let unfolded = self.unfolded.fetch_add(logged, Ordering::Relaxed) + logged;
        if logged > 0 && unfolded >= self.fold_changes {
            if let Err(e) = self.fold().await {
                tracing::warn!(error = %e, backend = D::NAME, "Merkle fold failed; retried later");
            }
        }
        Ok(outcome)
    }

    /// One attempt: the outcome and the number of leaf changes logged. Tried first without a
    /// stamp read while [`Core::assume_new`] holds; a batch that turns out to hold a stored id
    /// is rolled back and written again with the read in the same attempt.
    async fn try_put(&self, candidates: &Candidates<'_>) -> Fallible<(PutOutcome, usize)> {
        if self.assume_new.load(Ordering::Relaxed) {
            match self.try_put_reading(candidates, false).await {
                Err(Failure::Occupied(_)) => {
                    tracing::debug!(backend = D::NAME, "batch holds stored ids; reading stamps");
                    self.assume_new.store(false, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        self.try_put_reading(candidates, true).await
    }

    /// One transaction of `put_batch`: with `read`, decided against the stored stamps; without,
    /// as if none of the ids had a row (a row found by the inserts is [`Failure::Occupied`],
    /// after the transaction was rolled back).
    async fn try_put_reading(
        &self,
        candidates: &Candidates<'_>,
        read: bool,
    ) -> Fallible<(PutOutcome, usize)> {
        let d = &self.driver;
        let start = Instant::now();
        let (mut tx, _) = d.begin_write().await?;
        let locked = start.elapsed();
        let stored = if read {
            let stored = d.read_stamps(&mut tx, &candidates.ids()).await?;
            self.assume_new.store(stored.is_empty(), Ordering::Relaxed);
            stored
        } else {
            vec![]
        };
        let decision = candidates.decide(stored)?;
        let decided = start.elapsed();
        if decision.rows.is_empty() {
            tx.rollback().await?;
            return Ok((decision.outcome, 0));
        }
        match d.write_items(&mut tx, &decision.rows).await {
            Err(Failure::Occupied(m)) if !read => {
                tx.rollback().await?;
                return Err(Failure::Occupied(m));
            }
            written => written?,
        }
        let items_written = start.elapsed();
        let log = tree::log::encode(&decision.changes);
        d.append_log(&mut tx, &log).await?;
        let logged = start.elapsed();
        if decision.rows.iter().map(|r| item_size(&r)).sum::<usize>() > LARGE_BATCH_BYTES {
            shrink_buffers::<D>(&mut tx);
        }
        tx.commit().await?;
        tracing::debug!(
            target: "sync_engine_sql::timing",
            rows = decision.rows.len(),
            read,
            lock_us = locked.as_micros() as u64,
            decide_us = (decided - locked).as_micros() as u64,
            items_us = (items_written - decided).as_micros() as u64,
            log_us = (logged - items_written).as_micros() as u64,
            commit_us = (start.elapsed() - logged).as_micros() as u64,
            "put_batch phases"
        );
        Ok((decision.outcome, decision.changes.len()))
    }

    /// Fold the whole leaf-change log into the node rows, in one transaction holding the tree
    /// lock; returns the number of ids whose leaves it applied. Afterwards the node rows
    /// describe exactly the items committed before the fold took the lock.
    pub(crate) async fn fold(&self) -> Result<usize, Error> {
        let folded = self.retrying("merkle_fold", || self.try_fold()).await?;
        self.unfolded.store(0, Ordering::Relaxed);
        Ok(folded)
    }

    /// Fold when the log holds anything: the step before every Merkle read, so that the tree
    /// read describes every committed item.
    pub(crate) async fn fold_pending(&self) -> Result<(), Error> {
        if self.driver.has_log().await.map_err(self.err("merkle_fold"))? {
            self.fold().await?;
        }
        Ok(())
    }

    async fn try_fold(&self) -> Fallible<usize> {
        let d = &self.driver;
        let start = Instant::now();
        let (mut tx, gen) = d.begin_write().await?;
        let rows = d.read_log(&mut tx).await?;
        let Some(&(upto, _)) = rows.last() else {
            tx.rollback().await?;
            return Ok(0);
        };
        let n_rows = rows.len();
        let changes = tree::log::merge(rows.iter().map(|(_, b)| b.as_slice()))?;
        drop(rows);
        let read = start.elapsed();
        let shape = tree::Shape { threshold: self.threshold, slice: self.fold_slice };
        let touched = tree::apply(d, &mut tx, &changes, shape, &self.cache, gen).await?;
        let n_changes = changes.len();
        // Not held through the commit and the cache update (~130 bytes a change).
        drop(changes);
        d.clear_log(&mut tx, upto).await?;
        d.set_generation(&mut tx, gen.wrapping_add(1)).await?;
        let written = start.elapsed();
        // A fold's statements and its log read are megabytes at the default `fold_changes`.
        shrink_buffers::<D>(&mut tx);
        let committed = tx.commit().await;
        tracing::debug!(
            target: "sync_engine_sql::timing",
            log_rows = n_rows,
            changes = n_changes,
            read_us = read.as_micros() as u64,
            tree_us = (written - read).as_micros() as u64,
            commit_us = (start.elapsed() - written).as_micros() as u64,
            "fold phases"
        );
        if let Ok(mut cache) = self.cache.lock() {
            match &committed {
                Ok(()) => cache.committed(gen, touched),
                // The outcome is unknown: trust nothing cached.
                Err(_) => cache.clear(),
            }
        }
        committed?;
        Ok(n_changes)
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

/// Item bytes above which a batch shrinks its connection's buffers before it commits; an
/// ordinary batch (1000 items of 512 bytes) reuses them as they are.
const LARGE_BATCH_BYTES: usize = 4 << 20;

/// Give back what a large transaction grew its connection's buffers to. sqlx keeps a pooled
/// connection's buffers at the size of the largest message they held (a fold of 65,536 deep
/// changes sent in one statement: 20–30 MB), on every connection of the pool that ever ran one.
fn shrink_buffers<D: Driver>(tx: &mut Tx<D>) {
    sqlx::Connection::shrink_buffers(&mut **tx);
}
