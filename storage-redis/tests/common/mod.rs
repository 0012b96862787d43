//! Helpers shared by the integration tests: stores under unique prefixes on the shared server
//! (cleaned up on drop), a private redis-server child for kill/restart tests, and a diff adapter.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sync_engine_core::conformance::server_url;
use sync_engine_core::merkle::{Children, ChildrenSource, NodeKey, NodeValue};
use sync_engine_core::store::MerkleStore;
use sync_engine_core::SecretUrl;
use sync_engine_redis::{RedisOptions, RedisStore};

/// The shared server's URL, or None (the suite then says loudly that it skipped).
pub fn shared() -> Option<String> {
    server_url("SYNC_ENGINE_TEST_REDIS_URL")
}

/// A prefix unique to this process and call.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("se-test:{tag}:{}:{nanos}:{n}:", std::process::id())
}

/// A store under a fresh prefix; its keys are deleted when the guard drops (even on panic).
pub struct TestStore {
    pub store: RedisStore,
    url: String,
    pub prefix: String,
}

impl std::ops::Deref for TestStore {
    type Target = RedisStore;
    fn deref(&self) -> &RedisStore {
        &self.store
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

/// Delete the keys of the store with `prefix` (synchronously, for Drop).
pub fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else { return };
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else { return };
    let pattern = format!("{prefix}{{{prefix}}}*");
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
        else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> = redis::cmd("UNLINK").arg(keys).query(&mut con);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Options with a fresh prefix.
pub fn options(tag: &str) -> RedisOptions {
    RedisOptions::default().with_prefix(unique_prefix(tag))
}

/// A store on `url` with `opts`, cleaned up on drop.
pub async fn store_with(url: &str, opts: RedisOptions) -> TestStore {
    let prefix = opts.prefix.clone();
    let store = RedisStore::connect(&SecretUrl::new(url), opts).await.expect("connect");
    TestStore { store, url: url.to_owned(), prefix }
}

/// Number of keys of the store with `prefix` on `url`, by kind letter (`d`, `n`, `e`).
pub fn count_keys(url: &str, prefix: &str, kind: char) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut con = client.get_connection().unwrap();
    let pattern = format!("{prefix}{{{prefix}}}{kind}:*");
    let mut cursor: u64 = 0;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .unwrap();
        n += keys.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// A Merkle store seen as a diff source (owned handles keep the futures `'static`).
pub struct Src(pub Arc<dyn MerkleStore>);

impl Src {
    pub fn of(store: &RedisStore) -> Src {
        Src(Arc::new(store.clone()))
    }
}

impl ChildrenSource for Src {
    type Error = sync_engine_core::Error;

    fn node(
        &self,
        key: &NodeKey,
    ) -> impl std::future::Future<Output = Result<Option<NodeValue>, Self::Error>> + Send {
        let (store, key) = (self.0.clone(), key.clone());
        async move { store.node(&key).await }
    }

    fn children(
        &self,
        key: &NodeKey,
    ) -> impl std::future::Future<Output = Result<Children, Self::Error>> + Send {
        let (store, key) = (self.0.clone(), key.clone());
        async move { store.children(&key).await }
    }

    fn children_many(
        &self,
        keys: &[NodeKey],
    ) -> impl std::future::Future<Output = Result<Vec<Children>, Self::Error>> + Send {
        let (store, keys) = (self.0.clone(), keys.to_vec());
        async move { store.children_many(&keys).await }
    }
}

/// A private redis-server child on a free loopback port, for tests that kill or restart it.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

/// A random bindable port below Linux's ephemeral range: `bind(0)` hands a just-released port
/// to the next test process often enough for two private servers to collide (see the chaos
/// crate's `free_port`).
fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..200)
        .map(|_| rng.random_range(20_000..32_000))
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 20000..32000")
}

impl OwnRedis {
    /// Start one, or None when `redis-server` is not installed (the caller skips loudly).
    pub fn start() -> Option<OwnRedis> {
        let mut r = OwnRedis { port: free_port(), child: None };
        if !r.spawn() {
            eprintln!("SKIPPED: redis-server is not installed or did not start");
            return None;
        }
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection())
                {
                    if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                        return true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kill the server (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not restart on port {}", self.port);
    }

    /// A plain synchronous connection (for CLIENT KILL, CLIENT PAUSE, ...).
    pub fn admin(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
