//! The per-database primitives ([`Driver`]) and the plain rows they exchange with the shared
//! logic. Each driver (`sqlite`, `mysql`, `postgres` modules) implements them with typed sqlx
//! code and its own SQL; everything that decides *what* to write lives in the shared modules
//! (`batch`, `tree`, `ops`) and is written once.

use std::future::Future;

use sync_engine_core::merkle::{Digest, NodeValue};
use sync_engine_core::Stamp;

use crate::codec::KeyRange;
use crate::error::Fallible;

/// A driver's connection type.
pub(crate) type Conn<D> = <<D as Driver>::Db as sqlx::Database>::Connection;
/// A driver's write transaction (holding the tree lock).
pub(crate) type Tx<D> = sqlx::Transaction<'static, <D as Driver>::Db>;

/// What `put_batch` needs to know about a stored id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredStamp {
    /// The id.
    pub id: String,
    /// Its stored stamp (tombstones included).
    pub stamp: Stamp,
    /// Its stored leaf digest (None for a tombstone).
    pub leaf: Option<Digest>,
    /// MySQL only: the content lives in the chunk table.
    pub chunked: bool,
}

/// One winning item, as a row to upsert.
#[derive(Debug, Clone)]
pub(crate) struct ItemRow<'a> {
    /// The id.
    pub id: &'a str,
    /// The id's parent path (`""` under the root).
    pub parent: &'a str,
    /// `seg_hash` of the id's last segment.
    pub seghash: u64,
    /// The stamp that won.
    pub stamp: Stamp,
    /// Unix ms.
    pub updated_at: u64,
    /// The content.
    pub content: &'a [u8],
    /// The state tag.
    pub state: Option<&'a str>,
    /// The leaf digest (None for a tombstone).
    pub leaf: Option<Digest>,
    /// A row for this id existed before (MySQL counts inserts and updates differently).
    pub existed: bool,
    /// MySQL only: the previous row kept its content in the chunk table.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub was_chunked: bool,
    /// The previous row was a tombstone (MySQL keeps tombstones listed in a side table).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    pub was_tombstone: bool,
}

/// Rows for ids with no stored row yet (plain `INSERT`), and rows over a stored one (the
/// newer-wins upsert).
pub(crate) fn fresh_and_over<'r, 'a>(
    rows: &'r [ItemRow<'a>],
) -> (Vec<&'r ItemRow<'a>>, Vec<&'r ItemRow<'a>>) {
    rows.iter().partition(|r| !r.existed)
}

/// One leaf entry of the folded tree (the `entries` table), as a fold writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeafEntry<'a> {
    /// The id's parent path.
    pub parent: &'a str,
    /// `seg_hash` of the id's last segment.
    pub seghash: u64,
    /// The id.
    pub id: &'a str,
    /// The live leaf digest; None deletes the entry.
    pub leaf: Option<Digest>,
    /// The tree held no leaf for this id: the entry is inserted, never overwritten (finding
    /// one already there means the entries and the log disagree, and the fold fails).
    pub fresh: bool,
}

/// Entries to write, by statement: new leaves (plain inserts), changed leaves (upserts), and
/// removed leaves (deletes).
pub(crate) struct EntryWrites<'r, 'a> {
    /// Leaves the tree did not hold.
    pub fresh: Vec<&'r LeafEntry<'a>>,
    /// Leaves whose digest changed.
    pub over: Vec<&'r LeafEntry<'a>>,
    /// Leaves removed.
    pub gone: Vec<&'r LeafEntry<'a>>,
}

impl<'r, 'a> EntryWrites<'r, 'a> {
    /// Sort `entries` into their statements, keeping their order.
    pub(crate) fn of(entries: &'r [LeafEntry<'a>]) -> EntryWrites<'r, 'a> {
        let mut w = EntryWrites { fresh: Vec::new(), over: Vec::new(), gone: Vec::new() };
        for e in entries {
            match (e.leaf.is_some(), e.fresh) {
                (false, _) => w.gone.push(e),
                (true, true) => w.fresh.push(e),
                (true, false) => w.over.push(e),
            }
        }
        w
    }
}

/// An `entries` row as read back: its parent and the leaf entry (`leaf` must be 32 bytes).
pub(crate) fn entry_row(
    parent: String,
    seghash: u64,
    id: String,
    leaf: &[u8],
) -> crate::error::Fallible<(String, EntryRow)> {
    let digest = crate::codec::digest_from(leaf, "entry leaf digest")?;
    Ok((parent, EntryRow::Leaf { id, digest, seghash }))
}

/// A rough upper bound of an [`ItemRow`]'s share of a statement, in bytes.
pub(crate) fn item_size(r: &&ItemRow<'_>) -> usize {
    r.content.len() + r.id.len() * 2 + 128
}

/// A rough upper bound of a [`LeafEntry`]'s share of a statement, in bytes.
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
pub(crate) fn entry_size(e: &&LeafEntry<'_>) -> usize {
    e.parent.len() + e.id.len() + 96
}

