//! The merkle suite: per-leaf update cost (flat vs deep ids), diff cost vs comparing every leaf,
//! and memory per item, all on `MemTree` (the in-memory tree every store's logic shares).
//!
//! - Update: build a tree of N ids, then time upserts of random existing ids with new digests
//!   (digests precomputed outside the timing), median over repetitions.
//! - Diff: tree B = tree A with d ids changed, removed or added (a third each), diffed through
//!   the `ChildrenSource` trait. Baseline (BENCH.md "comparing all leaves"): walk every leaf of
//!   both trees, sort both leaf lists by id, merge them comparing digests. A second, harsher
//!   baseline is reported for transparency: only the merge of two already-sorted leaf lists.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sync_engine_merkle::{diff, leaf_digest, ChangeSet, Digest, MemTree};

use crate::report::{median, rate, Figure, Latency, Opts};

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
        return Err(format!(
            "the merkle suite needs at least 10,000 items (100 differences = 1%), got {n}"
        ));
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
    // The headline diff figures are the worse of the two shapes (the baseline names which).
    for (i, name) in
        ["merkle.diff.hundred_over_full", "merkle.diff.one_percent_over_full"].iter().enumerate()
    {
        let worst = headline
            .iter()
            .map(|h| &h[i])
            .max_by(|a, b| a.value.total_cmp(&b.value))
            .ok_or("no diff figures")?;
        figures.push(Figure { name: (*name).into(), ..worst.clone() });
    }
    figures.extend(cap_sweep(n, opts)?);
    Ok(figures)
}

/// `num / den` as a ratio figure whose baseline is `den` (value and ratio both the quotient).
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

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Build a tree of `n` ids of `shape`, then time updates of random distinct existing ids.
/// Returns the figures and the per-leaf update figure.
fn updates(shape: Shape, n: usize, opts: &Opts) -> Result<(Vec<Figure>, Figure), String> {
    let s = shape.name();
    let ids: Vec<String> = (0..n).map(|i| shape.id(i)).collect();
    let digests: Vec<Digest> = ids.iter().map(|id| digest(id, 0)).collect();
    let rss_before = rss_bytes();
    let t0 = Instant::now();
    let mut tree = MemTree::new();
    for (id, d) in ids.iter().zip(&digests) {
        tree.upsert(id, *d).map_err(err)?;
    }
    let build = t0.elapsed();
    let rss = rss_bytes().zip(rss_before).map(|(a, b)| a.saturating_sub(b));
    let stats = tree.stats();
    let mut figs = vec![
        Figure::plain(format!("merkle.build.{s}_ns_per_leaf"), ns_per(build, n), "ns"),
        Figure::plain(
            format!("merkle.nodes_per_item.{s}"),
            stats.nodes() as f64 / n as f64,
            "nodes",
        ),
        Figure::plain(
            format!("merkle.bytes_per_item.{s}"),
            stats.approx_bytes as f64 / n as f64,
            "bytes",
        ),
    ];
    if let Some(rss) = rss {
        figs.push(Figure::plain(
            format!("merkle.rss_bytes_per_item.{s}"),
            rss as f64 / n as f64,
            "bytes",
        ));
    }

    let m = n.min(200_000);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut ns, mut rates) = (Vec::new(), Vec::new());
    // At least 3 repetitions (5 in a full run: the machine is shared and noisy).
    let reps = if opts.quick { 3 } else { opts.reps().max(5) };
    for rep in 0..reps {
        order.shuffle(&mut rng);
        let picks: Vec<(usize, Digest)> =
            order[..m].iter().map(|&i| (i, digest(&ids[i], rep as u64 + 1))).collect();
        let t0 = Instant::now();
        for (i, d) in &picks {
            tree.upsert(&ids[*i], *d).map_err(err)?;
        }
        let took = t0.elapsed();
        ns.push(ns_per(took, m));
        rates.push(rate(m, took));
    }
    let update = Figure::plain(format!("merkle.update.{s}_ns_per_leaf"), median(ns), "ns");
    figs.push(update.clone());
    figs.push(Figure::plain(format!("merkle.update.{s}_leaves_per_s"), median(rates), "items/s"));

    // Single-update latency over >= 10,000 timed upserts after the warm-up above.
    let mut lat = Latency::new();
    order.shuffle(&mut rng);
    for &i in order.iter().cycle().take(m.max(10_000)) {
        let d = digest(&ids[i], 1000 + lat.len());
        let t0 = Instant::now();
        tree.upsert(&ids[i], d).map_err(err)?;
        lat.record(t0.elapsed());
    }
    if lat.is_empty() {
        return Err("no update latency recorded".into());
    }
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
        figs.push(Figure::plain(format!("merkle.update.{s}_{name}_us"), lat.quantile_us(q), "us"));
    }

    // What a store pays to turn a batch of 1000 changes into per-node deltas.
    let mut cs = ChangeSet::new();
    for i in order.iter().take(1000) {
        let id = &ids[*i];
        cs.upsert(id, tree.get_leaf(id), digest(id, 99)).map_err(err)?;
    }
    let (ms, deltas) = time_ms(reps, || Ok(cs.path_deltas()))?;
    figs.push(Figure::plain(
        format!("merkle.changeset.{s}_ns_per_leaf"),
        ms * 1e6 / cs.len().max(1) as f64,
        "ns",
    ));
    figs.push(Figure::plain(
        format!("merkle.changeset.{s}_path_nodes_per_1000"),
        deltas.len() as f64,
        "nodes",
    ));
    let t0 = Instant::now();
    tree.apply(&cs).map_err(err)?;
    figs.push(Figure::plain(
        format!("merkle.apply.{s}_ns_per_leaf"),
        ns_per(t0.elapsed(), cs.len()),
        "ns",
    ));
    Ok((figs, update))
}

