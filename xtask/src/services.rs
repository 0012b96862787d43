//! The local servers the test suites use: find them, start them when installed and down.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One server, and the URL exported to the tests when it is reachable.
pub struct Server {
    /// Human name.
    pub name: &'static str,
    /// Environment variable the tests read.
    pub env_var: &'static str,
    /// URL when reachable.
    pub url: Option<String>,
    /// Why it was skipped, or how it was started.
    pub note: Option<String>,
}

struct Spec {
    name: &'static str,
    env_var: &'static str,
    port: u16,
    url: &'static str,
    binary: &'static str,
    start: fn() -> Command,
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

const SPECS: [Spec; 4] = [
    Spec {
        name: "redis",
        env_var: "SYNC_ENGINE_TEST_REDIS_URL",
        port: 6379,
        url: "redis://127.0.0.1:6379/",
        binary: "redis-server",
        start: || {
            sh("redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no")
        },
    },
    Spec {
        name: "redis-cluster",
        env_var: "SYNC_ENGINE_TEST_REDIS_CLUSTER_URL",
        port: 7101,
        url: "redis://127.0.0.1:7101/",
        binary: "redis-cli",
        start: start_cluster,
    },
    Spec {
        name: "mariadb",
        env_var: "SYNC_ENGINE_TEST_MYSQL_URL",
        port: 3306,
        url: "mysql://root@127.0.0.1:3306/test",
        binary: "/usr/sbin/mariadbd",
        start: || sh("start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"),
    },
    Spec {
        name: "postgres",
        env_var: "SYNC_ENGINE_TEST_POSTGRES_URL",
        port: 5432,
        url: "postgres://postgres@127.0.0.1:5432/test",
        binary: "pg_ctlcluster",
        start: || {
            sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main start")
        },
    },
];

/// A local 3-primary Redis Cluster on loopback ports 7101–7103 (fresh node files in a new
/// temporary directory), created with `redis-cli --cluster create`; returns once
/// `cluster_state:ok` (the port only opens then: the nodes listen before, but the spec's
/// readiness is the first node's port, so the script waits before exiting).
fn start_cluster() -> Command {
    sh(r#"command -v redis-server >/dev/null || exit 1
d=$(mktemp -d /tmp/sync-engine-cluster.XXXXXX) || exit 1
for p in 7101 7102 7103; do
  redis-server --port $p --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$d/nodes-$p.conf" \
    --dir "$d" --save '' --appendonly no --daemonize yes --logfile "$d/$p.log" || exit 1
done
for i in $(seq 1 50); do redis-cli -p 7103 ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli --cluster create 127.0.0.1:7101 127.0.0.1:7102 127.0.0.1:7103 --cluster-replicas 0 --cluster-yes >"$d/create.log" 2>&1 || exit 1
for i in $(seq 1 100); do redis-cli -p 7101 cluster info | grep -q cluster_state:ok && exit 0; sleep 0.2; done
exit 1"#)
}

fn reachable(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

fn installed(binary: &str) -> bool {
    if binary.starts_with('/') {
        return Path::new(binary).exists();
    }
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Make every server reachable if it can be; report each one's URL or why not.
pub fn ensure_all() -> Vec<Server> {
    SPECS.iter().map(ensure).collect()
}

fn ensure(spec: &Spec) -> Server {
    let mut server = Server { name: spec.name, env_var: spec.env_var, url: None, note: None };
    // An explicit URL in the environment wins: the user points the tests at their own server.
    if let Ok(url) = std::env::var(spec.env_var) {
        if !url.is_empty() {
            server.url = Some(url);
            server.note = Some("URL taken from the environment".into());
            return server;
        }
    }
    if reachable(spec.port) {
        server.url = Some(spec.url.into());
        return server;
    }
    if !installed(spec.binary) {
        server.note = Some(format!(
            "{} is not installed and nothing listens on port {}",
            spec.binary, spec.port
        ));
        return server;
    }
    eprintln!("xtask: {} is down; starting it", spec.name);
    let started = (spec.start)().stdout(Stdio::null()).status();
    if let Err(e) = started {
        server.note = Some(format!("could not start {}: {e}", spec.name));
        return server;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reachable(spec.port) {
            server.url = Some(spec.url.into());
            server.note = Some("started by xtask".into());
            return server;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    server.note =
        Some(format!("started {} but port {} never answered within 30 s", spec.name, spec.port));
    server
}
