//! The merkle suite: per-leaf update cost (flat vs deep ids), diff cost vs comparing every leaf,
//! and memory per item, all on `MemTree` (the in-memory tree every store's logic shares).
//!
//! - Update: build a tree of N ids, then time upserts of random existing ids with new digests
//!   (digests precomputed outside the timing), median over repetitions.
//! - Diff: tree B = tree A with d ids changed, removed or added (a third each), diffed through
//!   the `ChildrenSource` trait. Baseline (BENCH.md "comparing all leaves"): walk every leaf of
//!   both trees, sort both leaf lists by id, merge them comparing digests. A second, harsher
//!   baseline is reported for transparency: only the merge of two already-sorted leaf lists.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_engine_merkle::{diff, leaf_digest, ChangeSet, Digest, MemTree};

use crate::report::{median, Figure, Opts};

/// The two id shapes of BENCH.md.
#[derive(Clone, Copy)]
enum Shape {
    Flat,
    Deep,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Flat => "flat",
            Shape::Deep => "deep",
        }
    }

    /// Id number `n`: `items.{n}` or `t{0..99}.u{0..999}.i{n}`.
    fn id(self, n: usize) -> String {
        match self {
            Shape::Flat => format!("items.{n}"),
            Shape::Deep => format!("t{}.u{}.i{n}", n % 100, (n / 100) % 1000),
        }
    }
}

fn digest(id: &str, version: u64) -> Digest {
    let mut content = [0u8; 32];
    content[..8].copy_from_slice(&version.to_le_bytes());
    leaf_digest(id, version, false, &content)
}

/// Run the suite.
pub fn run(opts: &Opts) -> Result<Vec<Figure>, String> {
    let n = opts.items_or(1_000_000, 20_000);
    if n < 10_000 {
        return Err(format!("the merkle suite needs at least 10,000 items (100 differences = 1%), got {n}"));
    }
    let mut figures = Vec::new();
    let mut per_leaf = Vec::new();
    for shape in [Shape::Flat, Shape::Deep] {
        let (fig, update) = updates(shape, n, opts)?;
        figures.extend(fig);
        per_leaf.push(update);
    }
    if let [flat, deep] = per_leaf.as_slice() {
        figures.push(over("merkle.update.flat_over_deep", flat, deep));
    }
    let mut headline = Vec::new();
    for shape in [Shape::Flat, Shape::Deep] {
        let (fig, head) = diffs(shape, n, opts)?;
        figures.extend(fig);
        headline.push(head);
    }
    // The headline diff figures are the worse of the two shapes.
    for i in 0..2 {
        let worst = headline
            .iter()
            .map(|h| &h[i])
            .max_by(|a, b| a.value.total_cmp(&b.value))
            .ok_or("no diff figures")?;
        let name = if i == 0 { "merkle.diff.hundred_over_full" } else { "merkle.diff.one_percent_over_full" };
        figures.push(Figure { name: name.into(), ..worst.clone() });
    }
    Ok(figures)
}

/// `num / den` as a ratio figure whose baseline is `den`.
fn over(name: &str, num: &Figure, den: &Figure) -> Figure {
    let r = num.value / den.value.max(f64::MIN_POSITIVE);
    Figure {
        name: name.into(),
        value: r,
        unit: "ratio".into(),
        baseline: Some(den.name.clone()),
        ratio: Some(r),
    }
}

