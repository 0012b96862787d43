//! What every scenario shares: the run's options, a work directory, a tokio runtime for the
//! harness's own engine restarts, the configuration handed to children, and the loop that
//! follows a child's output into the ledger.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sync_engine::Config;

use crate::ledger::Ledger;
use crate::node::{Event, Node, NodeSpec};
use crate::protocol::{Fields, Line};

/// The context of one chaos run.
pub struct Harness {
    /// Short form (CI): few trials, small counts.
    pub quick: bool,
    /// Seed of every random choice (kill moments, damage offsets, workloads).
    pub seed: u64,
    /// Path of the `chaos-node` binary.
    pub node_bin: PathBuf,
    /// Work directory (WAL files, server data, child logs).
    pub work: PathBuf,
    /// Runtime for in-process engines.
    pub rt: tokio::runtime::Runtime,
    next: AtomicU32,
}

impl Harness {
    /// A harness writing under `work` (created, and made traversable for the `postgres` user).
    pub fn new(
        quick: bool,
        seed: u64,
        node_bin: PathBuf,
        work: PathBuf,
    ) -> Result<Harness, String> {
        std::fs::create_dir_all(&work)
            .map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755));
        }
        if !node_bin.is_file() {
            return Err(format!(
                "the chaos-node binary is missing at {} (build it: cargo build -p sync-engine-chaos --bins)",
                node_bin.display()
            ));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
        Ok(Harness { quick, seed, node_bin, work, rt, next: AtomicU32::new(0) })
    }

    /// A fresh directory `<work>/<name>-<n>`.
    pub fn dir(&self, name: &str) -> Result<PathBuf, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let d = self.work.join(format!("{name}-{n}"));
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        Ok(d)
    }

    /// A unique lower-case name (databases, key prefixes).
    pub fn unique(&self, name: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("chaos_{name}_{}_{n}", std::process::id())
    }

    /// `quick` or `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// A seed derived from the run's seed and a scenario name.
    pub fn seed_for(&self, name: &str) -> u64 {
        name.bytes().fold(self.seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Spawn a `chaos-node` with `env`, `args`, stderr to `<dir>/node-<run>.log`.
    pub fn spawn(&self, dir: &Path, env: &Env, run: u32, args: &[String]) -> Result<Node, String> {
        Node::spawn(&NodeSpec {
            bin: self.node_bin.clone(),
            env: env.vars.clone(),
            args: args.to_vec(),
            stderr: dir.join(format!("node-{run}.log")),
            run,
        })
    }
}

/// The configuration of one scenario's engines, as `SYNC_ENGINE_*` variables: children get
/// them as their environment, the harness builds the same `Config` from them.
#[derive(Debug, Clone)]
pub struct Env {
    /// The variables.
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// L3 at `sql_url`, the WAL at `wal`, L2 at `redis_url` under `prefix` when given, and the
    /// harness's timing knobs (fast health checks and breaker probes, short timeouts).
    pub fn new(sql_url: &str, redis: Option<(&str, &str)>, wal: &Path) -> Env {
        let mut vars = vec![
            ("SYNC_ENGINE_SQL_URL".to_owned(), sql_url.to_owned()),
            ("SYNC_ENGINE_WAL_PATH".to_owned(), wal.display().to_string()),
            ("SYNC_ENGINE_HEALTH_CHECK_INTERVAL_MS".to_owned(), "200".to_owned()),
            ("SYNC_ENGINE_BREAKER_OPEN_MS".to_owned(), "500".to_owned()),
            ("SYNC_ENGINE_SQL_ACQUIRE_TIMEOUT_MS".to_owned(), "1000".to_owned()),
            ("SYNC_ENGINE_SQL_POOL_SIZE".to_owned(), "4".to_owned()),
            ("SYNC_ENGINE_REDIS_CONNECT_TIMEOUT_MS".to_owned(), "500".to_owned()),
            ("SYNC_ENGINE_REDIS_RESPONSE_TIMEOUT_MS".to_owned(), "1000".to_owned()),
            ("SYNC_ENGINE_STARTUP_L3_ATTEMPTS".to_owned(), "3".to_owned()),
        ];
        if let Some((url, prefix)) = redis {
            vars.push(("SYNC_ENGINE_REDIS_URL".to_owned(), url.to_owned()));
            vars.push(("SYNC_ENGINE_REDIS_PREFIX".to_owned(), prefix.to_owned()));
        }
        Env { vars }
    }

    /// Set (or replace) one variable.
    pub fn with(mut self, name: &str, value: &str) -> Env {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same configuration as a `Config` (for the harness's own engine).
    pub fn config(&self) -> Result<Config, String> {
        Config::from_env_vars(self.vars.clone()).map_err(|e| format!("harness config: {e}"))
    }
}

/// What the harness saw of one child.
#[derive(Debug, Default)]
pub struct Tally {
    /// When `ready` arrived.
    pub ready_at: Option<Instant>,
    /// `fatal` message.
    pub fatal: Option<String>,
    /// Acknowledgements.
    pub acks: u64,
    /// Acknowledgement times (for "acknowledged during the outage").
    pub ack_times: Vec<Instant>,
    /// Failed operations (kind: message), first 20 kept.
    pub fails: Vec<String>,
    /// Failed operation count.
    pub fail_count: u64,
    /// Wrong reads reported by the child's readers.
    pub readerrs: Vec<String>,
    /// Health lines.
    pub health: Vec<(Instant, Fields)>,
    /// Repair lines.
    pub repairs: Vec<(Instant, Fields)>,
    /// The `stopped` line.
    pub stopped: Option<Fields>,
    /// The output ended (the process exited or was killed).
    pub ended: bool,
    /// Protocol errors (acks of unknown operations).
    pub protocol_errors: Vec<String>,
}

impl Tally {
    /// The latest health line.
    pub fn last_health(&self) -> Option<&Fields> {
        self.health.last().map(|(_, f)| f)
    }

    /// Acknowledgements in `[from, to)`.
    pub fn acks_between(&self, from: Instant, to: Instant) -> u64 {
        self.ack_times.iter().filter(|t| **t >= from && **t < to).count() as u64
    }

    /// Stretches in `[from, to)` without an acknowledgement (stalls): the longest, in seconds,
    /// and how many lasted at least `over`. Call once every event before `to` was pumped.
    pub fn ack_stalls(&self, from: Instant, to: Instant, over: Duration) -> (f64, u64) {
        let mut last = from;
        let (mut longest, mut count) = (Duration::ZERO, 0);
        let times = self.ack_times.iter().copied().filter(|t| *t >= from && *t < to);
        for t in times.chain(std::iter::once(to)) {
            let gap = t.saturating_duration_since(last);
            longest = longest.max(gap);
            count += u64::from(gap >= over);
            last = t;
        }
        (longest.as_secs_f64(), count)
    }

    /// The largest value of a numeric health field in `[from, to)`.
    pub fn max_health(&self, key: &str, from: Instant, to: Instant) -> u64 {
        self.health
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, f)| f.int(key))
            .max()
            .unwrap_or(0)
    }
}

/// Follow `node` until `deadline`, or until `done` accepts an event (which is returned), or
/// until its output ends. Every line goes into `ledger` and `tally`.
pub fn pump(
    node: &Node,
    ledger: &mut Ledger,
    tally: &mut Tally,
    deadline: Instant,
    mut done: impl FnMut(&Event, &Tally) -> bool,
) -> Option<Event> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        let ev = match node.next(wait) {
            Ok(ev) => ev,
            Err(true) => {
                tally.ended = true;
                return None;
            }
            Err(false) => continue,
        };
        if let Err(e) = node.feed(ledger, &ev.line) {
            tally.protocol_errors.push(e);
        }
        match &ev.line {
            Line::Ready { .. } => tally.ready_at = Some(ev.at),
            Line::Fatal { kind, msg } => tally.fatal = Some(format!("{kind}: {msg}")),
            Line::Ack { .. } => {
                tally.acks += 1;
                tally.ack_times.push(ev.at);
            }
            Line::Fail { kind, msg, .. } => {
                tally.fail_count += 1;
                if tally.fails.len() < 20 {
                    tally.fails.push(format!("{kind}: {msg}"));
                }
            }
            Line::ReadErr { id, msg } => tally.readerrs.push(format!("{id}: {msg}")),
            Line::Health(f) => tally.health.push((ev.at, f.clone())),
            Line::Repair(f) => tally.repairs.push((ev.at, f.clone())),
            Line::Stopped(f) => tally.stopped = Some(f.clone()),
            Line::Try { .. } | Line::Other(_) => {}
        }
        if done(&ev, tally) {
            return Some(ev);
        }
    }
}

/// Read what is left of a killed child's output (lines written before the kill).
pub fn drain(node: &Node, ledger: &mut Ledger, tally: &mut Tally) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tally.ended && Instant::now() < deadline {
        pump(node, ledger, tally, deadline, |_, _| false);
    }
}

/// Median and maximum of a list of numbers (0 when empty).
pub fn p50_max(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// Round to 3 decimals for the summary.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
