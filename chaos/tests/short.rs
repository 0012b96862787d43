//! The short form of the chaos scenarios 1–5, run by `cargo xtask test` in CI: the same code as
//! `cargo xtask chaos`, with few trials and small counts. Every test starts its own private
//! servers (free ports, temporary data directories) and never touches the shared ones.
//!
//! A test whose server binaries are not installed says so loudly and skips; under `CI=true` it
//! fails instead.

use std::path::PathBuf;

use sync_engine_chaos::scenarios::{kill, redis_loss, sql_outage, tamper, wal_damage};
use sync_engine_chaos::servers::{PrivateRedis, PrivateSql, SqlKind};
use sync_engine_chaos::{Harness, ScenarioResult};

const SEED: u64 = 20261125;

struct Ctx {
    h: Harness,
    _dir: tempfile::TempDir,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A quick harness, or None (loudly) when a needed server is not installed.
fn ctx(redis: bool, sql: &[SqlKind]) -> Option<Ctx> {
    let mut missing: Vec<&str> = Vec::new();
    if redis && !PrivateRedis::available() {
        missing.push("redis-server");
    }
    missing.extend(sql.iter().filter(|k| !k.available()).map(|k| k.name()));
    if !missing.is_empty() {
        assert!(!ci(), "CI=true and these servers are not installed: {missing:?}");
        eprintln!("SKIPPED: not installed: {missing:?}");
        return None;
    }
    let dir = tempfile::Builder::new().prefix("chaos-").tempdir().expect("tempdir");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_chaos-node"));
    let h = Harness::new(true, SEED, bin, dir.path().to_path_buf()).expect("harness");
    Some(Ctx { h, _dir: dir })
}

fn assert_passed(r: &ScenarioResult) {
    eprintln!("{}", r.describe());
    assert!(
        r.passed(),
        "{} failed: {}",
        r.scenario,
        serde_json::to_string_pretty(r).unwrap_or_default()
    );
}

fn kill_against(kind: SqlKind) {
    let Some(c) = ctx(true, &[kind]) else { return };
    let redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let sql = PrivateSql::start(kind, &c.h.dir(kind.name()).unwrap()).unwrap();
    let r = kill::run(&c.h, &redis, &sql).unwrap();
    assert_eq!(r.trials, 3);
    assert!(r.acknowledged > 0, "nothing was acknowledged");
    assert_passed(&r);
}

#[test]
fn s1_sigkill_during_durable_ingest_loses_nothing_mariadb() {
    kill_against(SqlKind::MariaDb);
}

#[test]
fn s1_sigkill_during_durable_ingest_loses_nothing_postgres() {
    kill_against(SqlKind::Postgres);
}

/// The harness can fail: with write-behind acknowledgements (not durable) and a 2 s flush
/// interval, SIGKILL loses acknowledged writes, and the same check reports them.
#[test]
fn s1_negative_control_write_behind_acks_are_reported_lost() {
    let Some(c) = ctx(true, &[SqlKind::MariaDb]) else { return };
    let redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    let r = kill::negative_control(&c.h, &redis, &sql).unwrap();
    eprintln!("{}", r.describe());
    assert!(r.lost > 0, "write-behind acks under SIGKILL were not reported lost: {}", r.describe());
    assert!(r.passed());
}

#[test]
fn s2_sql_outage_of_10s_is_absorbed_by_the_wal_and_drained() {
    let Some(c) = ctx(true, &[SqlKind::MariaDb]) else { return };
    let redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let mut sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    let r = sql_outage::run(&c.h, &redis, &mut sql).unwrap();
    assert!(r.get("outage_s").and_then(|v| v.as_f64()).unwrap_or(0.0) >= 10.0);
    assert!(r.get("acked_during_outage").and_then(|v| v.as_u64()).unwrap_or(0) > 0);
    assert!(r.get("drain_s").is_some_and(|v| v.is_number()), "the WAL never drained");
    assert_passed(&r);
}

#[test]
fn s2_sigkill_during_the_wal_drain_loses_nothing() {
    let Some(c) = ctx(true, &[SqlKind::MariaDb]) else { return };
    let redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let mut sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    let r = sql_outage::kill_during_drain(&c.h, &redis, &mut sql).unwrap();
    assert!(r.acknowledged > 0);
    assert_passed(&r);
}

#[test]
fn s2_engine_restarted_during_the_outage_starts_degraded() {
    let Some(c) = ctx(true, &[SqlKind::MariaDb]) else { return };
    let redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let mut sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    let r = sql_outage::restart_during(&c.h, &redis, &mut sql).unwrap();
    assert_passed(&r);
}

fn redis_loss(loss: redis_loss::Loss) {
    let Some(c) = ctx(true, &[SqlKind::MariaDb]) else { return };
    let mut redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    let r = redis_loss::run(&c.h, loss, &mut redis, &sql).unwrap();
    assert!(r.get("reads_after_loss").and_then(|v| v.as_u64()).unwrap_or(0) > 0, "no read load");
    assert_passed(&r);
}

#[test]
fn s3_redis_restarted_empty_reads_stay_right_and_l2_is_repaired() {
    redis_loss(redis_loss::Loss::RestartEmpty);
}

#[test]
fn s3_redis_flushall_is_detected_and_repaired() {
    redis_loss(redis_loss::Loss::FlushAll);
}

fn tamper_results() -> Option<Vec<ScenarioResult>> {
    let c = ctx(true, &[SqlKind::MariaDb])?;
    let redis = PrivateRedis::start(&c.h.dir("redis").unwrap()).unwrap();
    let sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    Some(tamper::run(&c.h, &redis, &sql).unwrap())
}

#[test]
fn s4_tampered_redis_items_are_found_and_fixed_exactly() {
    let Some(results) = tamper_results() else { return };
    let api = results.iter().find(|r| r.scenario == "tamper.redis").unwrap();
    assert!(api.get("tampered").and_then(|v| v.as_u64()).unwrap_or(0) > 0);
    assert_eq!(api.get("tampered"), api.get("found"));
    assert_eq!(api.get("tampered"), api.get("fixed"));
    assert_passed(api);
}

/// Bytes of a Redis value changed with a plain `SET` (bit rot, a manual edit) are never served:
/// storage-redis checks every value it reads (payload against its content hash, header against
/// its leaf digest) and refuses a changed one, so the engine reads through to L3.
#[test]
fn s4_raw_byte_tampering_of_redis_values_is_never_served() {
    let Some(results) = tamper_results() else { return };
    let raw = results.iter().find(|r| r.scenario == "tamper.redis_raw").unwrap();
    assert!(raw.get("tampered").and_then(|v| v.as_u64()).unwrap_or(0) > 0);
    assert_eq!(raw.get("tampered"), raw.get("l2_refused_before_repair"));
    assert_eq!(raw.get("l2_served_wrong_before_repair").and_then(|v| v.as_u64()), Some(0));
    assert_eq!(raw.get("served_wrong_after_restart").and_then(|v| v.as_u64()), Some(0));
}

/// Raw byte changes bypass L2's Merkle shadow, so the Merkle-only `verify` cannot see them;
/// `verify_deep` audits every L2 entry and finds exactly the changed ids, `repair_deep`
/// rewrites exactly those from L3 (nothing else), and reads afterwards return L3's values.
#[test]
fn s4_raw_byte_tampering_of_redis_values_is_found_and_fixed() {
    let Some(results) = tamper_results() else { return };
    let raw = results.iter().find(|r| r.scenario == "tamper.redis_raw").unwrap();
    let n = |k: &str| raw.get(k).and_then(|v| v.as_u64());
    assert!(n("tampered").unwrap_or(0) > 0);
    assert_eq!(n("merkle_verify_found"), Some(0), "the shadow did not see the raw changes");
    assert_eq!(n("found"), n("tampered"));
    assert_eq!(n("found_corrupt"), n("tampered"));
    assert_eq!((n("missed"), n("found_not_tampered")), (Some(0), Some(0)));
    assert_eq!(n("fixed"), n("tampered"));
    assert_eq!(n("untouched_rewritten"), Some(0));
    assert_eq!(n("still_wrong_after_repair"), Some(0));
    assert_eq!(n("l2_reads_wrong_after_repair"), Some(0));
    assert_eq!(raw.get("in_sync_after").and_then(|v| v.as_bool()), Some(true));
    assert_eq!(n("served_wrong_after_restart"), Some(0));
    assert_passed(raw);
}

#[test]
fn s5_damaged_wal_recovers_its_valid_prefix_or_fails_clearly() {
    let Some(c) = ctx(false, &[SqlKind::MariaDb]) else { return };
    let mut sql = PrivateSql::start(SqlKind::MariaDb, &c.h.dir("mariadb").unwrap()).unwrap();
    let r = wal_damage::run(&c.h, &mut sql).unwrap();
    assert_eq!(r.get("panics").and_then(|v| v.as_u64()), Some(0));
    assert_passed(&r);
}
