//! MemTree against the from-scratch oracle: incremental updates, order and batch independence,
//! prefix subtrees.

mod common;

use std::collections::BTreeMap;

use common::{digest, digests, id, items};
use proptest::prelude::*;
use sync_engine_merkle::scratch::{entries, node_value};
use sync_engine_merkle::{ChangeSet, Children, Digest, Entry, MemTree, NodeKey, NodeValue};

/// Check every node of `tree` reachable from `key` against the oracle; returns nodes visited.
fn check_subtree(tree: &MemTree, model: &BTreeMap<String, Digest>, key: &NodeKey) -> usize {
    let it = || model.iter().map(|(k, v)| (k.as_str(), v));
    let expect = node_value(it(), key);
    assert_eq!(tree.node(key).unwrap_or(NodeValue::EMPTY), expect, "value of {key:?}");
    let mut visited = 1;
    match tree.children(key) {
        Children::Buckets(buckets) => {
            assert!(!buckets.is_empty(), "split node {key:?} lists no bucket");
            let mut sum = NodeValue::EMPTY;
            for (n, v) in buckets {
                assert!(v.count > 0, "empty bucket listed under {key:?}");
                sum = sum.plus(v);
                let child = key.child_bucket(n);
                assert_eq!(v, node_value(it(), &child), "listed value of {child:?}");
                visited += check_subtree(tree, model, &child);
            }
            assert_eq!(sum, expect, "buckets of {key:?} sum to the node");
        }
        Children::Entries(mut list) => {
            assert!(list.len() <= 2 * tree.cap(), "flat bucket {key:?} over capacity");
            list.sort_by(|x, y| {
                (x.segment(), matches!(x, Entry::Path { .. }))
                    .cmp(&(y.segment(), matches!(y, Entry::Path { .. })))
            });
            assert_eq!(list, entries(it(), key), "entries of {key:?}");
            for e in list {
                if let Entry::Path { segment, .. } = e {
                    visited += check_subtree(tree, model, &key.child_path(&segment));
                }
            }
        }
    }
    visited
}

/// Full equality of a tree with the model: every node, every leaf, the counts.
fn check_tree(tree: &MemTree, model: &BTreeMap<String, Digest>) {
    check_subtree(tree, model, &NodeKey::root());
    assert_eq!(tree.len(), model.len());
    let mut leaves: Vec<(String, Digest)> = tree.leaves().collect();
    leaves.sort();
    let want: Vec<(String, Digest)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(leaves, want);
    for (id, d) in model {
        assert_eq!(tree.get_leaf(id), Some(*d), "leaf {id}");
    }
    // Stats count nodes that exist: one path node per distinct proper prefix, plus the root.
    let mut paths: std::collections::BTreeSet<&str> = std::collections::BTreeSet::from([""]);
    for id in model.keys() {
        for (i, c) in id.char_indices() {
            if c == '.' {
                paths.insert(&id[..i]);
            }
        }
    }
    assert_eq!(tree.stats().path_nodes, paths.len());
}

