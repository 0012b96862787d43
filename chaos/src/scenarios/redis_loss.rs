//! Scenario 3: L2 loses everything under read and write load — `FLUSHALL` on a live Redis, and
//! a Redis killed and restarted empty (own `redis-server` only). Reads must stay correct
//! (falling through to L3); the engine must notice that L2's Merkle root no longer matches
//! L3's and repair it. Whether it noticed by itself, after how long, and how many ids it
//! repaired in how much time is recorded. If the engine does not notice a `FLUSHALL` on its own
//! within the window, the harness asks for `repair` (as an operator would) and says so.

use std::time::{Duration, Instant};

use crate::check::restart_and_read;
use crate::harness::{drain, pump, r3, Env, Harness, Tally};
use crate::ledger::Ledger;
use crate::protocol::{Fields, Line};
use crate::servers::{PrivateRedis, PrivateSql};
use crate::summary::ScenarioResult;

/// How L2 loses its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `FLUSHALL` on the running server.
    FlushAll,
    /// SIGKILL, 2 s down, restart without persistence (empty).
    RestartEmpty,
}

impl Loss {
    fn name(self) -> &'static str {
        match self {
            Loss::FlushAll => "redis_loss.flushall",
            Loss::RestartEmpty => "redis_loss.restart_empty",
        }
    }
}

fn is_fix(f: &Fields) -> bool {
    f.str("in_sync") == Some("false") && f.int("error") == 0 && f.str("trigger") != Some("verify")
}

