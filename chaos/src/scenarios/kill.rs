//! Scenario 1: SIGKILL the engine process at random moments during durable-ack ingest, restart
//! it, and check that every acknowledged item reads back at its latest version (none lost,
//! none regressed, deleted items still deleted), that L3 itself holds it, and that the L2 and
//! L3 Merkle roots agree once the restarted engine has started.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::restart_and_read;
use crate::harness::{drain, p50_max, pump, r3, Env, Harness, Tally};
use crate::ledger::Ledger;
use crate::servers::{PrivateRedis, PrivateSql};
use crate::summary::ScenarioResult;

/// Run the scenario against `redis` (L2) and `sql` (L3).
pub fn run(h: &Harness, redis: &PrivateRedis, sql: &PrivateSql) -> Result<ScenarioResult, String> {
    run_variant(h, redis, sql, false)
}

/// The negative control: the same kills with write-behind acknowledgements (`submit` without
/// `durable`, 2 s flush interval). Acknowledged writes are then expected to be lost, and the
/// result passes only if the harness reports them: proof that the check can fail.
pub fn negative_control(
    h: &Harness,
    redis: &PrivateRedis,
    sql: &PrivateSql,
) -> Result<ScenarioResult, String> {
    run_variant(h, redis, sql, true)
}

fn run_variant(
    h: &Harness,
    redis: &PrivateRedis,
    sql: &PrivateSql,
    write_behind: bool,
) -> Result<ScenarioResult, String> {
    let started = Instant::now();
    let name = if write_behind {
        format!("control.write_behind_kill.{}", sql.kind().name())
    } else {
        format!("kill.{}", sql.kind().name())
    };
    let trials: u32 = h.pick(3, 30);
    let ids: u64 = h.pick(300, 2000);
    let max_delay_ms: u64 = h.pick(1500, 2500);
    let dir = h.dir(&name)?;
    let db = h.unique("kill");
    let sql_url = sql.create_database(&db)?;
    let prefix = format!("{db}:");
    let mut env = Env::new(&sql_url, Some((&redis.url(0), &prefix)), &dir.join("wal.db"));
    if write_behind {
        env = env.with("SYNC_ENGINE_BATCH_MAX_AGE_MS", "2000");
    }
    let config = env.config()?;
    let seed = h.seed_for(&name);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut ledger = Ledger::new();
    let mut res = ScenarioResult::new(&name);
    let (mut lost, mut before_ready, mut landed, mut roots_disagree, mut wal_left) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut startup_repairs, mut startup_repaired, mut l2_stale, mut deleted_checked) =
        (0u64, 0u64, 0u64, 0u64);
    let mut restart_s = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut done = 0u32;
    for trial in 0..trials {
        done += 1;
        let run = trial + 1;
        let delay = if write_behind {
            // Past start-up, so that acknowledged write-behind writes are pending at the kill.
            Duration::from_millis(rng.random_range(1500..=1500 + max_delay_ms))
        } else if trial % 5 == 0 {
            // Every fifth kill lands early: during process start and the engine's start-up.
            Duration::from_millis(rng.random_range(0..=300))
        } else {
            Duration::from_millis(rng.random_range(0..=max_delay_ms))
        };
        let mut args: Vec<String> = [
            "ingest",
            "--run",
            &run.to_string(),
            "--seed",
            &seed.to_string(),
            "--tag",
            "k",
            "--ids",
            &ids.to_string(),
            "--workers",
            "8",
            "--delete-pct",
            "15",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if write_behind {
            args.push("--write-behind".into());
        }
        let mut node = h.spawn(&dir, &env, run, &args)?;
        let mut tally = Tally::default();
        pump(&node, &mut ledger, &mut tally, node.spawned + delay, |_, _| false);
        node.kill();
        drain(&node, &mut ledger, &mut tally);
        if let Some(f) = &tally.fatal {
            failures.push(format!("trial {trial}: the child failed to start: {f}"));
        }
        if tally.ready_at.is_none() {
            before_ready += 1;
        }
        failures.extend(tally.protocol_errors.iter().map(|e| format!("trial {trial}: {e}")));
        let obs = match h.rt.block_on(restart_and_read(config.clone(), &ledger.ids())) {
            Ok(obs) => obs,
            Err(e) => {
                // The engine cannot start over what the killed process left: report, stop.
                failures.push(format!("trial {trial} (seed {seed}, kill after {delay:?}): {e}"));
                res.acknowledged += tally.acks;
                break;
            }
        };
        restart_s.push(obs.startup_s);
        let via_engine = ledger.evaluate(&obs.engine);
        let via_l3 = ledger.evaluate(&obs.l3);
        let bad = via_engine.violations().max(via_l3.violations()) as u64;
        if bad > 0 {
            failures.push(format!(
                "trial {trial} (seed {seed}, kill after {delay:?}): engine: {}; L3: {}",
                via_engine.describe(),
                via_l3.describe()
            ));
        }
        if !obs.engine_vs_l3.is_empty() {
            failures.push(format!(
                "trial {trial}: the engine's reads differ from L3 for {} ids, e.g. {:?}",
                obs.engine_vs_l3.len(),
                &obs.engine_vs_l3[..obs.engine_vs_l3.len().min(5)]
            ));
        }
        lost += bad;
        landed += via_engine.unacked_landed as u64;
        deleted_checked += via_engine.deleted as u64;
        if obs.roots_agree != Some(true) {
            roots_disagree += 1;
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
        // After start, every id L2 holds must equal L3's item (L2 may lack some: it is a cache).
        let stale = obs
            .l2
            .iter()
            .filter(|(id, item)| {
                item.is_some()
                    && obs.l3.get(*id).is_some_and(|l3| {
                        l3.as_ref().map(|x| (x.stamp(), x.content().clone()))
                            != item.as_ref().map(|x| (x.stamp(), x.content().clone()))
                    })
            })
            .count() as u64;
        if stale > 0 {
            failures
                .push(format!("trial {trial}: {stale} ids in L2 differ from L3 after the restart"));
        }
        if obs.wal_depth > 0 {
            failures.push(format!(
                "trial {trial}: {} WAL entries left after the restart",
                obs.wal_depth
            ));
        }
        l2_stale += stale;
        wal_left += obs.wal_depth;
        if let Some(r) = &obs.startup_repair {
            if !r.in_sync {
                startup_repairs += 1;
                startup_repaired += (r.repaired + r.removed) as u64;
            }
        }
        ledger.settle(&obs.l3);
        res.acknowledged += tally.acks;
    }
    let (p50, max) = p50_max(&restart_s);
    res.trials = u64::from(done);
    res.lost = lost;
    res.seconds = r3(started.elapsed().as_secs_f64());
    if write_behind {
        res.set("control", true);
    }
    res.set("seed", seed)
        .set("ids", ids)
        .set("killed_before_ready", before_ready)
        .set("unacked_landed", landed)
        .set("deleted_checked", deleted_checked)
        .set("roots_disagree", roots_disagree)
        .set("l2_stale_after_start", l2_stale)
        .set("wal_left_after_start", wal_left)
        .set("startup_repairs", startup_repairs)
        .set("startup_repaired_ids", startup_repaired)
        .set("restart_s_p50", r3(p50))
        .set("restart_s_max", r3(max))
        .set("failures", failures.len() as u64);
    if !failures.is_empty() {
        res.set("failure_detail", failures.into_iter().take(10).collect::<Vec<_>>());
    }
    Ok(res)
}
