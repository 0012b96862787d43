//! No password reaches a log line or an error message. Every tracing event of this process
//! (all levels, `log` records included) is captured while engines connect with URLs that carry
//! a password: to unreachable servers (errors), to the shared servers when their URLs are set
//! (PostgreSQL's trust authentication accepts any password, so a whole engine runs with one;
//! MariaDB and Redis refuse it), and through configuration loading. The captured text and every
//! error must not contain the password, and a URL shown in an error must show `***` instead.
//!
//! One test in its own binary: it installs the process-wide subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};

use sync_engine::{Config, SecretUrl, SubmitOptions};
use sync_engine_core::conformance::server_url;

const PW: &str = "Hunter2-s3cr3t-PW";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

fn with_password(url: &str) -> String {
    // scheme://user@host → scheme://user:PW@host ; scheme://host → scheme://:PW@host
    let (scheme, rest) = url.split_once("://").expect("a URL");
    match rest.split_once('@') {
        Some((user, host)) => {
            format!("{scheme}://{}:{PW}@{host}", user.split(':').next().unwrap_or(user))
        }
        None => format!("{scheme}://:{PW}@{rest}"),
    }
}

fn check_error(what: &str, shown: &str, errors: &mut Vec<String>) {
    assert!(!shown.contains(PW), "{what}: the error shows the password: {shown}");
    if shown.contains("://") && shown.contains('@') && shown.contains(":***@") {
        errors.push(format!("{what}: redacted ok"));
    }
    errors.push(format!("{what}: {shown}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_logs_or_errors() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .try_init()
        .expect("the only subscriber of this test binary");
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    let mut redacted_shown = 0;

    // Unreachable servers: every connect fails, naming the URL without its password.
    let unreachable = [
        ("sql_url", format!("mysql://root:{PW}@127.0.0.1:1/test")),
        ("sql_url", format!("postgres://app:{PW}@127.0.0.1:1/test")),
        ("redis_url", format!("redis://:{PW}@127.0.0.1:1/0")),
        ("redis_url", format!("redis://user:{PW}@127.0.0.1:1/0")),
    ];
    for (i, (field, url)) in unreachable.iter().enumerate() {
        let mut config = Config {
            wal_path: dir.path().join(format!("wal-{i}.db")),
            sql_url: SecretUrl::new(format!(
                "sqlite://{}",
                dir.path().join(format!("a-{i}.db")).display()
            )),
            startup_l3_attempts: 1,
            redis_connect_timeout_ms: 300,
            sql_acquire_timeout_ms: 300,
            ..Config::default()
        };
        if *field == "sql_url" {
            config.sql_url = SecretUrl::new(url.clone());
        } else {
            config.redis_url = Some(SecretUrl::new(url.clone()));
        }
        assert!(!format!("{config:?}").contains(PW), "Config's Debug shows the password");
        match sync_engine::connect(config).await {
            Err(e) => {
                let shown = format!("{e} / {e:?}");
                if shown.contains(":***@") {
                    redacted_shown += 1;
                }
                check_error(url, &shown, &mut seen);
            }
            Ok(node) => {
                // An unreachable L2 is not fatal: the engine starts without it.
                assert_eq!(*field, "redis_url", "connect to {url} succeeded");
                node.engine.shutdown().await.unwrap();
            }
        }
    }
    assert!(redacted_shown >= 2, "errors should name the URL, redacted: {seen:#?}");

    // Configuration from TOML and the environment.
    let toml = format!(
        "sql_url = \"postgres://u:{PW}@db/x\"\nredis_url = \"redis://:{PW}@cache:6379/\"\n"
    );
    let c = Config::from_toml_str(&toml).unwrap();
    assert!(!format!("{c:?}").contains(PW));
    assert_eq!(c.sql_url.to_string(), "postgres://u:***@db/x");
    let e = Config::from_toml_str(&format!("sql_url = \"ftp://u:{PW}@db/x\"")).unwrap_err();
    check_error("bad scheme", &e.to_string(), &mut seen);
    let e =
        Config::from_env_vars(vec![("SYNC_ENGINE_REDIS_URL".into(), format!("http://:{PW}@x"))])
            .unwrap_err();
    check_error("bad env scheme", &e.to_string(), &mut seen);

    // The shared servers with a password in the URL.
    let shared = [
        ("SYNC_ENGINE_TEST_MYSQL_URL", "sql"),
        ("SYNC_ENGINE_TEST_POSTGRES_URL", "sql"),
        ("SYNC_ENGINE_TEST_REDIS_URL", "redis"),
    ];
    for (i, (var, kind)) in shared.iter().enumerate() {
        let Some(url) = server_url(var) else { continue };
        let url = with_password(&url);
        let mut config = Config {
            wal_path: dir.path().join(format!("wal-s{i}.db")),
            sql_url: SecretUrl::new(format!(
                "sqlite://{}",
                dir.path().join(format!("s-{i}.db")).display()
            )),
            redis_prefix: format!("chaos-secret-{}-{i}:", std::process::id()),
            startup_l3_attempts: 1,
            ..Config::default()
        };
        if *kind == "sql" {
            config.sql_url = SecretUrl::new(url.clone());
        } else {
            config.redis_url = Some(SecretUrl::new(url.clone()));
        }
        match sync_engine::connect(config).await {
            Ok(node) => {
                // Trust authentication (PostgreSQL) or a server ignoring the password: run a
                // little so that connection, query and maintenance logs are produced.
                let id = format!("chaos.secret.p{}.i{i}", std::process::id());
                node.engine.submit_with(&id, "x", SubmitOptions::durable()).await.unwrap();
                let _ = node.engine.get(&id).await.unwrap();
                let _ = node.engine.tick().await;
                let _ = node.engine.delete_with(&id, SubmitOptions::durable()).await;
                let l2 = node.backends.l2.is_some();
                node.engine.shutdown().await.unwrap();
                seen.push(format!("{var}: started with a password in the URL (L2 attached: {l2})"));
            }
            Err(e) => check_error(var, &format!("{e} / {e:?}"), &mut seen),
        }
    }

    let logs =
        String::from_utf8_lossy(&capture.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(logs.len() > 100, "nothing was logged: the capture is not working");
    assert!(logs.contains(":***@"), "URLs should appear in logs redacted");
    if let Some(at) = logs.find(PW) {
        let start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
        panic!("a log line shows the password: {}", &logs[start..end]);
    }
    eprintln!(
        "{} bytes of logs without the password; errors seen:\n{}",
        logs.len(),
        seen.join("\n")
    );
}