/// Run one loss against `redis` (which this scenario flushes or restarts: give it a private
/// instance no other scenario is using at the same time) and `sql`.
pub fn run(
    h: &Harness,
    loss: Loss,
    redis: &mut PrivateRedis,
    sql: &PrivateSql,
) -> Result<ScenarioResult, String> {
    let started = Instant::now();
    let name = loss.name();
    let warmup = Duration::from_secs(h.pick(2, 4));
    let window = Duration::from_secs(h.pick(5, 8));
    let ids: u64 = h.pick(3000, 10_000);
    let dir = h.dir(name)?;
    let db = h.unique("redisloss");
    let sql_url = sql.create_database(&db)?;
    let prefix = format!("{db}:");
    let env = Env::new(&sql_url, Some((&redis.url(0), &prefix)), &dir.join("wal.db"));
    let seed = h.seed_for(name);
    let mut ledger = Ledger::new();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let args: Vec<String> = [
        "ingest",
        "--run",
        "1",
        "--seed",
        &seed.to_string(),
        "--tag",
        "r",
        "--ids",
        &ids.to_string(),
        "--workers",
        "4",
        "--delete-pct",
        "10",
        "--readers",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = h.spawn(&dir, &env, 1, &args)?;
    pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(60), |e, _| {
        matches!(e.line, Line::Ready { .. } | Line::Fatal { .. })
    });
    if tally.ready_at.is_none() {
        return Err(format!("{name}: the engine did not start: {:?}", tally.fatal));
    }
    pump(&node, &mut ledger, &mut tally, Instant::now() + warmup, |_, _| false);
    let reads_before = tally.last_health().map(|f| f.int("reads")).unwrap_or(0);
    let t_loss = Instant::now();
    match loss {
        Loss::FlushAll => {
            redis.command(&["FLUSHALL"])?;
        }
        Loss::RestartEmpty => {
            redis.kill();
            pump(
                &node,
                &mut ledger,
                &mut tally,
                Instant::now() + Duration::from_secs(2),
                |_, _| false,
            );
            redis.restart()?;
        }
    }
    let t_back = Instant::now();
    let repairs_before = tally.repairs.len();
    let auto = pump(
        &node,
        &mut ledger,
        &mut tally,
        t_back + window,
        |e, _| matches!(&e.line, Line::Repair(f) if is_fix(f)),
    );
    let mut detection = "auto";
    let mut fix = auto.as_ref().map(|e| (e.at, e.line.clone()));
    let mut verify_differing = None;
    if fix.is_none() {
        // The engine did not notice by itself: the operator's path, verify then repair.
        detection = "manual";
        failures.push(format!(
            "the engine did not detect that L2 lost its data within {} s (no automatic repair); verify + repair had to be asked for",
            window.as_secs()
        ));
        node.send("verify")?;
        if let Some(e) = pump(
            &node,
            &mut ledger,
            &mut tally,
            Instant::now() + Duration::from_secs(60),
            |e, _| matches!(&e.line, Line::Repair(f) if f.str("trigger") == Some("verify")),
        ) {
            if let Line::Repair(f) = &e.line {
                verify_differing = Some(f.int("differing"));
            }
        }
        node.send("repair")?;
        fix = pump(
            &node,
            &mut ledger,
            &mut tally,
            Instant::now() + Duration::from_secs(60),
            |e, _| matches!(&e.line, Line::Repair(f) if f.str("trigger") == Some("manual")),
        )
        .map(|e| (e.at, e.line.clone()));
    }
    // Keep the load on a little longer, then stop.
    pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(2), |_, _| false);
    let t_end = Instant::now();
    node.send("stop")?;
    pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(60), |e, _| {
        matches!(e.line, Line::Stopped(_))
    });
    node.wait(Duration::from_secs(10));
    drain(&node, &mut ledger, &mut tally);
    if tally.stopped.is_none() {
        failures.push("the child did not stop gracefully".to_owned());
    }
    let obs = h.rt.block_on(restart_and_read(env.config()?, &ledger.ids()))?;
    let via_engine = ledger.evaluate(&obs.engine);
    let via_l3 = ledger.evaluate(&obs.l3);
    if via_engine.violations() + via_l3.violations() > 0 {
        failures.push(format!(
            "seed {seed}: engine: {}; L3: {}",
            via_engine.describe(),
            via_l3.describe()
        ));
    }
    if obs.roots_agree != Some(true) {
        failures.push("L2 and L3 roots differ after the restart".to_owned());
    }
    let mut res = ScenarioResult::new(name);
    res.trials = 1;
    res.acknowledged = tally.acks;
    res.lost = via_engine.violations().max(via_l3.violations()) as u64;
    res.seconds = r3(started.elapsed().as_secs_f64());
    let last = tally.last_health().cloned().unwrap_or_default();
    res.set("seed", seed)
        .set("detection", detection)
        .set("acked_after_loss", tally.acks_between(t_loss, t_end))
        .set("reads_after_loss", last.int("reads").saturating_sub(reads_before))
        .set("reads", last.int("reads"))
        .set("read_failures", last.int("readfail"))
        .set("read_errors", tally.readerrs.len() as u64)
        .set(
            "auto_repairs_in_window",
            tally.repairs[repairs_before..]
                .iter()
                .filter(|(_, f)| f.str("trigger") == Some("auto"))
                .count() as u64,
        )
        .set("roots_agree_after", obs.roots_agree.unwrap_or(false));
    if let Some(d) = verify_differing {
        res.set("verify_differing", d);
    }
    match fix {
        Some((at, Line::Repair(f))) => {
            res.set("detect_s", r3(at.saturating_duration_since(t_back).as_secs_f64()))
                .set("differing", f.int("differing"))
                .set("repaired", f.int("repaired") + f.int("removed"))
                .set("repair_s", r3(f.num("ms") / 1000.0));
        }
        _ => failures.push("no repair happened, even when asked".to_owned()),
    }
    if !tally.readerrs.is_empty() {
        res.set("read_error_examples", tally.readerrs.iter().take(5).cloned().collect::<Vec<_>>());
    }
    res.set("failures", failures.len() as u64);
    if !failures.is_empty() {
        res.set("failure_detail", failures);
    }
    Ok(res)
}
