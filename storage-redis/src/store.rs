//! [`RedisStore`]: connection, bounded calls with one reconnect retry, and the [`CacheStore`]
//! operations.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script, ServerErrorKind, Value};
use sync_engine_core::store::{AuditReport, CacheEntry, CacheStore, PutOutcome};
use sync_engine_core::{Config, Error, ErrorKind, ObjectId, Result, SecretUrl, SyncItem};
use tracing::Instrument;

use crate::batch::{self, Op, OPS_PER_SCRIPT};
use crate::codec;
use crate::error::{self, BACKEND};
use crate::keys::Keys;
use crate::options::RedisOptions;
use crate::txn::Miss;

const PUT_LUA: &str = include_str!("../lua/put.lua");
const READ_LUA: &str = include_str!("../lua/read.lua");
const UNLOCK_LUA: &str = include_str!("../lua/unlock.lua");
const HEAL_LUA: &str = include_str!("../lua/heal.lua");

/// Slack added to our own per-call deadline on top of connect + response timeouts.
const DEADLINE_SLACK: Duration = Duration::from_millis(200);
/// Keys per `SCAN`/`UNLINK` step of [`RedisStore::clear_namespace`].
const CLEAR_STEP: usize = 1000;

/// The L2 cache on Redis with its Merkle shadow: implements [`CacheStore`] and
/// [`sync_engine_core::store::MerkleStore`]. A cheap handle: clones share one multiplexed,
/// auto-reconnecting connection (plus one connection for folds).
///
/// Promises, beyond the traits': every call is bounded by the connect and response timeouts
/// (errors then have status Temporary); a dropped connection is re-established behind the
/// caller and the call retried once; a restarted, empty server is simply an empty cache with an
/// empty shadow (scripts are reloaded on `NOSCRIPT`). Merkle reads fold pending changes first,
/// so they describe the data as written; several stores (processes) may share one prefix.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    conn: ConnectionManager,
    pub(crate) keys: Keys,
    pub(crate) opts: RedisOptions,
    put: Script,
    pub(crate) read: Script,
    pub(crate) unlock: Script,
    /// Removes entries the audit found corrupt (`crate::audit`).
    pub(crate) heal: Script,
    /// For the fold's own connection.
    pub(crate) client: redis::Client,
    /// The fold's connection (it WATCHes the lock, so nothing else may use it); the mutex
    /// also serialises this process' folds (the Redis lock serialises processes).
    pub(crate) fold_conn: tokio::sync::Mutex<Option<crate::folding::FoldConn>>,
    /// A background fold is scheduled or running.
    pub(crate) folding: AtomicBool,
    /// The connection of optimistic writes (it WATCHes the write epoch, so nothing else may
    /// use it meanwhile): a write that finds it busy runs `put.lua` on the shared connection.
    pub(crate) put_conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.opts.prefix)
            .finish_non_exhaustive()
    }
}

pub(crate) fn config_error(message: String) -> Error {
    Error::new(ErrorKind::Config, message).with_operation("connect").with_backend(BACKEND)
}

impl RedisStore {
    /// Connect to `url` (`redis://` or `rediss://`), within `opts.connect_timeout` per attempt
    /// (two attempts at most). Bad options or a malformed URL: Config error (Permanent);
    /// an unreachable server: Unavailable or Timeout (Temporary).
    pub async fn connect(url: &SecretUrl, opts: RedisOptions) -> Result<RedisStore> {
        let span =
            tracing::info_span!("redis.connect", server = %url.redacted(), prefix = %opts.prefix);
        async move {
            let client = redis::Client::open(url.expose()).map_err(|_| {
                config_error(format!("`{}` is not a valid Redis URL", url.redacted()))
            })?;
            RedisStore::connect_client(client, opts).await
        }
        .instrument(span)
        .await
    }

