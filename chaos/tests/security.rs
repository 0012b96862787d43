//! Security of inputs: hostile ids (SQL metacharacters, LIKE wildcards, Redis key separators
//! and hash tags, `../`, NUL, 10 kB strings) are either rejected with a clear error and no side
//! effect, or stored and read back exactly; prefix operations never touch ids outside their
//! prefix. Runs on embedded SQLite always, and on the shared Redis / MariaDB / PostgreSQL when
//! their URLs are set (`cargo xtask test` sets them; unique table and key prefixes per run).

use std::sync::Arc;

use bytes::Bytes;
use sync_engine::core::engine::{L2Store, L3Store};
use sync_engine::store::{ArchiveExt, ArchiveStore, CacheEntry, CacheStore, KeyScan, MerkleExt};
use sync_engine::{Config, ErrorKind, ObjectId, SecretUrl, SubmitOptions, SyncEngine, SyncItem};
use sync_engine_core::conformance::server_url;
use sync_engine_redis::{RedisOptions, RedisStore};
use sync_engine_sql::{SqlOptions, SqlStore};
use sync_engine_wal::{SqliteWal, WalOptions};

/// One set of backends under unique names.
struct Stack {
    name: String,
    sql: Arc<SqlStore>,
    redis: Option<Arc<RedisStore>>,
    redis_url: Option<String>,
    redis_prefix: String,
    dir: tempfile::TempDir,
}

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000)
        .unwrap_or(0);
    format!("chaos_{tag}_{}_{ms}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

async fn stacks(tag: &str) -> Vec<Stack> {
    let mut sql_urls: Vec<(String, Option<String>)> = vec![("sqlite".into(), None)];
    if let Some(u) = server_url("SYNC_ENGINE_TEST_MYSQL_URL") {
        sql_urls.push(("mariadb".into(), Some(u)));
    }
    if let Some(u) = server_url("SYNC_ENGINE_TEST_POSTGRES_URL") {
        sql_urls.push(("postgres".into(), Some(u)));
    }
    let redis_url = server_url("SYNC_ENGINE_TEST_REDIS_URL");
    let mut out = Vec::new();
    for (name, url) in sql_urls {
        let dir = tempfile::tempdir().unwrap();
        let url =
            url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("archive.db").display()));
        let table = unique(tag);
        let sql = SqlStore::connect(
            &SecretUrl::new(&url),
            SqlOptions::default().with_table_prefix(format!("{table}_")),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let redis_prefix = format!("{}:", table.replace('_', "-"));
        let redis = match &redis_url {
            Some(u) => Some(Arc::new(
                RedisStore::connect(
                    &SecretUrl::new(u),
                    RedisOptions::default().with_prefix(&redis_prefix),
                )
                .await
                .unwrap_or_else(|e| panic!("redis: {e}")),
            )),
            None => None,
        };
        out.push(Stack {
            name: format!("{name}{}", if redis.is_some() { "+redis" } else { "" }),
            sql: Arc::new(sql),
            redis,
            redis_url: redis_url.clone(),
            redis_prefix,
            dir,
        });
    }
    out
}

impl Stack {
    async fn engine(&self, config: Config) -> SyncEngine {
        let wal =
            SqliteWal::open(self.dir.path().join("wal.db"), WalOptions::default()).await.unwrap();
        let l3: Arc<dyn L3Store> = self.sql.clone();
        let mut b = SyncEngine::builder(config).archive_arc(l3).wal(wal);
        if let Some(r) = &self.redis {
            let l2: Arc<dyn L2Store> = r.clone();
            b = b.cache_arc(l2);
        }
        b.start().await.unwrap_or_else(|e| panic!("{}: start: {e}", self.name))
    }

    async fn cleanup(&self) {
        let _ = self.sql.drop_tables().await;
        if let Some(r) = &self.redis {
            let _ = r.clear_namespace().await;
        }
    }
}