/// A tree of ids `0..n` of `shape` and a copy of it with `d` differences spread uniformly:
/// a third changed, a third removed, a third added. `order` is the shuffled index order.
fn diverge(
    b: &mut MemTree,
    shape: Shape,
    n: usize,
    order: &[usize],
    from: usize,
    to: usize,
) -> Result<(), String> {
    for (k, &i) in order.get(from..to).ok_or("divergence beyond the items")?.iter().enumerate() {
        match (from + k) % 3 {
            0 => b.upsert(&shape.id(i), digest(&shape.id(i), 1)),
            1 => b.remove(&shape.id(i)),
            _ => b.upsert(&shape.id(n + i), digest(&shape.id(n + i), 0)),
        }
        .map_err(err)?;
    }
    Ok(())
}

fn build(shape: Shape, n: usize, cap: usize) -> Result<MemTree, String> {
    let mut t = MemTree::with_cap(cap);
    for i in 0..n {
        let id = shape.id(i);
        t.upsert(&id, digest(&id, 0)).map_err(err)?;
    }
    Ok(t)
}

/// Median milliseconds of `reps` runs of `f`, and the last run's result.
fn time_ms<T>(reps: usize, mut f: impl FnMut() -> Result<T, String>) -> Result<(f64, T), String> {
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        last = Some(f()?);
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(samples), last.ok_or("no run")?))
}

/// Diff figures for `shape`: the cost at several divergences vs comparing every leaf, and where
/// the two cross. Returns the figures and the two headline ratios (100 differences, 1%).
fn diffs(shape: Shape, n: usize, opts: &Opts) -> Result<(Vec<Figure>, [Figure; 2]), String> {
    let s = shape.name();
    let reps = opts.reps();
    let a = build(shape, n, sync_engine_merkle::DEFAULT_CAP)?;
    let mut b = a.clone();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(11));
    let mut levels = vec![100, n / 1000, n / 300, n / 100, n / 30, n / 10, n / 3];
    levels.sort_unstable();
    levels.dedup();
    let (mut figs, mut head, mut points) = (Vec::new(), Vec::new(), Vec::new());
    let mut baselines: Option<(Figure, Figure)> = None;
    let mut done = 0;
    for d in levels.into_iter().filter(|&d| d >= 100) {
        diverge(&mut b, shape, n, &order, done, d)?;
        done = d;
        let (ms, r) = time_ms(reps, || {
            let r = block_on(diff(&a, &b, "")).map_err(err)?;
            match r.differences.len() {
                found if found == d => Ok(r),
                found => Err(format!("diff found {found} differences, expected {d}")),
            }
        })?;
        if baselines.is_none() {
            baselines = Some(full_compare(&a, &b, d, reps, s)?);
        }
        let (full, presorted) = baselines.as_ref().ok_or("no baseline")?;
        let ms = Figure::vs(format!("merkle.diff.{s}.d{d}_ms"), ms, "ms", full);
        let per = r.children_received as f64 / d as f64;
        figs.push(Figure::plain(
            format!("merkle.diff.{s}.d{d}_children_per_difference"),
            per,
            "children",
        ));
        points.push((d as f64 / n as f64, ms.value / full.value, ms.value / presorted.value));
        if d == 100 {
            let name = format!("merkle.diff.{s}.d100_vs_presorted_merge_ms");
            figs.push(Figure::vs(name, ms.value, "ms", presorted));
            head.push(over(&format!("merkle.diff.{s}.hundred_over_full"), &ms, full));
        }
        if d == n / 100 {
            head.push(over(&format!("merkle.diff.{s}.one_percent_over_full"), &ms, full));
        }
        figs.push(ms);
    }
    figs.extend(baselines.map(|(f, p)| [f, p]).into_iter().flatten());
    // Where the diff starts costing as much as each baseline (log-log interpolation).
    for (which, name) in [(1, "crossover_fraction"), (2, "crossover_vs_presorted_fraction")] {
        let y = |p: &(f64, f64, f64)| if which == 1 { p.1 } else { p.2 };
        let cross = points.windows(2).find(|w| y(&w[0]) < 1.0 && y(&w[1]) >= 1.0).map(|w| {
            let (x0, y0, x1, y1) = (w[0].0.ln(), y(&w[0]).ln(), w[1].0.ln(), y(&w[1]).ln());
            (x0 + (-y0) / (y1 - y0) * (x1 - x0)).exp()
        });
        match cross {
            Some(x) => figs.push(Figure::plain(format!("merkle.diff.{s}.{name}"), x, "fraction")),
            None => println!(
                "merkle {s}: no {name} up to {:.3} divergence (ratio there {:.3})",
                points.last().map(|p| p.0).unwrap_or(0.0),
                points.last().map(y).unwrap_or(0.0),
            ),
        }
    }
    figs.extend(head.iter().cloned());
    let [h100, h1pct] =
        <[Figure; 2]>::try_from(head).map_err(|h| format!("{} headline diff figures", h.len()))?;
    Ok((figs, [h100, h1pct]))
}

