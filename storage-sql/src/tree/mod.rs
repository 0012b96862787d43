//! The Merkle tree in SQL: node rows, their maintenance by a fold of the leaf-change log, and
//! the `node` / `children` answers the diff walks.
//!
//! Shape: a `paths` row per path node (keyed by path, with its parent, `seghash`, value, number
//! of direct entries, split flag and deepest bucket level) and, for path nodes with more direct
//! entries than the split threshold, `buckets` rows keyed by `(path, nibbles)`. A flat node's
//! entries are never stored twice: they are listed from the `entries` table (one row per live
//! leaf, keyed by `(parent, seghash, id)`) and the `paths` table (rows by `(parent, seghash)`).
//! `put_batch` writes neither: it logs its leaf changes (module `log`), and a fold applies them
//! to the entries and node rows together, so what the tree tables say always agrees. Node values are
//! sums, so the grouping never changes a hash and another store may group differently.

mod cache;
pub(crate) mod log;
mod plan;
mod read;
mod slice;
mod split;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sync_engine_core::merkle::{ChangeSet, LeafChange};

use crate::codec::bucket_range;
use crate::driver::{BucketKey, BucketRow, Conn, Driver, LeafEntry, PathRow};
use crate::error::{Failure, Fallible};

pub(crate) use cache::{NodeCache, Touched};
pub(crate) use read::{children, children_many, node};
pub(crate) use split::split_node;

use plan::{SplitTarget, TreePlan};

/// The node cache as one fold sees it: rows valid at generation `gen`, except those an earlier
/// slice of the same fold wrote (read from the database instead).
struct CacheView<'a> {
    cache: &'a Mutex<NodeCache>,
    gen: u64,
    written: &'a slice::Written,
}

impl CacheView<'_> {
    /// Split `wanted` into rows the cache may serve and keys to read.
    fn split<K: Clone, R: Clone>(
        &self,
        wanted: &[K],
        get: impl Fn(&NodeCache, &K) -> Option<R>,
    ) -> (Vec<R>, Vec<K>) {
        let Ok(mut guard) = self.cache.lock() else { return (Vec::new(), wanted.to_vec()) };
        if !guard.valid_at(self.gen) {
            return (Vec::new(), wanted.to_vec());
        }
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for k in wanted {
            match get(&guard, k) {
                Some(r) => found.push(r),
                None => missing.push(k.clone()),
            }
        }
        (found, missing)
    }

    /// Cached path rows of `wanted`, and the paths to read.
    fn paths<'k>(&self, wanted: &[&'k str]) -> (Vec<PathRow>, Vec<&'k str>) {
        let w = self.written;
        self.split(wanted, |c, p| if w.path(p) { None } else { c.path(p).cloned() })
    }

    /// Cached bucket rows of `wanted`, and the keys to read.
    fn buckets(&self, wanted: &[BucketKey]) -> (Vec<BucketRow>, Vec<BucketKey>) {
        let w = self.written;
        self.split(wanted, |c, (p, b)| if w.bucket(p, b) { None } else { c.bucket(p, b).cloned() })
    }
}

/// How a fold shapes its work: the split threshold of flat nodes and the changes per slice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Direct entries a flat node holds before it is split.
    pub threshold: usize,
    /// Leaf changes applied per slice (at least 1).
    pub slice: usize,
}

/// Apply folded leaf changes to the tree tables — the leaf entries, then the node rows — inside
/// the caller's write transaction holding the tree lock at generation `gen`, in slices of
/// `shape.slice` changes (see [`slice`]); returns the node rows each slice read and wrote, for
/// the cache.
pub(crate) async fn apply<D: Driver>(
    d: &D,
    c: &mut Conn<D>,
    changes: &[LeafChange],
    shape: Shape,
    cache: &Mutex<NodeCache>,
    gen: u64,
) -> Fallible<Vec<Touched>> {
    let order = slice::entry_order(changes);
    let mut touched = Vec::new();
    let mut written = slice::Written::default();
    for part in order.chunks(shape.slice.max(1)) {
        let (set, leaves) = slice::slice(part)?;
        let view = CacheView { cache, gen, written: &written };
        let t = apply_slice(d, c, &set, leaves, shape.threshold, &view).await?;
        written.note(&t);
        touched.push(t);
    }
    Ok(touched)
}