/// The id rules of DESIGN.md, written independently of the implementation.
fn allowed(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id.split('.').all(|s| !s.is_empty())
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn hostile_ids() -> Vec<String> {
    let mut v: Vec<String> = [
        "x';DROP/**/TABLE/**/sync_items;--",
        "x');DELETE/**/FROM/**/sync_items;--",
        "a\"b",
        "a`b",
        "a\\b",
        "a\\",
        "a%b",
        "a_b",
        "%",
        "_",
        "%%",
        "[a-z]",
        "a:b",
        "a::b",
        "{tag}",
        "a{b}c",
        "}{",
        "*",
        "?",
        "a*b?[c]",
        "d:x",
        "n::x",
        "e:x",
        "x}d:y",
        "/etc/passwd",
        "%2e%2e%2f",
        "é.ü",
        "\u{202e}rtl",
        "\u{feff}bom",
        "$1",
        "?1",
        ":name",
        "@p",
        "NULL",
        "../etc/passwd",
        "a/../b",
        "..",
        ".",
        "a.",
        ".a",
        "a..b",
        "a\0b",
        "\0",
        "a b",
        "a\tb",
        "a\nb",
        "a\r\nb",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(10 * 1024));
    v.push(format!("{}.{}", "y".repeat(500), "z".repeat(523)));
    v.push(format!("{}.{}", "y".repeat(500), "z".repeat(524)));
    v
}

fn payload(id: &str) -> Bytes {
    let mut p = format!("{id}\0'\";--%_\\").into_bytes();
    p.extend((0..10 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    Bytes::from(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_are_rejected_cleanly_or_stored_exactly() {
    for stack in stacks("sec").await {
        let config = Config { max_id_len: 1024, ..Config::default() };
        let engine = stack.engine(config.clone()).await;
        let mut accepted = Vec::new();
        for id in hostile_ids() {
            let shown: String = id.chars().take(40).collect();
            let r = engine.submit_with(&id, payload(&id), SubmitOptions::durable()).await;
            match (allowed(&id, 1024), r) {
                (true, Ok(_)) => accepted.push(id),
                (false, Err(e)) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}: {shown:?}: {e}", stack.name);
                    let msg = e.to_string();
                    assert!(
                        msg.contains("invalid object id"),
                        "{}: unclear error: {msg}",
                        stack.name
                    );
                    assert!(
                        msg.len() < 600,
                        "{}: the error echoes the whole input ({} bytes)",
                        stack.name,
                        msg.len()
                    );
                }
                (true, Err(e)) => panic!("{}: a valid id {shown:?} was refused: {e}", stack.name),
                (false, Ok(_)) => panic!("{}: an invalid id {shown:?} was accepted", stack.name),
            }
        }
        engine.shutdown().await.unwrap();
        drop(engine);
        // Nothing but the accepted ids exists.
        assert_eq!(stack.sql.count("").await.unwrap(), accepted.len() as u64, "{}", stack.name);
        // A fresh engine (empty L1) reads every accepted id back exactly, from L2 and L3.
        let engine = stack.engine(config).await;
        for id in &accepted {
            let oid = ObjectId::with_max_len(id, 1024).unwrap();
            let via_engine = engine
                .get(id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{}: {id:?} lost", stack.name));
            assert_eq!(via_engine.id().as_str(), id.as_str());
            assert_eq!(via_engine.content(), &payload(id), "{}: {id:?}", stack.name);
            let in_l3 = stack.sql.get_many(std::slice::from_ref(&oid)).await.unwrap();
            assert_eq!(
                in_l3[0].as_ref().map(|i| i.content().clone()),
                Some(payload(id)),
                "{}: {id:?}",
                stack.name
            );
            if let Some(r) = &stack.redis {
                let in_l2 = r.get_many(std::slice::from_ref(&oid)).await.unwrap();
                if let Some(item) = &in_l2[0] {
                    assert_eq!(item.content(), &payload(id), "{}: L2 {id:?}", stack.name);
                }
            }
            let page = stack.sql.scan_keys(&KeyScan::prefix(id.clone(), 2)).await.unwrap();
            assert_eq!(
                page.first().map(|x| x.as_str()),
                Some(id.as_str()),
                "{}: scan {id:?}",
                stack.name
            );
        }
        if stack.redis.is_some() {
            let r = engine.verify("").await.unwrap();
            assert!(r.in_sync, "{}: L2 and L3 differ after hostile ids: {r:?}", stack.name);
        }
        engine.shutdown().await.unwrap();
        stack.cleanup().await;
        eprintln!(
            "{}: {} hostile ids accepted and exact, the rest refused",
            stack.name,
            accepted.len()
        );
    }
}

fn ids_of(v: &[ObjectId]) -> Vec<&str> {
    v.iter().map(|i| i.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_operations_never_touch_ids_outside_the_prefix() {
    let all = [
        "p%x.a", "p%x.b.c", "p%xy.a", "pax.a", "pabx.a", "p_x.a", "pbx.a", "p\\x.a", "P%x.a", "p%",
        "q.p%x.a",
    ];
    for stack in stacks("pfx").await {
        let engine = stack.engine(Config::default()).await;
        for id in all {
            engine.submit_with(id, id.as_bytes().to_vec(), SubmitOptions::durable()).await.unwrap();
        }
        let l3 = &stack.sql;
        let mut got = ids_of(&l3.all_keys("p%x", 3).await.unwrap())
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        got.sort();
        assert_eq!(got, vec!["p%x.a", "p%x.b.c", "p%xy.a"], "{}: scan p%x", stack.name);
        assert_eq!(l3.count("p%x.").await.unwrap(), 2, "{}", stack.name);
        assert_eq!(l3.count("p_").await.unwrap(), 1, "{}: `_` is not a wildcard", stack.name);
        assert_eq!(l3.count("p\\").await.unwrap(), 1, "{}: `\\` is not an escape", stack.name);
        assert_eq!(l3.count("p%").await.unwrap(), 4, "{}: `%` is not a wildcard", stack.name);
        assert_eq!(l3.count("P").await.unwrap(), 1, "{}: prefixes are case-sensitive", stack.name);
        let deleted = l3.delete_prefix("p_", u64::MAX / 2, 2).await.unwrap();
        assert_eq!(deleted, 1, "{}: delete_prefix(p_) deleted {deleted}", stack.name);
        assert_eq!(l3.count("").await.unwrap(), all.len() as u64 - 1, "{}", stack.name);
        assert!(l3.get(&ObjectId::new("pax.a").unwrap()).await.unwrap().is_some());

        if let (Some(redis), Some(url)) = (&stack.redis, &stack.redis_url) {
            // Tamper two ids in L2, one inside `p%x` and one outside; repair only the prefix.
            let rogue = RedisStore::connect(
                &SecretUrl::new(url),
                RedisOptions::default().with_prefix(&stack.redis_prefix),
            )
            .await
            .unwrap();
            let inside = ObjectId::new("p%x.a").unwrap();
            let outside = ObjectId::new("pax.a").unwrap();
            let bad = |id: &ObjectId| {
                CacheEntry::new(SyncItem::new(id.clone(), u64::MAX / 4, "tampered"))
            };
            rogue.put_batch(&[bad(&inside), bad(&outside)]).await.unwrap();
            let v = engine.verify("p%x").await.unwrap();
            assert_eq!(v.differing, 1, "{}: verify(p%x) saw {:?}", stack.name, v.sample);
            let r = engine.repair("p%x").await.unwrap();
            assert_eq!(r.repaired + r.removed, 1, "{}: repair(p%x): {r:?}", stack.name);
            let still = redis.get_many(std::slice::from_ref(&outside)).await.unwrap();
            assert_eq!(
                still[0].as_ref().map(|i| i.content().clone()),
                Some(Bytes::from_static(b"tampered")),
                "{}: repair(p%x) touched pax.a",
                stack.name
            );
            assert_eq!(engine.verify("pax").await.unwrap().differing, 1);
            assert!(engine.verify("p%x").await.unwrap().in_sync);
            assert_ne!(redis.root_hash().await.unwrap(), l3.root_hash().await.unwrap());
        }
        engine.shutdown().await.unwrap();
        stack.cleanup().await;
    }
}

#[tokio::test]
async fn prefix_arguments_that_are_not_paths_are_refused_cleanly() {
    // Every stack: each one creates tables (and Redis keys) on connect, all are dropped.
    for stack in stacks("pfxbad").await {
        let engine = stack.engine(Config::default()).await;
        for bad in ["a..b", ".", "a.", "\0"] {
            match engine.verify(bad).await {
                Ok(r) => {
                    assert!(r.in_sync || stack.redis.is_none(), "{}: {bad:?}: {r:?}", stack.name)
                }
                Err(e) => assert!(!e.to_string().is_empty(), "{}: {bad:?}", stack.name),
            }
        }
        let refused = stack.sql.delete_prefix("", 1, 10).await;
        assert!(refused.is_err(), "{}: an empty prefix must be refused", stack.name);
        engine.shutdown().await.unwrap();
        stack.cleanup().await;
    }
}
