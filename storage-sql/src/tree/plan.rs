//! Phase A of a Merkle update: from a batch's [`PathDelta`]s and the stored rows they touch, the
//! rows to upsert and delete, and the flat nodes that grew past the split threshold. Pure logic:
//! the I/O is in [`super::apply`].
//!
//! Per path delta: the path row takes `total` (created when new, deleted when its count reaches
//! 0), its direct-entry count moves by the entries that appear or disappear, and — when the path
//! node is split — every entry's delta walks the chain of bucket rows from depth 1 down to the
//! flat bucket holding the entry's segment (created when missing). A removal that meets a
//! missing row, a count that would go negative, or an empty node with a non-zero accumulator
//! means the tree and the items disagree: the batch is refused with `Contract`.

use std::collections::{HashMap, HashSet};

use sync_engine_core::merkle::{join, ChangeSet, Delta, EntryChange, NodeValue, PathDelta};

use crate::codec::{bucket_range, nibbles_of, seg_hash, split_last, MAX_STORED_DEPTH};
use crate::driver::{BucketKey, BucketRow, PathRow};
use crate::error::{Failure, Fallible};

/// A flat node that holds more direct entries than the threshold after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SplitTarget {
    /// An unsplit path node (its row as written in phase A).
    Path(PathRow),
    /// A flat bucket (its row as written in phase A).
    Bucket(BucketRow),
}

/// Everything phase A writes.
#[derive(Debug, Default)]
pub(crate) struct TreeWrites {
    /// Path rows to insert or update.
    pub path_upserts: Vec<PathRow>,
    /// Path nodes that became empty (their bucket rows go with them).
    pub path_deletes: Vec<String>,
    /// Bucket rows to insert or update.
    pub bucket_upserts: Vec<BucketRow>,
    /// Bucket rows that became empty.
    pub bucket_deletes: Vec<BucketKey>,
    /// Nodes to split in phase B.
    pub splits: Vec<SplitTarget>,
}

/// The per-path deltas of one batch.
#[derive(Debug)]
pub(crate) struct TreePlan {
    deltas: Vec<PathDelta>,
    /// `seg_hash` of every entry's segment, parallel to `deltas[i].entries` (computed once: it
    /// is a SHA-256, and phase A needs it for the bucket keys and again for the chain walk).
    hashes: Vec<Vec<u64>>,
}

struct WorkBucket {
    row: BucketRow,
    existed: bool,
}

/// A bucket of the `i`-th path delta, without allocating its key: (delta index, number of
/// nibbles, the segment-hash bits those nibbles fix, the rest zero).
type Slot = (usize, usize, u64);

/// The slot of the bucket of `depth` nibbles holding segment hash `h`.
fn slot(i: usize, depth: usize, h: u64) -> Slot {
    let kept = 4 * depth.min(MAX_STORED_DEPTH);
    let mask = if kept >= 64 { u64::MAX } else { !(u64::MAX >> kept) };
    (i, depth, h & mask)
}

/// The slot of a stored bucket row under path delta `i` (its nibbles, at most 16, read back
/// into the high bits).
fn slot_of_row(i: usize, bucket: &[u8]) -> Slot {
    let (lo, _) = bucket_range(bucket);
    (i, bucket.len(), lo)
}

fn contract(msg: String) -> Failure {
    Failure::Contract(format!("Merkle tree and items disagree: {msg}"))
}

/// `delta.apply(value)`, refusing a count that would go below zero.
fn checked_apply(delta: Delta, value: NodeValue, what: &dyn Fn() -> String) -> Fallible<NodeValue> {
    let up = value.count.checked_add(delta.plus.count);
    match up.and_then(|c| c.checked_sub(delta.minus.count)) {
        Some(_) => {}
        None => {
            return Err(contract(format!(
                "{} holds {} leaves but the batch removes {}",
                what(),
                value.count,
                delta.minus.count
            )))
        }
    }
    let out = delta.apply(value);
    if out.count == 0 && !out.is_empty() {
        return Err(contract(format!("{} would hold no leaf but a non-zero sum", what())));
    }
    Ok(out)
}

/// +1 when an entry appears, -1 when it disappears, 0 otherwise.
fn presence_change(before: bool, after: bool) -> i64 {
    i64::from(after) - i64::from(before)
}

impl TreePlan {
    /// The plan of a change set.
    pub(crate) fn new(changes: &ChangeSet) -> TreePlan {
        let deltas = changes.path_deltas();
        let hashes = deltas
            .iter()
            .map(|d| d.entries.iter().map(|e| seg_hash(e.segment())).collect())
            .collect();
        TreePlan { deltas, hashes }
    }

