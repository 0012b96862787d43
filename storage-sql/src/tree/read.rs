//! `node` and `children` answered from the stored rows.
//!
//! A key is located by walking its bucket nibbles from the path row down the chain of split
//! bucket rows. A stored row answers with its value (and, when split, its sub-bucket rows); a
//! key at or below a flat node is answered from that node's entries, filtered by the key's
//! nibbles, so `children` always lists values that sum to `node` of the same key.
//!
//! `children_many` answers many keys on one connection with a few set-based queries, whatever
//! their number: path rows, the bucket chains above the keys, the sub-bucket rows of the split
//! ones and the entries of the flat ones (each query chunked under the driver's bind limits).

use std::collections::HashMap;

use sync_engine_core::merkle::{
    nibble, segment_hash, validate_path, Children, Entry, NodeKey, NodeValue,
};

use crate::codec::{bucket_range, segment_under, MAX_STORED_DEPTH};
use crate::driver::{BucketKey, BucketRow, Conn, Driver, EntryRow, PathRow};
use crate::error::Fallible;

/// Where a key lies in the stored tree.
enum Located {
    /// A stored node: its value and whether it is split.
    Node(NodeValue, bool),
    /// At or below a flat node: answered from the path node's entries.
    BelowFlat,
    /// Nothing is stored there.
    Absent,
}

fn well_formed(key: &NodeKey) -> bool {
    validate_path(&key.path).is_ok() && key.bucket.len() <= 64 && key.bucket.iter().all(|&n| n < 16)
}

async fn locate<D: Driver>(d: &D, c: &mut Conn<D>, key: &NodeKey) -> Fallible<Located> {
    let Some(prow) = d.read_paths(c, &[key.path.as_str()]).await?.pop() else {
        return Ok(Located::Absent);
    };
    let keys = chain(&prow, key);
    let rows: HashMap<Vec<u8>, BucketRow> = if keys.is_empty() {
        HashMap::new()
    } else {
        d.read_buckets(c, &keys).await?.into_iter().map(|r| (r.bucket.clone(), r)).collect()
    };
    Ok(place(Some(&prow), key, |b| rows.get(b)))
}

/// The bucket rows that locate `key` below its path row `prow`: every stored level above and
/// at the key (none for the path node itself or an unsplit path).
fn chain(prow: &PathRow, key: &NodeKey) -> Vec<BucketKey> {
    if key.bucket.is_empty() || !prow.split {
        return Vec::new();
    }
    let reach = key.bucket.len().min(usize::from(prow.depth)).min(MAX_STORED_DEPTH);
    (1..=reach).map(|k| (key.path.clone(), key.bucket[..k].to_vec())).collect()
}

/// Where `key` lies, given its path row and the bucket rows of [`chain`] (by nibbles).
fn place<'a>(
    prow: Option<&PathRow>,
    key: &NodeKey,
    row: impl Fn(&[u8]) -> Option<&'a BucketRow>,
) -> Located {
    let Some(prow) = prow else { return Located::Absent };
    if key.bucket.is_empty() {
        return Located::Node(prow.value, prow.split);
    }
    if !prow.split {
        return Located::BelowFlat;
    }
    let reach = key.bucket.len().min(usize::from(prow.depth)).min(MAX_STORED_DEPTH);
    for k in 1..=reach {
        let Some(r) = row(&key.bucket[..k]) else { return Located::Absent };
        if k == key.bucket.len() {
            return Located::Node(r.value, r.split);
        }
        if !r.split {
            return Located::BelowFlat;
        }
    }
    Located::Absent
}

/// The entries of path node `path` in bucket `bucket` (every entry when empty), sorted by
/// segment, leaves before paths.
pub(crate) async fn entries_of<D: Driver>(
    d: &D,
    c: &mut Conn<D>,
    path: &str,
    bucket: &[u8],
) -> Fallible<Vec<Entry>> {
    entries_from(path, bucket, d.read_entries(c, path, bucket_range(bucket)).await?)
}

/// The entries of bucket `bucket` of `path` from the rows of its `seghash` range.
fn entries_from(path: &str, bucket: &[u8], rows: Vec<EntryRow>) -> Fallible<Vec<Entry>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let entry = match row {
            EntryRow::Leaf { id, digest, .. } => {
                Entry::Leaf { segment: segment_under(path, &id)?.to_owned(), digest }
            }
            EntryRow::Path { path: child, value, .. } => {
                Entry::Path { segment: segment_under(path, &child)?.to_owned(), value }
            }
        };
        if bucket.len() > MAX_STORED_DEPTH {
            let h = segment_hash(entry.segment());
            if !bucket.iter().enumerate().skip(MAX_STORED_DEPTH).all(|(i, &n)| nibble(&h, i) == n) {
                continue;
            }
        }
        out.push(entry);
    }
    out.sort_by(|x, y| {
        (x.segment(), matches!(x, Entry::Path { .. }))
            .cmp(&(y.segment(), matches!(y, Entry::Path { .. })))
    });
    Ok(out)
}

/// The value of a node; None when nothing live is beneath it (or the key is malformed).
pub(crate) async fn node<D: Driver>(d: &D, key: &NodeKey) -> Fallible<Option<NodeValue>> {
    if !well_formed(key) {
        return Ok(None);
    }
    let mut c = d.pool().acquire().await?;
    let value = match locate(d, &mut c, key).await? {
        Located::Node(v, _) => v,
        Located::BelowFlat => entries_of(d, &mut c, &key.path, &key.bucket)
            .await?
            .iter()
            .fold(NodeValue::EMPTY, |acc, e| acc.plus(e.value())),
        Located::Absent => NodeValue::EMPTY,
    };
    Ok((value.count != 0).then_some(value))
}

