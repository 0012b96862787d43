//! Diff of two trees through their stores' "children of node" answers.
//!
//! [`diff`] starts at a path node on both sides and descends only where the two values differ.
//! At each node it asks each side for its children: two split nodes compare bucket by bucket;
//! two flat nodes compare entry by entry; where one side is split and the other is flat, the
//! flat side's entries are grouped into *virtual* buckets by the next nibble of their segment
//! hash (and regrouped below), so two stores may choose different bucket depths. A side that
//! lacks a node contributes nothing, and everything beneath the other side differs.
//!
//! Work is bounded by the differences: each differing leaf costs one descent, at most
//! (path depth × bucket depth) node pairs, each listing at most 16 buckets or one flat bucket.
//!
//! Round trips are bounded by the tree's depth rather than by the differences: the diff takes
//! up to [`CALLS_IN_FLIGHT`] × [`DIFF_BATCH`] pending node pairs at a time (all of them while
//! fewer are pending, so one tree level at a time) and asks each side for all their children
//! in a few concurrent [`ChildrenSource::children_many`] calls of at most [`DIFF_BATCH`] nodes.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::codec::MAX_BUCKET_NIBBLES;
use crate::key::{join, nibble, segment_hash, validate_path, Children, Entry, IdError, NodeKey};
use crate::types::{Digest, NodeValue};

/// A tree as the diff sees it: a node's value and its children, possibly over the network.
///
/// Promises: `node(k)` is the sum of every live leaf beneath `k` (None when there is none);
/// `children(k)` lists either every non-empty sub-bucket of `k` with its value or every entry of
/// `k`; the values listed sum to `node(k)`. The diff asks `node` for the start key only, and
/// `children` only for keys that source listed (a bucket or a path entry) or the start key.
/// `children_many(keys)` answers `children` of every key, in the order asked.
pub trait ChildrenSource {
    /// What a failed lookup reports.
    type Error;

    /// The value of a node, None when no live leaf is beneath it.
    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, Self::Error>> + Send;

    /// The children of a node (see [`Children`]).
    fn children(&self, key: &NodeKey)
        -> impl Future<Output = Result<Children, Self::Error>> + Send;

    /// The children of each of `keys`, at the same index: one round trip for a source that
    /// can answer many questions at once. The default asks [`children`](Self::children) for
    /// every key concurrently and fails with the first error.
    fn children_many(
        &self,
        keys: &[NodeKey],
    ) -> impl Future<Output = Result<Vec<Children>, Self::Error>> + Send {
        let mut pending: FuturesUnordered<_> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let fut = self.children(key);
                async move { (i, fut.await) }
            })
            .collect();
        let mut out: Vec<Option<Children>> = vec![None; keys.len()];
        async move {
            while let Some((i, listed)) = pending.next().await {
                out[i] = Some(listed?);
            }
            Ok(out.into_iter().flatten().collect())
        }
    }
}

impl ChildrenSource for crate::tree::MemTree {
    type Error = std::convert::Infallible;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Option<NodeValue>, Self::Error>> + Send {
        std::future::ready(Ok(crate::tree::MemTree::node(self, key)))
    }

    fn children(
        &self,
        key: &NodeKey,
    ) -> impl Future<Output = Result<Children, Self::Error>> + Send {
        std::future::ready(Ok(crate::tree::MemTree::children(self, key)))
    }
}

/// How an id differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiffKind {
    /// Live in A only.
    OnlyInA,
    /// Live in B only.
    OnlyInB,
    /// Live in both with different leaf digests.
    Different,
}

/// One differing id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Difference {
    /// The full dotted id.
    pub id: String,
    /// How it differs.
    pub kind: DiffKind,
}

/// The result of a [`diff`]: the exact differing ids and the work done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Every id live on one side only or with different digests, sorted by id.
    pub differences: Vec<Difference>,
    /// Node pairs whose values were compared.
    pub nodes_compared: u64,
    /// Node children asked for (both sides together).
    pub children_fetched: u64,
    /// `children_many` calls made (both sides together).
    pub batches: u64,
    /// Rounds of calls: the diff waits for each round's answers (up to [`CALLS_IN_FLIGHT`]
    /// calls per side, concurrently) before the next, so these are its sequential round trips.
    pub rounds: u64,
    /// Buckets and entries received from both sides.
    pub children_received: u64,
}

