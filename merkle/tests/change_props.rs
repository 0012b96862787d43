//! A store applying ChangeSet::path_deltas with its own (fixed-depth) bucketing ends up with
//! exactly the from-scratch values; node-key and node-value encodings round-trip.

mod common;

use std::collections::BTreeMap;

use common::{block_on, digest, digests, id};
use proptest::prelude::*;
use sync_engine_merkle::{
    diff, nibble, segment_hash, ChangeSet, Delta, Digest, EntryChange, MemTree, NodeKey, NodeValue,
    ScratchTree,
};

/// A toy store the way SQL or Redis would keep the tree: one value row per path node and per
/// bucket (every path node split to `depth` nibbles), and one row per entry.
#[derive(Default)]
struct RowStore {
    depth: usize,
    nodes: BTreeMap<NodeKey, NodeValue>,
    leaves: BTreeMap<(String, String), Digest>,
    paths: BTreeMap<(String, String), NodeValue>,
}

impl RowStore {
    fn apply(&mut self, cs: &ChangeSet) {
        for pd in cs.path_deltas() {
            let mut writes = vec![(NodeKey::path(pd.path.as_str()), pd.total)];
            for (bucket, d) in pd.bucket_deltas(self.depth) {
                writes.push((NodeKey { path: pd.path.clone(), bucket }, d));
            }
            for (key, d) in writes {
                let v = d.apply(self.nodes.get(&key).copied().unwrap_or_default());
                if v.count == 0 {
                    assert_eq!(v, NodeValue::EMPTY, "a node with no leaf sums to zero");
                    self.nodes.remove(&key);
                } else {
                    self.nodes.insert(key, v);
                }
            }
            for e in pd.entries {
                let k = (pd.path.clone(), e.segment().to_owned());
                match e {
                    EntryChange::Leaf { new: Some(d), .. } => {
                        self.leaves.insert(k, d);
                    }
                    EntryChange::Leaf { new: None, .. } => {
                        self.leaves.remove(&k);
                    }
                    EntryChange::Path { delta, .. } => {
                        let v = delta.apply(self.paths.get(&k).copied().unwrap_or_default());
                        if v.count == 0 {
                            self.paths.remove(&k);
                        } else {
                            self.paths.insert(k, v);
                        }
                    }
                }
            }
        }
    }
}

