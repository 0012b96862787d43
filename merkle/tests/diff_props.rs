//! diff() returns exactly the symmetric difference, whatever the two sides' bucket splits.

mod common;

use std::collections::BTreeMap;
use std::future::Future;

use common::{block_on, digest, digests, id, items};
use proptest::prelude::*;
use sync_engine_merkle::{
    diff, diff_batched, Children, ChildrenSource, DiffError, DiffKind, Difference, Digest, MemTree,
    NodeKey, NodeValue, ScratchTree, Side,
};

/// The expected differences of two models beneath `prefix`.
fn expected(
    a: &BTreeMap<String, Digest>,
    b: &BTreeMap<String, Digest>,
    prefix: &str,
) -> Vec<Difference> {
    let under = |id: &str| prefix.is_empty() || id.starts_with(&format!("{prefix}."));
    let mut out = Vec::new();
    for (id, da) in a.iter().filter(|(id, _)| under(id)) {
        match b.get(id) {
            None => out.push(Difference { id: id.clone(), kind: DiffKind::OnlyInA }),
            Some(db) if db != da => {
                out.push(Difference { id: id.clone(), kind: DiffKind::Different })
            }
            Some(_) => {}
        }
    }
    for id in b.keys().filter(|id| under(id) && !a.contains_key(*id)) {
        out.push(Difference { id: id.clone(), kind: DiffKind::OnlyInB });
    }
    out.sort();
    out
}

/// One of several differently shaped sources over the same items.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Mem(usize),
    Scratch(usize),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        prop::sample::select(vec![1usize, 2, 16, 10_000]).prop_map(Shape::Mem),
        prop::sample::select(vec![0usize, 1, 2]).prop_map(Shape::Scratch),
    ]
}

enum Source {
    Mem(MemTree),
    Scratch(ScratchTree),
}

fn build(shape: Shape, model: &BTreeMap<String, Digest>) -> Source {
    match shape {
        Shape::Mem(cap) => {
            let mut t = MemTree::with_cap(cap);
            for (id, d) in model {
                t.upsert(id, *d).unwrap();
            }
            Source::Mem(t)
        }
        Shape::Scratch(depth) => {
            Source::Scratch(ScratchTree::new(model.iter().map(|(k, v)| (k.clone(), *v)), depth))
        }
    }
}

fn run(a: &Source, b: &Source, prefix: &str) -> sync_engine_merkle::DiffReport {
    run_batched(a, b, prefix, sync_engine_merkle::DIFF_BATCH)
}

/// A source that answers `children_many` itself (one call), refusing batches above `max`.
struct Batching<'a> {
    src: &'a Source,
    max: usize,
    calls: std::sync::atomic::AtomicU64,
}

impl ChildrenSource for Batching<'_> {
    type Error = String;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, String>> + Send {
        let v = match self.src {
            Source::Mem(t) => t.node(key),
            Source::Scratch(t) => block_on(ChildrenSource::node(t, key)).unwrap_or(None),
        };
        std::future::ready(Ok(v))
    }

    fn children(&self, key: &NodeKey) -> impl Future<Output = Result<Children, String>> + Send {
        std::future::ready(Err(format!("children({key:?}) asked one at a time")))
    }

    fn children_many(
        &self,
        keys: &[NodeKey],
    ) -> impl Future<Output = Result<Vec<Children>, String>> + Send {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let out = if keys.len() > self.max {
            Err(format!("{} keys in one call, at most {}", keys.len(), self.max))
        } else {
            Ok(keys
                .iter()
                .map(|k| match self.src {
                    Source::Mem(t) => t.children(k),
                    Source::Scratch(t) => block_on(ChildrenSource::children(t, k)).unwrap(),
                })
                .collect())
        };
        std::future::ready(out)
    }
}

fn run_batched(
    a: &Source,
    b: &Source,
    prefix: &str,
    batch: usize,
) -> sync_engine_merkle::DiffReport {
    let r = match (a, b) {
        (Source::Mem(a), Source::Mem(b)) => block_on(diff_batched(a, b, prefix, batch)),
        (Source::Mem(a), Source::Scratch(b)) => block_on(diff_batched(a, b, prefix, batch)),
        (Source::Scratch(a), Source::Mem(b)) => block_on(diff_batched(a, b, prefix, batch)),
        (Source::Scratch(a), Source::Scratch(b)) => block_on(diff_batched(a, b, prefix, batch)),
    };
    match r {
        Ok(r) => r,
        Err(e) => panic!("diff failed: {e}"),
    }
}

