//! Full verification of the stored Merkle tree against a from-scratch build of the stored items:
//! the check behind the concurrency and property tests, and an operator's audit tool.
//!
//! It reads every item row and every node row into memory (O(items)), so it is meant for tests,
//! audits and maintenance windows, not for the hot path.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sync_engine_core::merkle::{leaf_digest, Digest, MemTree, NodeKey, NodeValue};

use crate::codec::{bucket_range, seg_hash, split_last};
use crate::driver::{BucketRow, Driver, EntryRow, PathRow};
use crate::error::Fallible;

/// What [`crate::SqlStore::verify_merkle`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MerkleCheck {
    /// Live items read.
    pub live_items: u64,
    /// Tombstones read.
    pub tombstones: u64,
    /// Path node rows read.
    pub path_rows: u64,
    /// Bucket rows read.
    pub bucket_rows: u64,
    /// Root hash of a tree built from scratch from the live items.
    pub expected_root: Digest,
    /// Every disagreement found (empty when the stored tree is exactly right).
    pub problems: Vec<String>,
}

impl MerkleCheck {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const PAGE: usize = 10_000;
const MAX_PROBLEMS: usize = 100;

struct Report(MerkleCheck);

impl Report {
    fn problem(&mut self, msg: String) {
        if self.0.problems.len() < MAX_PROBLEMS {
            self.0.problems.push(msg);
        }
    }
}

/// Verify every stored node and leaf column against the items.
pub(crate) async fn verify<D: Driver>(d: &D) -> Fallible<MerkleCheck> {
    let mut r = Report(MerkleCheck::default());
    let mut tree = MemTree::new();
    // Direct entries of each path node: seghashes of its live leaves and child paths.
    let mut entries: HashMap<String, Vec<u64>> = HashMap::new();
    let mut path_nodes: BTreeSet<String> = BTreeSet::new();
    // Every live leaf, as the folded tree's entries table must list it.
    let mut leaves: BTreeMap<String, Digest> = BTreeMap::new();
    let mut after = String::new();
    loop {
        let page = d.leaf_page(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        let full = page.len() >= PAGE;
        for rec in page {
            let (parent, segment) = split_last(&rec.id);
            if rec.parent != parent || rec.seghash != seg_hash(segment) {
                r.problem(format!("item {:?}: stored parent/seghash columns are wrong", rec.id));
            }
            let live = !rec.stamp.tombstone;
            let digest = leaf_digest(
                &rec.id,
                rec.stamp.version,
                rec.stamp.tombstone,
                &rec.stamp.content_hash.0,
            );
            let want = live.then_some(digest);
            if rec.leaf != want {
                r.problem(format!(
                    "item {:?}: stored leaf {:?}, expected {want:?}",
                    rec.id, rec.leaf
                ));
            }
            if !live {
                r.0.tombstones += 1;
                continue;
            }
            r.0.live_items += 1;
            let _ = tree.upsert(&rec.id, digest);
            leaves.insert(rec.id.clone(), digest);
            entries.entry(parent.to_owned()).or_default().push(seg_hash(segment));
            let mut p = parent;
            loop {
                if !path_nodes.insert(p.to_owned()) || p.is_empty() {
                    break;
                }
                let (grand, seg) = split_last(p);
                entries.entry(grand.to_owned()).or_default().push(seg_hash(seg));
                p = grand;
            }
        }
        if !full {
            break;
        }
    }
    for v in entries.values_mut() {
        v.sort_unstable();
    }
    r.0.expected_root = tree.root_hash();
    check_entries(d, &mut r, leaves).await?;
    let paths: BTreeMap<String, PathRow> =
        d.all_paths().await?.into_iter().map(|p| (p.path.clone(), p)).collect();
    let buckets: BTreeMap<(String, Vec<u8>), BucketRow> = d
        .all_buckets()
        .await?
        .into_iter()
        .map(|b| ((b.path.clone(), b.bucket.clone()), b))
        .collect();
    r.0.path_rows = paths.len() as u64;
    r.0.bucket_rows = buckets.len() as u64;
    let count_in = |path: &str, bucket: &[u8]| -> i64 {
        let (lo, hi) = bucket_range(bucket);
        entries.get(path).map_or(0, |v| {
            let a = v.partition_point(|&h| h < lo);
            let b = v.partition_point(|&h| h <= hi);
            (b - a) as i64
        })
    };
    for p in &path_nodes {
        if !paths.contains_key(p) {
            r.problem(format!("path node {p:?} has live items beneath but no row"));
        }
    }
    for (p, row) in &paths {
        let want = tree.node(&NodeKey::path(p.clone())).unwrap_or(NodeValue::EMPTY);
        if row.value != want || want.count == 0 {
            r.problem(format!(
                "path {p:?}: stored {} leaves, items hold {}",
                row.value.count, want.count
            ));
        }
        let expected_parent = (!p.is_empty()).then(|| split_last(p).0.to_owned());
        if row.parent != expected_parent {
            r.problem(format!("path {p:?}: parent column {:?}", row.parent));
        }
        let n = count_in(p, &[]);
        if row.entries != n {
            r.problem(format!("path {p:?}: entries {} but {n} direct entries", row.entries));
        }
        if row.split {
            let kids: Vec<NodeValue> = (0..16u8)
                .filter_map(|k| buckets.get(&(p.clone(), vec![k])).map(|b| b.value))
                .collect();
            let sum = kids.iter().fold(NodeValue::EMPTY, |a, v| a.plus(*v));
            if sum != row.value {
                r.problem(format!("path {p:?}: its buckets do not sum to its value"));
            }
        }
    }
    for ((p, b), row) in &buckets {
        let key = NodeKey { path: p.clone(), bucket: b.clone() };
        let want = tree.node(&key).unwrap_or(NodeValue::EMPTY);
        if row.value != want || want.count == 0 {
            r.problem(format!(
                "bucket {b:?} of {p:?}: stored {} leaves, items hold {}",
                row.value.count, want.count
            ));
        }
        let Some(prow) = paths.get(p) else {
            r.problem(format!("bucket {b:?} of {p:?} without a path row"));
            continue;
        };
        let parent_split = if b.len() == 1 {
            prow.split
        } else {
            buckets.get(&(p.clone(), b[..b.len() - 1].to_vec())).is_some_and(|x| x.split)
        };
        if !parent_split || b.len() > usize::from(prow.depth) {
            r.problem(format!("bucket {b:?} of {p:?} is not under a split node within depth"));
        }
        let n = count_in(p, b);
        if row.entries != n {
            r.problem(format!(
                "bucket {b:?} of {p:?}: entries {} but {n} direct entries",
                row.entries
            ));
        }
        if row.split {
            let sum = (0..16u8)
                .filter_map(|k| {
                    let mut c = b.clone();
                    c.push(k);
                    buckets.get(&(p.clone(), c)).map(|x| x.value)
                })
                .fold(NodeValue::EMPTY, |a, v| a.plus(v));
            if sum != row.value {
                r.problem(format!(
                    "bucket {b:?} of {p:?}: its sub-buckets do not sum to its value"
                ));
            }
        }
    }
    Ok(r.0)
}

/// The entries table lists exactly the live leaves, each under its parent and `seghash`.
async fn check_entries<D: Driver>(
    d: &D,
    r: &mut Report,
    mut leaves: BTreeMap<String, Digest>,
) -> Fallible<()> {
    for (parent, row) in d.all_entries().await? {
        let EntryRow::Leaf { id, digest, seghash } = row else { continue };
        let (want_parent, segment) = split_last(&id);
        if parent != want_parent || seghash != seg_hash(segment) {
            r.problem(format!("entry {id:?}: stored under {parent:?} with a wrong seghash"));
        }
        match leaves.remove(&id) {
            Some(want) if want == digest => {}
            Some(want) => r.problem(format!("entry {id:?}: leaf {digest:?}, expected {want:?}")),
            None => r.problem(format!("entry {id:?} listed, but no live item has that id")),
        }
    }
    for id in leaves.keys() {
        r.problem(format!("live item {id:?} has no entry"));
    }
    Ok(())
}