/// Build a tree of `n` ids of `shape`, then time random updates. Returns the figures and the
/// per-leaf update figure.
fn updates(shape: Shape, n: usize, opts: &Opts) -> Result<(Vec<Figure>, Figure), String> {
    let s = shape.name();
    let ids: Vec<String> = (0..n).map(|i| shape.id(i)).collect();
    let digests: Vec<Digest> = ids.iter().map(|id| digest(id, 0)).collect();
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    let mut tree = MemTree::new();
    for (id, d) in ids.iter().zip(&digests) {
        tree.upsert(id, *d).map_err(|e| e.to_string())?;
    }
    let build = t0.elapsed();
    let rss = rss_bytes().zip(rss_before).map(|(a, b)| a.saturating_sub(b));
    let stats = tree.stats();
    let mut figs = vec![
        Figure::plain(format!("merkle.build.{s}_ns_per_leaf"), ns_per(build, n), "ns"),
        Figure::plain(format!("merkle.nodes_per_item.{s}"), stats.nodes() as f64 / n as f64, "nodes"),
        Figure::plain(
            format!("merkle.bytes_per_item.{s}"),
            stats.approx_bytes as f64 / n as f64,
            "bytes",
        ),
    ];
    if let Some(rss) = rss {
        figs.push(Figure::plain(format!("merkle.rss_bytes_per_item.{s}"), rss as f64 / n as f64, "bytes"));
    }

    let m = n.min(200_000);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut samples = Vec::new();
    for rep in 0..opts.reps().max(3) {
        let picks: Vec<(usize, Digest)> = (0..m)
            .map(|_| {
                let i = rng.random_range(0..n);
                (i, digest(&ids[i], rep as u64 + 1))
            })
            .collect();
        let t0 = Instant::now();
        for (i, d) in &picks {
            tree.upsert(&ids[*i], *d).map_err(|e| e.to_string())?;
        }
        samples.push(ns_per(t0.elapsed(), m));
    }
    let update = Figure::plain(format!("merkle.update.{s}_ns_per_leaf"), median(samples), "ns");
    figs.push(update.clone());

    // What a store pays to turn a batch of 1000 changes into per-node deltas.
    let mut cs = ChangeSet::new();
    for i in (0..n).step_by((n / 1000).max(1)).take(1000) {
        cs.upsert(&ids[i], Some(digests[i]), digest(&ids[i], 99)).map_err(|e| e.to_string())?;
    }
    let t0 = Instant::now();
    let deltas = cs.path_deltas();
    let took = t0.elapsed();
    figs.push(Figure::plain(format!("merkle.changeset.{s}_ns_per_leaf"), ns_per(took, cs.len()), "ns"));
    figs.push(Figure::plain(
        format!("merkle.changeset.{s}_path_nodes_per_1000"),
        deltas.len() as f64,
        "nodes",
    ));
    Ok((figs, update))
}

/// Diff figures for `shape`: the cost at several divergences vs comparing every leaf. Returns
/// the figures and the two headline ratios (100 differences, 1%).
fn diffs(shape: Shape, n: usize, opts: &Opts) -> Result<(Vec<Figure>, [Figure; 2]), String> {
    let s = shape.name();
    let a = MemTree::from_items((0..n).map(|i| shape.id(i)).collect::<Vec<_>>().iter().map(|id| (id.as_str(), digest(id, 0))))
        .map_err(|e| e.to_string())?;
    let mut b = a.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut touched: HashSet<usize> = HashSet::new();
    let mut figs = Vec::new();
    let mut full = None;
    let mut head: Vec<Figure> = Vec::new();
    let levels = [100, n / 1000, n / 300, n / 100, n / 30, n / 10];
    let mut done = 0;
    let mut points = Vec::new();
    for &d in &levels {
        if d <= done || d > n {
            continue;
        }
        // Add divergences up to d: change, remove, or add a new id, in turn.
        for (k, &i) in order[done..d].iter().enumerate() {
            touched.insert(i);
            match (done + k) % 3 {
                0 => b.upsert(&shape.id(i), digest(&shape.id(i), 1)),
                1 => b.remove(&shape.id(i)),
                _ => b.upsert(&shape.id(n + i), digest(&shape.id(n + i), 0)),
            }
            .map_err(|e| e.to_string())?;
        }
        done = d;
        let mut samples = Vec::new();
        let mut work = None;
        for _ in 0..opts.reps().max(3) {
            let t0 = Instant::now();
            let r = block_on(diff(&a, &b, "")).map_err(|e| e.to_string())?;
            samples.push(t0.elapsed().as_secs_f64() * 1e3);
            if r.differences.len() != d {
                return Err(format!("diff found {} differences, expected {d}", r.differences.len()));
            }
            work = Some(r);
        }
        let ms = Figure::plain(format!("merkle.diff.{s}.d{d}_ms"), median(samples), "ms");
        if full.is_none() {
            full = Some(full_compare(&a, &b, d, opts, s)?);
        }
        let Some((full_ms, presorted)) = &full else { return Err("no baseline".into()) };
        if let Some(r) = &work {
            figs.push(Figure::plain(
                format!("merkle.diff.{s}.d{d}_children_received_per_difference"),
                r.children_received as f64 / d as f64,
                "children",
            ));
        }
        let ratio = over(&format!("merkle.diff.{s}.d{d}_over_full"), &ms, full_ms);
        points.push((d as f64 / n as f64, ratio.value));
        if d == 100 {
            figs.push(over(&format!("merkle.diff.{s}.d100_over_presorted_merge"), &ms, presorted));
            head.push(ratio.clone());
        }
        if d == n / 100 {
            head.push(ratio.clone());
        }
        figs.push(ms);
        figs.push(ratio);
    }
    if let Some((full_ms, presorted)) = full {
        figs.push(full_ms);
        figs.push(presorted);
    }
    // Where the diff starts costing as much as comparing every leaf (log-log interpolation).
    let crossover = points.windows(2).find(|w| w[0].1 < 1.0 && w[1].1 >= 1.0).map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        let t = -y0.ln() / (y1.ln() - y0.ln());
        (x0.ln() + t * (x1.ln() - x0.ln())).exp()
    });
    match crossover {
        Some(x) => figs.push(Figure::plain(format!("merkle.diff.{s}.crossover_fraction"), x, "fraction")),
        None => {
            let last = points.last().map(|p| p.1).unwrap_or(0.0);
            println!("merkle {s}: no crossover in the range measured (ratio at the largest divergence: {last:.3})");
        }
    }
    let [h100, h1pct] = <[Figure; 2]>::try_from(head).map_err(|h| format!("{} headline diff figures", h.len()))?;
    Ok((figs, [h100, h1pct]))
}

