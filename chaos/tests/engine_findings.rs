//! Minimal reproducers, without servers, of what the chaos scenarios found (see RELIABILITY.md,
//! "Findings"): regression tests of the engine fixes they led to. Each test states the promise
//! it checks; the controls show the set-up is sound.

use std::sync::Arc;

use sync_engine::core::engine::{L2Store, L3Store};
use sync_engine::memory::{MemoryArchive, MemoryCache, MemoryWal};
use sync_engine::store::{CacheEntry, CacheStore, MerkleExt, Wal};
use sync_engine::{Config, ErrorKind, ObjectId, SecretUrl, SyncEngine, SyncItem};

fn item(id: &str, v: u64) -> SyncItem {
    SyncItem::new(ObjectId::new(id).unwrap(), v, format!("{id}@{v}"))
}

/// L3 with 3 items, L2 with the same 3 plus one L3 does not have (a batch that reached L2 but
/// neither L3 nor the WAL before a SIGKILL), and a WAL holding `pending` entries.
async fn crashed_state(pending: usize) -> (MemoryArchive, MemoryCache, MemoryWal) {
    let l3 = MemoryArchive::new();
    let l2 = MemoryCache::new();
    let wal = MemoryWal::default();
    let base: Vec<SyncItem> = (0..3).map(|i| item(&format!("a.i{i}"), 1)).collect();
    sync_engine::store::ArchiveStore::put_batch(&l3, &base).await.unwrap();
    let mut entries: Vec<CacheEntry> = base.iter().cloned().map(CacheEntry::new).collect();
    entries.push(CacheEntry::new(item("a.unacked", 1)));
    l2.put_batch(&entries).await.unwrap();
    let waiting: Vec<SyncItem> = (0..pending).map(|i| item(&format!("b.i{i}"), 2)).collect();
    if !waiting.is_empty() {
        wal.append(&waiting).await.unwrap();
        // The batch diverted to the WAL was written to L2 too.
        l2.put_batch(&waiting.iter().cloned().map(CacheEntry::new).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    (l3, l2, wal)
}

async fn start(l3: &MemoryArchive, l2: &MemoryCache, wal: &MemoryWal) -> SyncEngine {
    let a: Arc<dyn L3Store> = Arc::new(l3.clone());
    let c: Arc<dyn L2Store> = Arc::new(l2.clone());
    SyncEngine::builder(Config::default())
        .archive_arc(a)
        .cache_arc(c)
        .wal(wal.reopen())
        .start()
        .await
        .unwrap()
}

/// Control: with an empty WAL, start-up compares L2 with L3 and removes the stray item.
#[tokio::test]
async fn control_startup_repairs_l2_when_the_wal_is_empty() {
    let (l3, l2, wal) = crashed_state(0).await;
    let engine = start(&l3, &l2, &wal).await;
    assert_eq!(l2.root_hash().await.unwrap(), l3.root_hash().await.unwrap());
    engine.shutdown().await.unwrap();
}

/// DESIGN.md start-up step 7 ("compare L2's root with L3's; on mismatch repair") must run
/// whatever step 3 drained. `drain_wal` sets `l2_needs_repair`, and `start` used to read that
/// flag as "L2 was unreachable" and skip the comparison (engine-core lifecycle.rs).
/// Found by `sql_outage_kill_drain`: roots differed after a restart that drained the WAL.
#[tokio::test]
async fn startup_repairs_l2_also_after_draining_the_wal() {
    let (l3, l2, wal) = crashed_state(2).await;
    let engine = start(&l3, &l2, &wal).await;
    let report = engine.health().last_repair;
    assert_eq!(
        l2.root_hash().await.unwrap(),
        l3.root_hash().await.unwrap(),
        "L2 still differs from L3 after start-up (start-up repair report: {report:?})"
    );
    engine.shutdown().await.unwrap();
}

/// Issue 10, scenario 3: after L2 silently lost everything (FLUSHALL: no error anywhere), the
/// engine must detect the root mismatch and repair by itself. Maintenance used to compare roots
/// only after an L2 write error, so a flush was never noticed.
#[tokio::test]
async fn maintenance_notices_that_l2_lost_everything() {
    let (l3, l2, wal) = crashed_state(0).await;
    let engine = start(&l3, &l2, &wal).await;
    l2.clear();
    for _ in 0..3 {
        engine.tick().await.unwrap();
    }
    assert_eq!(
        l2.root_hash().await.unwrap(),
        l3.root_hash().await.unwrap(),
        "three maintenance rounds after L2 lost its data, it is still not repaired"
    );
    engine.shutdown().await.unwrap();
}

/// `allow_degraded_start = true` promises a start without L3 (writes to the WAL). Through
/// `sync_engine::connect` the SQL store's connect used to fail first, so an engine restarted
/// during a database outage could not start at all. Found by `sql_outage_restart`.
#[tokio::test]
async fn connect_starts_degraded_while_the_database_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        sql_url: SecretUrl::new("mysql://root@127.0.0.1:1/test"),
        wal_path: dir.path().join("wal.db"),
        allow_degraded_start: true,
        startup_l3_attempts: 1,
        sql_acquire_timeout_ms: 300,
        ..Config::default()
    };
    match sync_engine::connect(config).await {
        Ok(node) => {
            assert_eq!(node.engine.state(), sync_engine::EngineState::Degraded);
            node.engine.shutdown().await.unwrap();
        }
        Err(e) => panic!("allow_degraded_start = true, yet connect failed: {e}"),
    }
}

/// Config errors name the field (DESIGN.md, Configuration). For an out-of-range or wrongly
/// typed number the field used to be taken from the first backticks of serde's message, which
/// hold the value: `config field \`-1\``.
#[test]
fn toml_value_errors_name_the_field() {
    let e = Config::from_toml_str("allow_degraded_start = \"yes please\"").unwrap_err();
    assert_eq!(e.field, "allow_degraded_start", "{e}");
    let e = Config::from_toml_str("batch_max_items = -1").unwrap_err();
    assert_eq!(e.field, "batch_max_items", "{e}");
    let e = Config::from_toml_str("l1_max_bytes = 1.5").unwrap_err();
    assert_eq!(e.field, "l1_max_bytes", "{e}");
}

/// No password in an error (ARCHITECTURE.md invariant). A URL put in a wrongly typed field used
/// to be echoed verbatim.
#[test]
fn config_errors_never_echo_a_password() {
    let e = Config::from_env_vars(vec![(
        "SYNC_ENGINE_SQL_POOL_SIZE".to_owned(),
        "mysql://app:hunter2@db/x".to_owned(),
    )])
    .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let e = Config::from_toml_str("sql_pool_size = \"mysql://app:hunter2@db/x\"").unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

/// Control for the tests above: a write of a bad id is refused without side effects.
#[tokio::test]
async fn control_bad_ids_are_refused() {
    let (l3, l2, wal) = crashed_state(0).await;
    let engine = start(&l3, &l2, &wal).await;
    let e = engine.submit("a..b", "x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    engine.shutdown().await.unwrap();
}
