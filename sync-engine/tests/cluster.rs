//! `connect()` with `redis_cluster = true` runs the engine with L2 on a Redis Cluster
//! (`SYNC_ENGINE_TEST_REDIS_CLUSTER_URL`, started by `cargo xtask test`).
#![cfg(feature = "redis-cluster")]

use sync_engine::{Config, SecretUrl};

#[tokio::test]
async fn connect_runs_the_engine_over_a_redis_cluster() {
    let Ok(url) = std::env::var("SYNC_ENGINE_TEST_REDIS_CLUSTER_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and SYNC_ENGINE_TEST_REDIS_CLUSTER_URL is unset"
        );
        eprintln!("SKIPPED: SYNC_ENGINE_TEST_REDIS_CLUSTER_URL is unset");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("se-connect-cluster-{}:", std::process::id());
    let config = Config {
        sql_url: SecretUrl::new(format!("sqlite://{}/l3.db", dir.path().display())),
        wal_path: dir.path().join("wal.db"),
        redis_url: Some(SecretUrl::new(url)),
        redis_cluster: true,
        redis_prefix: prefix,
        ..Config::default()
    };
    let node = sync_engine::connect(config).await.expect("connects to the cluster");
    for i in 0..200 {
        node.engine.submit(&format!("c.{i}"), format!("v{i}")).await.unwrap();
    }
    node.engine.flush().await.unwrap();
    let report = node.engine.verify("").await.unwrap();
    assert!(report.in_sync, "L2 on the cluster matches L3: {report:?}");
    assert_eq!(report.differing, 0);
    let item = node.engine.get("c.42").await.unwrap().expect("stored");
    assert_eq!(item.content().as_ref(), b"v42");
    assert_eq!(node.engine.health().l2.map(|h| h.backend), Some("redis".to_owned()));
    node.engine.shutdown().await.unwrap();
}
