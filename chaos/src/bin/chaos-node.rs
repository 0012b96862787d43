//! `chaos-node`: one engine process for the chaos harness, configured by `SYNC_ENGINE_*`
//! environment variables and started with `sync_engine::connect`, exactly like an application.
//!
//! ```text
//! chaos-node ingest --run R --seed S --tag T --ids N --workers W [--delete-pct P]
//!                   [--readers K] [--wait-go] [--health-ms H] [--write-behind]
//! chaos-node start
//! ```
//!
//! `ingest` runs `W` worker tasks performing the seeded workload of `sync_engine_chaos::workload`
//! with durable acknowledgements, and `K` reader tasks checking every read against what this
//! process has acknowledged, while `run()` drives maintenance. It prints the line protocol of
//! `sync_engine_chaos::protocol`, flushing stdout after every line, so the harness knows
//! exactly what was acknowledged when it SIGKILLs the process. Commands on stdin: `go` (start
//! the workers, with `--wait-go`), `repair`, `verify`, `stop` (graceful: workers stop,
//! `shutdown()`, `stopped`, exit 0; also on end of input).
//!
//! `--write-behind` acknowledges writes as soon as `submit` returns (not durable): the
//! negative control, which must make the harness report losses under SIGKILL.
//!
//! `start` only starts the engine (the WAL drains into L3), prints `ready` or `fatal`, shuts
//! down and exits (0, or 3 when the start failed).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_engine::{Config, RepairReport, SubmitOptions, SyncEngine};
use sync_engine_chaos::workload::{content, parse_content, Kind, Plan};
use tokio::sync::mpsc;

/// Print one protocol line and flush it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[derive(Debug, Clone)]
struct Args {
    mode: String,
    run: u32,
    seed: u64,
    plan: Plan,
    readers: u32,
    wait_go: bool,
    health_ms: u64,
    write_behind: bool,
}

