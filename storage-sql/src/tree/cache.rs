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

/// Node rows known to equal the database's at generation `gen`.
#[derive(Debug)]
pub(crate) struct NodeCache {
    gen: Option<u64>,
    paths: HashMap<String, PathRow>,
    buckets: HashMap<String, HashMap<Vec<u8>, BucketRow>>,
    bucket_rows: usize,
    cap: usize,
}

/// What a batch read and wrote, for the cache update after its commit.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Path rows as read (pre-batch values).
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
        self.paths.get(path)
    }

    /// The cached row of a bucket, if any.
    pub(crate) fn bucket(&self, path: &str, bucket: &[u8]) -> Option<&BucketRow> {
        self.buckets.get(path).and_then(|m| m.get(bucket))
    }

    /// Record a committed batch that started at generation `from` and committed `from + 1`.
    pub(crate) fn committed(&mut self, from: u64, t: Touched) {
        if self.gen != Some(from) {
            // The rows we hold are not those of `from`: start over from what this batch knows,
            // which is the truth at `from + 1` for every row it read or wrote.
            self.clear();
        }
        for r in t.read_paths {
            self.paths.entry(r.path.clone()).or_insert(r);
        }
        for r in t.read_buckets {
            self.put_bucket(r, false);
        }
        for r in t.path_upserts {
            self.paths.insert(r.path.clone(), r);
        }
        for r in t.bucket_upserts {
            self.put_bucket(r, true);
        }
        for (path, bucket) in t.bucket_deletes {
            if let Some(m) = self.buckets.get_mut(&path) {
                if m.remove(&bucket).is_some() {
                    self.bucket_rows -= 1;
                }
            }
        }
        for path in t.path_deletes {
            self.paths.remove(&path);
            if let Some(m) = self.buckets.remove(&path) {
                self.bucket_rows -= m.len();
            }
        }
        self.gen = Some(from.wrapping_add(1));
        if self.paths.len() + self.bucket_rows > self.cap {
            self.clear();
        }
    }

    fn put_bucket(&mut self, r: BucketRow, overwrite: bool) {
        let m = self.buckets.entry(r.path.clone()).or_default();
        match m.get_mut(&r.bucket) {
            Some(old) if overwrite => *old = r,
            Some(_) => {}
            None => {
                m.insert(r.bucket.clone(), r);
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
        c.committed(0, Touched { path_upserts: vec![a.clone()], ..Touched::default() });
        assert!(c.valid_at(1));
        assert_eq!(c.path("a"), Some(&a));
        assert!(!c.valid_at(2), "another writer committed generation 2");
        assert_eq!(c.path("a"), None);
    }

    #[test]
    fn a_commit_from_another_generation_starts_over() {
        let mut c = NodeCache::new(100);
        c.committed(0, Touched { path_upserts: vec![new_path_row("a")], ..Touched::default() });
        c.committed(5, Touched { path_upserts: vec![new_path_row("b")], ..Touched::default() });
        assert!(c.valid_at(6));
        assert!(c.path("a").is_none() && c.path("b").is_some());
        let b = BucketRow {
            path: "b".into(),
            bucket: vec![1],
            value: Default::default(),
            entries: 1,
            split: false,
        };
        c.committed(6, Touched { bucket_upserts: vec![b], ..Touched::default() });
        assert!(c.bucket("b", &[1]).is_some());
        c.committed(7, Touched { path_deletes: vec!["b".into()], ..Touched::default() });
        assert!(c.bucket("b", &[1]).is_none() && c.path("b").is_none());
    }

    #[test]
    fn the_cap_bounds_memory() {
        let mut c = NodeCache::new(2);
        let rows: Vec<PathRow> = ["a", "b", "c"].iter().map(|p| new_path_row(p)).collect();
        c.committed(0, Touched { path_upserts: rows, ..Touched::default() });
        assert!(!c.valid_at(1), "over the cap, the cache starts over");
    }
}
