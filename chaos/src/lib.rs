//! The reliability harness of sync-engine (issue 10): it proves, with real processes and real
//! servers, that an acknowledged durable write survives crashes and outages and that the cache
//! is repaired to match the database — and writes the figures down.
//!
//! - [`workload`]: the seeded operations a child performs, and the content that names them.
//! - [`protocol`]: the line protocol of the `chaos-node` child process.
//! - [`ledger`]: what was acknowledged, and the check of what is read back.
//! - [`node`]: spawning, following and SIGKILLing `chaos-node` processes.
//! - [`servers`]: private Redis, MariaDB and PostgreSQL instances (own ports, own data
//!   directories) that scenarios crash, flush and restart; the shared servers are never touched.
//! - [`check`]: the harness's own engine restart that reads everything back.
//! - [`walfile`]: damaging WAL files and computing what must survive the damage.
//! - [`harness`]: the context scenarios share, and the loop that follows a child.
//! - [`scenarios`]: the five scenarios of issue 10.
//! - [`fuzz`]: proptest fuzz targets over every input decoder, runnable with any case count.
//! - [`summary`]: the figures, written to `target/chaos/summary.json`.
//!
//! Run everything with `cargo xtask chaos [--quick] [--seed N]`; the short form of scenarios
//! 1–5 runs in `cargo xtask test` (chaos/tests/short.rs). RELIABILITY.md holds the figures.

pub mod check;
pub mod fuzz;
pub mod harness;
pub mod ledger;
pub mod node;
pub mod protocol;
pub mod scenarios;
pub mod servers;
pub mod summary;
pub mod walfile;
pub mod workload;

pub use harness::Harness;
pub use summary::ScenarioResult;