    /// True when the batch changes no node.
    pub(crate) fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// The path rows phase A reads.
    pub(crate) fn paths(&self) -> Vec<&str> {
        self.deltas.iter().map(|d| d.path.as_str()).collect()
    }

    /// The bucket rows phase A reads: for each split path, every prefix (up to the path's
    /// recorded depth) of every changed entry's segment hash.
    pub(crate) fn bucket_keys(&self, paths: &HashMap<&str, &PathRow>) -> Vec<BucketKey> {
        let mut keys: Vec<BucketKey> = Vec::new();
        for (i, d) in self.deltas.iter().enumerate() {
            let Some(row) = paths.get(d.path.as_str()).filter(|r| r.split) else { continue };
            let depth = usize::from(row.depth).clamp(1, MAX_STORED_DEPTH);
            let mut slots: Vec<Slot> = Vec::with_capacity(self.hashes[i].len() * depth);
            for &h in &self.hashes[i] {
                slots.extend((1..=depth).map(|k| slot(i, k, h)));
            }
            slots.sort_unstable();
            slots.dedup();
            keys.extend(slots.into_iter().map(|(_, k, h)| (d.path.clone(), nibbles_of(h, k))));
        }
        keys.sort_unstable();
        keys
    }

    /// Compute phase A's writes from the stored rows.
    pub(crate) fn apply(
        &self,
        paths: &HashMap<&str, &PathRow>,
        buckets: Vec<BucketRow>,
        threshold: usize,
    ) -> Fallible<TreeWrites> {
        let threshold = i64::try_from(threshold).unwrap_or(i64::MAX);
        // Old and new value of every touched path node.
        let mut values: HashMap<&str, (NodeValue, NodeValue)> =
            HashMap::with_capacity(self.deltas.len());
        for d in &self.deltas {
            let old = paths.get(d.path.as_str()).map_or(NodeValue::EMPTY, |r| r.value);
            let new = checked_apply(d.total, old, &|| format!("path node {:?}", d.path))?;
            values.insert(d.path.as_str(), (old, new));
        }
        let index: HashMap<&str, usize> =
            self.deltas.iter().enumerate().map(|(i, d)| (d.path.as_str(), i)).collect();
        let mut work: HashMap<Slot, WorkBucket> = HashMap::with_capacity(buckets.len());
        for row in buckets {
            // Rows of paths this plan does not touch were not asked for; keep none of them.
            let Some(&i) = index.get(row.path.as_str()) else { continue };
            work.insert(slot_of_row(i, &row.bucket), WorkBucket { row, existed: true });
        }
        let mut out = TreeWrites::default();
        // Sized once: grown by pushing, a fold of tens of thousands of path rows held up to
        // twice their size while the vector doubled.
        out.path_upserts.reserve_exact(self.deltas.len());
        let mut deleted_paths: HashSet<&str> = HashSet::new();
        for (i, d) in self.deltas.iter().enumerate() {
            let Some(&(_, new)) = values.get(d.path.as_str()) else {
                return Err(contract(format!("no value computed for path {:?}", d.path)));
            };
            let mut row = match paths.get(d.path.as_str()) {
                Some(r) => (*r).clone(),
                None => new_path_row(&d.path),
            };
            row.value = new;
            for (e, &h) in d.entries.iter().zip(&self.hashes[i]) {
                let change = match e {
                    EntryChange::Leaf { old, new, .. } => {
                        presence_change(old.is_some(), new.is_some())
                    }
                    EntryChange::Path { segment, .. } => {
                        let child = join(&d.path, segment);
                        let (o, n) = values.get(child.as_str()).ok_or_else(|| {
                            contract(format!("no delta for child path {child:?}"))
                        })?;
                        presence_change(o.count > 0, n.count > 0)
                    }
                };
                row.entries += change;
                if row.split {
                    walk_chain(&mut work, (i, &d.path), h, e.delta(), change)?;
                }
            }
            if row.entries < 0 || (new.count == 0) != (row.entries == 0) {
                return Err(contract(format!(
                    "path node {:?} would hold {} leaves in {} entries",
                    d.path, new.count, row.entries
                )));
            }
            if new.count == 0 {
                if paths.contains_key(d.path.as_str()) {
                    out.path_deletes.push(d.path.clone());
                }
                deleted_paths.insert(d.path.as_str());
                continue;
            }
            if !row.split && row.entries > threshold {
                out.splits.push(SplitTarget::Path(row.clone()));
            }
            out.path_upserts.push(row);
        }
        // In key order, as the rows are written.
        let mut work: Vec<WorkBucket> = work.into_values().collect();
        work.sort_unstable_by(|a, b| {
            (&a.row.path, &a.row.bucket).cmp(&(&b.row.path, &b.row.bucket))
        });
        for wb in work {
            if deleted_paths.contains(wb.row.path.as_str()) {
                continue;
            }
            let row = wb.row;
            let (path, bucket) = (&row.path, &row.bucket);
            if row.entries < 0 || (row.value.count == 0) != (row.entries == 0) {
                return Err(contract(format!(
                    "bucket {bucket:?} of {path:?} would hold {} leaves in {} entries",
                    row.value.count, row.entries
                )));
            }
            if row.value.count == 0 {
                if wb.existed {
                    out.bucket_deletes.push((row.path, row.bucket));
                }
                continue;
            }
            if !row.split && row.entries > threshold && row.bucket.len() < MAX_STORED_DEPTH {
                out.splits.push(SplitTarget::Bucket(row.clone()));
            }
            out.bucket_upserts.push(row);
        }
        Ok(out)
    }
}