impl DiffReport {
    /// The differing ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.differences.iter().map(|d| d.id.as_str())
    }
}

/// Which side of a diff misbehaved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first source.
    A,
    /// The second source.
    B,
}

/// Why a diff failed.
#[derive(Debug, thiserror::Error)]
pub enum DiffError<EA, EB> {
    /// Source A failed.
    #[error("source A failed: {0}")]
    A(EA),
    /// Source B failed.
    #[error("source B failed: {0}")]
    B(EB),
    /// The prefix is not a dotted path.
    #[error("invalid diff prefix: {0}")]
    Prefix(#[from] IdError),
    /// A source answered something no tree can hold.
    #[error("source {side:?} answered malformed children for {key:?}: {reason}")]
    Malformed {
        /// The side.
        side: Side,
        /// The node asked about.
        key: NodeKey,
        /// What was wrong.
        reason: &'static str,
    },
}

/// One side's view of a node under comparison.
enum View {
    /// The source holds this node: ask it.
    Real,
    /// The source's node is flat higher up: these are its entries in this bucket, and their
    /// segment hashes at the same index.
    Virtual(Vec<Entry>, Vec<Digest>),
    /// The source has nothing here.
    Absent,
}

/// A node pair still to compare.
struct Task {
    key: NodeKey,
    a: View,
    b: View,
    va: NodeValue,
    vb: NodeValue,
}

/// One side's children of a node, whatever its view.
enum Listing {
    Buckets(Vec<(u8, NodeValue)>),
    /// Entries, and their segment hashes at the same index when known (else none).
    Entries(Vec<Entry>, Vec<Digest>),
}

impl Listing {
    fn len(&self) -> usize {
        match self {
            Listing::Buckets(b) => b.len(),
            Listing::Entries(e, _) => e.len(),
        }
    }
}

/// Everything that differs between `a` and `b` beneath the path node `prefix`.
///
/// `prefix` is a dotted path: `""` covers every id; `"t1"` covers the ids `t1.*` (all ids with
/// at least one more segment) but not the id `t1` itself, which is an entry of the root.
/// The two sources may split their nodes into buckets differently. The future is `Send` when
/// both sources are `Sync` and their errors `Send`. Asks each source for at most
/// [`DIFF_BATCH`] nodes' children per call, [`CALLS_IN_FLIGHT`] calls at a time.
pub async fn diff<A, B>(
    a: &A,
    b: &B,
    prefix: &str,
) -> Result<DiffReport, DiffError<A::Error, B::Error>>
where
    A: ChildrenSource,
    B: ChildrenSource,
{
    diff_batched(a, b, prefix, DIFF_BATCH).await
}

/// Node pairs whose children [`diff`] asks for in one `children_many` call, at most.
pub const DIFF_BATCH: usize = 512;

/// `children_many` calls per side in flight at once: a round of up to this many batches is
/// split into that many concurrent calls (of at least [`MIN_CALL`] nodes), so a source with
/// several connections answers them in parallel.
pub const CALLS_IN_FLIGHT: usize = 4;

/// Fewest nodes per call when a round is split.
const MIN_CALL: usize = 64;

/// [`diff`] asking each source for at most `batch` (at least 1) nodes' children per call; the
/// result is the same for every `batch`, only the number of calls differs.
pub async fn diff_batched<A, B>(
    a: &A,
    b: &B,
    prefix: &str,
    batch: usize,
) -> Result<DiffReport, DiffError<A::Error, B::Error>>
where
    A: ChildrenSource,
    B: ChildrenSource,
{
    validate_path(prefix)?;
    let batch = batch.max(1);
    let start = NodeKey::path(prefix);
    let (na, nb) = join2(a.node(&start), b.node(&start)).await;
    let na = na.map_err(DiffError::A)?;
    let nb = nb.map_err(DiffError::B)?;
    let view = |v: &Option<NodeValue>| {
        if v.is_some() {
            View::Real
        } else {
            View::Absent
        }
    };
    let mut report = DiffReport::default();
    let mut stack = vec![Task {
        a: view(&na),
        b: view(&nb),
        va: na.unwrap_or(NodeValue::EMPTY),
        vb: nb.unwrap_or(NodeValue::EMPTY),
        key: start,
    }];
    let round = batch.saturating_mul(CALLS_IN_FLIGHT);
    while !stack.is_empty() {
        // Up to `round` differing node pairs at once, a few concurrent calls per side: over a
        // network the cost of a diff is its round trips, not its comparisons.
        let mut keys = Vec::with_capacity(round.min(stack.len()));
        let mut views_a = Vec::with_capacity(keys.capacity());
        let mut views_b = Vec::with_capacity(keys.capacity());
        while keys.len() < round {
            let Some(task) = stack.pop() else { break };
            report.nodes_compared += 1;
            if task.va != task.vb {
                keys.push(task.key);
                views_a.push(task.a);
                views_b.push(task.b);
            }
        }
        let (la, lb) =
            join2(listings(a, &keys, views_a, batch), listings(b, &keys, views_b, batch)).await;
        let (la, fetched_a, calls_a) = la.map_err(|e| e.side(Side::A, DiffError::A))?;
        let (lb, fetched_b, calls_b) = lb.map_err(|e| e.side(Side::B, DiffError::B))?;
        report.children_fetched += fetched_a + fetched_b;
        report.batches += calls_a + calls_b;
        report.rounds += u64::from(calls_a + calls_b > 0);
        for ((key, la), lb) in keys.into_iter().zip(la).zip(lb) {
            report.children_received += (la.len() + lb.len()) as u64;
            expand(key, la, lb, &mut stack, &mut report.differences)
                .map_err(|(side, key, r)| malformed(side, &key, r))?;
        }
    }
    report.differences.sort_unstable();
    // Only a source listing one entry under two buckets could repeat an id.
    report.differences.dedup();
    Ok(report)
}

/// Why one side's listings failed.
enum ListError<E> {
    Source(E),
    /// `children_many` answered another number of listings than keys asked.
    Count(NodeKey),
}

impl<E> ListError<E> {
    fn side<EA, EB>(
        self,
        side: Side,
        wrap: impl FnOnce(E) -> DiffError<EA, EB>,
    ) -> DiffError<EA, EB> {
        match self {
            ListError::Source(e) => wrap(e),
            ListError::Count(key) => {
                malformed(side, &key, "children_many answered another number of listings")
            }
        }
    }
}

/// Compare the children of one differing node pair: push the differing child pairs onto
/// `stack`, record differing ids in `out`.
fn expand(
    key: NodeKey,
    la: Listing,
    lb: Listing,
    stack: &mut Vec<Task>,
    out: &mut Vec<Difference>,
) -> Result<(), (Side, NodeKey, &'static str)> {
    match (la, lb) {
        (Listing::Entries(ea, _), Listing::Entries(eb, _)) => {
            let ea = sorted_entries(ea).map_err(|r| (Side::A, key.clone(), r))?;
            let eb = sorted_entries(eb).map_err(|r| (Side::B, key.clone(), r))?;
            compare_entries(&key, ea, eb, stack, out);
        }
        (la, lb) => {
            let depth = key.bucket.len();
            let mut ga = Grouped::new(la, depth).map_err(|r| (Side::A, key.clone(), r))?;
            let mut gb = Grouped::new(lb, depth).map_err(|r| (Side::B, key.clone(), r))?;
            for n in (0..16u8).rev() {
                let (va, vb) = (ga.values[usize::from(n)], gb.values[usize::from(n)]);
                let (a, b) = (ga.take(n, va != vb), gb.take(n, va != vb));
                if va != vb {
                    let key = key.child_bucket(n);
                    stack.push(Task { key, a, b, va, vb });
                }
            }
        }
    }
    Ok(())
}

fn malformed<EA, EB>(side: Side, key: &NodeKey, reason: &'static str) -> DiffError<EA, EB> {
    DiffError::Malformed { side, key: key.clone(), reason }
}

/// One side's children of each of `keys` (whose views are `views`, at the same index): the
/// keys the source holds are asked in up to [`CALLS_IN_FLIGHT`] concurrent `children_many`
/// calls of at most `batch` keys. Returns the listings, how many keys were asked and in how
/// many calls.
async fn listings<S: ChildrenSource>(
    src: &S,
    keys: &[NodeKey],
    views: Vec<View>,
    batch: usize,
) -> Result<(Vec<Listing>, u64, u64), ListError<S::Error>> {
    let real: Vec<NodeKey> = keys
        .iter()
        .zip(&views)
        .filter(|(_, v)| matches!(v, View::Real))
        .map(|(k, _)| k.clone())
        .collect();
    let asked = real.len() as u64;
    let per_call = real.len().div_ceil(CALLS_IN_FLIGHT).max(MIN_CALL).min(batch).max(1);
    let calls = real.chunks(per_call).count() as u64;
    let mut answers = Vec::with_capacity(real.len());
    for (chunk, answer) in real
        .chunks(per_call)
        .zip(join_all(real.chunks(per_call).map(|c| src.children_many(c))).await)
    {
        let answer = answer.map_err(ListError::Source)?;
        if answer.len() != chunk.len() {
            return Err(ListError::Count(chunk.first().cloned().unwrap_or_default()));
        }
        answers.extend(answer);
    }
    answers.reverse();
    let out = views
        .into_iter()
        .map(|view| match view {
            View::Real => match answers.pop() {
                Some(Children::Buckets(b)) => Listing::Buckets(b),
                Some(Children::Entries(e)) => Listing::Entries(e, Vec::new()),
                None => Listing::Entries(Vec::new(), Vec::new()),
            },
            View::Virtual(e, h) => Listing::Entries(e, h),
            View::Absent => Listing::Entries(Vec::new(), Vec::new()),
        })
        .collect();
    Ok((out, asked, calls))
}

/// One side's children at bucket level `depth`, by next nibble: real sub-buckets for a split
/// listing, virtual ones (entries grouped by nibble `depth`) for a flat one.
struct Grouped {
    /// The value of each of the 16 sub-buckets.
    values: [NodeValue; 16],
    /// Bit `n` set: sub-bucket `n` is real (listed by a split node).
    real: u16,
    /// A flat listing's entries with their nibble and segment hash, sorted by nibble.
    entries: Vec<(u8, Entry, Digest)>,
}

impl Grouped {
    fn new(listing: Listing, depth: usize) -> Result<Grouped, &'static str> {
        let mut g = Grouped { values: [NodeValue::EMPTY; 16], real: 0, entries: Vec::new() };
        match listing {
            Listing::Buckets(buckets) => {
                if depth >= MAX_BUCKET_NIBBLES {
                    return Err("split deeper than 64 nibbles");
                }
                for (n, v) in buckets {
                    let slot = g.values.get_mut(usize::from(n)).ok_or("bucket nibble above 15")?;
                    if g.real & (1 << n) != 0 {
                        return Err("bucket listed twice");
                    }
                    g.real |= 1 << n;
                    *slot = v;
                }
            }
            Listing::Entries(entries, hashes) => {
                if depth >= MAX_BUCKET_NIBBLES {
                    return Err("the other side splits deeper than 64 nibbles");
                }
                g.entries.reserve(entries.len());
                let mut hashes = hashes.into_iter();
                for e in entries {
                    let h = match hashes.next() {
                        Some(h) => h,
                        None => segment_hash(e.segment()),
                    };
                    let n = nibble(&h, depth);
                    let v = &mut g.values[usize::from(n)];
                    *v = v.plus(e.value());
                    g.entries.push((n, e, h));
                }
                g.entries.sort_unstable_by_key(|t| t.0);
            }
        }
        Ok(g)
    }

