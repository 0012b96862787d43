//! Fuzz targets of `sync_engine_chaos::fuzz`, one test each. Cases per target come from
//! `SYNC_ENGINE_FUZZ_CASES` (default 256 for CI; `cargo xtask chaos` runs 100,000 through the
//! `chaos` binary); the seed from `SYNC_ENGINE_FUZZ_SEED` (default fixed, so CI is
//! reproducible). A failure prints proptest's minimal failing input.

use sync_engine_chaos::fuzz::{self, cases_from_env, FuzzOutcome};

fn seed() -> u64 {
    std::env::var("SYNC_ENGINE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20261125)
}

fn check(run: fn(u32, u64) -> FuzzOutcome) {
    let out = run(cases_from_env(256), seed());
    assert!(
        out.failure.is_none(),
        "fuzz.{} failed: {}",
        out.target,
        out.failure.unwrap_or_default()
    );
    eprintln!("fuzz.{}: {} cases in {:.2} s", out.target, out.cases, out.seconds);
}

#[test]
fn object_id_parsing_never_panics_and_follows_the_rules() {
    check(fuzz::object_id);
}

#[test]
fn toml_config_errors_are_clear_and_never_show_passwords() {
    check(fuzz::config_toml);
}

#[test]
fn env_config_errors_are_clear_and_never_show_passwords() {
    check(fuzz::config_env);
}

#[test]
fn cuckoo_import_refuses_damage_without_panicking() {
    check(fuzz::cuckoo_import);
}

#[test]
fn wal_records_refuse_damage_without_panicking() {
    check(fuzz::wal_record);
}

#[test]
fn merkle_node_decoding_is_canonical_and_total() {
    check(fuzz::merkle_node);
}