/// A path row for a path node that does not exist yet.
pub(crate) fn new_path_row(path: &str) -> PathRow {
    let (parent, seghash) = if path.is_empty() {
        (None, 0)
    } else {
        let (parent, segment) = split_last(path);
        (Some(parent.to_owned()), seg_hash(segment))
    };
    PathRow {
        path: path.to_owned(),
        parent,
        seghash,
        value: NodeValue::EMPTY,
        entries: 0,
        split: false,
        depth: 0,
    }
}

/// Add one entry's change (`delta`, and `entry_change` to the entry count) to every bucket on
/// its chain under path delta `i`, from depth 1 to the flat bucket that holds segment hash `h`
/// (created when missing under a split parent). Allocates only for a bucket it creates.
fn walk_chain(
    work: &mut HashMap<Slot, WorkBucket>,
    (i, path): (usize, &str),
    h: u64,
    delta: Delta,
    entry_change: i64,
) -> Fallible<()> {
    for depth in 1..=MAX_STORED_DEPTH {
        let wb = work.entry(slot(i, depth, h)).or_insert_with(|| WorkBucket {
            row: BucketRow {
                path: path.to_owned(),
                bucket: nibbles_of(h, depth),
                value: NodeValue::EMPTY,
                entries: 0,
                split: false,
            },
            existed: false,
        });
        let value = wb.row.value;
        wb.row.value = checked_apply(delta, value, &|| {
            format!("bucket {:?} of {path:?}", nibbles_of(h, depth))
        })?;
        wb.row.entries += entry_change;
        if !wb.row.split {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine_core::merkle::{leaf_digest, Digest};

    fn d(i: u8) -> Digest {
        leaf_digest("x", u64::from(i), false, &[i; 32])
    }

    #[test]
    fn new_paths_are_created_with_entry_counts() {
        let mut cs = ChangeSet::new();
        cs.upsert("a.b", None, d(1)).unwrap();
        cs.upsert("a.c", None, d(2)).unwrap();
        cs.upsert("a.b.x", None, d(3)).unwrap();
        let plan = TreePlan::new(&cs);
        let w = plan.apply(&HashMap::new(), vec![], 256).unwrap();
        let by: HashMap<&str, &PathRow> =
            w.path_upserts.iter().map(|r| (r.path.as_str(), r)).collect();
        assert_eq!(by[""].entries, 1, "root holds the path entry a");
        assert_eq!(by["a"].entries, 3, "a holds leaves b, c and path b");
        assert_eq!(by["a"].value.count, 3);
        assert_eq!(by["a.b"].entries, 1);
        assert_eq!(by["a.b"].parent.as_deref(), Some("a"));
        assert_eq!(by[""].parent, None);
        assert!(w.splits.is_empty());
    }

    #[test]
    fn removing_from_a_missing_node_is_refused() {
        let mut cs = ChangeSet::new();
        cs.remove("a.b", d(1)).unwrap();
        let plan = TreePlan::new(&cs);
        let e = plan.apply(&HashMap::new(), vec![], 256).unwrap_err();
        assert!(matches!(e, Failure::Contract(_)), "{e:?}");
    }

    #[test]
    fn crossing_the_threshold_asks_for_a_split() {
        let mut cs = ChangeSet::new();
        for i in 0..5u8 {
            cs.upsert(&format!("p.k{i}"), None, d(i)).unwrap();
        }
        let plan = TreePlan::new(&cs);
        let w = plan.apply(&HashMap::new(), vec![], 4).unwrap();
        assert_eq!(w.splits.len(), 1);
        assert!(matches!(&w.splits[0], SplitTarget::Path(r) if r.path == "p"));
    }
}
