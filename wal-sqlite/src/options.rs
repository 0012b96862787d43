//! [`WalOptions`]: the bounds and knobs of one [`crate::SqliteWal`].

use std::time::Duration;

use sync_engine_core::Config;

/// How a [`crate::SqliteWal`] is bounded and opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// An append that would leave more than this many entries pending is refused with
    /// Backpressure and stores nothing (`Config::wal_max_items`).
    pub max_items: u64,
    /// ... or more than this many pending bytes, counted as encoded record bytes
    /// (`Config::wal_max_bytes`).
    pub max_bytes: u64,
    /// How long `open` waits for another handle (this process or another) to release the
    /// file's lock before failing. Default 5 s.
    pub lock_timeout: Duration,
    /// Verify every record's checksum at open (quarantining damaged ones, detecting missing
    /// sequence numbers). Costs one read of the pending entries. Default true.
    pub verify_on_open: bool,
    /// Upper bound on the record bytes one group commit collects before committing; bounds
    /// the latency one commit adds to the appends queued behind it. Default 16 MiB.
    pub max_group_bytes: usize,
}

impl Default for WalOptions {
    /// The defaults of [`Config`]: 1,000,000 items, 1 GiB.
    fn default() -> WalOptions {
        let c = Config::default();
        WalOptions::from_config(&c)
    }
}

impl WalOptions {
    /// Bounds from a config (`wal_max_items`, `wal_max_bytes`), other knobs at their defaults.
    pub fn from_config(config: &Config) -> WalOptions {
        WalOptions {
            max_items: config.wal_max_items,
            max_bytes: config.wal_max_bytes,
            lock_timeout: Duration::from_secs(5),
            verify_on_open: true,
            max_group_bytes: 16 * 1024 * 1024,
        }
    }

    /// These options with other bounds.
    pub fn with_bounds(mut self, max_items: u64, max_bytes: u64) -> WalOptions {
        self.max_items = max_items;
        self.max_bytes = max_bytes;
        self
    }
}
