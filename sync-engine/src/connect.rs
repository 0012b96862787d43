//! Choose and open backends from the configured URLs, then start an engine over them.

use std::sync::Arc;

use async_trait::async_trait;
use sync_engine_core::engine::{L2Store, L3Store, LocalLog};
use sync_engine_core::store::{BusEvent, Invalidation, InvalidationBus, Subscription};
use sync_engine_core::{Config, Error, ErrorKind, Result, SecretUrl, SyncEngine};

/// The opened backends (before the engine starts).
#[derive(Clone)]
pub struct Backends {
    /// L3.
    pub l3: Arc<dyn L3Store>,
    /// L2, when `redis_url` is set.
    pub l2: Option<Arc<dyn L2Store>>,
    /// The WAL.
    pub wal: Arc<dyn LocalLog>,
    /// The invalidation bus (Redis pub/sub on `redis_prefix`), when `redis_url` is set and
    /// `redis_invalidation` is on.
    pub bus: Option<Arc<dyn InvalidationBus>>,
}

/// A started engine with its backends (for tools that inspect tiers directly).
#[derive(Clone)]
pub struct Node {
    /// The engine.
    pub engine: SyncEngine,
    /// Its backends.
    pub backends: Backends,
}

fn missing(field: &str, url: &SecretUrl, feature: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "{field} `{url}` needs the `{feature}` feature of sync-engine, which this build lacks"
        ),
    )
    .with_operation("connect")
}

/// Open the archive the `sql_url` scheme names.
pub async fn open_l3(config: &Config) -> Result<Arc<dyn L3Store>> {
    let url = &config.sql_url;
    let scheme = url.scheme().unwrap_or_default();
    let feature = match scheme.as_str() {
        "sqlite" => "sqlite",
        "mysql" | "mariadb" => "mysql",
        "postgres" | "postgresql" => "postgres",
        other => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("sql_url `{url}`: unknown scheme `{other}`"),
            ))
        }
    };
    let compiled = match feature {
        "sqlite" => cfg!(feature = "sqlite"),
        "mysql" => cfg!(feature = "mysql"),
        _ => cfg!(feature = "postgres"),
    };
    if !compiled {
        return Err(missing("sql_url", url, feature));
    }
    #[cfg(any(feature = "sqlite", feature = "mysql", feature = "postgres"))]
    {
        let store = sync_engine_sql::SqlStore::from_config(config).await?;
        Ok(Arc::new(store))
    }
    #[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
    {
        Err(missing("sql_url", url, feature))
    }
}

/// Open L2 when `redis_url` is set and, when `redis_invalidation` is on, its invalidation bus.
async fn open_l2_and_bus(
    config: &Config,
) -> Result<Option<(Arc<dyn L2Store>, Option<Arc<dyn InvalidationBus>>)>> {
    let Some(url) = &config.redis_url else { return Ok(None) };
    #[cfg(feature = "redis")]
    {
        let store = sync_engine_redis::RedisStore::from_config(config).await?;
        let _ = url;
        let bus: Option<Arc<dyn InvalidationBus>> =
            config.redis_invalidation.then(|| Arc::new(store.invalidation_bus()) as _);
        Ok(Some((Arc::new(store), bus)))
    }
    #[cfg(not(feature = "redis"))]
    {
        Err(missing("redis_url", url, "redis"))
    }
}

/// An L2 handle that keeps trying to connect to `redis_url` (for a server that is down at
/// start); `None` when no L2 is configured or compiled in.
fn reconnecting_l2(config: &Config) -> Option<Arc<dyn L2Store>> {
    #[cfg(feature = "redis")]
    {
        let url = config.redis_url.as_ref()?;
        let for_connector = config.clone();
        let connector: crate::reconnect::Connector<dyn L2Store> = Arc::new(move || {
            let config = for_connector.clone();
            Box::pin(async move {
                let store = sync_engine_redis::RedisStore::from_config(&config).await?;
                Ok(Arc::new(store) as Arc<dyn L2Store>)
            })
        });
        let retry = std::time::Duration::from_millis(config.breaker_open_ms.max(100));
        Some(Arc::new(crate::reconnect::ReconnectingL2::new(
            "redis",
            url.redacted(),
            retry,
            connector,
        )))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = config;
        None
    }
}

