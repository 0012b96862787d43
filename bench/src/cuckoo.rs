//! The cuckoo suite: our filter against the best maintained dynamic cuckoo crate
//! (`scalable_cuckoo_filter`), the concurrent `atomic-cuckoo-filter`, the older `cuckoofilter`
//! crate and xorf's static binary fuse filters, on the same engine ids in the same run.
//!
//! Per size (1M and 10M ids; `--quick`: 100k; `--items N`: N): build (inserts/s), lookups of
//! every inserted id (hits/s; any miss of ours is a false negative and fails the run), lookups of
//! as many absent ids of the same shape (misses/s and the measured false-positive rate), and
//! memory bits per item. Throughputs are medians of at least 3 passes, candidates interleaved.
//! Ids are deep (`t{0..99}.u{0..999}.i{n}`); the first size is repeated with flat ids
//! (`items.{n}`) for our filter and the dynamic baseline. All single-threaded.
//!
//! Headline figures:
//! * `cuckoo.lookup.vs_dynamic_baseline`: the LOWEST of our hit and miss lookup ratios against
//!   `scalable_cuckoo_filter` (as shipped: SipHash-1-3) over all sizes and id shapes;
//! * `cuckoo.lookup.vs_dynamic_baseline_same_hash`: the same against `scalable_cuckoo_filter`
//!   given our xxh3 hash, which separates the data structure from the hash function;
//! * `cuckoo.lookup.vs_concurrent_baseline`: the same against `atomic-cuckoo-filter`;
//! * `cuckoo.fpr`, `cuckoo.bits_per_item`: ours at the largest size, at the design fill
//!   (`with_capacity(n)` then n inserts: 95 %).

use std::hint::black_box;
use std::time::Instant;

use sync_engine_cuckoo::CuckooFilter;

mod candidates;

use candidates::{Atomic, Candidate, Fuse16, Fuse8, OldCuckoo, Scalable, ScalableXxh3};

use crate::report::{median, rate, Figure, Latency, Opts};

/// Many byte-string ids in one buffer (no per-id allocation to distort the cache).
struct Ids {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Ids {
    fn deep(range: std::ops::Range<u64>) -> Ids {
        Ids::build(range, |n, out| {
            use std::io::Write;
            let _ = write!(out, "t{}.u{}.i{n}", n % 100, (n / 100) % 1000);
        })
    }

    fn flat(range: std::ops::Range<u64>) -> Ids {
        Ids::build(range, |n, out| {
            use std::io::Write;
            let _ = write!(out, "items.{n}");
        })
    }

    fn build(range: std::ops::Range<u64>, write: impl Fn(u64, &mut Vec<u8>)) -> Ids {
        let n = usize::try_from(range.end - range.start).unwrap_or(0);
        let mut ids = Ids { bytes: Vec::with_capacity(n * 20), ends: Vec::with_capacity(n) };
        for i in range {
            write(i, &mut ids.bytes);
            ids.ends.push(ids.bytes.len());
        }
        ids
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(s, e)| self.bytes.get(s..e).unwrap_or_default())
    }
}

/// What one candidate measured at one size.
struct Measured {
    insert_per_s: f64,
    hit_per_s: f64,
    miss_per_s: f64,
    /// Inserted ids reported absent.
    false_negatives: usize,
    fpr: f64,
    bits_per_item: f64,
    failed_inserts: u64,
}

fn lookups<C: Candidate>(f: &C, ids: &Ids) -> usize {
    ids.iter().filter(|id| f.contains(black_box(id))).count()
}

/// One candidate's filter and samples. Candidates run interleaved (every candidate's rep 1,
/// then every candidate's rep 2, ...) so that load from other processes on this shared machine
/// spreads over all of them instead of skewing one.
struct Runner<C> {
    filter: Option<C>,
    failed: u64,
    insert: Vec<f64>,
    hit: Vec<f64>,
    miss: Vec<f64>,
    found: usize,
    false_pos: usize,
}

impl<C> Default for Runner<C> {
    fn default() -> Self {
        Runner {
            filter: None,
            failed: 0,
            insert: Vec::new(),
            hit: Vec::new(),
            miss: Vec::new(),
            found: 0,
            false_pos: 0,
        }
    }
}

