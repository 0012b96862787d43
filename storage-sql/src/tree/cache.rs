//! A process-local cache of node rows, valid only while no other process has touched the tree.
//!
//! Every fold (the only writer of node rows) increments the tree lock row's generation inside
//! its transaction. The cache records the generation its rows are true at; a fold that finds,
//! under the tree lock, the same generation in the database knows nobody else folded since, and
//! may take node rows from the cache instead of reading them. Any other generation (another
//! engine folded, a commit's outcome is unknown) empties the cache. After a commit the cache
//! holds the rows the fold read and wrote, labelled with the new generation. So a cached row is
//! always the row the database holds: the cache saves reads, never changes an answer.

use std::collections::HashMap;

use crate::driver::{BucketKey, BucketRow, PathRow};

/// The cached bucket rows of one path node, by nibbles.
type BucketMap = HashMap<Box<[u8]>, Box<BucketRow>>;

/// Node rows known to equal the database's at generation `gen`.
///
/// Rows are boxed: a map's table then holds a key and a pointer per row, so growing it (which
/// briefly holds the old and the new table) moves ~24 bytes a row instead of ~140 — inline rows
/// made that growth the largest single allocation of a 1 MiB-L1 engine's peak (27 MB at
/// ~115,000 cached path rows; heaptrack, BENCHMARKS.md engine, session 12).
#[derive(Debug)]
pub(crate) struct NodeCache {
    gen: Option<u64>,
    paths: HashMap<Box<str>, Box<PathRow>>,
    buckets: HashMap<Box<str>, BucketMap>,
    bucket_rows: usize,
    cap: usize,
}

/// What one slice of a fold read and wrote, for the cache update after its commit.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Path rows as read (as the slice found them).
    pub read_paths: Vec<PathRow>,
    /// Bucket rows as read.
    pub read_buckets: Vec<BucketRow>,
    /// Path rows as written (final values).
    pub path_upserts: Vec<PathRow>,
    /// Path nodes deleted (with their buckets).
    pub path_deletes: Vec<String>,
    /// Bucket rows as written.
    pub bucket_upserts: Vec<BucketRow>,
    /// Bucket rows deleted.
    pub bucket_deletes: Vec<BucketKey>,
}

impl NodeCache {
    /// An empty cache holding at most `cap` rows.
    pub(crate) fn new(cap: usize) -> NodeCache {
        NodeCache { gen: None, paths: HashMap::new(), buckets: HashMap::new(), bucket_rows: 0, cap }
    }

    /// True when the cache is valid at the database's generation `gen`; empties it otherwise.
    pub(crate) fn valid_at(&mut self, gen: u64) -> bool {
        if self.gen == Some(gen) {
            return true;
        }
        self.clear();
        false
    }

    /// Forget everything (a commit's outcome is unknown, or another writer committed).
    pub(crate) fn clear(&mut self) {
        self.gen = None;
        self.paths.clear();
        self.buckets.clear();
        self.bucket_rows = 0;
    }

    /// The cached row of `path`, if any.
    pub(crate) fn path(&self, path: &str) -> Option<&PathRow> {
        self.paths.get(path).map(|r| &**r)
    }

    /// The cached row of a bucket, if any.
    pub(crate) fn bucket(&self, path: &str, bucket: &[u8]) -> Option<&BucketRow> {
        self.buckets.get(path).and_then(|m| m.get(bucket)).map(|r| &**r)
    }

    /// Record a committed fold that started at generation `from` and committed `from + 1`:
    /// what its slices read and wrote, applied in slice order.
    pub(crate) fn committed(&mut self, from: u64, slices: impl IntoIterator<Item = Touched>) {
        if self.gen != Some(from) {
            // The rows we hold are not those of `from`: start over from what this fold knows,
            // which is the truth at `from + 1` for every row it read or wrote.
            self.clear();
        }
        for t in slices {
            self.apply(t);
        }
        self.gen = Some(from.wrapping_add(1));
        if self.paths.len() + self.bucket_rows > self.cap {
            self.clear();
        }
    }

