//! Scenario 2: crash-stop the (private) SQL server mid-ingest for at least 10 s. Durable writes
//! must keep being acknowledged (into the WAL), reads must stay correct, and once the server
//! is back the WAL must drain (time recorded) with nothing lost.
//!
//! [`restart_during`] adds the harder case: the engine process itself is SIGKILLed during the
//! outage and restarted with `allow_degraded_start = true`, while the server is still down.
//! [`kill_during_drain`] SIGKILLs it while it drains the WAL after the server came back.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::restart_and_read;
use crate::harness::{drain, p50_max, pump, r3, Env, Harness, Tally};
use crate::ledger::Ledger;
use crate::node::Node;
use crate::protocol::Line;
use crate::servers::{PrivateRedis, PrivateSql};
use crate::summary::ScenarioResult;

fn ingest_args(run: u32, seed: u64, tag: &str, ids: u64, readers: u32) -> Vec<String> {
    [
        "ingest",
        "--run",
        &run.to_string(),
        "--seed",
        &seed.to_string(),
        "--tag",
        tag,
        "--ids",
        &ids.to_string(),
        "--workers",
        "8",
        "--delete-pct",
        "15",
        "--readers",
        &readers.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Wait for `ready` (or `fatal`); Err names what happened.
fn await_ready(
    node: &Node,
    ledger: &mut Ledger,
    tally: &mut Tally,
    secs: u64,
) -> Result<(), String> {
    pump(node, ledger, tally, Instant::now() + Duration::from_secs(secs), |e, _| {
        matches!(e.line, Line::Ready { .. } | Line::Fatal { .. })
    });
    match (&tally.ready_at, &tally.fatal) {
        (Some(_), _) => Ok(()),
        (None, Some(f)) => Err(format!("the engine did not start: {f}")),
        (None, None) => Err(format!("the engine did not start within {secs} s")),
    }
}

/// Wait until a health line shows an empty WAL after `after`; returns its arrival time.
fn await_drained(
    node: &Node,
    ledger: &mut Ledger,
    tally: &mut Tally,
    after: Instant,
    secs: u64,
) -> Option<Instant> {
    pump(node, ledger, tally, Instant::now() + Duration::from_secs(secs), |e, _| {
        e.at >= after && matches!(&e.line, Line::Health(f) if f.int("wal") == 0)
    })
    .map(|e| e.at)
}

/// Ask the child to stop gracefully and follow it until it exits.
fn stop(node: &mut Node, ledger: &mut Ledger, tally: &mut Tally) -> Result<(), String> {
    node.send("stop")?;
    pump(node, ledger, tally, Instant::now() + Duration::from_secs(60), |e, _| {
        matches!(e.line, Line::Stopped(_))
    });
    node.wait(Duration::from_secs(10));
    drain(node, ledger, tally);
    match &tally.stopped {
        Some(f) if f.int("error") == 0 => Ok(()),
        Some(f) => Err(format!("graceful stop failed: {}", f.str("msg").unwrap_or(""))),
        None => Err(format!(
            "the child did not stop gracefully (stderr: {})",
            node.stderr_path().display()
        )),
    }
}

/// The main outage: ingest, crash-stop the SQL server for `outage` seconds, restart it, wait
/// for the WAL to drain, stop, restart an engine and check the ledger.
pub fn run(
    h: &Harness,
    redis: &PrivateRedis,
    sql: &mut PrivateSql,
) -> Result<ScenarioResult, String> {
    let started = Instant::now();
    let name = format!("sql_outage.{}", sql.kind().name());
    let warmup = Duration::from_secs(h.pick(2, 4));
    let outage = Duration::from_secs(h.pick(10, 12));
    let ids: u64 = h.pick(500, 2000);
    let dir = h.dir(&name)?;
    let db = h.unique("outage");
    let sql_url = sql.create_database(&db)?;
    let prefix = format!("{db}:");
    let env = Env::new(&sql_url, Some((&redis.url(0), &prefix)), &dir.join("wal.db"));
    let seed = h.seed_for(&name);
    let mut ledger = Ledger::new();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut node = h.spawn(&dir, &env, 1, &ingest_args(1, seed, "o", ids, 2))?;
    await_ready(&node, &mut ledger, &mut tally, 60)?;
    pump(&node, &mut ledger, &mut tally, Instant::now() + warmup, |_, _| false);
    let t_down = Instant::now();
    sql.crash_stop()?;
    let stopped_s = t_down.elapsed().as_secs_f64();
    pump(&node, &mut ledger, &mut tally, t_down + outage, |_, _| false);
    let t_restart = Instant::now();
    sql.start_again()?;
    let t_up = Instant::now();
    // Take in what the child printed while the server was restarting.
    pump(&node, &mut ledger, &mut tally, t_up + Duration::from_secs(10), |e, _| e.at >= t_up);
    let outage_s = t_up.duration_since(t_down).as_secs_f64();
    let acked_in_outage = tally.acks_between(t_down, t_up);
    let failed_in_outage = tally.fail_count;
    let wal_peak = tally.max_health("wal", t_down, t_up);
    let (stall, stalls) = tally.ack_stalls(t_down, t_up, Duration::from_millis(500));
    let first_ack = tally
        .ack_times
        .iter()
        .find(|t| **t >= t_down)
        .map(|t| t.duration_since(t_down).as_secs_f64());
    let drained_at = await_drained(&node, &mut ledger, &mut tally, t_up, 180);
    let drain_s = drained_at.map(|t| t.saturating_duration_since(t_up).as_secs_f64());
    if drain_s.is_none() {
        failures.push("the WAL did not drain within 180 s of the server's return".to_owned());
    }
    // Writes go to L3 again.
    let t_after = Instant::now();
    pump(&node, &mut ledger, &mut tally, t_after + Duration::from_secs(2), |_, _| false);
    let acked_after = tally.acks_between(t_after, Instant::now());
    if let Err(e) = stop(&mut node, &mut ledger, &mut tally) {
        failures.push(e);
    }
    let obs = h.rt.block_on(restart_and_read(env.config()?, &ledger.ids()))?;
    let check = ledger.evaluate(&obs.l3);
    let via_engine = ledger.evaluate(&obs.engine);
    if check.violations() + via_engine.violations() > 0 {
        failures.push(format!(
            "seed {seed}: L3: {}; engine: {}",
            check.describe(),
            via_engine.describe()
        ));
    }
    if obs.roots_agree != Some(true) {
        failures.push("L2 and L3 roots differ after the restart".to_owned());
    }
    failures.extend(tally.protocol_errors.iter().cloned());
    let mut res = ScenarioResult::new(&name);
    res.trials = 1;
    res.acknowledged = tally.acks;
    res.lost = check.violations().max(via_engine.violations()) as u64;
    res.seconds = r3(started.elapsed().as_secs_f64());
    let last = tally.last_health().cloned().unwrap_or_default();
    res.set("seed", seed)
        .set("outage_s", r3(outage_s))
        .set("server_stop_s", r3(stopped_s))
        .set("server_restart_s", r3(t_up.duration_since(t_restart).as_secs_f64()))
        .set("acked_during_outage", acked_in_outage)
        .set("failed_writes_during_outage", failed_in_outage)
        .set("wal_peak", wal_peak)
        .set("first_ack_after_stop_s", first_ack.map(r3))
        .set("longest_ack_stall_s", r3(stall))
        .set("ack_stalls_over_0_5s", stalls)
        .set("drain_s", drain_s.map(r3))
        .set("acked_after_return", acked_after)
        .set("reads", last.int("reads"))
        .set("read_failures", last.int("readfail"))
        .set("read_errors", tally.readerrs.len() as u64)
        .set("roots_agree", obs.roots_agree.unwrap_or(false));
    if acked_in_outage == 0 {
        failures.push("no write was acknowledged during the outage".to_owned());
    }
    if !tally.fails.is_empty() {
        res.set("failed_write_examples", tally.fails.iter().take(3).cloned().collect::<Vec<_>>());
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

/// The engine process dies during the outage and is restarted while the server is still down,
/// with `allow_degraded_start = true`: it should start degraded, keep acknowledging writes into
/// the WAL, and drain once the server returns.
pub fn restart_during(
    h: &Harness,
    redis: &PrivateRedis,
    sql: &mut PrivateSql,
) -> Result<ScenarioResult, String> {
    let started = Instant::now();
    let name = format!("sql_outage_restart.{}", sql.kind().name());
    let ids: u64 = h.pick(300, 1000);
    let dir = h.dir(&name)?;
    let db = h.unique("outrestart");
    let sql_url = sql.create_database(&db)?;
    let prefix = format!("{db}:");
    let env = Env::new(&sql_url, Some((&redis.url(0), &prefix)), &dir.join("wal.db"))
        .with("SYNC_ENGINE_ALLOW_DEGRADED_START", "true");
    let seed = h.seed_for(&name);
    let mut ledger = Ledger::new();
    let mut failures = Vec::new();
    let mut t1 = Tally::default();
    let mut first = h.spawn(&dir, &env, 1, &ingest_args(1, seed, "d", ids, 0))?;
    await_ready(&first, &mut ledger, &mut t1, 60)?;
    pump(&first, &mut ledger, &mut t1, Instant::now() + Duration::from_secs(2), |_, _| false);
    let t_down = Instant::now();
    sql.crash_stop()?;
    pump(&first, &mut ledger, &mut t1, Instant::now() + Duration::from_secs(3), |_, _| false);
    first.kill();
    drain(&first, &mut ledger, &mut t1);
    let acked_before_kill_in_outage = t1.acks_between(t_down, Instant::now());
    // Restart while the server is down.
    let mut t2 = Tally::default();
    let mut second = h.spawn(&dir, &env, 2, &ingest_args(2, seed, "d", ids, 2))?;
    let degraded = await_ready(&second, &mut ledger, &mut t2, 60);
    let mut res = ScenarioResult::new(&name);
    res.set("seed", seed);
    let mut acked_degraded = 0;
    match &degraded {
        Ok(()) => {
            pump(&second, &mut ledger, &mut t2, Instant::now() + Duration::from_secs(5), |_, _| {
                false
            });
            acked_degraded = t2.acks;
        }
        Err(e) => {
            failures.push(format!(
                "restart during the outage with allow_degraded_start=true failed: {e}"
            ));
            second.kill();
            drain(&second, &mut ledger, &mut t2);
        }
    }
    let outage_left = Duration::from_secs(10).saturating_sub(t_down.elapsed());
    std::thread::sleep(outage_left);
    sql.start_again()?;
    let t_up = Instant::now();
    res.set("outage_s", r3(t_up.duration_since(t_down).as_secs_f64()));
    if degraded.is_ok() {
        let drained = await_drained(&second, &mut ledger, &mut t2, t_up, 180);
        res.set("drain_s", drained.map(|t| r3(t.saturating_duration_since(t_up).as_secs_f64())));
        if drained.is_none() {
            failures.push("the WAL did not drain after the server returned".to_owned());
        }
        if let Err(e) = stop(&mut second, &mut ledger, &mut t2) {
            failures.push(e);
        }
    }
    let obs = h.rt.block_on(restart_and_read(
        env.clone().with("SYNC_ENGINE_ALLOW_DEGRADED_START", "false").config()?,
        &ledger.ids(),
    ))?;
    let check = ledger.evaluate(&obs.l3);
    if check.violations() > 0 {
        failures.push(format!("seed {seed}: {}", check.describe()));
    }
    res.trials = 1;
    res.acknowledged = t1.acks + t2.acks;
    res.lost = check.violations() as u64;
    res.seconds = r3(started.elapsed().as_secs_f64());
    res.set("acked_in_outage_before_kill", acked_before_kill_in_outage)
        .set("degraded_start", degraded.is_ok())
        .set("acked_after_degraded_start", acked_degraded)
        .set("read_errors", t2.readerrs.len() as u64)
        .set("failures", failures.len() as u64);
    if !failures.is_empty() {
        res.set("failure_detail", failures);
    }
    Ok(res)
}

/// SIGKILL the engine while it drains its WAL into the SQL server that just came back, then
/// restart it: the restart finishes the drain, and nothing acknowledged is lost (entries L3
/// committed before the kill and replayed from the WAL again are harmless: newer wins).
pub fn kill_during_drain(
    h: &Harness,
    redis: &PrivateRedis,
    sql: &mut PrivateSql,
) -> Result<ScenarioResult, String> {
    let started = Instant::now();
    let name = format!("sql_outage_kill_drain.{}", sql.kind().name());
    let trials: u32 = h.pick(1, 5);
    let dir = h.dir(&name)?;
    let db = h.unique("killdrain");
    let sql_url = sql.create_database(&db)?;
    let prefix = format!("{db}:");
    let env = Env::new(&sql_url, Some((&redis.url(0), &prefix)), &dir.join("wal.db"))
        .with("SYNC_ENGINE_WAL_DRAIN_BATCH", "50");
    let seed = h.seed_for(&name);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ledger = Ledger::new();
    let mut failures = Vec::new();
    let (mut acks, mut lost, mut wal_at_kill, mut wal_left) = (0u64, 0u64, Vec::new(), 0u64);
    let mut restart_s = Vec::new();
    for trial in 0..trials {
        let run = trial + 1;
        let mut tally = Tally::default();
        let mut node = h.spawn(&dir, &env, run, &ingest_args(run, seed, "kd", 1000, 0))?;
        await_ready(&node, &mut ledger, &mut tally, 60)?;
        pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(1), |_, _| false);
        let t_down = Instant::now();
        sql.crash_stop()?;
        pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(6), |_, _| false);
        sql.start_again()?;
        let t_up = Instant::now();
        // Wait until the drain has visibly started (the depth falls below its peak), then kill
        // within 100 ms: in small drain batches a drain of thousands of entries takes longer.
        let peak = tally.max_health("wal", t_down, Instant::now());
        pump(
            &node,
            &mut ledger,
            &mut tally,
            t_up + Duration::from_secs(20),
            |e, _| matches!(&e.line, Line::Health(f) if f.int("wal") < peak),
        );
        let delay = Duration::from_millis(rng.random_range(0..=100));
        pump(&node, &mut ledger, &mut tally, Instant::now() + delay, |_, _| false);
        let depth = tally.last_health().map(|f| f.int("wal")).unwrap_or(0);
        node.kill();
        drain(&node, &mut ledger, &mut tally);
        acks += tally.acks;
        wal_at_kill.push(depth);
        let obs = match h.rt.block_on(restart_and_read(env.config()?, &ledger.ids())) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!(
                    "trial {trial}: the restart after a kill during the drain failed: {e}"
                ));
                break;
            }
        };
        restart_s.push(obs.startup_s);
        wal_left += obs.wal_depth;
        let check = ledger.evaluate(&obs.l3);
        let via_engine = ledger.evaluate(&obs.engine);
        let bad = check.violations().max(via_engine.violations()) as u64;
        if bad > 0 {
            failures.push(format!(
                "trial {trial} (seed {seed}, kill {delay:?} after the server returned, WAL depth {depth}): {}",
                check.describe()
            ));
        }
        if obs.roots_agree != Some(true) {
            failures.push(format!(
                "trial {trial}: L2 and L3 roots differ after the restart (start-up repair: {})",
                match &obs.startup_repair {
                    Some(r) => format!(
                        "ran, {} differing, {} repaired",
                        r.differing,
                        r.repaired + r.removed
                    ),
                    None => "did not run".to_owned(),
                }
            ));
        }
        lost += bad;
        ledger.settle(&obs.l3);
    }
    let mut res = ScenarioResult::new(&name);
    res.trials = u64::from(trials);
    res.acknowledged = acks;
    res.lost = lost;
    res.seconds = r3(started.elapsed().as_secs_f64());
    let (p50, max) = p50_max(&restart_s);
    res.set("seed", seed)
        .set("wal_drain_batch", 50)
        .set("wal_depth_at_kill", wal_at_kill)
        .set("wal_left_after_restart", wal_left)
        .set("restart_s_p50", r3(p50))
        .set("restart_s_max", r3(max))
        .set("failures", failures.len() as u64);
    if wal_left > 0 {
        failures.push(format!("{wal_left} WAL entries left after the restarts"));
        res.set("failures", failures.len() as u64);
    }
    if !failures.is_empty() {
        res.set("failure_detail", failures);
    }
    Ok(res)
}