/// A stored item, as `get_many` reads it.
#[derive(Debug, Clone)]
pub(crate) struct StoredItem {
    /// The id.
    pub id: String,
    /// The stamp.
    pub stamp: Stamp,
    /// Unix ms.
    pub updated_at: u64,
    /// The content.
    pub content: bytes::Bytes,
    /// The state tag.
    pub state: Option<String>,
}

/// One path node row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathRow {
    /// The dotted path (`""` is the root).
    pub path: String,
    /// The parent path; None for the root.
    pub parent: Option<String>,
    /// `seg_hash` of the path's last segment (0 for the root).
    pub seghash: u64,
    /// Sum and count of every live leaf beneath.
    pub value: NodeValue,
    /// Number of direct entries (leaves and child path nodes).
    pub entries: i64,
    /// True when the entries are grouped into bucket rows.
    pub split: bool,
    /// Deepest bucket level ever materialized under this path (0 when unsplit).
    pub depth: u8,
}

/// One bucket row of a split path node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketRow {
    /// The path node.
    pub path: String,
    /// The bucket's nibbles (1..=16 of them).
    pub bucket: Vec<u8>,
    /// Sum and count of every live leaf beneath.
    pub value: NodeValue,
    /// Number of the path node's direct entries that fall in this bucket.
    pub entries: i64,
    /// True when split further into sub-buckets.
    pub split: bool,
}

/// A bucket key: `(path, nibbles)`.
pub(crate) type BucketKey = (String, Vec<u8>);

/// One direct entry of a path node, as listed from the items and paths tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryRow {
    /// A live item `path.segment`.
    Leaf {
        /// The id.
        id: String,
        /// Its leaf digest.
        digest: Digest,
        /// `seg_hash` of its last segment.
        seghash: u64,
    },
    /// A child path node `path.segment`.
    Path {
        /// The child's path.
        path: String,
        /// Its value.
        value: NodeValue,
        /// `seg_hash` of its last segment.
        seghash: u64,
    },
}

impl EntryRow {
    /// The entry's `seg_hash`.
    pub(crate) fn seghash(&self) -> u64 {
        match self {
            EntryRow::Leaf { seghash, .. } | EntryRow::Path { seghash, .. } => *seghash,
        }
    }

    /// The entry's contribution to its parent.
    pub(crate) fn value(&self) -> NodeValue {
        match self {
            EntryRow::Leaf { digest, .. } => NodeValue::leaf(digest),
            EntryRow::Path { value, .. } => *value,
        }
    }
}

/// One stored row for verification: id, stamp, stored leaf.
#[derive(Debug, Clone)]
pub(crate) struct LeafRecord {
    /// The id.
    pub id: String,
    /// The stamp.
    pub stamp: Stamp,
    /// The stored leaf column.
    pub leaf: Option<Digest>,
    /// The stored parent column.
    pub parent: String,
    /// The stored seghash column.
    pub seghash: u64,
}

