//! Peak memory against `l1_max_bytes`, measured in a child process (this same binary, started
//! with [`CHILD_VAR`] set) so that nothing the parent allocated counts: the child starts an
//! engine over empty tables, records its resident set (the fixed overhead: binary, runtime,
//! pools, connections, the preallocated filter), ingests the items write-behind (the overlay
//! of unflushed writes at its peak), reads them all back in a random order with `get_many`
//! (L1 filled and churned from L2/L3), and reports `VmHWM` from `/proc/self/status`.

use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync_engine_core::{ErrorKind, ObjectId};

use super::data::{items, shuffle, Shape, BATCH};
use super::setup::{destroy, engine_config, stop_destroy, Env, Names, Setup, Tiers};

/// Set in the child's environment: `setup,shape,items,l1_max_bytes,run_id`.
pub const CHILD_VAR: &str = "SYNC_ENGINE_BENCH_ENGINE_RSS_CHILD";
const MARK: &str = "ENGINE_RSS ";

/// What the child measured (bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rss {
    /// Resident set once the engine has started, before any write.
    pub fixed: u64,
    /// Peak resident set (VmHWM) once the write-behind ingest is flushed, before the reads.
    pub peak_after_ingest: u64,
    /// Resident set once the ingest is flushed.
    pub after_ingest: u64,
    /// Peak resident set (VmHWM) at the end.
    pub peak: u64,
    /// Resident set at the end.
    pub end: u64,
    /// The L1 budget.
    pub l1_max_bytes: u64,
    /// L1 bytes at the end (from `health()`).
    pub l1_bytes: u64,
    /// Items written and read.
    pub items: usize,
}

/// `VmRSS` / `VmHWM` etc. of this process, in bytes.
fn status(field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no {field} in /proc/self/status"))
}

/// In the child: run the measurement and exit (never returns). Prints one line
/// `ENGINE_RSS {json}` on stdout.
pub fn child_main(spec: &str) -> ! {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
        .and_then(|rt| rt.block_on(child(spec)));
    match result.and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string())) {
        Ok(json) => {
            println!("{MARK}{json}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("engine rss child: {e}");
            std::process::exit(1)
        }
    }
}

async fn child(spec: &str) -> Result<Rss, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [setup, shape, n, l1, run_id] = parts.as_slice() else {
        return Err(format!("bad {CHILD_VAR}: {spec}"));
    };
    let setup = Setup::parse(setup).ok_or_else(|| format!("unknown setup {setup}"))?;
    let shape = match *shape {
        "deep" => Shape::Deep,
        _ => Shape::Flat,
    };
    let n: usize = n.parse().map_err(|_| format!("bad item count {n}"))?;
    let l1_max_bytes: u64 = l1.parse().map_err(|_| format!("bad l1 bytes {l1}"))?;
    let env = Env::from_env(run_id.parse().map_err(|_| format!("bad run id {run_id}"))?);
    let names = Names::new(&env, setup, shape, "rss");
    let result = measure(&env, &names, n, l1_max_bytes).await;
    if result.is_err() {
        let _ = destroy(&env, &names).await;
    }
    result
}