/// The children of a node: its non-empty sub-buckets when split, else its entries.
pub(crate) async fn children<D: Driver>(d: &D, key: &NodeKey) -> Fallible<Children> {
    if !well_formed(key) {
        return Ok(Children::Entries(Vec::new()));
    }
    let mut c = d.pool().acquire().await?;
    match locate(d, &mut c, key).await? {
        Located::Node(_, true) => {
            let rows = d.read_buckets(&mut c, &sub_buckets(key)).await?;
            Ok(Children::Buckets(listed(rows)))
        }
        Located::Node(_, false) | Located::BelowFlat => {
            Ok(Children::Entries(entries_of(d, &mut c, &key.path, &key.bucket).await?))
        }
        Located::Absent => Ok(Children::Entries(Vec::new())),
    }
}

/// The keys of the 16 sub-buckets of `key`.
fn sub_buckets(key: &NodeKey) -> Vec<BucketKey> {
    (0..16u8)
        .map(|n| {
            let mut b = key.bucket.clone();
            b.push(n);
            (key.path.clone(), b)
        })
        .collect()
}

/// The non-empty sub-bucket rows of one node as its listing, by nibble.
fn listed(rows: impl IntoIterator<Item = BucketRow>) -> Vec<(u8, NodeValue)> {
    let mut listed: Vec<(u8, NodeValue)> = rows
        .into_iter()
        .filter(|r| r.value.count != 0)
        .filter_map(|r| r.bucket.last().map(|&n| (n, r.value)))
        .collect();
    listed.sort_by_key(|(n, _)| *n);
    listed
}

/// The children of each of `keys`, at the same index (what [`children`] answers for each), in
/// at most four set-based queries on one connection: path rows, bucket chains, sub-bucket rows
/// of the split nodes, entries of the flat ones.
pub(crate) async fn children_many<D: Driver>(d: &D, keys: &[NodeKey]) -> Fallible<Vec<Children>> {
    let mut out: Vec<Children> = keys.iter().map(|_| Children::Entries(Vec::new())).collect();
    let asked: Vec<usize> = (0..keys.len()).filter(|&i| well_formed(&keys[i])).collect();
    if asked.is_empty() {
        return Ok(out);
    }
    let mut c = d.pool().acquire().await?;
    let mut paths: Vec<&str> = asked.iter().map(|&i| keys[i].path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    let prows: HashMap<String, PathRow> =
        d.read_paths(&mut c, &paths).await?.into_iter().map(|r| (r.path.clone(), r)).collect();
    let mut chains: Vec<BucketKey> = asked
        .iter()
        .filter_map(|&i| prows.get(&keys[i].path).map(|p| chain(p, &keys[i])))
        .flatten()
        .collect();
    chains.sort_unstable();
    chains.dedup();
    let rows: HashMap<BucketKey, BucketRow> = if chains.is_empty() {
        HashMap::new()
    } else {
        let rows = d.read_buckets(&mut c, &chains).await?;
        rows.into_iter().map(|r| ((r.path.clone(), r.bucket.clone()), r)).collect()
    };
    let (mut split, mut flat) = (Vec::new(), Vec::new());
    for &i in &asked {
        let key = &keys[i];
        let row = |b: &[u8]| rows.get(&(key.path.clone(), b.to_vec()));
        match place(prows.get(&key.path), key, row) {
            Located::Node(_, true) => split.push(i),
            Located::Node(_, false) | Located::BelowFlat => flat.push(i),
            Located::Absent => {}
        }
    }
    if !split.is_empty() {
        let mut subs: Vec<BucketKey> = split.iter().flat_map(|&i| sub_buckets(&keys[i])).collect();
        // A key asked twice is read once (some drivers answer a repeated key twice).
        subs.sort_unstable();
        subs.dedup();
        let mut by_node: HashMap<BucketKey, Vec<BucketRow>> = HashMap::new();
        for r in d.read_buckets(&mut c, &subs).await? {
            if let Some((_, above)) = r.bucket.split_last() {
                by_node.entry((r.path.clone(), above.to_vec())).or_default().push(r);
            }
        }
        for i in split {
            let node = (keys[i].path.clone(), keys[i].bucket.clone());
            out[i] = Children::Buckets(listed(by_node.get(&node).cloned().unwrap_or_default()));
        }
    }
    if !flat.is_empty() {
        let questions: Vec<(String, (u64, u64))> =
            flat.iter().map(|&i| (keys[i].path.clone(), bucket_range(&keys[i].bucket))).collect();
        let answers = listings(d, &mut c, &questions).await?;
        for (i, rows) in flat.into_iter().zip(answers) {
            out[i] = Children::Entries(entries_from(&keys[i].path, &keys[i].bucket, rows)?);
        }
    }
    Ok(out)
}

/// The entries of each `(path, seghash range)` question, at its index (one listing, as
/// [`Driver::read_entries_many`] answers it); an answer of another length is `Contract`.
pub(super) async fn listings<D: Driver>(
    d: &D,
    c: &mut Conn<D>,
    questions: &[(String, (u64, u64))],
) -> Fallible<Vec<Vec<EntryRow>>> {
    let answers = d.read_entries_many(c, questions).await?;
    if answers.len() != questions.len() {
        return Err(crate::error::Failure::Contract(format!(
            "{} entry lists for {} questions",
            answers.len(),
            questions.len()
        )));
    }
    Ok(answers)
}