trait Run {
    fn build_rep(&mut self, present: &Ids) -> Result<(), String>;
    fn lookup_rep(&mut self, present: &Ids, absent: &Ids);
    fn measured(&self, present: &Ids, absent: &Ids) -> Measured;
}

impl<C: Candidate> Run for Runner<C> {
    fn build_rep(&mut self, present: &Ids) -> Result<(), String> {
        drop(self.filter.take());
        let t = Instant::now();
        let (f, failed) = C::build(present)?;
        self.insert.push(rate(present.len(), t.elapsed()));
        self.filter = Some(f);
        self.failed = failed;
        Ok(())
    }

    fn lookup_rep(&mut self, present: &Ids, absent: &Ids) {
        let Some(f) = &self.filter else { return };
        let t = Instant::now();
        self.found = lookups(f, present);
        self.hit.push(rate(present.len(), t.elapsed()));
        let t = Instant::now();
        self.false_pos = lookups(f, absent);
        self.miss.push(rate(absent.len(), t.elapsed()));
    }

    fn measured(&self, present: &Ids, absent: &Ids) -> Measured {
        let bits = self.filter.as_ref().map_or(0, Candidate::bits);
        Measured {
            insert_per_s: median(self.insert.clone()),
            hit_per_s: median(self.hit.clone()),
            miss_per_s: median(self.miss.clone()),
            false_negatives: present.len().saturating_sub(self.found),
            fpr: self.false_pos as f64 / absent.len().max(1) as f64,
            bits_per_item: bits as f64 / present.len().max(1) as f64,
            failed_inserts: self.failed,
        }
    }
}

/// Run every candidate `reps` times, interleaved: all builds, then all lookup passes.
fn run_all(
    runners: &mut [&mut dyn Run],
    present: &Ids,
    absent: &Ids,
    reps: usize,
) -> Result<(), String> {
    for _ in 0..reps {
        for r in runners.iter_mut() {
            r.build_rep(present)?;
        }
    }
    for _ in 0..reps {
        for r in runners.iter_mut() {
            r.lookup_rep(present, absent);
        }
    }
    Ok(())
}

fn size_label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The figures of one candidate at one size; ours carry ratios against `base` when given.
fn figures(prefix: &str, m: &Measured, base: Option<&[Figure]>) -> Vec<Figure> {
    let plain = [
        ("insert_per_s", m.insert_per_s, "items/s"),
        ("lookup_hit_per_s", m.hit_per_s, "items/s"),
        ("lookup_miss_per_s", m.miss_per_s, "items/s"),
    ];
    let mut out: Vec<Figure> = plain
        .iter()
        .enumerate()
        .map(|(i, &(name, v, unit))| {
            let name = format!("{prefix}.{name}");
            match base.and_then(|b| b.get(i)) {
                Some(b) => Figure::vs(name, v, unit, b),
                None => Figure::plain(name, v, unit),
            }
        })
        .collect();
    let ns = 1e9 / m.miss_per_s.max(1e-9);
    out.push(Figure::plain(format!("{prefix}.lookup_miss_ns"), ns, "ns"));
    out.push(Figure::plain(format!("{prefix}.fpr"), m.fpr, "ratio"));
    out.push(Figure::plain(format!("{prefix}.bits_per_item"), m.bits_per_item, "bits"));
    if m.failed_inserts > 0 {
        let n = m.failed_inserts as f64;
        out.push(Figure::plain(format!("{prefix}.failed_inserts"), n, "items"));
    }
    let n = m.false_negatives as f64;
    out.push(Figure::plain(format!("{prefix}.false_negatives"), n, "items"));
    out
}