#[derive(Clone, Debug)]
enum Op {
    Upsert(String, u64),
    Remove(String),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (id(), 0u64..3).prop_map(|(i, v)| Op::Upsert(i, v)),
            1 => id().prop_map(Op::Remove),
        ],
        0..250,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Upserts, removals and re-upserts leave every node equal to a from-scratch build.
    #[test]
    fn incremental_equals_scratch(ops in ops(), cap in prop::sample::select(vec![1usize, 2, 3, 16])) {
        let mut tree = MemTree::with_cap(cap);
        let mut model = BTreeMap::new();
        for op in &ops {
            match op {
                Op::Upsert(id, v) => {
                    let old = tree.upsert(id, digest(id, *v)).unwrap();
                    prop_assert_eq!(old, model.insert(id.clone(), digest(id, *v)));
                }
                Op::Remove(id) => {
                    let old = tree.remove(id).unwrap();
                    prop_assert_eq!(old, model.remove(id));
                }
            }
        }
        check_tree(&tree, &model);
        // Removing everything returns to the empty tree.
        for id in model.keys() {
            tree.remove(id).unwrap();
        }
        prop_assert_eq!(tree.root_value(), NodeValue::EMPTY);
        prop_assert_eq!(tree.stats().path_nodes, 1);
        prop_assert_eq!(tree.children(&NodeKey::root()), Children::Entries(vec![]));
    }

    /// The root depends only on the final set: not on order, batches or intermediate history.
    #[test]
    fn root_independent_of_order_and_batches(
        items in items(120),
        junk in prop::collection::vec((id(), 0u64..3), 0..40),
        seed in any::<u64>(),
        batch in 1usize..20,
        cap in prop::sample::select(vec![1usize, 4, 16]),
    ) {
        let model = digests(&items);
        let direct = MemTree::from_items(model.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();

        // Shuffle the items deterministically, interleave junk writes that are undone later.
        let mut order: Vec<(&String, &Digest)> = model.iter().collect();
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let mut tree = MemTree::with_cap(cap);
        let mut writes: Vec<(String, Option<Digest>)> = junk
            .iter()
            .map(|(id, v)| (id.clone(), Some(digest(id, v + 10))))
            .collect();
        writes.extend(order.iter().map(|(id, d)| ((*id).clone(), Some(**d))));
        // Undo junk that is not part of the final set.
        writes.extend(junk.iter().filter(|(id, _)| !model.contains_key(id)).map(|(id, _)| (id.clone(), None)));
        for chunk in writes.chunks(batch) {
            let mut cs = ChangeSet::new();
            let mut view: BTreeMap<&str, Option<Digest>> = BTreeMap::new();
            for (id, new) in chunk {
                let old = match view.get(id.as_str()) {
                    Some(d) => *d,
                    None => tree.get_leaf(id),
                };
                cs.push(id, old, *new).unwrap();
                view.insert(id, *new);
            }
            tree.apply(&cs).unwrap();
        }
        prop_assert_eq!(tree.root_value(), direct.root_value());
        prop_assert_eq!(tree.root_hash(), direct.root_hash());
        let it = model.iter().map(|(k, v)| (k.as_str(), v));
        prop_assert_eq!(tree.root_value(), node_value(it, &NodeKey::root()));
        check_tree(&tree, &model);
    }

    /// A path node's hash equals the root hash of a tree built from its items alone.
    #[test]
    fn prefix_subtree_root_equals_tree_of_its_items(items in items(150), prefix in id()) {
        let model = digests(&items);
        let tree = MemTree::from_items(model.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
        let below: Vec<(&str, Digest)> = model
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{prefix}.")))
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        let alone = MemTree::from_items(below.iter().copied()).unwrap();
        let node = tree.node(&NodeKey::path(prefix.as_str())).unwrap_or(NodeValue::EMPTY);
        prop_assert_eq!(node.hash(), alone.root_hash());
        prop_assert_eq!(node.count as usize, below.len());
    }
}

#[test]
fn ids_that_prefix_others_are_distinct_entries() {
    let mut t = MemTree::with_cap(1);
    let (ab, abc) = (digest("a.b", 1), digest("a.b.c", 1));
    t.upsert("a.b", ab).unwrap();
    t.upsert("a.b.c", abc).unwrap();
    t.upsert("a", digest("a", 1)).unwrap();
    let Children::Entries(mut list) = t.children(&NodeKey::path("a")) else { panic!("flat") };
    list.sort_by(|x, y| {
        x.segment()
            .cmp(y.segment())
            .then(matches!(x, Entry::Path { .. }).cmp(&matches!(y, Entry::Path { .. })))
    });
    assert_eq!(
        list,
        vec![
            Entry::Leaf { segment: "b".into(), digest: ab },
            Entry::Path { segment: "b".into(), value: NodeValue::leaf(&abc) },
        ]
    );
    // The leaf `a.b` is not beneath the path node `a.b`.
    assert_eq!(t.node(&NodeKey::path("a.b")), Some(NodeValue::leaf(&abc)));
    assert_eq!(t.root_value().count, 3);
    // Removing `a.b.c` drops the path node `a.b` but keeps the leaf `a.b`.
    t.remove("a.b.c").unwrap();
    assert_eq!(t.node(&NodeKey::path("a.b")), None);
    assert_eq!(t.get_leaf("a.b"), Some(ab));
}

#[test]
fn malformed_ids_are_refused_without_change() {
    let mut t = MemTree::new();
    t.upsert("x", digest("x", 1)).unwrap();
    let before = t.root_value();
    for bad in ["", ".x", "x.", "a..b"] {
        assert!(t.upsert(bad, digest(bad, 1)).is_err(), "{bad:?}");
        assert!(t.remove(bad).is_err(), "{bad:?}");
    }
    assert_eq!(t.root_value(), before);
    assert_eq!(t.len(), 1);
}

#[test]
fn apply_checks_every_old_before_changing_anything() {
    let mut t = MemTree::new();
    t.upsert("a.1", digest("a.1", 1)).unwrap();
    let before = t.clone().root_value();
    let mut cs = ChangeSet::new();
    cs.upsert("a.2", None, digest("a.2", 1)).unwrap();
    cs.upsert("a.1", Some(digest("a.1", 9)), digest("a.1", 2)).unwrap();
    let err = t.apply(&cs).unwrap_err();
    assert!(err.to_string().contains("a.1"), "{err}");
    assert_eq!(t.root_value(), before);
    assert_eq!(t.get_leaf("a.2"), None);
}

#[test]
fn many_siblings_split_into_bounded_buckets() {
    let mut t = MemTree::new();
    for n in 0..20_000 {
        let id = format!("items.{n}");
        t.upsert(&id, digest(&id, 0)).unwrap();
    }
    // Every listing is bounded: 16 buckets or a flat bucket near the capacity.
    let mut stack = vec![NodeKey::path("items")];
    let mut max_listing = 0;
    while let Some(k) = stack.pop() {
        match t.children(&k) {
            Children::Buckets(b) => {
                max_listing = max_listing.max(b.len());
                stack.extend(b.iter().map(|(n, _)| k.child_bucket(*n)));
            }
            Children::Entries(e) => max_listing = max_listing.max(e.len()),
        }
    }
    assert!(max_listing <= 16, "largest listing {max_listing}");
    let stats = t.stats();
    assert!(stats.nodes() < 20_000 / 4, "{stats:?}");
}

#[test]
fn arbitrary_keys_never_panic_the_tree() {
    let mut t = MemTree::with_cap(1);
    for n in 0..50 {
        let id = format!("w.{n}");
        t.upsert(&id, digest(&id, 0)).unwrap();
    }
    for bucket in [vec![16], vec![255, 3], vec![0; 70], vec![1; 17]] {
        let key = NodeKey { path: "w".into(), bucket };
        let _ = t.node(&key);
        let _ = t.children(&key);
    }
    assert_eq!(t.node(&NodeKey { path: "w".into(), bucket: vec![16] }), None);
}
