//! Private server instances the scenarios may stop, crash, flush and restart: a
//! `redis-server`, a `mariadbd` and a PostgreSQL `postgres`, each on a free loopback port with
//! its own data directory. The shared servers on 3306 / 5432 / 6379 are never touched.
//!
//! Every instance is a child process of the harness; dropping its handle kills it (SIGKILL)
//! and waits for it. Stopping is crash-like on purpose: SIGKILL for `mariadbd` and Redis,
//! an immediate shutdown (SIGQUIT, no checkpoint, WAL recovery at the next start) for
//! PostgreSQL, whose backends would otherwise outlive a SIGKILLed postmaster.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Ports [`free_port`] draws from: below Linux's ephemeral range, so outgoing connections do
/// not take them.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1: drawn at random from [`PORTS`] and checked bindable.
///
/// Chaos tests run in parallel processes. The kernel's `bind(0)` hands a just-released port to
/// the next caller often enough that two of them started servers on the same port, and the
/// loser, whose server could not bind, took the winner's (already answering) server for its
/// own. Random draws from 12,000 ports make that unlikely, not impossible.
pub fn free_port() -> Result<u16, String> {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(PORTS);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no free port in {PORTS:?} after 200 draws"))
}

fn reachable(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -s {sig} {pid} failed: {status}"))
    }
}

fn stop_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Wait until `check` passes or the server process exits or the timeout ends.
fn wait_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    check: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = fs::read_to_string(log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            return Err(format!("{what} exited during start ({status}); log tail:\n{tail}"));
        }
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{what} did not become ready within {READY_TIMEOUT:?} (log: {})", log.display()))
}

fn log_file(path: &Path) -> Result<(Stdio, Stdio), String> {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let g = f.try_clone().map_err(|e| format!("cannot clone a log handle: {e}"))?;
    Ok((Stdio::from(f), Stdio::from(g)))
}

/// A private `redis-server` without persistence (a restart comes back empty).
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// True when `redis-server` is installed.
    pub fn available() -> bool {
        which("redis-server").is_some()
    }

    /// Start one in `dir` on a free port.
    pub fn start(dir: &Path) -> Result<PrivateRedis, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut r = PrivateRedis { port: free_port()?, dir: dir.to_path_buf(), child: None };
        r.restart()?;
        Ok(r)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// (Re)start the server on its port; it comes back empty.
    pub fn restart(&mut self) -> Result<(), String> {
        stop_child(&mut self.child);
        let log = self.dir.join("redis.log");
        let (out, err) = log_file(&log)?;
        let bin = which("redis-server").ok_or("redis-server is not installed")?;
        let mut child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        let port = self.port;
        wait_ready("redis-server", &mut child, &log, || reachable(port))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kill the server (SIGKILL) and leave it down.
    pub fn kill(&mut self) {
        stop_child(&mut self.child);
    }

    /// Run one command on a fresh connection (e.g. `FLUSHALL`).
    pub fn command(&self, args: &[&str]) -> Result<redis::Value, String> {
        let client = redis::Client::open(self.url(0)).map_err(|e| format!("redis url: {e}"))?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to the private redis: {e}"))?;
        let mut cmd = redis::cmd(args.first().copied().unwrap_or("PING"));
        for a in args.iter().skip(1) {
            cmd.arg(*a);
        }
        cmd.query(&mut con).map_err(|e| format!("redis {args:?}: {e}"))
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Which SQL server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    /// MariaDB (`mariadbd`), URL scheme `mysql://`.
    MariaDb,
    /// PostgreSQL.
    Postgres,
}

impl SqlKind {
    /// `mariadb` / `postgres`, as used in scenario names.
    pub fn name(self) -> &'static str {
        match self {
            SqlKind::MariaDb => "mariadb",
            SqlKind::Postgres => "postgres",
        }
    }

    /// True when the server binaries are installed.
    pub fn available(self) -> bool {
        match self {
            SqlKind::MariaDb => {
                which("mariadbd").is_some() && which("mariadb-install-db").is_some()
            }
            SqlKind::Postgres => pg_bin("postgres").is_some() && pg_bin("initdb").is_some(),
        }
    }
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.join(name)).find(|p| p.is_file())
}

/// uid and gid of a system user, from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A private SQL server (MariaDB or PostgreSQL) with its own data directory.
pub struct PrivateSql {
    kind: SqlKind,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// PostgreSQL refuses to run as root: (uid, gid) of the `postgres` user then.
    run_as: Option<(u32, u32)>,
}