/// The flat-bucket capacity trade-off on flat ids: nodes and bytes per item, build cost, and
/// the diff work at 100 and 1% differences: children listed per difference (a noise-free count)
/// and the median time.
fn cap_sweep(n: usize, opts: &Opts) -> Result<Vec<Figure>, String> {
    let mut figs = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let caps: &[usize] = if opts.quick { &[16, 32] } else { &[8, 16, 32, 64, 128] };
    for &cap in caps {
        let t0 = Instant::now();
        let a = build(Shape::Flat, n, cap)?;
        let took = t0.elapsed();
        let st = a.stats();
        figs.push(Figure::plain(
            format!("merkle.cap{cap}.build_ns_per_leaf"),
            ns_per(took, n),
            "ns",
        ));
        figs.push(Figure::plain(
            format!("merkle.cap{cap}.nodes_per_item"),
            st.nodes() as f64 / n as f64,
            "nodes",
        ));
        figs.push(Figure::plain(
            format!("merkle.cap{cap}.bytes_per_item"),
            st.approx_bytes as f64 / n as f64,
            "bytes",
        ));
        let mut b = a.clone();
        let mut done = 0;
        for (d, label) in [(100, "d100"), (n / 100, "one_percent")] {
            diverge(&mut b, Shape::Flat, n, &order, done, d)?;
            done = d;
            let (ms, r) = time_ms(opts.reps(), || block_on(diff(&a, &b, "")).map_err(err))?;
            figs.push(Figure::plain(
                format!("merkle.cap{cap}.{label}_children_per_difference"),
                r.children_received as f64 / d as f64,
                "children",
            ));
            figs.push(Figure::plain(format!("merkle.cap{cap}.{label}_diff_ms"), ms, "ms"));
        }
    }
    Ok(figs)
}

/// The baseline: walk every leaf of both trees, sort, merge-compare. Also the harsher baseline
/// of merging two pre-sorted lists only. Both checked to find the `d` differences.
fn full_compare(
    a: &MemTree,
    b: &MemTree,
    d: usize,
    reps: usize,
    s: &str,
) -> Result<(Figure, Figure), String> {
    let check = |found: usize| match found == d {
        true => Ok(()),
        false => Err(format!("full compare found {found} differences, expected {d}")),
    };
    let (ms, (la, lb)) = time_ms(reps, || {
        let mut la: Vec<(String, Digest)> = a.leaves().collect();
        let mut lb: Vec<(String, Digest)> = b.leaves().collect();
        la.sort_unstable();
        lb.sort_unstable();
        check(merge_count(&la, &lb))?;
        Ok((la, lb))
    })?;
    let full = Figure::plain(format!("merkle.diff.{s}.full_compare_ms"), ms, "ms");
    let (ms, ()) = time_ms(reps, || check(merge_count(&la, &lb)))?;
    let pre = Figure::plain(format!("merkle.diff.{s}.presorted_merge_ms"), ms, "ms");
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
