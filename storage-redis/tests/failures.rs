//! Failure behaviour against a PRIVATE redis-server child (never the shared one): killed
//! connections, a restart that loses everything, a paused server, unreachable addresses.

mod common;

use std::time::{Duration, Instant};

use sync_engine_core::merkle::{diff, Digest, MemTree};
use sync_engine_core::store::{CacheEntry, CacheExt, CacheStore, MerkleExt};
use sync_engine_core::{ErrorKind, ObjectId, SecretUrl, Status, SyncItem};
use sync_engine_redis::{RedisOptions, RedisStore};

use common::{options, OwnRedis, Src};

fn id(s: &str) -> ObjectId {
    ObjectId::new(s).unwrap()
}

fn fast(tag: &str) -> RedisOptions {
    RedisOptions {
        connect_timeout: Duration::from_millis(300),
        response_timeout: Duration::from_millis(300),
        ..options(tag)
    }
}

fn items(n: u64, version: u64) -> Vec<SyncItem> {
    (0..n)
        .map(|i| SyncItem::new(id(&format!("k.g{}.i{i}", i % 4)), version, format!("v{i}")))
        .collect()
}

async fn put_all(store: &RedisStore, items: &[SyncItem]) {
    let entries: Vec<CacheEntry> = items.iter().cloned().map(CacheEntry::new).collect();
    store.put_batch(&entries).await.unwrap();
}

fn tree(items: &[SyncItem]) -> MemTree {
    MemTree::from_items(items.iter().map(|i| (i.id().as_str(), i.leaf_digest()))).unwrap()
}

#[tokio::test]
async fn survives_client_kill() {
    let Some(server) = OwnRedis::start() else { return };
    let store = RedisStore::connect(&SecretUrl::new(server.url()), fast("kill")).await.unwrap();
    let first = items(50, 1);
    put_all(&store, &first).await;
    for (round, item) in first.iter().enumerate().take(3) {
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut server.admin())
            .unwrap();
        assert!(killed >= 1, "round {round}: our connection was not killed");
        // The next call finds the dead connection, reconnects and retries once, transparently.
        let got = store.get(item.id()).await.unwrap();
        assert_eq!(got.as_ref().map(SyncItem::version), Some(1), "round {round}");
    }
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .exec(&mut server.admin())
        .unwrap();
    let second = items(50, 2);
    put_all(&store, &second).await;
    assert_eq!(store.root_hash().await.unwrap(), tree(&second).root_hash());
}

#[tokio::test]
async fn survives_a_restart_that_lost_everything() {
    let Some(mut server) = OwnRedis::start() else { return };
    let store = RedisStore::connect(&SecretUrl::new(server.url()), fast("restart")).await.unwrap();
    let before = items(40, 1);
    put_all(&store, &before).await;
    assert_eq!(store.root_hash().await.unwrap(), tree(&before).root_hash());

    server.kill();
    let started = Instant::now();
    let e = store.get(before[0].id()).await.unwrap_err();
    assert_eq!(e.status(), Status::Temporary, "{e}");
    assert!(matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a down server took {:?}",
        started.elapsed()
    );
    let e = store.put_batch(&[CacheEntry::new(before[0].clone())]).await.unwrap_err();
    assert_eq!(e.status(), Status::Temporary, "{e}");
    assert!(store.ping().await.is_err());

    server.restart();
    // Reconnects by itself; the restarted server is empty and so is the shadow.
    let mut ok = false;
    for _ in 0..20 {
        if store.ping().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no reconnect after the restart");
    assert_eq!(store.get(before[0].id()).await.unwrap(), None);
    assert_eq!(store.root_hash().await.unwrap(), Digest::ZERO);
    // Scripts are reloaded (NOSCRIPT fallback) and the shadow is rebuilt by new writes.
    let after = items(30, 2);
    put_all(&store, &after).await;
    assert_eq!(store.root_hash().await.unwrap(), tree(&after).root_hash());
    let report = diff(&Src::of(&store), &tree(&after), "").await.unwrap();
    assert!(report.differences.is_empty());
}

#[tokio::test]
async fn a_paused_server_times_out_within_the_bound() {
    let Some(server) = OwnRedis::start() else { return };
    let store = RedisStore::connect(&SecretUrl::new(server.url()), fast("pause")).await.unwrap();
    let a = id("p.a");
    store.put(SyncItem::new(a.clone(), 1, "x"), None).await.unwrap();
    redis::cmd("CLIENT").arg("PAUSE").arg(2000).arg("ALL").exec(&mut server.admin()).unwrap();
    let started = Instant::now();
    let e = store.get(&a).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!((e.kind(), e.status()), (ErrorKind::Timeout, Status::Temporary), "{e}");
    assert!(took < Duration::from_millis(1500), "took {took:?} with a 300 ms response timeout");
    redis::cmd("CLIENT").arg("UNPAUSE").exec(&mut server.admin()).unwrap();
    let mut back = None;
    for _ in 0..20 {
        if let Ok(v) = store.get(&a).await {
            back = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back.map(|i| i.version()), Some(1));
}

#[tokio::test]
async fn unreachable_servers_fail_fast_and_temporarily() {
    // A closed port: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let e = RedisStore::connect(
        &SecretUrl::new(format!("redis://:hunter2@127.0.0.1:{port}/")),
        fast("refused"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Status::Temporary, "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!format!("{e} {e:?}").contains("hunter2"), "password leaked: {e:?}");
    // A black-holed address: bounded by the connect timeout (two attempts).
    let started = Instant::now();
    let e = RedisStore::connect(&SecretUrl::new("redis://10.255.255.1:6379/"), fast("blackhole"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Status::Temporary, "{e}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}