/// Per-lookup latency of our filter (p50 / p99 / p999 over up to 100,000 hits and as many
/// misses, after a warm-up pass), including the ~20 ns of reading the clock twice.
fn latency(
    f: &CuckooFilter,
    present: &Ids,
    absent: &Ids,
    label: &str,
) -> Result<Vec<Figure>, String> {
    let mut out = Vec::new();
    for (kind, ids) in [("hit", present), ("miss", absent)] {
        let step = (ids.len() / 100_000).max(1);
        let sample: Vec<&[u8]> = ids.iter().step_by(step).collect();
        black_box(sample.iter().filter(|id| f.contains(id)).count());
        let mut lat = Latency::new();
        for id in &sample {
            let t = Instant::now();
            black_box(f.contains(black_box(id)));
            lat.record(t.elapsed());
        }
        if lat.is_empty() {
            return Err(format!("no {kind} lookups to time at {label}"));
        }
        for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
            let name = format!("cuckoo.{label}.lookup_{kind}_{name}_us");
            out.push(Figure::plain(name, lat.quantile_us(q), "us"));
        }
        let name = format!("cuckoo.{label}.lookup_{kind}_timed_ops");
        out.push(Figure::plain(name, lat.len() as f64, "ops"));
    }
    Ok(out)
}

/// Ours ÷ baseline: (hits, misses, inserts).
fn ratios(ours: &Measured, base: &Measured) -> (f64, f64, f64) {
    (
        ours.hit_per_s / base.hit_per_s.max(1e-9),
        ours.miss_per_s / base.miss_per_s.max(1e-9),
        ours.insert_per_s / base.insert_per_s.max(1e-9),
    )
}

/// Running minimum of the headline ratios over sizes and id shapes.
#[derive(Default)]
struct Headline {
    lookup: Option<f64>,
    lookup_same_hash: Option<f64>,
    lookup_concurrent: Option<f64>,
    insert: Option<f64>,
    fpr: f64,
    bits: f64,
}

fn min_into(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.map_or(v, |s| s.min(v)));
}

fn ratio_figures(out: &mut Vec<Figure>, prefix: &str, suffix: &str, r: (f64, f64, f64)) {
    let (hit, miss, ins) = r;
    out.push(Figure::plain(format!("{prefix}.lookup_hit.{suffix}"), hit, "ratio"));
    out.push(Figure::plain(format!("{prefix}.lookup_miss.{suffix}"), miss, "ratio"));
    out.push(Figure::plain(format!("{prefix}.insert.{suffix}"), ins, "ratio"));
}

/// Deep ids at one size: every candidate.
fn deep_size(
    n: usize,
    reps: usize,
    out: &mut Vec<Figure>,
    head: &mut Headline,
) -> Result<(), String> {
    let label = size_label(n);
    eprintln!("cuckoo: {label} deep ids ...");
    let present = Ids::deep(0..n as u64);
    let absent = Ids::deep(n as u64..2 * n as u64);
    let mut base_r = Runner::<Scalable>::default();
    let mut same_r = Runner::<ScalableXxh3>::default();
    let mut ours_r = Runner::<CuckooFilter>::default();
    let mut old_r = Runner::<OldCuckoo>::default();
    let mut fuse_r = Runner::<Fuse16>::default();
    let mut fuse8_r = Runner::<Fuse8>::default();
    let mut atomic_r = Runner::<Atomic>::default();
    run_all(
        &mut [
            &mut base_r,
            &mut same_r,
            &mut ours_r,
            &mut old_r,
            &mut atomic_r,
            &mut fuse_r,
            &mut fuse8_r,
        ],
        &present,
        &absent,
        reps,
    )?;
    let ours = ours_r.measured(&present, &absent);
    if ours.false_negatives > 0 {
        return Err(format!("{} false negatives at {label} ids", ours.false_negatives));
    }
    let base = base_r.measured(&present, &absent);
    let same = same_r.measured(&present, &absent);
    let base_figs =
        figures(&format!("cuckoo.baseline.scalable_cuckoo_filter.{label}"), &base, None);

    let f = ours_r.filter.take().ok_or("our filter was not built")?;
    out.extend(figures(&format!("cuckoo.{label}"), &ours, Some(&base_figs)));
    out.push(Figure::plain(format!("cuckoo.{label}.load_factor"), f.load_factor(), "ratio"));
    out.push(Figure::plain(format!("cuckoo.{label}.levels"), f.level_count() as f64, "count"));
    out.push(Figure::plain(format!("cuckoo.{label}.fpr_theory"), f.expected_fpr(), "ratio"));
    out.extend(latency(&f, &present, &absent, &label)?);
    drop(f);

    let prefix = format!("cuckoo.{label}");
    let r = ratios(&ours, &base);
    ratio_figures(out, &prefix, "vs_dynamic_baseline", r);
    min_into(&mut head.lookup, r.0.min(r.1));
    min_into(&mut head.insert, r.2);
    let r = ratios(&ours, &same);
    ratio_figures(out, &prefix, "vs_dynamic_baseline_same_hash", r);
    min_into(&mut head.lookup_same_hash, r.0.min(r.1));
    head.fpr = ours.fpr;
    head.bits = ours.bits_per_item;

    out.extend(base_figs);
    let r = ratios(&ours, &atomic_r.measured(&present, &absent));
    ratio_figures(out, &prefix, "vs_concurrent_baseline", r);
    min_into(&mut head.lookup_concurrent, r.0.min(r.1));
    let crates: [(&str, &dyn Run); 5] = [
        ("scalable_cuckoo_filter_xxh3", &same_r),
        ("cuckoofilter", &old_r),
        ("atomic_cuckoo_filter", &atomic_r),
        ("xorf_fuse", &fuse_r),
        ("xorf_fuse8", &fuse8_r),
    ];
    for (name, r) in crates {
        let m = r.measured(&present, &absent);
        out.extend(figures(&format!("cuckoo.baseline.{name}.{label}"), &m, None));
    }
    Ok(())
}