/// A path node and its changed entries as (segment, is a child path, delta).
type PathRows = (String, Vec<(String, bool, Delta)>);

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn row_store_applying_deltas_equals_scratch(
        batches in prop::collection::vec(
            prop::collection::vec((id(), prop::option::of(0u64..3)), 1..25), 1..8),
        depth in 0usize..3,
    ) {
        let mut store = RowStore { depth, ..RowStore::default() };
        let mut tree = MemTree::with_cap(2);
        let mut model: BTreeMap<String, u64> = BTreeMap::new();
        for batch in batches {
            let mut cs = ChangeSet::new();
            for (id, v) in batch {
                let old = model.get(&id).map(|v| digest(&id, *v));
                match v {
                    Some(v) => { model.insert(id.clone(), v); }
                    None => { model.remove(&id); }
                }
                cs.push(&id, old, v.map(|v| digest(&id, v))).unwrap();
            }
            tree.apply(&cs).unwrap();
            store.apply(&cs);
        }
        let model = digests(&model);
        let scratch = ScratchTree::new(model.iter().map(|(k, v)| (k.clone(), *v)), depth);
        // Every stored node equals scratch, and every non-empty scratch node is stored.
        for (key, v) in &store.nodes {
            prop_assert_eq!(*v, scratch.value(key), "node {:?}", key);
        }
        let mut want_nodes = 0;
        let mut paths: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for id in model.keys() {
            let mut p = String::new();
            paths.insert(String::new());
            for seg in id.split('.').collect::<Vec<_>>().split_last().map(|(_, rest)| rest.to_vec()).unwrap_or_default() {
                if !p.is_empty() { p.push('.'); }
                p.push_str(seg);
                paths.insert(p.clone());
            }
        }
        for p in &paths {
            let mut frontier = vec![NodeKey::path(p.as_str())];
            while let Some(k) = frontier.pop() {
                if scratch.value(&k).count == 0 { continue; }
                want_nodes += 1;
                if k.bucket.len() < depth {
                    frontier.extend((0..16).map(|n| k.child_bucket(n)));
                }
            }
        }
        prop_assert_eq!(store.nodes.len(), want_nodes);
        // Entry rows match the model, and the MemTree applied the same set agrees.
        prop_assert_eq!(store.leaves.len(), model.len());
        let root = store.nodes.get(&NodeKey::root()).copied().unwrap_or_default();
        prop_assert_eq!(root, tree.root_value());
        prop_assert!(block_on(diff(&tree, &scratch, "")).unwrap().differences.is_empty());
    }

    /// `path_deltas` (one sorted row per id and ancestor) gives exactly what a plain nested map
    /// per path node gives: same paths in order, same entries in (segment, leaf first) order,
    /// same deltas, no zero entry, each total the sum of its entries.
    #[test]
    fn path_deltas_equal_a_nested_map_model(
        batch in prop::collection::vec((id(), prop::option::of(0u64..3), prop::option::of(0u64..3)), 0..60),
    ) {
        let mut cs = ChangeSet::new();
        let mut seen = std::collections::BTreeSet::new();
        for (id, old, new) in batch {
            if seen.insert(id.clone()) {
                cs.push(&id, old.map(|v| digest(&id, v)), new.map(|v| digest(&id, v))).unwrap();
            }
        }
        let mut model: BTreeMap<String, BTreeMap<(String, bool), Delta>> = BTreeMap::new();
        for c in cs.iter().filter(|c| c.old != c.new) {
            let d = Delta::leaf(c.old, c.new);
            let mut segs: Vec<&str> = c.id.split('.').collect();
            let mut is_path = false;
            while let Some(seg) = segs.pop() {
                let slot = model.entry(segs.join(".")).or_default().entry((seg.to_owned(), is_path)).or_default();
                *slot = slot.combine(d);
                is_path = true;
            }
        }
        let want: Vec<PathRows> = model
            .into_iter()
            .map(|(p, es)| (p, es.into_iter().filter(|(_, d)| !d.is_zero()).map(|((s, ip), d)| (s, ip, d)).collect::<Vec<_>>()))
            .filter(|(_, es)| !es.is_empty())
            .collect();
        let got = cs.path_deltas();
        let got_rows: Vec<PathRows> = got
            .iter()
            .map(|pd| (pd.path.clone(), pd.entries.iter().map(|e| (e.segment().to_owned(), matches!(e, EntryChange::Path { .. }), e.delta())).collect()))
            .collect();
        prop_assert_eq!(got_rows, want);
        for pd in &got {
            let sum = pd.entries.iter().fold(Delta::ZERO, |acc, e| acc.combine(e.delta()));
            prop_assert_eq!(pd.total, sum);
        }
    }

    #[test]
    fn node_keys_round_trip(
        path in prop_oneof![Just(String::new()), id()],
        bucket in prop::collection::vec(0u8..16, 0..64),
    ) {
        let key = NodeKey { path, bucket };
        let bytes = key.encode().unwrap();
        prop_assert_eq!(NodeKey::decode(&bytes), Ok(key));
    }

    /// Arbitrary bytes never panic the decoder; what it accepts re-encodes to the same bytes.
    #[test]
    fn node_key_decode_of_random_bytes_is_total_and_canonical(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            // Plausible headers, so the later fields are reached too.
            (prop::collection::vec(any::<u8>(), 0..12), 0u8..20, prop::collection::vec(0u8..18, 0..20))
                .prop_map(|(p, n, b)| {
                    let mut v = vec![1];
                    v.extend_from_slice(&(p.len() as u32).to_be_bytes());
                    v.extend(p);
                    v.push(n);
                    v.extend(b);
                    v
                }),
        ],
    ) {
        if let Ok(key) = NodeKey::decode(&bytes) {
            prop_assert_eq!(key.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn node_values_round_trip(acc in any::<[u64; 4]>(), count in any::<u64>()) {
        let v = NodeValue { acc: sync_engine_merkle::Acc(acc), count };
        prop_assert_eq!(NodeValue::from_bytes(&v.to_bytes()), Ok(v));
    }
}

#[test]
fn bucket_deltas_follow_the_segment_hash() {
    let mut cs = ChangeSet::new();
    cs.upsert("p.x", None, digest("p.x", 0)).unwrap();
    let pd = cs.path_deltas();
    assert_eq!(pd.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), ["", "p"]);
    let h = segment_hash("x");
    let buckets: Vec<Vec<u8>> = pd[1].bucket_deltas(2).into_iter().map(|(b, _)| b).collect();
    assert_eq!(buckets, vec![vec![nibble(&h, 0)], vec![nibble(&h, 0), nibble(&h, 1)]]);
}

#[test]
fn change_chains_must_connect_and_no_ops_vanish() {
    let mut cs = ChangeSet::new();
    let (d1, d2) = (digest("a", 1), digest("a", 2));
    cs.upsert("a", None, d1).unwrap();
    assert!(cs.upsert("a", Some(d2), d1).is_err(), "second change must start at d1");
    cs.remove("a", d1).unwrap();
    assert_eq!(cs.len(), 1);
    assert!(cs.path_deltas().is_empty(), "insert then delete in one batch is a no-op");
    assert!(cs.push("a..b", None, Some(d1)).is_err());
}
