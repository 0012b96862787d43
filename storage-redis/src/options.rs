//! [`RedisOptions`]: everything the store needs besides the URL, with validation that names the
//! field at fault.

use std::time::Duration;

use sync_engine_core::Config;

use crate::keys::{Keys, PrefixError};

/// Default bucket capacity: an unsplit Merkle node holds at most this many entries before it
/// splits 16 ways (see the README for the cost model behind the choice).
pub const DEFAULT_BUCKET_CAP: usize = 128;
/// Default number of logged changes after which a write starts a background fold.
pub const DEFAULT_FOLD_THRESHOLD: u64 = 20_000;

/// Largest accepted bucket capacity (a children listing returns up to this many entries).
pub const MAX_BUCKET_CAP: usize = 4096;

/// Options of a [`crate::RedisStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Every key starts with this prefix (`Config::redis_prefix`, default `sync:`); no
    /// whitespace, control characters or braces. Two stores with the same prefix share data.
    pub prefix: String,
    /// Bound on establishing a connection (`Config::redis_connect_timeout_ms`).
    pub connect_timeout: Duration,
    /// Bound on waiting for one reply (`Config::redis_response_timeout_ms`).
    pub response_timeout: Duration,
    /// How long a tombstone written without an explicit TTL is kept (and blocks older writes);
    /// `None` keeps it until removed or evicted. Default: `Config::tombstone_retention_ms`
    /// (7 days), the window during which L3 also remembers the delete.
    pub tombstone_ttl: Option<Duration>,
    /// Entries an unsplit Merkle node holds before it splits into 16 hash buckets
    /// (1..=[`MAX_BUCKET_CAP`], default [`DEFAULT_BUCKET_CAP`]).
    pub bucket_cap: usize,
    /// A `put_batch` that leaves at least this many logged shadow changes unfolded starts a
    /// background fold (default [`DEFAULT_FOLD_THRESHOLD`]; `0` never does: then only Merkle
    /// reads and [`crate::RedisStore::fold`] fold, and the log grows until they do).
    pub fold_threshold: u64,
    /// Write batches optimistically (`WATCH` of the write epoch, the newer-wins decision made
    /// on the values read, native writes in `MULTI`/`EXEC`; a batch another write interrupts
    /// goes through the put script) — default `true`. Set `false` to write every batch through
    /// the script, e.g. while processes of a version whose script does not advance the epoch
    /// still write to the same prefix.
    pub optimistic_writes: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        let c = Config::default();
        RedisOptions::from_config(&c)
    }
}

/// Why options were refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// The key prefix is unusable.
    #[error("redis_prefix: {0}")]
    Prefix(#[from] PrefixError),
    /// A timeout or TTL of zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
    /// Bucket capacity out of range.
    #[error("bucket_cap must be in 1..={MAX_BUCKET_CAP}, got {0}")]
    BucketCap(usize),
}

impl RedisOptions {
    /// The options a [`Config`] sets (`redis_prefix`, `redis_connect_timeout_ms`,
    /// `redis_response_timeout_ms`, `tombstone_retention_ms` — 0 keeps tombstones until they
    /// are removed), with the default bucket cap and fold threshold.
    pub fn from_config(config: &Config) -> RedisOptions {
        RedisOptions {
            prefix: config.redis_prefix.clone(),
            connect_timeout: Duration::from_millis(config.redis_connect_timeout_ms),
            response_timeout: Duration::from_millis(config.redis_response_timeout_ms),
            tombstone_ttl: (config.tombstone_retention_ms > 0)
                .then(|| Duration::from_millis(config.tombstone_retention_ms)),
            bucket_cap: DEFAULT_BUCKET_CAP,
            fold_threshold: DEFAULT_FOLD_THRESHOLD,
            optimistic_writes: true,
        }
    }

    /// The same options under another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> RedisOptions {
        self.prefix = prefix.into();
        self
    }

    /// Check every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), OptionsError> {
        self.keys()?;
        if self.connect_timeout.is_zero() {
            return Err(OptionsError::Zero("connect_timeout"));
        }
        if self.response_timeout.is_zero() {
            return Err(OptionsError::Zero("response_timeout"));
        }
        if self.tombstone_ttl.is_some_and(|t| t.is_zero()) {
            return Err(OptionsError::Zero("tombstone_ttl"));
        }
        if !(1..=MAX_BUCKET_CAP).contains(&self.bucket_cap) {
            return Err(OptionsError::BucketCap(self.bucket_cap));
        }
        Ok(())
    }

    pub(crate) fn keys(&self) -> Result<Keys, PrefixError> {
        Keys::new(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_config_and_validate() {
        let o = RedisOptions::default();
        assert_eq!(o.prefix, "sync:");
        assert_eq!(o.connect_timeout, Duration::from_millis(1000));
        assert_eq!(o.tombstone_ttl, Some(Duration::from_millis(7 * 24 * 3600 * 1000)));
        o.validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let bad = RedisOptions { connect_timeout: Duration::ZERO, ..RedisOptions::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("connect_timeout"));
        let bad = RedisOptions { bucket_cap: 0, ..RedisOptions::default() };
        assert_eq!(bad.validate(), Err(OptionsError::BucketCap(0)));
        let bad = RedisOptions::default().with_prefix("a}b");
        assert!(bad.validate().unwrap_err().to_string().contains("redis_prefix"));
        let bad = RedisOptions { tombstone_ttl: Some(Duration::ZERO), ..RedisOptions::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("tombstone_ttl"));
    }
}