/// Flat ids (`items.{n}`) at one size: ours and the dynamic baseline.
fn flat_size(
    n: usize,
    reps: usize,
    out: &mut Vec<Figure>,
    head: &mut Headline,
) -> Result<(), String> {
    let label = size_label(n);
    eprintln!("cuckoo: {label} flat ids ...");
    let present = Ids::flat(0..n as u64);
    let absent = Ids::flat(n as u64..2 * n as u64);
    let mut base_r = Runner::<Scalable>::default();
    let mut ours_r = Runner::<CuckooFilter>::default();
    run_all(&mut [&mut base_r, &mut ours_r], &present, &absent, reps)?;
    let base = base_r.measured(&present, &absent);
    let ours = ours_r.measured(&present, &absent);
    if ours.false_negatives > 0 {
        return Err(format!("{} false negatives at {label} flat ids", ours.false_negatives));
    }
    let base_figs =
        figures(&format!("cuckoo.baseline.scalable_cuckoo_filter.flat.{label}"), &base, None);
    out.extend(figures(&format!("cuckoo.flat.{label}"), &ours, Some(&base_figs)));
    let r = ratios(&ours, &base);
    ratio_figures(out, &format!("cuckoo.flat.{label}"), "vs_dynamic_baseline", r);
    min_into(&mut head.lookup, r.0.min(r.1));
    out.extend(base_figs);
    Ok(())
}

pub fn run(opts: &Opts) -> Result<Vec<Figure>, String> {
    let first = opts.items_or(1_000_000, 100_000);
    let sizes =
        if opts.items.is_none() && !opts.quick { vec![first, 10_000_000] } else { vec![first] };
    // At least 3 repetitions even under `--quick`: at 100k ids they cost milliseconds, and a
    // single pass on a shared machine is mostly noise.
    let reps = opts.reps().max(3);
    let mut out = Vec::new();
    let mut head = Headline::default();
    for (i, &n) in sizes.iter().enumerate() {
        deep_size(n, reps, &mut out, &mut head)?;
        if i == 0 {
            flat_size(n, reps, &mut out, &mut head)?;
        }
    }
    let headline = [
        ("cuckoo.lookup.vs_dynamic_baseline", head.lookup.unwrap_or(0.0), "ratio"),
        (
            "cuckoo.lookup.vs_dynamic_baseline_same_hash",
            head.lookup_same_hash.unwrap_or(0.0),
            "ratio",
        ),
        ("cuckoo.lookup.vs_concurrent_baseline", head.lookup_concurrent.unwrap_or(0.0), "ratio"),
        ("cuckoo.insert.vs_dynamic_baseline", head.insert.unwrap_or(0.0), "ratio"),
        ("cuckoo.fpr", head.fpr, "ratio"),
        ("cuckoo.bits_per_item", head.bits, "bits"),
    ];
    let mut figs: Vec<Figure> = headline.iter().map(|&(n, v, u)| Figure::plain(n, v, u)).collect();
    figs.extend(out);
    Ok(figs)
}