impl PrivateSql {
    /// Initialise a data directory under `dir` and start the server on a free port.
    pub fn start(kind: SqlKind, dir: &Path) -> Result<PrivateSql, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut s = PrivateSql {
            kind,
            port: free_port()?,
            dir: dir.to_path_buf(),
            child: None,
            run_as: None,
        };
        match kind {
            SqlKind::MariaDb => s.init_mariadb()?,
            SqlKind::Postgres => s.init_postgres()?,
        }
        s.start_again()?;
        Ok(s)
    }

    /// Which server.
    pub fn kind(&self) -> SqlKind {
        self.kind
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn init_mariadb(&mut self) -> Result<(), String> {
        let bin = which("mariadb-install-db").ok_or("mariadb-install-db is not installed")?;
        // The bootstrap of MariaDB 10.11 occasionally segfaults (seen on this 2-core machine
        // while other servers start): retry on a fresh directory before giving up.
        let mut last = String::new();
        for attempt in 1..=3 {
            let _ = fs::remove_dir_all(self.data());
            let out = Command::new(&bin)
                .args([
                    "--no-defaults",
                    "--auth-root-authentication-method=normal",
                    "--user=root",
                    "--skip-test-db",
                    "--skip-name-resolve",
                ])
                .arg(format!("--datadir={}", self.data().display()))
                .output()
                .map_err(|e| format!("cannot run mariadb-install-db: {e}"))?;
            if out.status.success() {
                return Ok(());
            }
            last = String::from_utf8_lossy(&out.stderr).chars().take(2000).collect();
            eprintln!("mariadb-install-db failed (attempt {attempt} of 3); retrying");
        }
        Err(format!("mariadb-install-db failed 3 times; last error: {last}"))
    }

    fn init_postgres(&mut self) -> Result<(), String> {
        if running_as_root() {
            let ids = user_ids("postgres")
                .ok_or("running as root and there is no `postgres` user to run PostgreSQL as")?;
            self.run_as = Some(ids);
            let st = Command::new("chown")
                .args(["-R", &format!("{}:{}", ids.0, ids.1)])
                .arg(&self.dir)
                .status()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            if !st.success() {
                return Err(format!("chown of {} failed", self.dir.display()));
            }
        }
        let bin = pg_bin("initdb").ok_or("initdb is not installed")?;
        let mut cmd = Command::new(bin);
        cmd.arg("-D").arg(self.data()).args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    }

    /// Start the server (again) on its port and data directory; returns once it accepts queries.
    pub fn start_again(&mut self) -> Result<(), String> {
        stop_child(&mut self.child);
        let log = self.dir.join(format!("{}.log", self.kind.name()));
        let (out, err) = log_file(&log)?;
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            SqlKind::MariaDb => {
                let mut c = Command::new(which("mariadbd").ok_or("mariadbd is not installed")?);
                c.arg("--no-defaults")
                    .arg(format!("--datadir={}", self.data().display()))
                    .arg(format!("--port={port}"))
                    .arg("--bind-address=127.0.0.1")
                    .arg(format!("--socket={}", self.dir.join("mysqld.sock").display()))
                    .arg(format!("--pid-file={}", self.dir.join("mysqld.pid").display()))
                    .args(["--user=root", "--skip-grant-tables", "--skip-log-bin"])
                    .args(["--innodb-buffer-pool-size=64M", "--max-connections=500"]);
                c
            }
            SqlKind::Postgres => {
                let mut c = Command::new(pg_bin("postgres").ok_or("postgres is not installed")?);
                c.arg("-D")
                    .arg(self.data())
                    .args(["-p", &port, "-c", "listen_addresses=127.0.0.1"])
                    .args(["-c", "unix_socket_directories=", "-c", "max_connections=300"]);
                if let Some((uid, gid)) = self.run_as {
                    use std::os::unix::process::CommandExt;
                    c.uid(uid).gid(gid);
                }
                c
            }
        };
        let mut child = cmd
            .stdout(out)
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.kind.name()))?;
        let probe = self.probe_cmd("SELECT 1");
        wait_ready(self.kind.name(), &mut child, &log, || {
            reachable(self.port)
                && Command::new(&probe[0])
                    .args(&probe[1..])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn probe_cmd(&self, sql: &str) -> Vec<String> {
        let port = self.port.to_string();
        match self.kind {
            SqlKind::MariaDb => vec![
                "mariadb".into(),
                "--no-defaults".into(),
                "-h127.0.0.1".into(),
                format!("-P{port}"),
                "-uroot".into(),
                "-e".into(),
                sql.into(),
            ],
            SqlKind::Postgres => vec![
                "psql".into(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port,
                "-U".into(),
                "postgres".into(),
                "-d".into(),
                "postgres".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
                "-c".into(),
                sql.into(),
            ],
        }
    }

    /// Run one SQL statement through the command-line client.
    pub fn exec(&self, sql: &str) -> Result<(), String> {
        let cmd = self.probe_cmd(sql);
        let out = Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cmd[0]))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{sql}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Create database `name` and return its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.exec(&format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        match self.kind {
            SqlKind::MariaDb => format!("mysql://root@127.0.0.1:{}/{db}", self.port),
            SqlKind::Postgres => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
        }
    }

    /// Crash-stop the server: SIGKILL for MariaDB; immediate shutdown (SIGQUIT: no checkpoint,
    /// crash recovery at the next start) for PostgreSQL. Returns once the process is gone.
    pub fn crash_stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        match self.kind {
            SqlKind::MariaDb => {
                let _ = child.kill();
            }
            SqlKind::Postgres => signal(child.id(), "QUIT")?,
        }
        child.wait().map_err(|e| format!("waiting for {}: {e}", self.kind.name()))?;
        // PostgreSQL backends exit right after the postmaster; give the port a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while reachable(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// True while the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for PrivateSql {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.kind == SqlKind::Postgres && signal(child.id(), "QUIT").is_ok() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        stop_child(&mut self.child);
    }
}