    /// The view of sub-bucket `n`; call with `n` descending (the entries of greater nibbles
    /// must be gone). When `want` is false the entries of `n` are dropped.
    fn take(&mut self, n: u8, want: bool) -> View {
        if self.real & (1 << n) != 0 {
            return View::Real;
        }
        let start = self.entries.partition_point(|t| t.0 < n);
        if start == self.entries.len() {
            return View::Absent;
        }
        if !want {
            self.entries.truncate(start);
            return View::Absent;
        }
        let (e, h) = self.entries.split_off(start).into_iter().map(|(_, e, h)| (e, h)).unzip();
        View::Virtual(e, h)
    }
}

/// Sort entries by (segment, leaf before path), refusing duplicates.
fn sorted_entries(mut v: Vec<Entry>) -> Result<Vec<Entry>, &'static str> {
    v.sort_unstable_by(|x, y| order_key(x).cmp(&order_key(y)));
    if v.windows(2).any(|w| order_key(&w[0]) == order_key(&w[1])) {
        return Err("entry listed twice");
    }
    Ok(v)
}

fn order_key(e: &Entry) -> (&str, bool) {
    (e.segment(), matches!(e, Entry::Path { .. }))
}

/// Merge two sorted entry lists of the node `key`: leaves differ directly, path entries whose
/// values differ become tasks.
fn compare_entries(
    key: &NodeKey,
    ea: Vec<Entry>,
    eb: Vec<Entry>,
    stack: &mut Vec<Task>,
    out: &mut Vec<Difference>,
) {
    let mut ia = ea.into_iter().peekable();
    let mut ib = eb.into_iter().peekable();
    loop {
        let ord = match (ia.peek(), ib.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => order_key(x).cmp(&order_key(y)),
        };
        let (x, y) = match ord {
            std::cmp::Ordering::Less => (ia.next(), None),
            std::cmp::Ordering::Greater => (None, ib.next()),
            std::cmp::Ordering::Equal => (ia.next(), ib.next()),
        };
        match (x, y) {
            (Some(Entry::Leaf { segment, digest: da }), Some(Entry::Leaf { digest: db, .. }))
                if da != db =>
            {
                out.push(Difference { id: join(&key.path, &segment), kind: DiffKind::Different });
            }
            (Some(Entry::Leaf { segment, .. }), None) => {
                out.push(Difference { id: join(&key.path, &segment), kind: DiffKind::OnlyInA });
            }
            (None, Some(Entry::Leaf { segment, .. })) => {
                out.push(Difference { id: join(&key.path, &segment), kind: DiffKind::OnlyInB });
            }
            (Some(Entry::Path { segment, value: va }), Some(Entry::Path { value: vb, .. }))
                if va != vb =>
            {
                let key = key.child_path(&segment);
                stack.push(Task { key, a: View::Real, b: View::Real, va, vb });
            }
            (Some(Entry::Path { segment, value }), None) => {
                let key = key.child_path(&segment);
                stack.push(Task {
                    key,
                    a: View::Real,
                    b: View::Absent,
                    va: value,
                    vb: NodeValue::EMPTY,
                });
            }
            (None, Some(Entry::Path { segment, value })) => {
                let key = key.child_path(&segment);
                stack.push(Task {
                    key,
                    a: View::Absent,
                    b: View::Real,
                    va: NodeValue::EMPTY,
                    vb: value,
                });
            }
            // Equal entries, or equal order keys (hence equal kinds); (None, None) ended the loop.
            _ => {}
        }
    }
}

/// Run two futures concurrently (no runtime needed) and return both outputs.
async fn join2<FA: Future, FB: Future>(fa: FA, fb: FB) -> (FA::Output, FB::Output) {
    let mut fa = pin!(fa);
    let mut fb = pin!(fb);
    let mut ra = None;
    let mut rb = None;
    poll_fn(move |cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = fa.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = fb.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(a), Some(b)) => Poll::Ready((a, b)),
            (a, b) => {
                ra = a;
                rb = b;
                Poll::Pending
            }
        }
    })
    .await
}