    /// One slice: reads never overwrite (a row read by a later slice is the one an earlier
    /// slice wrote), writes do, deletes come last.
    fn apply(&mut self, t: Touched) {
        for r in t.read_paths {
            self.paths.entry(r.path.as_str().into()).or_insert_with(|| Box::new(r));
        }
        for r in t.read_buckets {
            self.put_bucket(r, false);
        }
        for r in t.path_upserts {
            self.paths.insert(r.path.as_str().into(), Box::new(r));
        }
        for r in t.bucket_upserts {
            self.put_bucket(r, true);
        }
        for (path, bucket) in t.bucket_deletes {
            if let Some(m) = self.buckets.get_mut(path.as_str()) {
                if m.remove(bucket.as_slice()).is_some() {
                    self.bucket_rows -= 1;
                }
            }
        }
        for path in t.path_deletes {
            self.paths.remove(path.as_str());
            if let Some(m) = self.buckets.remove(path.as_str()) {
                self.bucket_rows -= m.len();
            }
        }
    }

    fn put_bucket(&mut self, r: BucketRow, overwrite: bool) {
        let m = self.buckets.entry(r.path.as_str().into()).or_default();
        match m.get_mut(r.bucket.as_slice()) {
            Some(old) if overwrite => **old = r,
            Some(_) => {}
            None => {
                m.insert(r.bucket.as_slice().into(), Box::new(r));
                self.bucket_rows += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::plan::new_path_row;

    #[test]
    fn rows_are_served_only_at_their_generation() {
        let mut c = NodeCache::new(100);
        assert!(!c.valid_at(0));
        let mut a = new_path_row("a");
        a.entries = 1;
        c.committed(0, [Touched { path_upserts: vec![a.clone()], ..Touched::default() }]);
        assert!(c.valid_at(1));
        assert_eq!(c.path("a"), Some(&a));
        assert!(!c.valid_at(2), "another writer committed generation 2");
        assert_eq!(c.path("a"), None);
    }

    #[test]
    fn a_commit_from_another_generation_starts_over() {
        let mut c = NodeCache::new(100);
        c.committed(0, [Touched { path_upserts: vec![new_path_row("a")], ..Touched::default() }]);
        c.committed(5, [Touched { path_upserts: vec![new_path_row("b")], ..Touched::default() }]);
        assert!(c.valid_at(6));
        assert!(c.path("a").is_none() && c.path("b").is_some());
        let b = BucketRow {
            path: "b".into(),
            bucket: vec![1],
            value: Default::default(),
            entries: 1,
            split: false,
        };
        c.committed(6, [Touched { bucket_upserts: vec![b], ..Touched::default() }]);
        assert!(c.bucket("b", &[1]).is_some());
        c.committed(7, [Touched { path_deletes: vec!["b".into()], ..Touched::default() }]);
        assert!(c.bucket("b", &[1]).is_none() && c.path("b").is_none());
    }

    #[test]
    fn slices_apply_in_order() {
        let bucket = |entries| BucketRow {
            path: "p".into(),
            bucket: vec![3],
            value: Default::default(),
            entries,
            split: false,
        };
        let mut v1 = new_path_row("p");
        v1.entries = 1;
        let mut v2 = v1.clone();
        v2.entries = 2;
        let first = Touched {
            path_upserts: vec![v1.clone()],
            bucket_deletes: vec![("p".into(), vec![3])],
            ..Touched::default()
        };
        // The second slice read what the first wrote, wrote over it and re-created the bucket.
        let second = Touched {
            read_paths: vec![v1],
            path_upserts: vec![v2.clone()],
            bucket_upserts: vec![bucket(7)],
            ..Touched::default()
        };
        let mut c = NodeCache::new(100);
        c.committed(0, [Touched { read_buckets: vec![bucket(5)], ..Touched::default() }]);
        c.committed(1, [first, second]);
        assert!(c.valid_at(2));
        assert_eq!(c.path("p"), Some(&v2), "the later slice's write wins");
        assert_eq!(c.bucket("p", &[3]), Some(&bucket(7)), "deleted, then re-created");
        let drop_it = Touched { bucket_deletes: vec![("p".into(), vec![3])], ..Touched::default() };
        c.committed(
            2,
            [Touched { bucket_upserts: vec![bucket(9)], ..Touched::default() }, drop_it],
        );
        assert_eq!(c.bucket("p", &[3]), None, "written, then deleted");
    }

    #[test]
    fn the_cap_bounds_memory() {
        let mut c = NodeCache::new(2);
        let rows: Vec<PathRow> = ["a", "b", "c"].iter().map(|p| new_path_row(p)).collect();
        c.committed(0, [Touched { path_upserts: rows, ..Touched::default() }]);
        assert!(!c.valid_at(1), "over the cap, the cache starts over");
    }
}