/// The baseline: walk every leaf of both trees, sort, merge-compare. Also the harsher baseline
/// of merging two pre-sorted lists only. Both checked to find the `d` differences.
fn full_compare(a: &MemTree, b: &MemTree, d: usize, opts: &Opts, s: &str) -> Result<(Figure, Figure), String> {
    let mut samples = Vec::new();
    let mut sorted = None;
    for _ in 0..opts.reps().max(3) {
        let t0 = Instant::now();
        let mut la: Vec<(String, Digest)> = a.leaves().collect();
        let mut lb: Vec<(String, Digest)> = b.leaves().collect();
        la.sort_unstable();
        lb.sort_unstable();
        let found = merge_count(&la, &lb);
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        if found != d {
            return Err(format!("full compare found {found} differences, expected {d}"));
        }
        sorted = Some((la, lb));
    }
    let full = Figure::plain(format!("merkle.diff.{s}.full_compare_ms"), median(samples), "ms");
    let (la, lb) = sorted.ok_or("no leaves")?;
    let mut samples = Vec::new();
    for _ in 0..opts.reps().max(3) {
        let t0 = Instant::now();
        let found = merge_count(&la, &lb);
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        if found != d {
            return Err(format!("merge found {found} differences, expected {d}"));
        }
    }
    let pre = Figure::plain(format!("merkle.diff.{s}.presorted_merge_ms"), median(samples), "ms");
    Ok((full, pre))
}

/// Differences between two id-sorted leaf lists.
fn merge_count(a: &[(String, Digest)], b: &[(String, Digest)]) -> usize {
    let (mut i, mut j, mut found) = (0, 0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => (i, found) = (i + 1, found + 1),
                std::cmp::Ordering::Greater => (j, found) = (j + 1, found + 1),
                std::cmp::Ordering::Equal => {
                    found += usize::from(x.1 != y.1);
                    (i, j) = (i + 1, j + 1);
                }
            },
            (Some(_), None) => (i, found) = (i + 1, found + 1),
            (None, Some(_)) => (j, found) = (j + 1, found + 1),
            (None, None) => break,
        }
    }
    found
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

/// Resident set size of this process (Linux), for a cross-check of the approximate bytes.
fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Run a future to completion on this thread (the sources here are always ready).
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
