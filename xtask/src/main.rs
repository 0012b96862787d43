//! Project automation, run as `cargo xtask <command>`:
//!
//! - `test`  — start the local servers that are installed and down, export their URLs, run every
//!   test suite (nextest when installed), print a summary of suites run and skipped.
//!   Under `CI=true` a server that cannot be reached is a failure, not a skip.
//! - `bench <suite> [--quick] [--items N]` — run a benchmark suite (`merkle`, `cuckoo`, `wal`,
//!   `sql`, `redis`, `engine`, `all`) in release mode; figures go to `target/bench/<suite>.json`.
//! - `ci` — `cargo fmt --check`, `cargo clippy -D warnings`, then `test`.

mod chaos;
mod services;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("ci") => ci(),
        Some("chaos") => chaos::chaos(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test [-- nextest args] | bench <suite> [--quick] [--items N] | ci | chaos [--quick] [--seed N]>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn test(extra: &[String]) -> Result<(), String> {
    let servers = services::ensure_all();
    let mut cmd = cargo();
    if has_nextest() {
        cmd.args(["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
    }
    cmd.args(extra);
    for s in &servers {
        if let Some(url) = &s.url {
            cmd.env(s.env_var, url);
        } else {
            cmd.env_remove(s.env_var);
        }
    }
    let outcome = run(&mut cmd);
    summary(&servers);
    let missing: Vec<&str> = servers.iter().filter(|s| s.url.is_none()).map(|s| s.name).collect();
    outcome?;
    if is_ci() && !missing.is_empty() {
        return Err(format!("CI=true and these servers were unavailable: {}", missing.join(", ")));
    }
    Ok(())
}

fn summary(servers: &[services::Server]) {
    eprintln!("\n== cargo xtask test: summary ==");
    eprintln!("  unit, property and in-memory suites: run");
    for s in servers {
        match (&s.url, &s.note) {
            (Some(_), note) => {
                eprintln!("  {} suites: run ({} set{})", s.name, s.env_var, note_suffix(note))
            }
            (None, note) => eprintln!(
                "  {} suites: SKIPPED — {}",
                s.name,
                note.as_deref().unwrap_or("unavailable")
            ),
        }
    }
}

fn note_suffix(note: &Option<String>) -> String {
    note.as_ref().map(|n| format!("; {n}")).unwrap_or_default()
}

const SUITES: [&str; 6] = ["merkle", "cuckoo", "wal", "sql", "redis", "engine"];

fn bench(args: &[String]) -> Result<(), String> {
    let Some(suite) = args.first() else {
        return Err(format!("bench needs a suite: one of {} or all", SUITES.join(", ")));
    };
    let suites: Vec<&str> = if suite == "all" {
        SUITES.to_vec()
    } else if SUITES.contains(&suite.as_str()) {
        vec![suite.as_str()]
    } else {
        return Err(format!("unknown bench suite `{suite}`: one of {} or all", SUITES.join(", ")));
    };
    let servers = services::ensure_all();
    for s in suites {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "sync-engine-bench",
            "--features",
            s,
            "--",
            s,
        ]);
        cmd.args(&args[1..]);
        for srv in &servers {
            if let Some(url) = &srv.url {
                cmd.env(srv.env_var, url);
            }
        }
        run(&mut cmd)?;
    }
    Ok(())
}

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    test(&[])
}