    /// Connect an opened client.
    pub(crate) async fn connect_client(
        client: redis::Client,
        opts: RedisOptions,
    ) -> Result<RedisStore> {
        {
            opts.validate().map_err(|e| config_error(e.to_string()))?;
            let keys = opts.keys().map_err(|e| config_error(e.to_string()))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.response_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(100));
            let bound = opts.connect_timeout * 2 + DEADLINE_SLACK;
            let fold_client = client.clone();
            let conn =
                tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
                    .await
                    .map_err(|_| error::deadline("connect", bound))?
                    .map_err(|e| error::map(e, "connect"))?;
            let store = RedisStore {
                inner: Arc::new(Inner {
                    conn,
                    keys,
                    opts,
                    put: Script::new(PUT_LUA),
                    read: Script::new(READ_LUA),
                    unlock: Script::new(UNLOCK_LUA),
                    heal: Script::new(HEAL_LUA),
                    client: fold_client,
                    fold_conn: tokio::sync::Mutex::new(None),
                    folding: AtomicBool::new(false),
                    put_conn: tokio::sync::Mutex::new(None),
                }),
            };
            store.warn_on_eviction_policy().await;
            Ok(store)
        }
    }

    /// Connect with the URL and options of a [`Config`] (`redis_url` must be set).
    pub async fn from_config(config: &Config) -> Result<RedisStore> {
        let url = config
            .redis_url
            .as_ref()
            .ok_or_else(|| config_error("config field `redis_url` is not set".into()))?;
        if config.redis_cluster {
            #[cfg(feature = "redis-cluster")]
            return RedisStore::connect_cluster(url, RedisOptions::from_config(config)).await;
            #[cfg(not(feature = "redis-cluster"))]
            return Err(Error::new(
                ErrorKind::Unsupported,
                "config field `redis_cluster` needs the `redis-cluster` feature, which this build lacks",
            )
            .with_operation("connect"));
        }
        RedisStore::connect(url, RedisOptions::from_config(config)).await
    }

    /// The options this store runs with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    /// The shadow is only exact if Redis never evicts keys without a TTL: log a warning when the
    /// server says it might (best effort: `CONFIG` may be disabled).
    async fn warn_on_eviction_policy(&self) {
        let policy: RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut self.inner.conn.clone())
            .await;
        if let Ok(reply) = policy {
            if reply.get(1).is_some_and(|p| p.starts_with("allkeys")) {
                tracing::warn!(
                    policy = %reply[1],
                    "maxmemory-policy may evict keys without TTL; the L2 Merkle shadow can then list \
                     items Redis dropped (use noeviction or a volatile-* policy)"
                );
            }
        }
    }

    /// Run `f` on a connection within our deadline; retry once when the connection dropped.
    pub(crate) async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let o = &self.inner.opts;
        let bound = o.connect_timeout + o.response_timeout + DEADLINE_SLACK;
        let mut retried = false;
        loop {
            match tokio::time::timeout(bound, f(self.inner.conn.clone())).await {
                Err(_) => return Err(error::deadline(op, bound)),
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !retried && error::retry_once(&e) => {
                    tracing::debug!(operation = op, error = %e, "connection dropped; retrying once");
                    retried = true;
                }
                Ok(Err(e)) => return Err(error::map(e, op)),
            }
        }
    }

    /// Write `ops`: optimistically (`txn.rs`) in chunks of [`OPS_PER_SCRIPT`] when the write
    /// connection is free, else — or for a chunk whose transaction another write interrupted —
    /// through the put script; returns the summed outcome, and starts a background fold when
    /// the log is long.
    async fn run_ops(&self, op: &'static str, ops: &[Op<'_>]) -> Result<PutOutcome> {
        if ops.is_empty() {
            return Ok(PutOutcome::default());
        }
        let mut outcome = PutOutcome::default();
        let mut pending = 0;
        let mut slot = if self.inner.opts.optimistic_writes {
            self.inner.put_conn.try_lock().ok()
        } else {
            None
        };
        let mut scripted: Vec<&[Op<'_>]> = Vec::new();
        for chunk in ops.chunks(OPS_PER_SCRIPT) {
            // Once a chunk goes to the script, the rest follow it: ops apply in order.
            let Some(conn) = slot.as_deref_mut().filter(|_| scripted.is_empty()) else {
                scripted.push(chunk);
                continue;
            };
            match self.write_optimistic(op, conn, chunk).await {
                Ok((o, p)) => {
                    outcome = outcome.merge(o);
                    pending = pending.max(p);
                }
                Err(Miss::Retry) => scripted.push(chunk),
                Err(Miss::Fail(e)) => return Err(e),
            }
        }
        drop(slot);
        if !scripted.is_empty() {
            let (o, p) = self.run_script(op, &scripted).await?;
            outcome = outcome.merge(o);
            pending = pending.max(p);
        }
        self.maybe_fold(op, pending)?;
        Ok(outcome)
    }

    /// Run the put script over `chunks` (one invocation each, all in one pipeline); returns the
    /// summed outcome and the pending count.
    async fn run_script(
        &self,
        op: &'static str,
        chunks: &[&[Op<'_>]],
    ) -> Result<(PutOutcome, u64)> {
        let inner = &self.inner;
        let sha = inner.put.get_hash();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for chunk in chunks {
            pipe.add_command(batch::put_command(sha, &inner.keys, chunk));
        }
        let pipe = &pipe;
        let results = self
            .run(op, |mut conn| async move { eval_pipeline(&mut conn, &inner.put, pipe).await })
            .await?;
        let mut outcome = PutOutcome::default();
        let mut pending = 0;
        for v in results {
            let (o, p) = outcome_of(&v).ok_or_else(|| {
                error::contract(
                    op,
                    format!("put script answered {v:?}, not [applied, stale, pending]"),
                )
            })?;
            outcome = outcome.merge(o);
            pending = pending.max(p);
        }
        Ok((outcome, pending))
    }

    /// Start a background fold when `pending` logged changes reach the threshold (and none is
    /// running).
    fn maybe_fold(&self, op: &'static str, pending: u64) -> Result<()> {
        let inner = &self.inner;
        let threshold = inner.opts.fold_threshold;
        let runtime = tokio::runtime::Handle::try_current();
        if threshold > 0
            && pending >= threshold
            && runtime.is_ok()
            && !inner.folding.swap(true, Ordering::AcqRel)
        {
            let store = self.clone();
            let runtime = runtime.map_err(|_| error::contract(op, "no runtime"))?;
            runtime.spawn(async move {
                if let Err(e) = store.fold().await {
                    tracing::warn!(error = %e, "background fold of the Merkle change log failed");
                }
                store.inner.folding.store(false, Ordering::Release);
            });
        }
        Ok(())
    }

    /// One `SCAN cursor MATCH pattern COUNT count` step: the next cursor and the keys found.
    pub(crate) async fn scan_step(
        &self,
        op: &'static str,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        self.run(op, |mut c| async move {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut c)
                .await
        })
        .await
    }

    /// Delete every key of this store (`SCAN MATCH` on its prefix and hash tag, then `UNLINK`),
    /// and nothing else; returns how many keys were deleted. For tests and benchmarks.
    pub async fn clear_namespace(&self) -> Result<u64> {
        let pattern = self.inner.keys.scan_pattern();
        let span = tracing::info_span!("redis.clear_namespace", prefix = %self.inner.opts.prefix);
        async move {
            let mut cursor: u64 = 0;
            let mut deleted = 0u64;
            loop {
                let (next, keys) =
                    self.scan_step("clear_namespace", cursor, &pattern, CLEAR_STEP).await?;
                if !keys.is_empty() {
                    let keys = &keys;
                    let n: u64 = self
                        .run("clear_namespace", |mut c| async move {
                            redis::cmd("UNLINK").arg(keys).query_async(&mut c).await
                        })
                        .await?;
                    deleted += n;
                }
                if next == 0 {
                    return Ok(deleted);
                }
                cursor = next;
            }
        }
        .instrument(span)
        .await
    }
}

