//! diff_each() hands over every difference once, as it finds it, and a caller may repair what
//! it was handed while the diff goes on without changing what the diff finds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use common::{block_on, digests, id, items};
use proptest::prelude::*;
use sync_engine_merkle::{
    diff_batched, diff_each, Children, ChildrenSource, DiffKind, Difference, Digest, MemTree,
    NodeKey, NodeValue,
};

/// A tree that can change while a diff reads it (each answer reads its current state).
struct Live(Mutex<MemTree>);

impl Live {
    fn tree(&self) -> std::sync::MutexGuard<'_, MemTree> {
        match self.0.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl ChildrenSource for Live {
    type Error = std::convert::Infallible;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, Self::Error>> + Send {
        std::future::ready(Ok(self.tree().node(key)))
    }

    fn children(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Children, Self::Error>> + Send {
        std::future::ready(Ok(self.tree().children(key)))
    }
}

fn tree(cap: usize, model: &BTreeMap<String, Digest>) -> MemTree {
    let mut t = MemTree::with_cap(cap);
    for (id, d) in model {
        t.upsert(id, *d).unwrap();
    }
    t
}

/// B = A with some ids changed, removed or added.
fn pair() -> impl Strategy<Value = (BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    (items(200), prop::collection::vec((id(), prop::option::of(0u64..4)), 0..60)).prop_map(
        |(a, edits)| {
            let mut b = a.clone();
            for (id, v) in edits {
                match v {
                    Some(v) => b.insert(id, v + 1),
                    None => b.remove(&id),
                };
            }
            (a, b)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// What a repair does with the rounds: copy B's leaf into A for every difference as soon
    /// as it is handed over. The rounds together are exactly the report's differences, each
    /// once; the report equals a diff of the untouched trees; and A ends equal to B.
    #[test]
    fn differences_handed_over_are_final_even_when_repaired_at_once(
        (a, b) in pair(),
        cap_a in prop::sample::select(vec![1usize, 2, 16, 10_000]),
        cap_b in prop::sample::select(vec![1usize, 2, 16, 10_000]),
        batch in prop_oneof![Just(1usize), Just(3), Just(512)],
        prefix in prop_oneof![Just(String::new()), Just("w".to_owned()), Just("a".to_owned())],
    ) {
        let (ma, mb) = (digests(&a), digests(&b));
        let want = block_on(diff_batched(&tree(cap_a, &ma), &tree(cap_b, &mb), &prefix, batch))
            .unwrap_or_default();
        let live = Live(Mutex::new(tree(cap_a, &ma)));
        let other = tree(cap_b, &mb);
        let mut handed: Vec<Difference> = Vec::new();
        let mut rounds = 0u64;
        let report = block_on(diff_each(&live, &other, &prefix, batch, |found| {
            rounds += 1;
            let mut t = live.tree();
            for d in found {
                match d.kind {
                    DiffKind::OnlyInA => {
                        t.remove(&d.id).unwrap();
                    }
                    DiffKind::OnlyInB | DiffKind::Different => {
                        t.upsert(&d.id, mb[&d.id]).unwrap();
                    }
                }
            }
            handed.extend_from_slice(found);
        }))
        .unwrap_or_default();
        prop_assert_eq!(&report.differences, &want.differences);
        let once: BTreeSet<&Difference> = handed.iter().collect();
        prop_assert_eq!(once.len(), handed.len(), "a difference was handed over twice");
        handed.sort();
        prop_assert_eq!(&handed, &report.differences);
        prop_assert!(rounds <= report.rounds);
        // Beneath the prefix, A now holds exactly B's leaves.
        let under = |id: &str| prefix.is_empty() || id.starts_with(&format!("{prefix}."));
        let key = NodeKey::path(&prefix);
        prop_assert_eq!(live.tree().node(&key), other.node(&key));
        let left: BTreeMap<String, Digest> =
            live.tree().leaves().filter(|(id, _)| under(id)).collect();
        let right: BTreeMap<String, Digest> = other.leaves().filter(|(id, _)| under(id)).collect();
        prop_assert_eq!(left, right);
    }
}

#[test]
fn a_diff_of_equal_trees_hands_over_nothing() {
    let model = digests(&[("a.b".to_owned(), 1u64), ("w.1".to_owned(), 2)].into());
    let (x, y) = (tree(1, &model), tree(16, &model));
    let mut calls = 0;
    let report = block_on(diff_each(&x, &y, "", 512, |_| calls += 1)).unwrap();
    assert!(report.differences.is_empty());
    assert_eq!(calls, 0);
}
