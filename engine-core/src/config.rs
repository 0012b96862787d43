//! [`Config`]: every option with its documented default, loaded from TOML and `SYNC_ENGINE_*`
//! environment variables, validated at load with errors that name the field.
//!
//! Precedence: defaults < TOML file < environment. Options marked *hot* can change at run time
//! through the engine's config channel; the others need a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::HARD_MAX_ID_LEN;
use crate::limits::Limits;
use crate::secret::{redact_all, SecretUrl};

/// A configuration error naming the field (or environment variable) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config field `{field}`: {message}")]
pub struct ConfigError {
    /// The field (`batch_max_items`) or source (`SYNC_ENGINE_BATCH_MAX_ITEMS`, a file path).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// Values quoted in the message (or a key used as the field) are shown with any URL
    /// password redacted: a URL put in the wrong field must not leak its password.
    fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { field: redact_all(&field.into()), message: redact_all(&message.into()) }
    }
}

/// Prefix of every environment variable: `SYNC_ENGINE_<FIELD IN UPPER CASE>`.
pub const ENV_PREFIX: &str = "SYNC_ENGINE_";

/// Every option of the engine. Field docs state the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// L3 archive URL: `sqlite:PATH` / `sqlite://PATH`, `mysql://`, `postgres://`.
    /// Default `sqlite://sync-engine-data/archive.db`. Restart-only.
    pub sql_url: SecretUrl,
    /// L2 Redis URL (`redis://`, `rediss://`); none runs without L2. Default none. Restart-only.
    pub redis_url: Option<SecretUrl>,
    /// Prefix of every Redis key this engine writes. Default `sync:`. Restart-only.
    pub redis_prefix: String,
    /// Treat `redis_url` as a seed node of a Redis Cluster (the store connects to the primary
    /// that owns its prefix's hash slot; needs the `redis-cluster` feature). Default false.
    /// Restart-only.
    pub redis_cluster: bool,
    /// With `redis_url` set: publish the ids of every flushed batch on the Redis channel of
    /// `redis_prefix` and apply other instances' messages to L1 and the filter. Needed when
    /// several instances share L2/L3; staleness bound in ARCHITECTURE.md. Default true.
    /// Restart-only.
    pub redis_invalidation: bool,
    /// Path of the local SQLite write-ahead log. Default `sync-engine-data/wal.db`. Restart-only.
    pub wal_path: PathBuf,

    /// Hot. Byte budget of the in-process L1 cache and the writes not yet in L3 together: L1
    /// yields what unflushed writes hold. Default 256 MiB.
    pub l1_max_bytes: u64,
    /// Hot. L1 entries older than this are re-read from L2/L3 (0 = no limit). Default 0.
    pub l1_ttl_ms: u64,
    /// Hot. A write-behind batch flushes at this many items. Default 1000.
    pub batch_max_items: usize,
    /// Hot. ... or at this many bytes. Default 4 MiB.
    pub batch_max_bytes: u64,
    /// Hot. ... or when its oldest item is this old. Default 50 ms.
    pub batch_max_age_ms: u64,
    /// Hot. TTL applied to L2 writes without an explicit TTL (0 = none). Default 0.
    pub l2_default_ttl_ms: u64,

    /// WAL bound: appends beyond this many pending items get a Backpressure error. Default 1,000,000.
    pub wal_max_items: u64,
    /// WAL bound in bytes. Default 1 GiB.
    pub wal_max_bytes: u64,
    /// Items per WAL drain batch. Default 1000.
    pub wal_drain_batch: usize,

    /// Maximum id length in bytes (at most 1024). Default 255. Restart-only.
    pub max_id_len: usize,
    /// Maximum payload in bytes. Default 16 MiB. Restart-only.
    pub max_payload_bytes: usize,
    /// Maximum state tag length in bytes. Default 64. Restart-only.
    pub max_state_len: usize,

    /// SQL connection pool size. Default 8. Restart-only.
    pub sql_pool_size: u32,
    /// Time to wait for a SQL connection before reporting the database unavailable. Default 2000 ms.
    pub sql_acquire_timeout_ms: u64,
    /// Redis connection timeout. Default 1000 ms.
    pub redis_connect_timeout_ms: u64,
    /// Redis response timeout. Default 1000 ms.
    pub redis_response_timeout_ms: u64,

    /// Answer "absent" from the cuckoo filter when it is trusted. Turn off when anything but
    /// this engine writes to L3 (the filter only learns ids it sees written or scanned).
    /// Default true. Restart-only.
    pub filter_enabled: bool,
    /// Initial capacity of the cuckoo filter (it grows past it). Default 1,000,000.
    pub filter_capacity: u64,
    /// Snapshot the filter this often (0 = never by time). Default 300,000 ms.
    pub filter_snapshot_interval_ms: u64,
    /// Snapshot the filter after this many inserts (0 = never by count). Default 100,000.
    pub filter_snapshot_every_inserts: u64,

    /// Hot. Fraction of a bound (L1 bytes, batch backlog, WAL depth) at which submits are throttled. Default 0.8.
    pub backpressure_throttle_ratio: f64,
    /// Hot. Fraction at which submits are rejected with Backpressure. Default 0.95.
    pub backpressure_reject_ratio: f64,

    /// Consecutive failures that open a backend's circuit breaker. Default 5.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker waits before a half-open probe. Default 1000 ms.
    pub breaker_open_ms: u64,
    /// Interval of health checks and WAL drain attempts in `run()`. Default 1000 ms.
    pub health_check_interval_ms: u64,

    /// Attempts to reach L3 at start before failing (or starting degraded). Default 5.
    pub startup_l3_attempts: u32,
    /// First backoff between start attempts, doubled each time. Default 200 ms.
    pub startup_backoff_ms: u64,
    /// Start without L3 (writes to the WAL, reads from L1/L2) instead of failing. Default false.
    pub allow_degraded_start: bool,

    /// Tombstones older than this are purged from L3. Default 7 days.
    pub tombstone_retention_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        let limits = Limits::default();
        Config {
            sql_url: SecretUrl::new("sqlite://sync-engine-data/archive.db"),
            redis_url: None,
            redis_prefix: "sync:".into(),
            redis_cluster: false,
            redis_invalidation: true,
            wal_path: PathBuf::from("sync-engine-data/wal.db"),
            l1_max_bytes: 256 * 1024 * 1024,
            l1_ttl_ms: 0,
            batch_max_items: 1000,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_max_age_ms: 50,
            l2_default_ttl_ms: 0,
            wal_max_items: 1_000_000,
            wal_max_bytes: 1024 * 1024 * 1024,
            wal_drain_batch: 1000,
            max_id_len: limits.max_id_len,
            max_payload_bytes: limits.max_payload_bytes,
            max_state_len: limits.max_state_len,
            sql_pool_size: 8,
            sql_acquire_timeout_ms: 2000,
            redis_connect_timeout_ms: 1000,
            redis_response_timeout_ms: 1000,
            filter_enabled: true,
            filter_capacity: 1_000_000,
            filter_snapshot_interval_ms: 300_000,
            filter_snapshot_every_inserts: 100_000,
            backpressure_throttle_ratio: 0.8,
            backpressure_reject_ratio: 0.95,
            breaker_failure_threshold: 5,
            breaker_open_ms: 1000,
            health_check_interval_ms: 1000,
            startup_l3_attempts: 5,
            startup_backoff_ms: 200,
            allow_degraded_start: false,
            tombstone_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file if given, then `SYNC_ENGINE_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(path.display().to_string(), format!("cannot read file: {e}"))
                })?;
                parse_table(&text, &path.display().to_string())?
            }
            None => toml::Table::new(),
        };
        overlay_env(&mut table, std::env::vars())?;
        Config::from_table(table)
    }

    /// Parse a TOML document (unset fields keep their defaults) and validate.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_table(parse_table(text, "<toml>")?)
    }

    /// Defaults overlaid with the given `SYNC_ENGINE_*` variables; validated.
    pub fn from_env_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        overlay_env(&mut table, vars)?;
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let config: Config = Config::deserialize(table.clone()).map_err(|e| {
            let msg = e.message().to_owned();
            // serde names unknown and missing fields; for a bad value, find the key that fails
            // on its own.
            let field = field_in_message(&msg)
                .filter(|f| table.contains_key(f))
                .or_else(|| {
                    table.iter().find_map(|(k, v)| {
                        let mut one = toml::Table::new();
                        one.insert(k.clone(), v.clone());
                        Config::deserialize(one).is_err().then(|| k.clone())
                    })
                })
                .unwrap_or_else(|| "<config>".into());
            ConfigError::new(field, msg)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The input limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            max_id_len: self.max_id_len,
            max_payload_bytes: self.max_payload_bytes,
            max_state_len: self.max_state_len,
        }
    }

    /// Check every field; the error names the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(field: &str, v: u64) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::new(field, "must be greater than 0"));
            }
            Ok(())
        }
        check_url(
            "sql_url",
            &self.sql_url,
            &["sqlite", "mysql", "mariadb", "postgres", "postgresql"],
        )?;
        if let Some(url) = &self.redis_url {
            check_url("redis_url", url, &["redis", "rediss"])?;
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError::new(
                "redis_prefix",
                "must be non-empty, without whitespace or control characters",
            ));
        }
        if self.wal_path.as_os_str().is_empty() {
            return Err(ConfigError::new("wal_path", "must not be empty"));
        }
        positive("l1_max_bytes", self.l1_max_bytes)?;
        positive("batch_max_items", self.batch_max_items as u64)?;
        positive("batch_max_bytes", self.batch_max_bytes)?;
        positive("batch_max_age_ms", self.batch_max_age_ms)?;
        positive("wal_max_items", self.wal_max_items)?;
        positive("wal_max_bytes", self.wal_max_bytes)?;
        positive("wal_drain_batch", self.wal_drain_batch as u64)?;
        positive("max_payload_bytes", self.max_payload_bytes as u64)?;
        positive("sql_pool_size", u64::from(self.sql_pool_size))?;
        positive("sql_acquire_timeout_ms", self.sql_acquire_timeout_ms)?;
        positive("redis_connect_timeout_ms", self.redis_connect_timeout_ms)?;
        positive("redis_response_timeout_ms", self.redis_response_timeout_ms)?;
        positive("filter_capacity", self.filter_capacity)?;
        positive("breaker_failure_threshold", u64::from(self.breaker_failure_threshold))?;
        positive("breaker_open_ms", self.breaker_open_ms)?;
        positive("health_check_interval_ms", self.health_check_interval_ms)?;
        positive("startup_l3_attempts", u64::from(self.startup_l3_attempts))?;
        if self.max_id_len == 0 || self.max_id_len > HARD_MAX_ID_LEN {
            return Err(ConfigError::new(
                "max_id_len",
                format!("must be in 1..={HARD_MAX_ID_LEN}"),
            ));
        }
        let ratio = |field: &str, v: f64| {
            if !(v > 0.0 && v <= 1.0) {
                return Err(ConfigError::new(field, format!("must be in (0, 1], got {v}")));
            }
            Ok(())
        };
        ratio("backpressure_throttle_ratio", self.backpressure_throttle_ratio)?;
        ratio("backpressure_reject_ratio", self.backpressure_reject_ratio)?;
        if self.backpressure_throttle_ratio >= self.backpressure_reject_ratio {
            return Err(ConfigError::new(
                "backpressure_throttle_ratio",
                "must be below backpressure_reject_ratio",
            ));
        }
        Ok(())
    }

    /// The names of every field, as used in TOML (and, upper-cased, in the environment).
    pub fn field_names() -> Vec<String> {
        let mut names: Vec<String> = default_table().keys().cloned().collect();
        names.push("redis_url".into());
        names.sort();
        names
    }
}

fn check_url(field: &str, url: &SecretUrl, schemes: &[&str]) -> Result<(), ConfigError> {
    let shown = url.redacted();
    let scheme =
        url.scheme().ok_or_else(|| ConfigError::new(field, format!("`{shown}` has no scheme")))?;
    if !schemes.contains(&scheme.as_str()) {
        return Err(ConfigError::new(
            field,
            format!("`{shown}`: scheme `{scheme}` is not one of {}", schemes.join(", ")),
        ));
    }
    if scheme != "sqlite" {
        url::Url::parse(url.expose())
            .map_err(|e| ConfigError::new(field, format!("`{shown}` is not a valid URL: {e}")))?;
    }
    Ok(())
}

fn parse_table(text: &str, source: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let msg = e.message().to_owned();
        ConfigError::new(source, format!("invalid TOML: {msg}"))
    })
}

fn field_in_message(msg: &str) -> Option<String> {
    // serde messages name fields in backticks: "unknown field `x`", "missing field `y`" — but
    // also values ("invalid value: integer `-1`"): callers keep only names of keys.
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_owned())
}

fn default_table() -> toml::Table {
    toml::Table::try_from(Config::default()).unwrap_or_default()
}

/// Overlay `SYNC_ENGINE_<FIELD>` variables onto `table`, typed like the field's default.
fn overlay_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = default_table();
    let known: BTreeMap<String, String> = Config::field_names()
        .into_iter()
        .map(|f| (format!("{ENV_PREFIX}{}", f.to_ascii_uppercase()), f))
        .collect();
    for (name, raw) in vars {
        let Some(field) = known.get(&name) else {
            continue;
        };
        let value = match defaults.get(field) {
            Some(toml::Value::Integer(_)) => {
                raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| {
                    ConfigError::new(&name, format!("expected an integer, got `{raw}`"))
                })?
            }
            Some(toml::Value::Float(_)) => {
                raw.trim().parse::<f64>().map(toml::Value::Float).map_err(|_| {
                    ConfigError::new(&name, format!("expected a number, got `{raw}`"))
                })?
            }
            Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    return Err(ConfigError::new(
                        &name,
                        format!("expected true or false, got `{raw}`"),
                    ))
                }
            },
            _ => toml::Value::String(raw),
        };
        table.insert(field.clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        Config::default().validate().unwrap();
        assert!(Config::field_names().contains(&"batch_max_items".to_string()));
    }

    #[test]
    fn toml_overrides_and_unknown_fields_are_named() {
        let c = Config::from_toml_str("batch_max_items = 10\nredis_url = \"redis://127.0.0.1/\"")
            .unwrap();
        assert_eq!(c.batch_max_items, 10);
        assert!(c.redis_url.is_some());
        let e = Config::from_toml_str("batch_max_itemz = 10").unwrap_err();
        assert_eq!(e.field, "batch_max_itemz");
        let e = Config::from_toml_str("batch_max_items = \"ten\"").unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        assert_eq!(e.field, "batch_max_items");
        // serde quotes the value in backticks too: the field is still the key.
        let e = Config::from_toml_str("batch_max_items = -1").unwrap_err();
        assert_eq!(e.field, "batch_max_items", "{e}");
        let e = Config::from_toml_str("backpressure_reject_ratio = false").unwrap_err();
        assert_eq!(e.field, "backpressure_reject_ratio", "{e}");
        let e = Config::from_toml_str("batch_max_items = 0").unwrap_err();
        assert_eq!(e.field, "batch_max_items");
        let e = Config::from_toml_str("backpressure_throttle_ratio = 0.99").unwrap_err();
        assert_eq!(e.field, "backpressure_throttle_ratio");
    }

    #[test]
    fn env_overrides_with_typed_values() {
        let c = Config::from_env_vars([
            ("SYNC_ENGINE_BATCH_MAX_ITEMS".to_string(), "7".to_string()),
            ("SYNC_ENGINE_ALLOW_DEGRADED_START".to_string(), "true".to_string()),
            ("SYNC_ENGINE_REDIS_URL".to_string(), "redis://:pw@localhost:6379".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ])
        .unwrap();
        assert_eq!(c.batch_max_items, 7);
        assert!(c.allow_degraded_start);
        let e = Config::from_env_vars([("SYNC_ENGINE_BATCH_MAX_ITEMS".into(), "many".into())])
            .unwrap_err();
        assert_eq!(e.field, "SYNC_ENGINE_BATCH_MAX_ITEMS");
    }

    #[test]
    fn bad_urls_name_the_field_and_hide_the_password() {
        let e = Config::from_toml_str("redis_url = \"http://u:hunter2@x\"").unwrap_err();
        assert_eq!(e.field, "redis_url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = Config::from_toml_str("sql_url = \"postgres://u:hunter2@[::1\"").unwrap_err();
        assert_eq!(e.field, "sql_url");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn errors_never_echo_a_password() {
        let url = "mysql://app:hunter2@db/x";
        let e = Config::from_env_vars(vec![("SYNC_ENGINE_SQL_POOL_SIZE".into(), url.into())])
            .unwrap_err();
        assert_eq!(e.field, "SYNC_ENGINE_SQL_POOL_SIZE");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("mysql://app:***@db/x"), "{e}");
        let e = Config::from_toml_str(&format!("sql_pool_size = \"{url}\"")).unwrap_err();
        assert_eq!(e.field, "sql_pool_size");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
