//! Figures, the JSON file every suite writes, and the human table.
//!
//! Every suite returns [`Figure`]s; [`write`] stores them as `target/bench/<suite>.json`, an
//! array of `{"name", "value", "unit", "baseline"?, "ratio"?}` (../shared/BENCH.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable dotted lower-case name, e.g. `sql.mariadb.put_batch.vs_raw`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value`: `items/s`, `us`, `ratio`, `bytes`, ...
    pub unit: String,
    /// Name of the baseline figure measured in the same run, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    /// `value / baseline value`, when there is a baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl Figure {
    /// A figure without baseline.
    pub fn plain(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure { name: name.into(), value, unit: unit.into(), baseline: None, ratio: None }
    }

    /// A figure compared with a baseline figure measured in the same run.
    pub fn vs(name: impl Into<String>, value: f64, unit: &str, baseline: &Figure) -> Figure {
        let ratio = if baseline.value == 0.0 { None } else { Some(value / baseline.value) };
        Figure {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline: Some(baseline.name.clone()),
            ratio,
        }
    }
}

/// Options shared by every suite.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Small run for CI smoke tests (seconds).
    pub quick: bool,
    /// Item count override (`--items N`).
    pub items: Option<usize>,
}

impl Opts {
    /// `--items`, else `quick` when `--quick`, else `full`.
    pub fn items_or(&self, full: usize, quick: usize) -> usize {
        self.items.unwrap_or(if self.quick { quick } else { full })
    }

    /// Repetitions for throughput medians: at least 3 (1 under `--quick`).
    pub fn reps(&self) -> usize {
        if self.quick {
            1
        } else {
            3
        }
    }
}

/// Median of throughput samples (items/s).
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Items per second.
pub fn rate(items: usize, elapsed: Duration) -> f64 {
    items as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A latency recorder in nanoseconds (HDR histogram, 3 significant digits).
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty recorder.
    pub fn new() -> Latency {
        // 1 ns .. 100 s, 3 significant figures: the bounds are constants, so this cannot fail.
        Latency(Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap_or_else(|_| {
            Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
        }))
    }

    /// Record one operation's duration.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.0.record(ns.min(self.0.high()));
    }

    /// Quantile `q` (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// Number of recorded operations.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where the JSON of a suite goes: `<target>/bench/<suite>.json`.
pub fn output_path(suite: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("bench").join(format!("{suite}.json"))
}

fn workspace_root() -> PathBuf {
    // bench/ lives directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Write the figures of one suite and print them as a table.
pub fn write(suite: &str, figures: &[Figure]) -> std::io::Result<PathBuf> {
    let path = output_path(suite);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(figures).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    print_table(suite, figures);
    Ok(path)
}

/// Print a human table of figures.
pub fn print_table(suite: &str, figures: &[Figure]) {
    println!("\n== {suite} ==");
    println!("{:<52} {:>16} {:<10} {:>8}  baseline", "name", "value", "unit", "ratio");
    for f in figures {
        let ratio = f.ratio.map(|r| format!("{r:.3}")).unwrap_or_default();
        println!(
            "{:<52} {:>16.3} {:<10} {:>8}  {}",
            f.name,
            f.value,
            f.unit,
            ratio,
            f.baseline.as_deref().unwrap_or("")
        );
    }
}