async fn measure(env: &Env, names: &Names, n: usize, l1_max_bytes: u64) -> Result<Rss, String> {
    let config = engine_config(names, env, l1_max_bytes);
    let tiers = Tiers::open(env, names, &config).await?;
    let engine = tiers.start(config).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fixed = status("VmRSS")?;
    let seed = 0x7e57;
    for b in 0..n.div_ceil(BATCH) {
        let from = b * BATCH;
        for (id, payload) in items(names.shape, seed, from as u64, BATCH.min(n - from)) {
            // As an application would: wait out a rejection by backpressure, then retry.
            loop {
                match engine.submit(&id, payload.clone()).await {
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::Backpressure => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => return Err(format!("submit {id}: {e}")),
                }
            }
        }
    }
    engine.flush().await.map_err(|e| format!("flush: {e}"))?;
    let peak_after_ingest = status("VmHWM")?;
    let after_ingest = status("VmRSS")?;
    let mut order: Vec<u64> = (0..n as u64).collect();
    shuffle(&mut order, 5);
    for chunk in order.chunks(BATCH) {
        let ids: Vec<ObjectId> = chunk
            .iter()
            .map(|&k| ObjectId::new(&names.shape.id(k)).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let found = engine.get_many(&ids).await.map_err(|e| format!("get_many: {e}"))?;
        if found.iter().any(Option::is_none) {
            return Err("an item written was not read back".into());
        }
    }
    let h = engine.health();
    let r = Rss {
        fixed,
        peak_after_ingest,
        after_ingest,
        peak: status("VmHWM")?,
        end: status("VmRSS")?,
        l1_max_bytes,
        l1_bytes: h.l1_bytes,
        items: n,
    };
    stop_destroy(engine, tiers, names).await?;
    Ok(r)
}

/// In the parent: run the child for one setup and shape and parse its answer.
pub fn run_child(
    env: &Env,
    setup: Setup,
    shape: Shape,
    n: usize,
    l1_max_bytes: u64,
) -> Result<Rss, String> {
    // `/proc/self/exe` is this very binary even if the shared target directory's copy has been
    // rebuilt (with other suite features) since this run started; the path might not be.
    let exe = std::path::Path::new("/proc/self/exe");
    let spec = format!("{},{},{n},{l1_max_bytes},{}", setup.name(), shape.name(), env.run_id);
    let out = Command::new(exe)
        .arg("engine")
        .env(CHILD_VAR, spec)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("start the rss child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(MARK))
        .ok_or_else(|| format!("the rss child failed ({}) without a result", out.status))?;
    serde_json::from_str(line).map_err(|e| format!("rss child answer {line}: {e}"))
}

/// Pairs of children over the same items: one with a 1 MiB L1 (its peak is the overhead that
/// does not depend on L1 at this data volume: binary, runtime, pools, filter, database caches,
/// buffers) and one with the L1 budget under test; a pair's figure is the difference of the two
/// peaks against that budget. A peak is one sample of when transients (a fold, a batch being
/// encoded) coincide, so `p.reps` pairs run, one after the other, and the figures are those of
/// the pair with the median ratio; `peak_rss.vs_budget_max` is the worst pair.
pub async fn figures(env: &Env, p: &super::Params, out: &mut super::Out) -> Result<(), String> {
    let (setup, shape) = (out.setup, out.shape);
    let data_bytes = p.rss_items as u64 * 650;
    let l1 = p.rss_l1.min(data_bytes / 4).max(2 << 20);
    let small = 1 << 20;
    let run = |l1: u64| {
        let env = env.clone();
        let n = p.rss_items;
        tokio::task::spawn_blocking(move || run_child(&env, setup, shape, n, l1))
    };
    let mut pairs = Vec::new();
    for _ in 0..p.reps.max(1) {
        let base = run(small).await.map_err(|e| format!("rss child: {e}"))??;
        let r = run(l1).await.map_err(|e| format!("rss child: {e}"))??;
        let ratio = r.peak.saturating_sub(base.peak) as f64 / r.l1_max_bytes.max(1) as f64;
        pairs.push((ratio, base, r));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let worst = pairs.last().map_or(0.0, |p| p.0);
    let Some((_, base, r)) = pairs.get(pairs.len() / 2) else {
        return Err("no rss child pair ran".into());
    };
    out.plain("rss_pairs", pairs.len() as f64, "pairs");
    out.plain("rss_items", r.items as f64, "items");
    out.plain("rss_at_start_bytes", r.fixed as f64, "bytes");
    let fixed = out.plain("rss_fixed_overhead_bytes", base.peak as f64, "bytes");
    out.plain("peak_rss_after_ingest_bytes", r.peak_after_ingest as f64, "bytes");
    out.plain("rss_after_ingest_bytes", r.after_ingest as f64, "bytes");
    out.plain("rss_fixed_overhead_after_ingest_bytes", base.peak_after_ingest as f64, "bytes");
    out.plain("peak_rss_bytes", r.peak as f64, "bytes");
    out.plain("end_rss_bytes", r.end as f64, "bytes");
    let budget = out.plain("l1_max_bytes", r.l1_max_bytes as f64, "bytes");
    out.plain("rss_l1_bytes_at_end", r.l1_bytes as f64, "bytes");
    out.vs("peak_rss.vs_budget", r.peak.saturating_sub(base.peak) as f64, "bytes", &budget);
    out.plain("peak_rss.vs_budget_max", worst, "ratio");
    out.plain("peak_rss.goal_bytes", fixed.value + 1.25 * r.l1_max_bytes as f64, "bytes");
    Ok(())
}
