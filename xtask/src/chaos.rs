//! `cargo xtask chaos [--quick] [--seed N]`: the reliability harness of issue 10.
//!
//! Builds the `sync-engine-chaos` binaries in release mode, runs `chaos` (crash, outage, repair
//! and WAL-damage scenarios against private Redis / MariaDB / PostgreSQL instances it starts
//! itself, then every fuzz target with 100,000 cases, 2,000 with `--quick`), which writes
//! `<target>/chaos/summary.json`, then the security tests against the shared servers.
//! Extra arguments after `--` go to the `chaos` binary (`--only kill,wal`, `--keep`, ...).

use crate::{cargo, run, services};

pub fn chaos(args: &[String]) -> Result<(), String> {
    let (ours, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut chaos_args: Vec<String> = Vec::new();
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => chaos_args.push(a.clone()),
            "--seed" => {
                let v = it.next().ok_or("--seed needs a value")?;
                chaos_args.extend([a.clone(), v.clone()]);
            }
            other => {
                return Err(format!(
                    "chaos: unknown argument `{other}` (use --quick, --seed N, -- <chaos args>)"
                ))
            }
        }
    }
    chaos_args.extend(passthrough.iter().cloned());
    run(cargo().args(["build", "--release", "-p", "sync-engine-chaos", "--bins"]))?;
    let outcome = run(cargo()
        .args(["run", "--release", "--quiet", "-p", "sync-engine-chaos", "--bin", "chaos", "--"])
        .args(&chaos_args));
    let servers = services::ensure_all();
    let mut security = cargo();
    security.args([
        "test",
        "--release",
        "-p",
        "sync-engine-chaos",
        "--test",
        "security",
        "--test",
        "secrets_in_logs",
    ]);
    for s in &servers {
        match &s.url {
            Some(url) => security.env(s.env_var, url),
            None => security.env_remove(s.env_var),
        };
    }
    let security = run(&mut security);
    outcome.and(security)
}
