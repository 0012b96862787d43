//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Tiered storage engine: L1 in-process, Redis L2, SQL L3, a local WAL.
#[derive(Debug, Parser)]
#[command(name = "sync-engine", version, about)]
pub struct Cli {
    /// TOML configuration file (defaults < file < SYNC_ENGINE_* environment < flags).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// L3 archive URL (sqlite://PATH, mysql://..., postgres://...).
    #[arg(long, global = true)]
    pub sql: Option<String>,
    /// L2 Redis URL (redis://...); also SYNC_ENGINE_REDIS_URL.
    #[arg(long, global = true)]
    pub redis: Option<String>,
    /// WAL file path.
    #[arg(long, global = true)]
    pub wal: Option<PathBuf>,
    /// Machine-readable JSON output instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log progress (info level) to stderr.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest N items, read them back through each tier, verify, and print counts, Merkle roots,
    /// timings and throughput. Runs on embedded SQLite under ./sync-engine-data by default.
    Demo {
        /// Number of items to ingest.
        #[arg(long, default_value_t = 20_000)]
        items: u64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 512)]
        payload: usize,
    },
    /// Store a value durably.
    Put {
        /// Object id (dotted path).
        id: String,
        /// The value (UTF-8); use --file for bytes from a file.
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Explicit version (default: the engine's clock).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Print a value.
    Get {
        /// Object id.
        id: String,
    },
    /// Delete an id (a durable tombstone).
    Delete {
        /// Object id.
        id: String,
    },
    /// List ids starting with a prefix (byte-exact).
    Scan {
        /// Id prefix.
        prefix: String,
        /// At most this many ids.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Compare L2 with L3 under a dotted path prefix.
    Verify {
        /// Dotted path prefix (empty: everything).
        #[arg(default_value = "")]
        prefix: String,
        /// Also audit every L2 entry against its own integrity data (finds bytes changed
        /// behind the store's back, which the Merkle comparison cannot see; reads every entry).
        #[arg(long)]
        deep: bool,
    },
    /// Repair L2 from L3 under a dotted path prefix, touching only differing ids.
    Repair {
        /// Dotted path prefix (empty: everything).
        #[arg(default_value = "")]
        prefix: String,
        /// Also audit every L2 entry, and remove and rewrite from L3 the ones that fail.
        #[arg(long)]
        deep: bool,
    },
    /// The write-ahead log.
    Wal {
        /// status | drain
        #[command(subcommand)]
        action: WalAction,
    },
    /// Engine health and tier counts.
    Stats,
}

/// WAL subcommands.
#[derive(Debug, Subcommand)]
pub enum WalAction {
    /// Pending entries and bytes.
    Status,
    /// Drain pending entries into L3.
    Drain,
}