fn parse_args() -> Result<Args, String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mode = raw.first().cloned().ok_or("usage: chaos-node <ingest|start> [options]")?;
    let mut a = Args {
        mode,
        run: 0,
        seed: 1,
        plan: Plan { tag: "x".into(), ids: 1000, workers: 8, delete_pct: 15 },
        readers: 0,
        wait_go: false,
        health_ms: 100,
        write_behind: false,
    };
    let mut it = raw.iter().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--wait-go" {
            a.wait_go = true;
            continue;
        }
        if flag == "--write-behind" {
            a.write_behind = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: `{v}` is not a number"));
        match flag.as_str() {
            "--run" => a.run = num(value)? as u32,
            "--seed" => a.seed = num(value)?,
            "--tag" => a.plan.tag = value.clone(),
            "--ids" => a.plan.ids = num(value)?.max(1),
            "--workers" => a.plan.workers = (num(value)? as u32).max(1),
            "--delete-pct" => a.plan.delete_pct = num(value)? as u32,
            "--readers" => a.readers = num(value)? as u32,
            "--health-ms" => a.health_ms = num(value)?.max(10),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// What this process acknowledged per id, for the readers: the latest acknowledged version
/// and kind with the number of deletes tried before it, and the deletes tried so far.
#[derive(Debug, Clone, Copy, Default)]
struct IdSt {
    acked: Option<(u64, Kind, u64)>,
    dels_tried: u64,
}

#[derive(Default)]
struct Shared {
    ids: Mutex<(HashMap<String, IdSt>, Vec<String>)>,
    stop: AtomicBool,
    acks: AtomicU64,
    fails: AtomicU64,
    reads: AtomicU64,
    readfail: AtomicU64,
    readerr: AtomicU64,
    manual: AtomicBool,
    last_report: Mutex<Option<RepairReport>>,
}

impl Shared {
    fn update(&self, id: &str, f: impl FnOnce(&mut IdSt)) {
        let mut g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let (map, list) = &mut *g;
        let st = map.entry(id.to_owned()).or_insert_with(|| {
            list.push(id.to_owned());
            IdSt::default()
        });
        f(st);
    }

    fn get(&self, id: &str) -> IdSt {
        let g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(id).copied().unwrap_or_default()
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> Option<String> {
        let g = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let list = &g.1;
        (!list.is_empty()).then(|| list[rng.random_range(0..list.len())].clone())
    }
}

async fn worker(engine: SyncEngine, shared: Arc<Shared>, args: Args, w: u32) {
    for (key, id, kind) in args.plan.worker_ops(args.seed, args.run, w) {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        say(&format!("try w={w} n={} id={id} op={}", key.n, kind.as_str()));
        if kind == Kind::Del {
            shared.update(&id, |s| s.dels_tried += 1);
        }
        let opts =
            if args.write_behind { SubmitOptions::default() } else { SubmitOptions::durable() };
        let result = match kind {
            Kind::Put => engine.submit_with(&id, content(&id, key), opts).await,
            Kind::Del => engine.delete_with(&id, opts).await,
        };
        match result {
            Ok(v) => {
                say(&format!("ack w={w} n={} v={v}", key.n));
                shared.acks.fetch_add(1, Ordering::Relaxed);
                shared.update(&id, |s| s.acked = Some((v, kind, s.dels_tried)));
                if args.write_behind {
                    // A write-behind submit returns without awaiting anything: let the
                    // flusher and the other tasks run.
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => {
                say(&format!(
                    "fail w={w} n={} kind={:?} msg={}",
                    key.n,
                    e.kind(),
                    one_line(&e.to_string())
                ));
                shared.fails.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Read ids this process acknowledged and report any answer an acknowledgement rules out.
async fn reader(engine: SyncEngine, shared: Arc<Shared>, seed: u64, r: u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0000 ^ u64::from(r));
    while !shared.stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let Some(id) = shared.pick(&mut rng) else {
            continue;
        };
        let Some((v, kind, dels_at_ack)) = shared.get(&id).acked else {
            continue;
        };
        let got = engine.get(&id).await;
        shared.reads.fetch_add(1, Ordering::Relaxed);
        let wrong = match got {
            Err(_) => {
                shared.readfail.fetch_add(1, Ordering::Relaxed);
                None
            }
            Ok(Some(item)) => match parse_content(item.content()) {
                Some((cid, key)) if cid == id && item.content()[..] == content(&id, key)[..] => {
                    (item.version() < v).then(|| {
                        format!("regressed: read v{} below acknowledged v{v}", item.version())
                    })
                }
                _ => Some(format!("foreign value at v{}", item.version())),
            },
            // Absent is right only if a delete was tried after the acknowledged write.
            Ok(None) if kind == Kind::Put && shared.get(&id).dels_tried == dels_at_ack => {
                Some(format!("lost: acknowledged write v{v} read as absent"))
            }
            Ok(None) => None,
        };
        if let Some(why) = wrong {
            shared.readerr.fetch_add(1, Ordering::Relaxed);
            say(&format!("readerr id={id} msg={why}"));
        }
    }
}

fn report_line(t: f64, trigger: &str, r: &RepairReport) -> String {
    format!(
        "repair t={t:.0} trigger={trigger} in_sync={} differing={} repaired={} removed={} skipped={} ms={:.1}",
        r.in_sync,
        r.differing,
        r.repaired,
        r.removed,
        r.skipped_in_flight,
        r.duration.as_secs_f64() * 1000.0
    )
}

async fn monitor(engine: SyncEngine, shared: Arc<Shared>, every: Duration, t0: Instant) {
    loop {
        let h = engine.health();
        let t = t0.elapsed().as_secs_f64() * 1000.0;
        say(&format!(
            "health t={t:.0} state={:?} wal={} l3={:?} l2={} unflushed={} acks={} fails={} reads={} readfail={} readerr={}",
            h.state,
            h.wal_depth,
            h.l3.breaker,
            h.l2.as_ref().map(|b| format!("{:?}", b.breaker)).unwrap_or_else(|| "none".into()),
            h.unflushed.0,
            shared.acks.load(Ordering::Relaxed),
            shared.fails.load(Ordering::Relaxed),
            shared.reads.load(Ordering::Relaxed),
            shared.readfail.load(Ordering::Relaxed),
            shared.readerr.load(Ordering::Relaxed),
        ));
        if !shared.manual.load(Ordering::Acquire) {
            let mut last = shared.last_report.lock().unwrap_or_else(|e| e.into_inner());
            if h.last_repair.is_some() && h.last_repair != *last {
                if let Some(r) = &h.last_repair {
                    say(&report_line(t, "auto", r));
                }
                *last = h.last_repair.clone();
            }
        }
        tokio::time::sleep(every).await;
    }
}

async fn command(engine: &SyncEngine, shared: &Shared, cmd: &str, t0: Instant) {
    let t = || t0.elapsed().as_secs_f64() * 1000.0;
    match cmd {
        "repair" => {
            shared.manual.store(true, Ordering::Release);
            match engine.repair("").await {
                Ok(r) => {
                    say(&report_line(t(), "manual", &r));
                    *shared.last_report.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
                Err(e) => say(&format!(
                    "repair t={:.0} trigger=manual error=1 msg={}",
                    t(),
                    one_line(&e.to_string())
                )),
            }
            shared.manual.store(false, Ordering::Release);
        }
        "verify" => match engine.verify("").await {
            Ok(r) => say(&report_line(t(), "verify", &r)),
            Err(e) => say(&format!(
                "repair t={:.0} trigger=verify error=1 msg={}",
                t(),
                one_line(&e.to_string())
            )),
        },
        other => say(&format!("unknown-command {other}")),
    }
}

fn stdin_commands() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_owned()).is_err() {
                return;
            }
        }
        let _ = tx.send("stop".into());
    });
    rx
}

async fn start_engine(t0: Instant) -> Option<SyncEngine> {
    let config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            say(&format!("fatal kind=Config msg={}", one_line(&e.to_string())));
            return None;
        }
    };
    match sync_engine::connect(config).await {
        Ok(node) => {
            say(&format!(
                "ready ms={:.1} state={:?}",
                t0.elapsed().as_secs_f64() * 1000.0,
                node.engine.state()
            ));
            Some(node.engine)
        }
        Err(e) => {
            say(&format!("fatal kind={:?} msg={}", e.kind(), one_line(&e.to_string())));
            None
        }
    }
}

async fn ingest(args: Args) -> ExitCode {
    let t0 = Instant::now();
    let mut commands = stdin_commands();
    let Some(engine) = start_engine(t0).await else {
        return ExitCode::from(3);
    };
    let shared = Arc::new(Shared::default());
    let maintenance = tokio::spawn({
        let e = engine.clone();
        async move { e.run().await }
    });
    let mon = tokio::spawn(monitor(
        engine.clone(),
        shared.clone(),
        Duration::from_millis(args.health_ms),
        t0,
    ));
    let mut started = !args.wait_go;
    let mut tasks = Vec::new();
    let spawn_all = |tasks: &mut Vec<tokio::task::JoinHandle<()>>| {
        for w in 0..args.plan.workers {
            tasks.push(tokio::spawn(worker(engine.clone(), shared.clone(), args.clone(), w)));
        }
        for r in 0..args.readers {
            tasks.push(tokio::spawn(reader(engine.clone(), shared.clone(), args.seed, r)));
        }
    };
    if started {
        spawn_all(&mut tasks);
    }
    while let Some(cmd) = commands.recv().await {
        match cmd.as_str() {
            "go" if !started => {
                started = true;
                spawn_all(&mut tasks);
            }
            "go" => {}
            "stop" => break,
            other => command(&engine, &shared, other, t0).await,
        }
    }
    shared.stop.store(true, Ordering::Release);
    for t in tasks {
        let _ = t.await;
    }
    let result = engine.shutdown().await;
    mon.abort();
    maintenance.abort();
    let wal = engine.health().wal_depth;
    match result {
        Ok(()) => {
            say(&format!("stopped wal={wal}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("stopped wal={wal} error=1 msg={}", one_line(&e.to_string())));
            ExitCode::from(4)
        }
    }
}

async fn start_only() -> ExitCode {
    let t0 = Instant::now();
    let Some(engine) = start_engine(t0).await else {
        return ExitCode::from(3);
    };
    match engine.shutdown().await {
        Ok(()) => {
            say(&format!("stopped wal={}", engine.health().wal_depth));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("stopped error=1 msg={}", one_line(&e.to_string())));
            ExitCode::from(4)
        }
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos-node: {e}");
            return ExitCode::from(2);
        }
    };
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("chaos-node: cannot start the runtime: {e}");
                return ExitCode::from(2);
            }
        };
    let code = rt.block_on(async {
        match args.mode.as_str() {
            "ingest" => ingest(args).await,
            "start" => start_only().await,
            other => {
                eprintln!("chaos-node: unknown mode `{other}` (ingest | start)");
                ExitCode::from(2)
            }
        }
    });
    // Do not wait for blocking threads (stdin reader): the engine is shut down.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}
