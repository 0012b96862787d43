//! The scenarios of issue 10. Each takes the shared [`crate::Harness`] and the private servers
//! it needs, and returns its figures as [`crate::ScenarioResult`]s; a violated promise is
//! a figure (`lost`, `failures`, `panics`, ...), never an early return, so a run always
//! reports everything it saw. `Err` means the scenario could not be run at all.
//!
//! 1. [`kill`]: SIGKILL during durable ingest, restart, read everything back.
//! 2. [`sql_outage`]: the SQL server down for at least 10 s mid-ingest; WAL absorbs, drains.
//! 3. [`redis_loss`]: Redis flushed or restarted empty under load; reads stay right, L2 repaired.
//! 4. [`tamper`]: 1% of Redis keys changed behind the engine's back; verify and repair.
//! 5. [`wal_damage`]: the WAL file cut or garbled; recovery or a clear error, never a panic.

pub mod kill;
pub mod redis_loss;
pub mod sql_outage;
pub mod tamper;
pub mod wal_damage;