fn is_noscript(r: &RedisResult<Value>) -> bool {
    matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript))
}

/// Send a pipeline of `EVALSHA`s of `script`; when the server lacks the script (restart,
/// `SCRIPT FLUSH`), load it and resend the commands it refused. Returns every reply, or the
/// first error.
pub(crate) async fn eval_pipeline(
    conn: &mut ConnectionManager,
    script: &Script,
    pipe: &redis::Pipeline,
) -> RedisResult<Vec<Value>> {
    let mut results: Vec<RedisResult<Value>> = pipe.query_async(conn).await?;
    if results.iter().any(is_noscript) {
        script.load_async(conn).await?;
        let redo: Vec<usize> = (0..results.len()).filter(|&i| is_noscript(&results[i])).collect();
        let mut again = redis::pipe();
        again.ignore_errors();
        for (i, cmd) in pipe.cmd_iter().enumerate() {
            if redo.contains(&i) {
                again.add_command(cmd.clone());
            }
        }
        let replies: Vec<RedisResult<Value>> = again.query_async(conn).await?;
        for (i, r) in redo.into_iter().zip(replies) {
            results[i] = r;
        }
    }
    results.into_iter().collect()
}

fn outcome_of(v: &Value) -> Option<(PutOutcome, u64)> {
    match v {
        Value::Array(a) => match a.as_slice() {
            [Value::Int(applied), Value::Int(stale), Value::Int(pending)] => Some((
                PutOutcome {
                    applied: usize::try_from(*applied).ok()?,
                    stale: usize::try_from(*stale).ok()?,
                },
                u64::try_from(*pending).unwrap_or(0),
            )),
            _ => None,
        },
        _ => None,
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    fn backend(&self) -> &str {
        BACKEND
    }

    async fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Option<SyncItem>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let span = tracing::debug_span!("redis.get_many", ids = ids.len());
        async move {
            let keys: Vec<String> = ids.iter().map(|id| self.inner.keys.data(id)).collect();
            let keys = &keys;
            let raw: Vec<Option<Vec<u8>>> = self
                .run("get_many", |mut c| async move {
                    if let [one] = keys.as_slice() {
                        let v: Option<Vec<u8>> =
                            redis::cmd("GET").arg(one).query_async(&mut c).await?;
                        Ok(vec![v])
                    } else {
                        redis::cmd("MGET").arg(keys).query_async(&mut c).await
                    }
                })
                .await?;
            if raw.len() != ids.len() {
                return Err(error::contract(
                    "get_many",
                    format!("{} values for {} keys", raw.len(), ids.len()),
                ));
            }
            ids.iter()
                .zip(raw)
                .map(|(id, v)| {
                    let Some(bytes) = v else { return Ok(None) };
                    let d = codec::decode(id.clone(), Bytes::from(bytes)).map_err(|e| {
                        Error::new(ErrorKind::Corrupt, format!("value of {id}: {e}"))
                            .with_operation("get_many")
                            .with_backend(BACKEND)
                    })?;
                    Ok((!d.item.is_tombstone()).then_some(d.item))
                })
                .collect()
        }
        .instrument(span)
        .await
    }

    async fn put_batch(&self, entries: &[CacheEntry]) -> Result<PutOutcome> {
        let span = tracing::debug_span!("redis.put_batch", items = entries.len());
        async move {
            let ops = batch::put_ops(entries, self.inner.opts.tombstone_ttl)?;
            self.run_ops("put_batch", &ops).await
        }
        .instrument(span)
        .await
    }

    async fn remove_many(&self, ids: &[ObjectId]) -> Result<()> {
        let span = tracing::debug_span!("redis.remove_many", ids = ids.len());
        async move {
            self.run_ops("remove_many", &batch::remove_ops(ids)).await?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn ping(&self) -> Result<()> {
        let span = tracing::debug_span!("redis.ping");
        async move {
            let _: String = self
                .run("ping", |mut c| async move { redis::cmd("PING").query_async(&mut c).await })
                .await?;
            Ok(())
        }
        .instrument(span)
        .await
    }
    /// See the `audit` module: values checked like reads, against the shadow's leaves too;
    /// eviction through `heal.lua`, which keeps the shadow exact.
    async fn audit(&self, prefix: &str, evict: bool) -> Result<AuditReport> {
        self.audit_path(prefix, evict).await
    }

    async fn audit_ids(&self, ids: &[ObjectId], evict: bool) -> Result<AuditReport> {
        self.audit_some(ids, evict).await
    }
}
