//! `chaos`: run the reliability scenarios of issue 10 against private Redis, MariaDB and
//! PostgreSQL instances and write `target/chaos/summary.json`.
//!
//! ```text
//! chaos [--quick] [--seed N] [--only kill,outage,outage_kill,outage_restart,redis,tamper,wal,fuzz]
//!       [--sql mariadb,postgres] [--fuzz-cases N] [--out PATH] [--keep]
//! ```
//!
//! Run it through `cargo xtask chaos [--quick] [--seed N]`, which builds it in release mode.
//! Exits non-zero when any scenario failed (lost data, panicked, did not repair, ...).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use sync_engine_chaos::scenarios::{kill, redis_loss, sql_outage, tamper, wal_damage};
use sync_engine_chaos::servers::{PrivateRedis, PrivateSql, SqlKind};
use sync_engine_chaos::{fuzz, summary, Harness, ScenarioResult};

struct Opts {
    quick: bool,
    seed: u64,
    only: Vec<String>,
    fuzz_cases: Option<u32>,
    out: PathBuf,
    keep: bool,
    sql: Vec<String>,
}

const ALL: [&str; 8] =
    ["kill", "outage", "outage_kill", "outage_restart", "redis", "tamper", "wal", "fuzz"];

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        seed: 20261125,
        only: ALL.iter().map(|s| s.to_string()).collect(),
        fuzz_cases: None,
        out: summary::default_path(),
        keep: false,
        sql: vec!["mariadb".into(), "postgres".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--keep" => o.keep = true,
            "--seed" | "--only" | "--fuzz-cases" | "--out" | "--sql" => {
                let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                match a.as_str() {
                    "--seed" => {
                        o.seed = v.parse().map_err(|_| format!("--seed: `{v}` is not a number"))?
                    }
                    "--fuzz-cases" => {
                        o.fuzz_cases = Some(
                            v.parse()
                                .map_err(|_| format!("--fuzz-cases: `{v}` is not a number"))?,
                        )
                    }
                    "--out" => o.out = PathBuf::from(v),
                    "--sql" => o.sql = v.split(',').map(|s| s.trim().to_owned()).collect(),
                    _ => {
                        o.only = v.split(',').map(|s| s.trim().to_owned()).collect();
                        if let Some(bad) = o.only.iter().find(|s| !ALL.contains(&s.as_str())) {
                            return Err(format!(
                                "--only: unknown scenario `{bad}` (one of {})",
                                ALL.join(", ")
                            ));
                        }
                    }
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(o)
}

fn errored(name: &str, e: String) -> ScenarioResult {
    let mut r = ScenarioResult::new(name);
    r.set("failures", 1u64).set("failure_detail", e);
    r
}

struct Run {
    results: Vec<ScenarioResult>,
    out: PathBuf,
}

impl Run {
    fn record(&mut self, r: ScenarioResult) {
        eprintln!("chaos: {}", r.describe());
        if let Some(d) = r.get("failure_detail") {
            eprintln!("chaos:   failure detail: {d}");
        }
        self.results.push(r);
        if let Err(e) = summary::write(&self.out, &self.results) {
            eprintln!("chaos: {e}");
        }
    }

    fn record_all(&mut self, name: &str, r: Result<Vec<ScenarioResult>, String>) {
        match r {
            Ok(v) => v.into_iter().for_each(|x| self.record(x)),
            Err(e) => self.record(errored(name, e)),
        }
    }
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let work = o
        .out
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
        .join("work")
        .join(format!("run-{stamp}"));
    let node_bin = std::env::current_exe()
        .map(|p| p.with_file_name("chaos-node"))
        .unwrap_or_else(|_| PathBuf::from("chaos-node"));
    let h = match Harness::new(o.quick, o.seed, node_bin, work.clone()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "chaos: {} run, seed {}, work dir {}, summary {}",
        if o.quick { "quick" } else { "full" },
        o.seed,
        work.display(),
        o.out.display()
    );
    let mut run = Run { results: Vec::new(), out: o.out.clone() };
    let wants = |s: &str| o.only.iter().any(|x| x == s);
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");

    let needs_servers = ALL.iter().filter(|s| **s != "fuzz").any(|s| wants(s));
    let mut redis = None;
    let mut sqls: Vec<PrivateSql> = Vec::new();
    if needs_servers {
        match h.dir("redis").and_then(|d| PrivateRedis::start(&d)) {
            Ok(r) => redis = Some(r),
            Err(e) => run.record(errored("servers.redis", e)),
        }
        for kind in [SqlKind::MariaDb, SqlKind::Postgres] {
            if !o.sql.iter().any(|s| s == kind.name()) {
                continue;
            }
            if !kind.available() {
                let msg = format!("{} is not installed: its scenarios are SKIPPED", kind.name());
                eprintln!("chaos: {msg}");
                if ci {
                    run.record(errored(&format!("servers.{}", kind.name()), msg));
                }
                continue;
            }
            match h.dir(kind.name()).and_then(|d| PrivateSql::start(kind, &d)) {
                Ok(s) => {
                    eprintln!("chaos: private {} on port {}", kind.name(), s.port());
                    sqls.push(s);
                }
                Err(e) => run.record(errored(&format!("servers.{}", kind.name()), e)),
            }
        }
    }
    if let Some(redis) = redis.as_mut() {
        for sql in sqls.iter_mut() {
            let db = sql.kind().name();
            if wants("kill") {
                let r = kill::run(&h, redis, sql);
                run.record_all(&format!("kill.{db}"), r.map(|x| vec![x]));
                if sql.kind() == SqlKind::MariaDb {
                    let r = kill::negative_control(&h, redis, sql);
                    run.record_all("control.write_behind_kill", r.map(|x| vec![x]));
                }
            }
            if wants("outage") {
                let r = sql_outage::run(&h, redis, sql);
                run.record_all(&format!("sql_outage.{db}"), r.map(|x| vec![x]));
            }
            if wants("outage_kill") {
                let r = sql_outage::kill_during_drain(&h, redis, sql);
                run.record_all(&format!("sql_outage_kill_drain.{db}"), r.map(|x| vec![x]));
            }
            if wants("outage_restart") {
                let r = sql_outage::restart_during(&h, redis, sql);
                run.record_all(&format!("sql_outage_restart.{db}"), r.map(|x| vec![x]));
            }
        }
        if let Some(sql) = sqls.iter_mut().find(|s| s.kind() == SqlKind::MariaDb) {
            if wants("tamper") {
                let r = tamper::run(&h, redis, sql);
                run.record_all("tamper", r);
            }
            if wants("redis") {
                match h.dir("redis-loss").and_then(|d| PrivateRedis::start(&d)) {
                    Ok(mut own) => {
                        for loss in [redis_loss::Loss::FlushAll, redis_loss::Loss::RestartEmpty] {
                            let r = redis_loss::run(&h, loss, &mut own, sql);
                            run.record_all("redis_loss", r.map(|x| vec![x]));
                        }
                    }
                    Err(e) => run.record(errored("redis_loss", e)),
                }
            }
            if wants("wal") {
                let r = wal_damage::run(&h, sql);
                run.record_all("wal_damage", r.map(|x| vec![x]));
            }
        }
    }
    drop(sqls);
    drop(redis);
    if wants("fuzz") {
        let cases = o.fuzz_cases.unwrap_or(if o.quick { 2_000 } else { 100_000 });
        for (name, target) in fuzz::TARGETS {
            eprintln!("chaos: fuzz.{name}: {cases} cases");
            run.record(target(cases, o.seed).to_result());
        }
    }
    let failed: Vec<&str> =
        run.results.iter().filter(|r| !r.passed()).map(|r| r.scenario.as_str()).collect();
    eprintln!("\n== chaos summary ({}) ==", o.out.display());
    for r in &run.results {
        eprintln!("  {}", r.describe());
    }
    if failed.is_empty() && !o.keep {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("chaos: work directory kept: {}", work.display());
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("chaos: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
