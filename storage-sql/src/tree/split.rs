//! Phase B of a Merkle update: materializing the hash buckets of a flat node that grew past the
//! threshold. The node's entries are read back inside the transaction (after phase A wrote its
//! rows), grouped by the next nibble of their segment hash, and written as bucket rows, splitting
//! further any bucket that is still over the threshold. Pure logic here; I/O in [`super::apply`].

use sync_engine_core::merkle::NodeValue;

use crate::codec::{nibble_at, MAX_STORED_DEPTH};
use crate::driver::{BucketRow, EntryRow};
use crate::error::{Failure, Fallible};

/// The bucket rows a split creates and the deepest level among them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Split {
    /// New bucket rows (children, and their children where still over the threshold).
    pub rows: Vec<BucketRow>,
    /// Deepest bucket level created.
    pub depth: usize,
}

/// Split node `(path, bucket)` whose entries are `entries` and whose stored value is `value`.
///
/// Refuses (`Contract`) when the entries do not sum to the stored value: the tree and the items
/// would disagree, and bucket rows built from them would store a wrong answer.
pub(crate) fn split_node(
    path: &str,
    bucket: &[u8],
    entries: &[EntryRow],
    value: NodeValue,
    threshold: usize,
) -> Fallible<Split> {
    let sum = entries.iter().fold(NodeValue::EMPTY, |acc, e| acc.plus(e.value()));
    if sum != value {
        return Err(Failure::Contract(format!(
            "Merkle tree and items disagree: node {path:?} bucket {bucket:?} stores {} leaves but \
             its entries hold {} (or their sums differ)",
            value.count, sum.count
        )));
    }
    let mut out = Split::default();
    let refs: Vec<&EntryRow> = entries.iter().collect();
    split_into(path, bucket, &refs, threshold, &mut out);
    Ok(out)
}

fn split_into(path: &str, bucket: &[u8], entries: &[&EntryRow], threshold: usize, out: &mut Split) {
    let depth = bucket.len();
    let mut groups: [Vec<&EntryRow>; 16] = Default::default();
    for e in entries {
        groups[usize::from(nibble_at(e.seghash(), depth))].push(e);
    }
    for (n, group) in groups.iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let mut child = bucket.to_vec();
        child.push(n as u8);
        let value = group.iter().fold(NodeValue::EMPTY, |acc, e| acc.plus(e.value()));
        let split = group.len() > threshold && child.len() < MAX_STORED_DEPTH;
        out.depth = out.depth.max(child.len());
        out.rows.push(BucketRow {
            path: path.to_owned(),
            bucket: child.clone(),
            value,
            entries: group.len() as i64,
            split,
        });
        if split {
            split_into(path, &child, group, threshold, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::seg_hash;
    use sync_engine_core::merkle::leaf_digest;

    fn leaves(n: usize) -> Vec<EntryRow> {
        (0..n)
            .map(|i| {
                let seg = format!("k{i}");
                EntryRow::Leaf {
                    id: format!("p.{seg}"),
                    digest: leaf_digest(&seg, 1, false, &[0; 32]),
                    seghash: seg_hash(&seg),
                }
            })
            .collect()
    }

    #[test]
    fn children_sum_to_the_node_and_nest_past_the_threshold() {
        let es = leaves(200);
        let total = es.iter().fold(NodeValue::EMPTY, |a, e| a.plus(e.value()));
        let s = split_node("p", &[], &es, total, 4).unwrap();
        let top: Vec<&BucketRow> = s.rows.iter().filter(|r| r.bucket.len() == 1).collect();
        let sum = top.iter().fold(NodeValue::EMPTY, |a, r| a.plus(r.value));
        assert_eq!(sum, total);
        assert_eq!(top.iter().map(|r| r.entries).sum::<i64>(), 200);
        assert!(s.depth >= 2, "200 entries at threshold 4 nest deeper than one level");
        for r in &s.rows {
            let kids: Vec<&BucketRow> = s
                .rows
                .iter()
                .filter(|k| k.bucket.len() == r.bucket.len() + 1 && k.bucket.starts_with(&r.bucket))
                .collect();
            if r.split {
                let ks = kids.iter().fold(NodeValue::EMPTY, |a, k| a.plus(k.value));
                assert_eq!(ks, r.value);
            } else {
                assert!(kids.is_empty() && r.entries <= 4);
            }
        }
    }

    #[test]
    fn a_sum_mismatch_is_refused() {
        let es = leaves(10);
        let e = split_node("p", &[], &es, NodeValue::EMPTY, 4).unwrap_err();
        assert!(matches!(e, Failure::Contract(_)));
    }
}
