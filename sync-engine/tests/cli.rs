//! End-to-end tests of the `sync-engine` binary: the demo, put/get/delete/scan across
//! invocations, and bad input answered with one clear line, a non-zero exit, nothing stored.

use assert_cmd::Command;
use predicates::prelude::*;
use sync_engine_core::conformance::server_url;
use tempfile::TempDir;

/// A command on an isolated SQLite archive and WAL in `dir`.
fn cmd(dir: &TempDir) -> Command {
    let mut c = Command::cargo_bin("sync-engine").expect("binary built");
    c.current_dir(dir.path())
        .env_remove("SYNC_ENGINE_REDIS_URL")
        .env_remove("SYNC_ENGINE_SQL_URL")
        .arg("--sql")
        .arg(format!("sqlite://{}/archive.db", dir.path().display()))
        .arg("--wal")
        .arg(dir.path().join("wal.db"));
    c
}

#[test]
fn demo_runs_on_embedded_sqlite() {
    let dir = TempDir::new().unwrap();
    let out = cmd(&dir)
        .args(["demo", "--items", "300", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json output");
    assert_eq!(v["l3_count"], 300);
    assert_eq!(v["l3_root"].as_str().map(str::len), Some(64));
    // Running it again updates the same ids.
    cmd(&dir)
        .args(["demo", "--items", "300"])
        .assert()
        .success()
        .stdout(predicate::str::contains("l3_count"));
}

#[test]
fn put_get_delete_scan_across_invocations() {
    let dir = TempDir::new().unwrap();
    cmd(&dir).args(["put", "app.users.1", "alice"]).assert().success();
    cmd(&dir).args(["put", "app.users.2", "bob"]).assert().success();
    cmd(&dir)
        .args(["get", "app.users.1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("alice"));
    cmd(&dir).args(["scan", "app.users."]).assert().success().stdout("app.users.1\napp.users.2\n");
    cmd(&dir).args(["delete", "app.users.1"]).assert().success();
    cmd(&dir)
        .args(["get", "app.users.1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not found"));
    cmd(&dir)
        .args(["scan", "app.users.", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("app.users.2"));
    cmd(&dir)
        .args(["wal", "status", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"pending_items\":0"));
    cmd(&dir).args(["stats"]).assert().success().stdout(predicate::str::contains("l3_items"));
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let dir = TempDir::new().unwrap();
    cmd(&dir).arg("frobnicate").assert().code(2).stderr(predicate::str::contains("frobnicate"));
}

#[test]
fn bad_url_names_the_field_and_hides_the_password() {
    let dir = TempDir::new().unwrap();
    let mut c = Command::cargo_bin("sync-engine").unwrap();
    c.current_dir(dir.path()).args(["--sql", "ftp://user:hunter2@db/x", "stats"]);
    c.assert()
        .failure()
        .stderr(predicate::str::contains("sql_url"))
        .stderr(predicate::str::contains("hunter2").not());
}

#[test]
fn invalid_id_and_oversized_payload_store_nothing() {
    let dir = TempDir::new().unwrap();
    cmd(&dir)
        .args(["put", "bad..id", "x"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid object id"));
    cmd(&dir)
        .env("SYNC_ENGINE_MAX_PAYLOAD_BYTES", "4")
        .args(["put", "ok.id", "too long"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("max_payload_bytes"));
    cmd(&dir).args(["scan", ""]).assert().success().stdout("");
}

#[test]
fn unreadable_config_file_is_named() {
    let dir = TempDir::new().unwrap();
    cmd(&dir)
        .args(["--config", "/nonexistent/sync.toml", "stats"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("/nonexistent/sync.toml"));
    std::fs::write(dir.path().join("bad.toml"), "batch_max_items = \"many\"").unwrap();
    cmd(&dir)
        .args(["--config", "bad.toml", "stats"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("batch_max_items"));
}

#[test]
fn demo_with_redis_verifies_l2_against_l3() {
    let Some(redis) = server_url("SYNC_ENGINE_TEST_REDIS_URL") else { return };
    let dir = TempDir::new().unwrap();
    let out = cmd(&dir)
        .env("SYNC_ENGINE_REDIS_PREFIX", format!("cli{}:", std::process::id()))
        .args(["--redis", &redis, "demo", "--items", "300", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["l2_count"], 300);
    assert_eq!(v["l2_matches_l3"], true);
}

/// Bytes changed with a plain Redis `SET` escape `verify` (L2's Merkle shadow still shows the
/// old value); `verify --deep` names them, `repair --deep` rewrites them from L3.
#[cfg(feature = "redis")]
#[test]
fn deep_verify_and_repair_find_and_fix_raw_changes_in_redis() {
    let Some(redis_url) = server_url("SYNC_ENGINE_TEST_REDIS_URL") else { return };
    let dir = TempDir::new().unwrap();
    let prefix = format!("clideep{}:", std::process::id());
    let run = |args: &[&str]| -> serde_json::Value {
        let out = cmd(&dir)
            .env("SYNC_ENGINE_REDIS_PREFIX", &prefix)
            .args(["--redis", &redis_url, "--json"])
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).expect("json output")
    };
    run(&["put", "app.users.1", "alice"]);
    run(&["put", "app.users.2", "bob"]);
    let mut con = redis::Client::open(redis_url.as_str()).unwrap().get_connection().unwrap();
    let key = format!("{prefix}{{{prefix}}}d:app.users.1");
    let _: u64 = redis::cmd("SETRANGE").arg(&key).arg(84).arg("ALICE").query(&mut con).unwrap();
    let shallow = run(&["verify"]);
    assert_eq!(
        (shallow["in_sync"].as_bool(), shallow["differing"].as_u64()),
        (Some(true), Some(0))
    );
    let deep = run(&["verify", "--deep"]);
    assert_eq!(deep["in_sync"], false, "{deep}");
    assert_eq!(
        (deep["differing"].as_u64(), deep["corrupt"].as_u64()),
        (Some(1), Some(1)),
        "{deep}"
    );
    let fixed = run(&["repair", "--deep"]);
    assert_eq!(fixed["repaired"].as_u64(), Some(1), "{fixed}");
    let after = run(&["verify", "--deep"]);
    assert_eq!((after["in_sync"].as_bool(), after["corrupt"].as_u64()), (Some(true), Some(0)));
    let raw: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert!(raw.ends_with(b"alice"), "L2 holds L3's value again");
    let pattern = format!("{prefix}{{{prefix}}}*");
    let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
    let _: () = redis::cmd("DEL").arg(keys).query(&mut con).unwrap();
}

#[test]
fn deep_verify_without_redis_says_what_is_missing() {
    let dir = TempDir::new().unwrap();
    cmd(&dir)
        .args(["verify", "--deep"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--redis"));
}

fn demo_on(url: &str) {
    let dir = TempDir::new().unwrap();
    let mut c = Command::cargo_bin("sync-engine").unwrap();
    c.current_dir(dir.path())
        .env_remove("SYNC_ENGINE_REDIS_URL")
        .args(["--sql", url, "--wal"])
        .arg(dir.path().join("wal.db"))
        .args(["demo", "--items", "200", "--json"]);
    let out = c.assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["l3_count"], 200);
}

#[test]
fn demo_on_mariadb() {
    if let Some(url) = server_url("SYNC_ENGINE_TEST_MYSQL_URL") {
        demo_on(&url);
    }
}

#[test]
fn demo_on_postgres() {
    if let Some(url) = server_url("SYNC_ENGINE_TEST_POSTGRES_URL") {
        demo_on(&url);
    }
}
