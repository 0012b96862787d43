//! A fold's change set cut into slices applied one after the other inside the fold's
//! transaction, so that its transient memory (the path deltas, the plan, the entry rows) is
//! that of a slice rather than of the whole log.
//!
//! Slices follow the order of the leaf entries — by parent path, then segment hash, then id —
//! so each slice touches its own run of path nodes and, under a split node, its own range of
//! buckets: apart from the ancestors and the few buckets a slice boundary cuts, no node row is
//! written twice. Each id is in exactly one slice and node values are sums, so applying the
//! slices in turn gives the tree that one application of the whole set gives (up to how
//! buckets are grouped, which never changes a hash).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use sync_engine_core::merkle::{ChangeSet, LeafChange};

use crate::codec::{seg_hash, split_last};
use crate::driver::LeafEntry;
use crate::error::{Failure, Fallible};

use super::Touched;

/// One real change (old ≠ new) with its entry key.
pub(crate) struct Keyed<'a> {
    parent: &'a str,
    seghash: u64,
    change: &'a LeafChange,
}

/// The real changes of `changes` in leaf-entry order: (parent, segment hash, id).
pub(crate) fn entry_order(changes: &[LeafChange]) -> Vec<Keyed<'_>> {
    // Exact capacity: collected from a filter, the vector grew to up to twice the changes.
    let real = changes.iter().filter(|c| c.old != c.new);
    let mut out: Vec<Keyed<'_>> = Vec::with_capacity(real.clone().count());
    out.extend(real.map(|change| {
        let (parent, segment) = split_last(&change.id);
        Keyed { parent, seghash: seg_hash(segment), change }
    }));
    out.sort_unstable_by(|a, b| a.key().cmp(&b.key()));
    out
}

impl Keyed<'_> {
    /// The `entries` table's key: (parent, segment hash, id).
    fn key(&self) -> (&str, u64, &str) {
        (self.parent, self.seghash, &self.change.id)
    }
}

/// A slice as the tree update takes it: its change set and its entry rows, in key order.
pub(crate) fn slice<'a>(part: &[Keyed<'a>]) -> Fallible<(ChangeSet, Vec<LeafEntry<'a>>)> {
    let mut set = ChangeSet::new();
    let mut entries = Vec::with_capacity(part.len());
    for k in part {
        let c = k.change;
        set.push(&c.id, c.old, c.new).map_err(|e| {
            Failure::Contract(format!("a fold slice cannot hold the change of {:?}: {e}", c.id))
        })?;
        entries.push(LeafEntry {
            parent: k.parent,
            seghash: k.seghash,
            id: &c.id,
            leaf: c.new,
            fresh: c.old.is_none(),
        });
    }
    Ok((set, entries))
}

/// Node rows an earlier slice of the same fold wrote or deleted: the cache holds their values
/// from before the fold, so a later slice reads them from the database (its own transaction)
/// instead. Keys are kept as 64-bit hashes; a collision only costs a read.
#[derive(Default)]
pub(crate) struct Written {
    /// Path rows upserted or deleted.
    paths: HashSet<u64>,
    /// Path nodes deleted: every bucket row of theirs went with them.
    deleted_paths: HashSet<u64>,
    /// Bucket rows upserted or deleted.
    buckets: HashSet<u64>,
}

fn key_hash(path: &str, bucket: Option<&[u8]>) -> u64 {
    let mut h = DefaultHasher::new();
    path.hash(&mut h);
    bucket.hash(&mut h);
    h.finish()
}

impl Written {
    /// Record what a slice wrote.
    pub(crate) fn note(&mut self, t: &Touched) {
        self.paths.extend(t.path_upserts.iter().map(|r| key_hash(&r.path, None)));
        for p in &t.path_deletes {
            self.paths.insert(key_hash(p, None));
            // A deleted path takes its buckets with it: those are skipped by their path.
            self.deleted_paths.insert(key_hash(p, None));
        }
        self.buckets.extend(t.bucket_upserts.iter().map(|r| key_hash(&r.path, Some(&r.bucket))));
        self.buckets.extend(t.bucket_deletes.iter().map(|(p, b)| key_hash(p, Some(b))));
    }

    /// True when the cached row of `path` may be stale.
    pub(crate) fn path(&self, path: &str) -> bool {
        self.paths.contains(&key_hash(path, None))
    }

    /// True when the cached row of bucket `bucket` of `path` may be stale.
    pub(crate) fn bucket(&self, path: &str, bucket: &[u8]) -> bool {
        self.deleted_paths.contains(&key_hash(path, None))
            || self.buckets.contains(&key_hash(path, Some(bucket)))
    }
}