/// B = A with some ids changed, removed or added.
fn pair() -> impl Strategy<Value = (BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    (items(150), prop::collection::vec((id(), prop::option::of(0u64..4)), 0..30)).prop_map(
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

    #[test]
    fn diff_is_exactly_the_symmetric_difference(
        (a, b) in pair(),
        sa in shape(),
        sb in shape(),
        prefix in prop_oneof![Just(String::new()), id(), prop::sample::select(vec!["w", "t1", "a"]).prop_map(String::from)],
    ) {
        let (ma, mb) = (digests(&a), digests(&b));
        let (ta, tb) = (build(sa, &ma), build(sb, &mb));
        let report = run(&ta, &tb, &prefix);
        prop_assert_eq!(&report.differences, &expected(&ma, &mb, &prefix));
        // Swapping sides swaps the kinds.
        let back = run(&tb, &ta, &prefix);
        let flipped: Vec<DiffKind> = back.differences.iter().map(|d| d.kind).collect();
        let want: Vec<DiffKind> = report.differences.iter().map(|d| match d.kind {
            DiffKind::OnlyInA => DiffKind::OnlyInB,
            DiffKind::OnlyInB => DiffKind::OnlyInA,
            DiffKind::Different => DiffKind::Different,
        }).collect();
        prop_assert_eq!(flipped, want);
        if report.differences.is_empty() {
            prop_assert_eq!(report.children_fetched, 0, "equal trees are not descended");
        }
    }

    #[test]
    fn batched_diff_equals_the_pairwise_diff(
        (a, b) in pair(),
        sa in shape(),
        sb in shape(),
        batch in prop_oneof![Just(2usize), Just(7), Just(64), Just(512)],
        prefix in prop_oneof![Just(String::new()), id(), prop::sample::select(vec!["w", "t1", "a"]).prop_map(String::from)],
    ) {
        let (ma, mb) = (digests(&a), digests(&b));
        let (ta, tb) = (build(sa, &ma), build(sb, &mb));
        // Batch 1 = one node pair per call: the pairwise walk.
        let pairwise = run_batched(&ta, &tb, &prefix, 1);
        let batched = run_batched(&ta, &tb, &prefix, batch);
        prop_assert_eq!(&batched.differences, &pairwise.differences);
        prop_assert_eq!(batched.nodes_compared, pairwise.nodes_compared);
        prop_assert_eq!(batched.children_fetched, pairwise.children_fetched);
        prop_assert_eq!(batched.children_received, pairwise.children_received);
        prop_assert!(batched.batches <= pairwise.batches);
        prop_assert!(batched.rounds <= pairwise.rounds);
        // Through sources answering children_many natively (and refusing single questions).
        let (na, nb) = (
            Batching { src: &ta, max: batch, calls: 0.into() },
            Batching { src: &tb, max: batch, calls: 0.into() },
        );
        let native = block_on(diff_batched(&na, &nb, &prefix, batch));
        prop_assert!(native.is_ok(), "{:?}", native.err());
        let native = native.unwrap_or_default();
        prop_assert_eq!(&native.differences, &pairwise.differences);
        let calls = na.calls.load(std::sync::atomic::Ordering::SeqCst)
            + nb.calls.load(std::sync::atomic::Ordering::SeqCst);
        prop_assert_eq!(calls, native.batches);
    }
}

#[test]
fn batched_diff_round_trips_grow_with_depth_not_differences() {
    let mut a = MemTree::new();
    for n in 0..50_000 {
        let id = format!("items.{n}");
        a.upsert(&id, digest(&id, 0)).unwrap();
    }
    let mut b = a.clone();
    for n in (0..50_000).step_by(100) {
        let id = format!("items.{n}");
        b.upsert(&id, digest(&id, 1)).unwrap();
    }
    let (sa, sb) = (Source::Mem(a), Source::Mem(b));
    let pairwise = run_batched(&sa, &sb, "", 1);
    let batched = run(&sa, &sb, "");
    assert_eq!(batched.differences.len(), 500);
    assert_eq!(batched.differences, pairwise.differences);
    // 500 differing leaves spread over every bucket: hundreds of node pairs, yet each tree
    // level costs one round of calls (a few concurrent calls per side).
    assert!(pairwise.batches > 1_000, "{pairwise:?}");
    assert!(batched.rounds <= 8, "{} rounds", batched.rounds);
    assert!(batched.batches <= 2 * 8 * 4, "{} calls", batched.batches);
}

/// A source whose `children_many` drops the last answer.
struct Short(MemTree);

impl ChildrenSource for Short {
    type Error = String;
    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, String>> + Send {
        std::future::ready(Ok(self.0.node(key)))
    }
    fn children(&self, key: &NodeKey) -> impl Future<Output = Result<Children, String>> + Send {
        std::future::ready(Ok(self.0.children(key)))
    }
    fn children_many(
        &self,
        keys: &[NodeKey],
    ) -> impl Future<Output = Result<Vec<Children>, String>> + Send {
        let mut out: Vec<Children> = keys.iter().map(|k| self.0.children(k)).collect();
        out.pop();
        std::future::ready(Ok(out))
    }
}

#[test]
fn a_batch_answer_of_the_wrong_length_is_malformed() {
    let a = MemTree::from_items([("t1.a", digest("a", 0)), ("t2.b", digest("b", 0))]).unwrap();
    let b = MemTree::new();
    match block_on(diff(&Short(a), &b, "")) {
        Err(DiffError::Malformed { side: Side::A, reason, .. }) => {
            assert!(reason.contains("number of listings"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn diff_work_grows_with_differences_not_items() {
    let mut a = MemTree::new();
    for n in 0..50_000 {
        let id = format!("items.{n}");
        a.upsert(&id, digest(&id, 0)).unwrap();
    }
    let mut b = a.clone();
    for n in (0..50_000).step_by(5_000) {
        let id = format!("items.{n}");
        b.upsert(&id, digest(&id, 1)).unwrap();
    }
    let r = block_on(diff(&a, &b, "")).unwrap();
    assert_eq!(r.differences.len(), 10);
    assert!(r.differences.iter().all(|d| d.kind == DiffKind::Different));
    // 10 descents of ~5 levels, each listing at most 16 children per side.
    assert!(r.children_received < 10 * 6 * 2 * 16, "{r:?}");
}

#[test]
fn diff_against_an_empty_side_lists_every_leaf_under_the_prefix() {
    let model: BTreeMap<String, Digest> = ["t1", "t1.a", "t1.a.b", "t1.c", "t2.a"]
        .iter()
        .map(|id| (id.to_string(), digest(id, 0)))
        .collect();
    let a = MemTree::from_items(model.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
    let b = MemTree::new();
    let r = block_on(diff(&a, &b, "t1")).unwrap();
    let ids: Vec<&str> = r.ids().collect();
    assert_eq!(ids, ["t1.a", "t1.a.b", "t1.c"]);
    assert!(r.differences.iter().all(|d| d.kind == DiffKind::OnlyInA));
    assert!(block_on(diff(&a, &b, "t1..x")).is_err());
}

/// A source answering a bucket nibble that cannot exist.
struct Broken;

impl ChildrenSource for Broken {
    type Error = String;
    fn node(&self, _: &NodeKey) -> impl Future<Output = Result<Option<NodeValue>, String>> + Send {
        std::future::ready(Ok(Some(NodeValue::leaf(&digest("x", 0)))))
    }
    fn children(&self, _: &NodeKey) -> impl Future<Output = Result<Children, String>> + Send {
        std::future::ready(Ok(Children::Buckets(vec![(16, NodeValue::leaf(&digest("x", 0)))])))
    }
}

/// A source that is down.
struct Down;

impl ChildrenSource for Down {
    type Error = String;
    fn node(&self, _: &NodeKey) -> impl Future<Output = Result<Option<NodeValue>, String>> + Send {
        std::future::ready(Err("connection refused".to_owned()))
    }
    fn children(&self, _: &NodeKey) -> impl Future<Output = Result<Children, String>> + Send {
        std::future::ready(Err("connection refused".to_owned()))
    }
}

#[test]
fn malformed_or_failing_sources_are_errors_naming_the_side() {
    let t = MemTree::new();
    match block_on(diff(&t, &Broken, "")) {
        Err(DiffError::Malformed { side: Side::B, reason, .. }) => {
            assert!(reason.contains("nibble"))
        }
        other => panic!("unexpected {other:?}"),
    }
    match block_on(diff(&Down, &t, "")) {
        Err(e @ DiffError::A(_)) => assert!(e.to_string().contains("connection refused")),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn diff_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (a, b) = (MemTree::new(), MemTree::new());
    let fut = diff(&a, &b, "");
    assert_send(&fut);
    assert!(block_on(fut).unwrap().differences.is_empty());
}

/// A source that answers `children` only after yielding once, and records how many of its
/// calls were in flight at the same time.
struct Concurrent<'a> {
    tree: &'a MemTree,
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

impl ChildrenSource for Concurrent<'_> {
    type Error = std::convert::Infallible;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, Self::Error>> + Send {
        std::future::ready(Ok(self.tree.node(key)))
    }

    fn children(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Children, Self::Error>> + Send {
        use std::sync::atomic::Ordering::SeqCst;
        let key = key.clone();
        async move {
            let n = self.now.fetch_add(1, SeqCst) + 1;
            self.max.fetch_max(n, SeqCst);
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    std::task::Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            self.now.fetch_sub(1, SeqCst);
            Ok(self.tree.children(&key))
        }
    }
}

#[test]
fn diff_fetches_independent_branches_concurrently() {
    let mut a = MemTree::new();
    for t in 0..40 {
        for n in 0..20 {
            let id = format!("t{t}.u.i{n}");
            a.upsert(&id, digest(&id, 0)).unwrap();
        }
    }
    let mut b = a.clone();
    for t in 0..40 {
        let id = format!("t{t}.u.i3");
        b.upsert(&id, digest(&id, 1)).unwrap();
    }
    let src = Concurrent { tree: &a, now: 0.into(), max: 0.into() };
    let r = block_on(diff(&src, &b, "")).unwrap();
    assert_eq!(r.differences.len(), 40);
    let max = src.max.load(std::sync::atomic::Ordering::SeqCst);
    assert!(max >= 16, "40 differing branches were fetched at most {max} at a time");
}
