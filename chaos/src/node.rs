//! Engine child processes (`chaos-node`): spawn with a configuration, follow their output
//! line by line with arrival times, send commands, SIGKILL.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::ledger::Ledger;
use crate::protocol::{parse, Line};
use crate::workload::OpKey;

/// One output line and when the harness read it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Arrival time.
    pub at: Instant,
    /// The parsed line.
    pub line: Line,
}

/// A running `chaos-node`.
pub struct Node {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    rx: Receiver<Event>,
    stderr: PathBuf,
    /// When the process was spawned.
    pub spawned: Instant,
    /// The run number its operations carry.
    pub run: u32,
}

/// How to start a `chaos-node`.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Path of the `chaos-node` binary.
    pub bin: PathBuf,
    /// `SYNC_ENGINE_*` configuration variables (the only environment it gets, with PATH and
    /// RUST_LOG / RUST_BACKTRACE).
    pub env: Vec<(String, String)>,
    /// Arguments (`ingest --seed ...`).
    pub args: Vec<String>,
    /// Where its stderr (tracing output) goes; its stdout transcript goes beside it (`.out`).
    pub stderr: PathBuf,
    /// Run number (for the ledger).
    pub run: u32,
}

impl Node {
    /// Spawn the child; a thread parses its stdout into events.
    pub fn spawn(spec: &NodeSpec) -> Result<Node, String> {
        let err = std::fs::File::create(&spec.stderr)
            .map_err(|e| format!("cannot create {}: {e}", spec.stderr.display()))?;
        let mut cmd = Command::new(&spec.bin);
        cmd.env_clear()
            .envs(spec.env.iter().cloned())
            .env("RUST_BACKTRACE", "1")
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_NODE_LOG")
                    .unwrap_or_else(|_| "warn,sync_engine_core=info".into()),
            )
            .args(&spec.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        let mut child =
            cmd.spawn().map_err(|e| format!("cannot start {}: {e}", spec.bin.display()))?;
        let stdout = child.stdout.take().ok_or("child has no stdout")?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let mut transcript = std::fs::File::create(spec.stderr.with_extension("out"))
            .map(std::io::BufWriter::new)
            .ok();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(t) = transcript.as_mut() {
                    let _ = writeln!(t, "{line}");
                }
                if tx.send(Event { at: Instant::now(), line: parse(&line) }).is_err() {
                    break;
                }
            }
        });
        Ok(Node {
            child: Some(child),
            stdin,
            rx,
            stderr: spec.stderr.clone(),
            spawned: Instant::now(),
            run: spec.run,
        })
    }

    /// The next event, waiting at most `timeout`; `Err(true)` when the output ended.
    pub fn next(&self, timeout: Duration) -> Result<Event, bool> {
        match self.rx.recv_timeout(timeout) {
            Ok(e) => Ok(e),
            Err(RecvTimeoutError::Timeout) => Err(false),
            Err(RecvTimeoutError::Disconnected) => Err(true),
        }
    }

    /// Send a command line (`go`, `stop`, `repair`).
    pub fn send(&mut self, cmd: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("the child's stdin is closed")?;
        writeln!(stdin, "{cmd}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("cannot send `{cmd}` to the child: {e}"))
    }

    /// SIGKILL the child and reap it (`Child::kill` is SIGKILL on Unix).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the child to exit by itself, at most `timeout` (then SIGKILL it).
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(s)) => {
                    self.child = None;
                    return Some(s);
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    /// The child's stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Path of the stderr file.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Record an event's `try` / `ack` / `fail` in the ledger. Returns an error for an
    /// acknowledgement of an operation never announced (a protocol bug).
    pub fn feed(&self, ledger: &mut Ledger, line: &Line) -> Result<(), String> {
        let key = |w: u32, n: u64| OpKey { run: self.run, worker: w, n };
        match line {
            Line::Try { w, n, id, op } => ledger.on_try(key(*w, *n), id, *op),
            Line::Ack { w, n, v } if !ledger.on_ack(key(*w, *n), *v) => {
                return Err(format!("ack of an operation never announced: w={w} n={n}"));
            }
            Line::Fail { w, n, .. } => ledger.on_fail(key(*w, *n)),
            _ => {}
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