/// An L3 handle that keeps trying to open `sql_url` (for a database that is down at start).
fn reconnecting_l3(config: &Config) -> Arc<dyn L3Store> {
    let for_connector = config.clone();
    let connector: crate::reconnect::Connector<dyn L3Store> = Arc::new(move || {
        let config = for_connector.clone();
        Box::pin(async move { open_l3(&config).await })
    });
    let backend = match config.sql_url.scheme().as_deref() {
        Some("mysql" | "mariadb") => "mysql",
        Some("postgres" | "postgresql") => "postgres",
        Some("sqlite") => "sqlite",
        _ => "sql",
    };
    let retry = std::time::Duration::from_millis(config.breaker_open_ms.max(100));
    Arc::new(crate::reconnect::ReconnectingL3::new(
        backend,
        config.sql_url.redacted(),
        retry,
        connector,
    ))
}

/// Stands in for the bus when Redis was unreachable at start: always disconnected, so the
/// engine never serves L1 or trusts its filter without hearing other instances' writes.
struct Unreachable;

#[async_trait]
impl InvalidationBus for Unreachable {
    fn backend(&self) -> &str {
        "unreachable"
    }

    async fn publish(&self, _msg: &Invalidation) -> Result<()> {
        Err(Error::unavailable("Redis was unreachable at start; no invalidation bus")
            .with_operation("publish"))
    }

    async fn subscribe(&self) -> Result<Subscription> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(BusEvent::Disconnected);
        tokio::spawn(async move { tx.closed().await });
        Ok(rx)
    }
}

/// Open the WAL at `wal_path`.
pub async fn open_wal(config: &Config) -> Result<Arc<dyn LocalLog>> {
    #[cfg(feature = "wal-sqlite")]
    {
        Ok(Arc::new(sync_engine_wal::SqliteWal::open_from_config(config).await?))
    }
    #[cfg(not(feature = "wal-sqlite"))]
    {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "wal_path `{}` needs the `wal-sqlite` feature of sync-engine",
                config.wal_path.display()
            ),
        ))
    }
}

/// Open every configured backend: WAL first (the durability lifeline), then L3, then L2.
/// An unreachable L2 is not an error here: it is opened as a [`ReconnectingL2`] that connects
/// when the server answers; until then the engine reads through to L3 and repairs L2 later.
///
/// An unreachable L3 is not one either when `allow_degraded_start` is set: it is opened as a
/// [`ReconnectingL3`], and the engine starts degraded (writes go to the WAL).
///
/// [`ReconnectingL2`]: crate::reconnect::ReconnectingL2
/// [`ReconnectingL3`]: crate::reconnect::ReconnectingL3
pub async fn open_backends(config: &Config) -> Result<Backends> {
    config.validate()?;
    let wal = open_wal(config).await?;
    let l3: Arc<dyn L3Store> = match open_l3(config).await {
        Ok(l3) => l3,
        Err(e) if config.allow_degraded_start && e.is_retryable() => {
            tracing::warn!(error = %e, "L3 unreachable; it will be connected when it returns");
            reconnecting_l3(config)
        }
        Err(e) => return Err(e),
    };
    let (l2, bus) = match open_l2_and_bus(config).await {
        Ok(Some((l2, bus))) => (Some(l2), bus),
        Ok(None) => (None, None),
        Err(e) if e.kind() == ErrorKind::Unsupported || e.kind() == ErrorKind::Config => {
            return Err(e)
        }
        Err(e) if config.redis_invalidation => {
            // L2 reconnects by itself; the bus does not (yet): until a restart, this
            // instance bypasses its L1 and keeps its filter untrusted.
            tracing::warn!(error = %e, "L2 unreachable at start; connecting in the background, with L1 bypassed and the filter untrusted (no invalidation bus until restart)");
            (reconnecting_l2(config), Some(Arc::new(Unreachable) as Arc<dyn InvalidationBus>))
        }
        Err(e) => {
            tracing::warn!(error = %e, "L2 unreachable at start; connecting in the background");
            (reconnecting_l2(config), None)
        }
    };
    Ok(Backends { l3, l2, wal, bus })
}

/// Open the backends the configuration names and start an engine over them.
pub async fn connect(config: Config) -> Result<Node> {
    let backends = open_backends(&config).await?;
    let mut builder =
        SyncEngine::builder(config).archive_arc(backends.l3.clone()).wal_arc(backends.wal.clone());
    if let Some(l2) = &backends.l2 {
        builder = builder.cache_arc(l2.clone());
    }
    if let Some(bus) = &backends.bus {
        builder = builder.bus_arc(bus.clone());
    }
    let engine = builder.start().await?;
    Ok(Node { engine, backends })
}
