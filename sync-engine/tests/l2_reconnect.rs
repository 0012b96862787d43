//! An L2 that is down when the process starts is connected later and repaired from L3, instead
//! of being left out for the life of the process.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_engine::core::engine::L2Store;
use sync_engine::core::store::{CacheExt, CacheStore, MerkleExt};
use sync_engine::memory::{MemoryArchive, MemoryCache, MemoryWal};
use sync_engine::reconnect::{Connector, ReconnectingL2};
use sync_engine::{Config, Error, ErrorKind, ObjectId, SecretUrl, SyncEngine};

fn config() -> Config {
    Config {
        batch_max_items: 16,
        batch_max_age_ms: 10,
        breaker_failure_threshold: 1,
        breaker_open_ms: 50,
        health_check_interval_ms: 20,
        ..Config::default()
    }
}

/// A connector to `cache` that fails while `up` is false, counting attempts.
fn connector(
    cache: MemoryCache,
    up: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
) -> Connector<dyn L2Store> {
    Arc::new(move || {
        let (cache, up, attempts) = (cache.clone(), up.clone(), attempts.clone());
        Box::pin(async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            if up.load(Ordering::SeqCst) {
                Ok(Arc::new(cache) as Arc<dyn L2Store>)
            } else {
                Err(Error::unavailable("connection refused"))
            }
        })
    })
}

#[tokio::test]
async fn l2_down_at_start_is_connected_and_repaired_when_it_returns() {
    let cache = MemoryCache::new();
    let archive = MemoryArchive::new();
    let up = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let l2 = Arc::new(ReconnectingL2::new(
        "memory",
        "memory://l2",
        Duration::from_millis(20),
        connector(cache.clone(), up.clone(), attempts.clone()),
    ));
    let engine = SyncEngine::builder(config())
        .archive(archive.clone())
        .wal(MemoryWal::default())
        .cache_arc(l2.clone())
        .start()
        .await
        .expect("starts without L2");
    for i in 0..40 {
        engine.submit(&format!("a.{i}"), format!("v{i}")).await.unwrap();
    }
    engine.flush().await.unwrap();
    // Reads are served (L1/L3) while L2 is down; L2 holds nothing.
    assert_eq!(
        engine.get("a.7").await.unwrap().map(|i| i.content().to_vec()),
        Some(b"v7".to_vec())
    );
    let probe = ObjectId::new("a.7").unwrap();
    assert_eq!(cache.get(&probe).await.unwrap(), None);
    assert!(!l2.connected());
    let err = l2.get(&probe).await.expect_err("not connected yet");
    assert_eq!(err.kind(), ErrorKind::Unavailable);

    up.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let _ = engine.tick().await;
        if l2.connected() && cache.root_hash().await.unwrap() == archive.root_hash().await.unwrap()
        {
            break;
        }
        assert!(Instant::now() < deadline, "L2 was not connected and repaired within 5 s");
    }
    let got = cache.get(&probe).await.unwrap().expect("repaired into L2");
    assert_eq!(got.content().as_ref(), b"v7");
    // Attempts were spaced, not one per operation.
    assert!(attempts.load(Ordering::SeqCst) < 200, "{} attempts", attempts.load(Ordering::SeqCst));
    engine.shutdown().await.unwrap();
}

#[tokio::test]
async fn attempts_are_spaced_by_retry_every() {
    let up = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let l2 = ReconnectingL2::new(
        "memory",
        "memory://l2",
        Duration::from_secs(60),
        connector(MemoryCache::new(), up.clone(), attempts.clone()),
    );
    for _ in 0..100 {
        let err = l2.ping().await.expect_err("down");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "one attempt per retry interval");
    let err = l2.ping().await.expect_err("down");
    assert!(err.to_string().contains("memory://l2"), "the error names the target: {err}");
}

/// Against a real redis-server that starts only after the engine did.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_started_after_the_engine_is_used_once_it_answers() {
    use std::process::{Child, Command, Stdio};

    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    if Command::new("redis-server").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: redis-server is not installed"
        );
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        sql_url: SecretUrl::new(format!("sqlite://{}/l3.db", dir.path().display())),
        wal_path: dir.path().join("wal.db"),
        redis_url: Some(SecretUrl::new(format!("redis://127.0.0.1:{port}/"))),
        redis_prefix: "reconnect-test:".into(),
        breaker_open_ms: 100,
        breaker_failure_threshold: 1,
        redis_connect_timeout_ms: 200,
        ..Config::default()
    };
    let node = sync_engine::connect(cfg).await.expect("starts while Redis is down");
    for i in 0..30 {
        node.engine.submit(&format!("r.{i}"), format!("v{i}")).await.unwrap();
    }
    node.engine.flush().await.unwrap();
    let l2 = node.backends.l2.clone().expect("an L2 handle even though Redis was down");
    let server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Kill)
        .expect("redis-server starts");
    let probe = ObjectId::new("r.3").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = node.engine.tick().await;
        if let Ok(Some(item)) = l2.get(&probe).await {
            assert_eq!(item.content().as_ref(), b"v3");
            break;
        }
        assert!(Instant::now() < deadline, "Redis was not used within 10 s of starting");
    }
    let l3_root = node.backends.l3.root_hash().await.unwrap();
    assert_eq!(l2.root_hash().await.unwrap(), l3_root, "L2 repaired to L3's root");
    node.engine.shutdown().await.unwrap();
    drop(server);
}