/// One slice of [`apply`]: `leaves` are the entry rows of `changes`, in key order.
async fn apply_slice<D: Driver>(
    d: &D,
    c: &mut Conn<D>,
    changes: &ChangeSet,
    leaves: Vec<LeafEntry<'_>>,
    threshold: usize,
    cached: &CacheView<'_>,
) -> Fallible<Touched> {
    let begun = std::time::Instant::now();
    let plan = TreePlan::new(changes);
    if plan.is_empty() {
        return Ok(Touched::default());
    }
    let start = std::time::Instant::now();
    // The leaf entries first: the splits below list them.
    d.write_entries(c, &leaves).await?;
    drop(leaves);
    let entries_written = start.elapsed();
    let wanted: Vec<&str> = plan.paths();
    let (cached_paths, missing) = cached.paths(&wanted);
    let read_paths =
        if missing.is_empty() { Vec::new() } else { d.read_paths(c, &missing).await? };
    let paths: HashMap<&str, &PathRow> =
        cached_paths.iter().chain(&read_paths).map(|r| (r.path.as_str(), r)).collect();
    let keys: Vec<BucketKey> = plan.bucket_keys(&paths);
    let (mut buckets, missing) = cached.buckets(&keys);
    let read_buckets =
        if missing.is_empty() { Vec::new() } else { d.read_buckets(c, &missing).await? };
    buckets.extend(read_buckets.iter().cloned());
    let read = start.elapsed();
    let writes = plan.apply(&paths, buckets, threshold)?;
    let planned = start.elapsed();
    d.write_paths(c, &writes.path_upserts, &writes.path_deletes).await?;
    let paths_written = start.elapsed();
    d.write_buckets(c, &writes.bucket_upserts, &writes.bucket_deletes).await?;
    tracing::debug!(
        target: "sync_engine_sql::timing",
        paths_read = read_paths.len(),
        buckets_read = read_buckets.len(),
        paths_written = writes.path_upserts.len(),
        buckets_written = writes.bucket_upserts.len(),
        splits = writes.splits.len(),
        deltas_us = (start - begun).as_micros() as u64,
        entries_us = entries_written.as_micros() as u64,
        read_us = (read - entries_written).as_micros() as u64,
        plan_us = (planned - read).as_micros() as u64,
        paths_us = (paths_written - planned).as_micros() as u64,
        buckets_us = (start.elapsed() - paths_written).as_micros() as u64,
        "tree phases"
    );
    let mut touched = Touched {
        read_paths,
        read_buckets,
        path_upserts: writes.path_upserts,
        path_deletes: writes.path_deletes,
        bucket_upserts: writes.bucket_upserts,
        bucket_deletes: writes.bucket_deletes,
    };
    if !writes.splits.is_empty() {
        let started = std::time::Instant::now();
        let n = writes.splits.len();
        let (paths, buckets) =
            run_splits(d, c, &touched.path_upserts, writes.splits, threshold).await?;
        touched.path_upserts.extend(paths);
        touched.bucket_upserts.extend(buckets);
        tracing::debug!(
            target: "sync_engine_sql::timing",
            splits = n,
            split_us = started.elapsed().as_micros() as u64,
            "tree splits"
        );
    }
    Ok(touched)
}

/// Phase B: materialize the buckets of every node that grew past the threshold; returns the
/// path and bucket rows it wrote.
async fn run_splits<D: Driver>(
    d: &D,
    c: &mut Conn<D>,
    written: &[PathRow],
    targets: Vec<SplitTarget>,
    threshold: usize,
) -> Fallible<(Vec<PathRow>, Vec<BucketRow>)> {
    let mut paths: BTreeMap<String, PathRow> =
        written.iter().map(|r| (r.path.clone(), r.clone())).collect();
    let mut changed: Vec<String> = Vec::new();
    let mut rows: Vec<BucketRow> = Vec::new();
    // Every target's entries in one listing (one query per table per statement's worth of
    // questions on a server): nothing below writes before the loop ends.
    let questions: Vec<(String, (u64, u64))> = targets
        .iter()
        .map(|t| match t {
            SplitTarget::Path(r) => (r.path.clone(), bucket_range(&[])),
            SplitTarget::Bucket(b) => (b.path.clone(), bucket_range(&b.bucket)),
        })
        .collect();
    let answers = read::listings(d, c, &questions).await?;
    for (target, entries) in targets.into_iter().zip(answers) {
        let (path, bucket, value) = match &target {
            SplitTarget::Path(r) => (r.path.clone(), Vec::new(), r.value),
            SplitTarget::Bucket(b) => (b.path.clone(), b.bucket.clone(), b.value),
        };
        let s = split_node(&path, &bucket, &entries, value, threshold)?;
        let row = paths.get_mut(&path).ok_or_else(|| {
            Failure::Contract(format!("split of {path:?} without its path row in the batch"))
        })?;
        row.depth = row.depth.max(u8::try_from(s.depth).unwrap_or(u8::MAX));
        match target {
            SplitTarget::Path(_) => {
                row.split = true;
                row.entries = entries.len() as i64;
            }
            SplitTarget::Bucket(mut b) => {
                b.split = true;
                b.entries = entries.len() as i64;
                rows.push(b);
            }
        }
        if !changed.contains(&path) {
            changed.push(path);
        }
        rows.extend(s.rows);
    }
    d.write_buckets(c, &rows, &[]).await?;
    let updated: Vec<PathRow> = changed.iter().filter_map(|p| paths.remove(p)).collect();
    d.write_paths(c, &updated, &[]).await?;
    Ok((updated, rows))
}
