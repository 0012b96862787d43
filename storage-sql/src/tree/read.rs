//! `node` and `children` answered from the stored rows.
//!
//! A key is located by walking its bucket nibbles from the path row down the chain of split
//! bucket rows. A stored row answers with its value (and, when split, its sub-bucket rows); a
//! key at or below a flat node is answered from that node's entries, filtered by the key's
//! nibbles, so `children` always lists values that sum to `node` of the same key.

use std::collections::HashMap;

use sync_engine_core::merkle::{
    nibble, segment_hash, validate_path, Children, Entry, NodeKey, NodeValue,
};

use crate::codec::{bucket_range, segment_under, MAX_STORED_DEPTH};
use crate::driver::{BucketKey, Conn, Driver, EntryRow};
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
    if key.bucket.is_empty() {
        return Ok(Located::Node(prow.value, prow.split));
    }
    if !prow.split {
        return Ok(Located::BelowFlat);
    }
    let reach = key.bucket.len().min(usize::from(prow.depth)).min(MAX_STORED_DEPTH);
    let keys: Vec<BucketKey> =
        (1..=reach).map(|k| (key.path.clone(), key.bucket[..k].to_vec())).collect();
    let rows: HashMap<usize, _> = if keys.is_empty() {
        HashMap::new()
    } else {
        d.read_buckets(c, &keys).await?.into_iter().map(|r| (r.bucket.len(), r)).collect()
    };
    for k in 1..=key.bucket.len() {
        let Some(r) = rows.get(&k) else { return Ok(Located::Absent) };
        if k == key.bucket.len() {
            return Ok(Located::Node(r.value, r.split));
        }
        if !r.split {
            return Ok(Located::BelowFlat);
        }
    }
    Ok(Located::Absent)
}

/// The entries of path node `path` in bucket `bucket` (every entry when empty), sorted by
/// segment, leaves before paths.
pub(crate) async fn entries_of<D: Driver>(
    d: &D,
    c: &mut Conn<D>,
    path: &str,
    bucket: &[u8],
) -> Fallible<Vec<Entry>> {
    let rows = d.read_entries(c, path, bucket_range(bucket)).await?;
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
            let keys: Vec<BucketKey> = (0..16u8)
                .map(|n| {
                    let mut b = key.bucket.clone();
                    b.push(n);
                    (key.path.clone(), b)
                })
                .collect();
            let mut listed: Vec<(u8, NodeValue)> = d
                .read_buckets(&mut c, &keys)
                .await?
                .into_iter()
                .filter(|r| r.value.count != 0)
                .filter_map(|r| r.bucket.last().map(|&n| (n, r.value)))
                .collect();
            listed.sort_by_key(|(n, _)| *n);
            Ok(Children::Buckets(listed))
        }
        Located::Node(_, false) | Located::BelowFlat => {
            Ok(Children::Entries(entries_of(d, &mut c, &key.path, &key.bucket).await?))
        }
        Located::Absent => Ok(Children::Entries(Vec::new())),
    }
}