/// The primitives one database offers the shared logic. Methods taking a connection run on
/// it (a write transaction or a pooled connection); the others take a connection from the pool.
pub(crate) trait Driver: Send + Sync + 'static {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// `sqlite`, `mysql` or `postgres`.
    const NAME: &'static str;

    /// The pool.
    fn pool(&self) -> &sqlx::Pool<Self::Db>;

    /// Begin a write transaction and take the tree lock (the lock row: `SELECT ... FOR
    /// UPDATE`; SQLite: `BEGIN IMMEDIATE`). Writers are serialized from here to commit.
    /// Returns the transaction and the tree generation stored in the lock row.
    fn begin_write(&self) -> impl Future<Output = Fallible<(Tx<Self>, u64)>> + Send;

    /// Store the tree generation `gen` in the lock row (inside the write transaction).
    fn set_generation(
        &self,
        c: &mut Conn<Self>,
        gen: u64,
    ) -> impl Future<Output = Fallible<()>> + Send;

    /// Append rows to the Merkle leaf-change log (inside the write transaction).
    fn append_log(
        &self,
        c: &mut Conn<Self>,
        rows: &[Vec<u8>],
    ) -> impl Future<Output = Fallible<()>> + Send;

    /// Every row of the leaf-change log as `(seq, changes)`, in commit order.
    fn read_log(
        &self,
        c: &mut Conn<Self>,
    ) -> impl Future<Output = Fallible<Vec<(i64, Vec<u8>)>>> + Send;

    /// Delete the log rows up to `seq` (inside the fold's write transaction).
    fn clear_log(&self, c: &mut Conn<Self>, upto: i64)
        -> impl Future<Output = Fallible<()>> + Send;

    /// Upsert the entries with a leaf and delete those without (inside the fold).
    fn write_entries(
        &self,
        c: &mut Conn<Self>,
        entries: &[LeafEntry<'_>],
    ) -> impl Future<Output = Fallible<()>> + Send;

    /// True when the leaf-change log holds a row (a pooled connection, no lock).
    fn has_log(&self) -> impl Future<Output = Fallible<bool>> + Send;

    /// Stored stamps of the given ids (absent ids are left out).
    fn read_stamps(
        &self,
        c: &mut Conn<Self>,
        ids: &[&str],
    ) -> impl Future<Output = Fallible<Vec<StoredStamp>>> + Send;

    /// Upsert the winning rows under the newer-wins rule enforced by the database; fails with
    /// `Contract` when the database did not apply exactly these rows.
    fn write_items(
        &self,
        c: &mut Conn<Self>,
        rows: &[ItemRow<'_>],
    ) -> impl Future<Output = Fallible<()>> + Send;

    /// Path rows by path (absent paths are left out).
    fn read_paths(
        &self,
        c: &mut Conn<Self>,
        paths: &[&str],
    ) -> impl Future<Output = Fallible<Vec<PathRow>>> + Send;

    /// Bucket rows by key (absent keys are left out).
    fn read_buckets(
        &self,
        c: &mut Conn<Self>,
        keys: &[BucketKey],
    ) -> impl Future<Output = Fallible<Vec<BucketRow>>> + Send;

    /// Upsert path rows, then delete the given paths and every bucket row under them.
    fn write_paths(
        &self,
        c: &mut Conn<Self>,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> impl Future<Output = Fallible<()>> + Send;

    /// Upsert bucket rows, then delete the given bucket keys.
    fn write_buckets(
        &self,
        c: &mut Conn<Self>,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> impl Future<Output = Fallible<()>> + Send;

    /// Every direct entry of path node `path` whose `seghash` lies in `range` (inclusive):
    /// live items whose parent is `path`, and path rows whose parent is `path`.
    fn read_entries(
        &self,
        c: &mut Conn<Self>,
        path: &str,
        range: (u64, u64),
    ) -> impl Future<Output = Fallible<Vec<EntryRow>>> + Send;

    /// [`read_entries`](Self::read_entries) of each `(path, range)` question, at the same
    /// index. The default asks one question after another; a server database answers them all
    /// in one query per table.
    fn read_entries_many(
        &self,
        c: &mut Conn<Self>,
        questions: &[(String, (u64, u64))],
    ) -> impl Future<Output = Fallible<Vec<Vec<EntryRow>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(questions.len());
            for (path, range) in questions {
                out.push(self.read_entries(c, path, *range).await?);
            }
            Ok(out)
        }
    }

    /// Live items by id (absent and tombstoned ids are left out), each read consistently.
    fn get_many(&self, ids: &[&str]) -> impl Future<Output = Fallible<Vec<StoredItem>>> + Send;

    /// Ids in `range`, ascending, at most `limit`: live ones only, or (`live_only` false)
    /// tombstoned ones too, which lets the database answer from the primary-key index alone.
    fn scan_keys(
        &self,
        range: &KeyRange,
        limit: usize,
        live_only: bool,
    ) -> impl Future<Output = Fallible<Vec<String>>> + Send;

    /// Number of live ids in `[lower, upper)` (`upper` None: unbounded).
    fn count(&self, lower: &str, upper: Option<&str>)
        -> impl Future<Output = Fallible<u64>> + Send;

    /// Delete tombstones with `updated_at < older_than_ms`, examining at most `limit`
    /// candidates, inside the write transaction `c`; returns `(deleted, examined)` (the caller
    /// loops while `examined == limit`).
    fn purge_tombstones(
        &self,
        c: &mut Conn<Self>,
        older_than_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Fallible<(u64, usize)>> + Send;

    /// `SELECT 1`.
    fn ping(&self) -> impl Future<Output = Fallible<()>> + Send;

    /// Stored rows (tombstones included) with ids after `after`, ascending, at most `limit`.
    fn leaf_page(
        &self,
        after: &str,
        limit: usize,
    ) -> impl Future<Output = Fallible<Vec<LeafRecord>>> + Send;

    /// Every path row.
    fn all_paths(&self) -> impl Future<Output = Fallible<Vec<PathRow>>> + Send;

    /// Every bucket row.
    fn all_buckets(&self) -> impl Future<Output = Fallible<Vec<BucketRow>>> + Send;

    /// Every leaf entry of the folded tree, with its parent path.
    fn all_entries(&self) -> impl Future<Output = Fallible<Vec<(String, EntryRow)>>> + Send;

    /// Drop every table of this store (tests and benchmarks sharing a database).
    fn drop_tables(&self) -> impl Future<Output = Fallible<()>> + Send;
}

/// The index of the question an entry row answers, from the 0-based tag a batched listing
/// query gave it; a tag outside the `len` questions asked is a Contract error.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(crate) fn question_index(tag: i64, len: usize) -> Fallible<usize> {
    usize::try_from(tag).ok().filter(|&i| i < len).ok_or_else(|| {
        crate::error::Failure::Contract(format!("entry row tagged {tag} for {len} questions"))
    })
}
