//! Running the fold against Redis: take the lock, read the oldest log blobs, drive
//! [`crate::fold::Fold`] through its node reads, and write its result in one `MULTI`/`EXEC`
//! (its writes queued in messages of bounded size) that also trims the folded blobs and
//! releases the lock. The fold runs on its own connection
//! with the lock key `WATCH`ed, so if the lock expired or changed hands meanwhile, `EXEC`
//! writes nothing: all or nothing, and never two folders' results mixed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};
use sync_engine_core::{Error, ErrorKind, Result};
use tracing::Instrument;

use crate::error::{self, BACKEND};
use crate::fold::{Fold, Step};
use crate::log::{self, Change};
use crate::store::RedisStore;

/// Log blobs (one per written batch) folded per round.
const BLOBS_PER_ROUND: isize = 16;
/// The fold lock expires after this long, so a folder that died never blocks the others.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How long a fold waits for another process' fold before reporting Unavailable.
const LOCK_WAIT: Duration = Duration::from_secs(35);
/// Arguments per `MSET`/`DEL` inside the transaction.
const CHUNK: usize = 2000;
/// Bytes of keys and values per message queued inside the fold's transaction (see [`queued`]).
const MESSAGE_BYTES: usize = 1 << 20;
/// Messages of a fold's transaction sent before the first is answered.
const MESSAGES_IN_FLIGHT: usize = 2;
/// Lowers the pending-change count, deleting it at zero (queued inside `MULTI`).
const SETTLE_LUA: &str = "local left = redis.call('DECRBY', KEYS[1], ARGV[1]) \
    if left <= 0 then redis.call('DEL', KEYS[1]) end return 0";

fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Deletes the lock only if it still holds the value the waiter found (a dead holder's).
const STEAL_LUA: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// How often a waiter checks whether the lock's holder is still connected.
const HOLDER_CHECK_EVERY: u32 = 20;

/// The connection folds run on, with its Redis client id (named in the fold lock's value).
pub(crate) struct FoldConn {
    conn: MultiplexedConnection,
    client: Option<i64>,
}

fn lock_lost() -> Error {
    Error::new(ErrorKind::Unavailable, "the fold lock expired or changed hands; nothing applied")
        .with_operation("fold")
        .with_backend(BACKEND)
}

/// True when `e` came from a connection that dropped (not a timeout, not the lock).
fn dropped(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<redis::RedisError>())
        .is_some_and(|r| !r.is_timeout() && (r.is_connection_dropped() || r.is_io_error()))
}

/// What one round did.
struct Round {
    blobs: usize,
    changes: u64,
}

impl RedisStore {
    /// Apply every logged shadow change to the Merkle nodes, so that the shadow describes the
    /// data exactly; returns how many logged changes were folded. Merkle reads do this first,
    /// and writes start it in the background once `fold_threshold` changes are pending; call
    /// it directly to pay the cost at a moment of your choosing. Waits (bounded) while another
    /// process folds; errors are Temporary and leave the log as it was.
    pub async fn fold(&self) -> Result<u64> {
        let span = tracing::debug_span!("redis.fold", prefix = %self.inner.opts.prefix);
        async move {
            let mut slot = self.inner.fold_conn.lock().await;
            let mut total = 0;
            let mut retried = false;
            loop {
                let reused = slot.is_some();
                let conn = match slot.as_mut() {
                    Some(c) => c,
                    None => slot.insert(self.fold_connection().await?),
                };
                match self.fold_round(conn).await {
                    Ok(Round { blobs: 0, .. }) => return Ok(total),
                    Ok(round) => total += round.changes,
                    Err(e) => {
                        // The connection may hold a WATCH or a half-read reply: start afresh,
                        // at once if it merely dropped (a restarted or killed connection).
                        *slot = None;
                        if reused && !retried && dropped(&e) {
                            retried = true;
                            continue;
                        }
                        return Err(e);
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn fold_connection(&self) -> Result<FoldConn> {
        let o = &self.inner.opts;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(o.connect_timeout))
            .set_response_timeout(Some(o.response_timeout));
        let mut conn = self
            .bounded(self.inner.client.get_multiplexed_async_connection_with_config(&config))
            .await?;
        // Named in the lock's value, so that a waiter can tell a holder that died (a killed
        // process: Redis drops its connection at once). Without `CLIENT ID` (a restricted
        // server) the lock's expiry alone frees it.
        let client = self.bounded(redis::cmd("CLIENT").arg("ID").query_async(&mut conn)).await.ok();
        Ok(FoldConn { conn, client })
    }

    /// `fut` within the connect + response deadline, errors mapped (no retry: a fold that
    /// fails is simply tried again later).
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let o = &self.inner.opts;
        let bound = o.connect_timeout + o.response_timeout + Duration::from_millis(200);
        match tokio::time::timeout(bound, fut).await {
            Err(_) => Err(error::deadline("fold", bound)),
            Ok(r) => r.map_err(|e| error::map(e, "fold")),
        }
    }

    async fn fold_round(&self, fc: &mut FoldConn) -> Result<Round> {
        let lock = self.inner.keys.lock();
        let conn = &mut fc.conn;
        let token = match fc.client {
            Some(id) => format!("{}@{id}", token()),
            None => token(),
        };
        let started = Instant::now();
        let mut waits = 0u32;
        loop {
            let got: Option<String> = self
                .bounded(
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg(&token)
                        .arg("NX")
                        .arg("PX")
                        .arg(LOCK_TTL.as_millis() as u64)
                        .query_async(conn),
                )
                .await?;
            if got.is_some() {
                break;
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "another process holds the fold lock",
                )
                .with_operation("fold")
                .with_backend(BACKEND));
            }
            waits += 1;
            if waits % HOLDER_CHECK_EVERY == 0 && self.take_from_dead_holder(conn, &lock).await {
                continue;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let result = self.fold_locked(conn, &token).await;
        if result.is_err() {
            // Release at once rather than block every fold until the lock expires.
            let inner = &self.inner;
            let (lock, token) = (&lock, &token);
            let _ = self
                .run("fold", |mut c| async move {
                    inner.unlock.key(lock).arg(token).invoke_async::<Value>(&mut c).await
                })
                .await;
        }
        result
    }

    /// If the lock's holder named its client id and no such client is connected any more,
    /// delete the lock (only if unchanged) and return true. Safe even if wrong: a holder whose
    /// lock changed hands applies nothing (its `EXEC` watches the lock key).
    async fn take_from_dead_holder(&self, conn: &mut MultiplexedConnection, lock: &str) -> bool {
        let Ok(Some(value)) =
            self.bounded(redis::cmd("GET").arg(lock).query_async::<Option<String>>(conn)).await
        else {
            return false;
        };
        let Some(id) = value.rsplit_once('@').and_then(|(_, id)| id.parse::<i64>().ok()) else {
            return false;
        };
        let listed: Result<String> = self
            .bounded(redis::cmd("CLIENT").arg("LIST").arg("ID").arg(id).query_async(conn))
            .await;
        if !matches!(&listed, Ok(list) if list.trim().is_empty()) {
            return false;
        }
        let stolen: Result<i64> = self
            .bounded(
                redis::cmd("EVAL").arg(STEAL_LUA).arg(1).arg(lock).arg(&value).query_async(conn),
            )
            .await;
        let took = matches!(stolen, Ok(1));
        if took {
            tracing::info!(
                holder = id,
                "took the fold lock of a holder that is no longer connected"
            );
        }
        took
    }

    async fn fold_locked(&self, conn: &mut MultiplexedConnection, token: &str) -> Result<Round> {
        let keys = &self.inner.keys;
        let (lock, log, pending) = (keys.lock(), keys.log(), keys.pending());
        // From here on, EXEC fails if the lock key changes (expiry or another owner); the GET
        // covers the moment between taking the lock and watching it.
        let () = self.bounded(redis::cmd("WATCH").arg(&lock).query_async(conn)).await?;
        let holder: Option<String> =
            self.bounded(redis::cmd("GET").arg(&lock).query_async(conn)).await?;
        if holder.as_deref() != Some(token) {
            return Err(lock_lost());
        }
        let blobs: Vec<Vec<u8>> = self
            .bounded(
                redis::cmd("LRANGE").arg(&log).arg(0).arg(BLOBS_PER_ROUND - 1).query_async(conn),
            )
            .await?;
        if blobs.is_empty() {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("DEL").arg(&lock).ignore();
            let _: Option<()> = self.bounded(pipe.query_async(conn)).await?;
            return Ok(Round { blobs: 0, changes: 0 });
        }
        let data_prefix = keys.data_prefix();
        let (changes, logged) = parse(&data_prefix, &blobs);
        let mut fold = Fold::new(keys, self.inner.opts.bucket_cap, &changes);
        let mut supplied = Vec::new();
        let (sets, dels) = loop {
            let step = fold.step(std::mem::take(&mut supplied)).map_err(|e| {
                Error::new(ErrorKind::Corrupt, e.to_string())
                    .with_operation("fold")
                    .with_backend(BACKEND)
            })?;
            match step {
                Step::Read([]) => {}
                Step::Read(wanted) => {
                    supplied =
                        self.bounded(redis::cmd("MGET").arg(wanted).query_async(conn)).await?;
                }
                Step::Done { sets, dels } => break (sets, dels),
            }
        };
        let writes = sets.len();
        let deletes = dels.len();
        let () = self.bounded(redis::cmd("MULTI").query_async(conn)).await?;
        // Two messages in flight: the server parses one while the client encodes the next.
        // Their order does not matter (each node key is set or deleted once); what follows
        // `EXEC` is sent only once every queued message is answered.
        let mut sends = futures_util::stream::iter(queued(sets, dels))
            .map(|pipe| {
                let mut conn = conn.clone();
                async move { self.bounded(pipe.query_async::<()>(&mut conn)).await }
            })
            .buffer_unordered(MESSAGES_IN_FLIGHT);
        while let Some(sent) = sends.next().await {
            sent?;
        }
        drop(sends);
        let mut pipe = redis::pipe();
        pipe.cmd("LTRIM").arg(&log).arg(blobs.len()).arg(-1).ignore();
        pipe.cmd("EVAL").arg(SETTLE_LUA).arg(1).arg(&pending).arg(logged).ignore();
        pipe.cmd("DEL").arg(&lock).ignore();
        pipe.cmd("EXEC");
        let (done,): (Option<Value>,) = self.bounded(pipe.query_async(conn)).await?;
        if done.is_none() {
            return Err(lock_lost());
        }
        tracing::debug!(blobs = blobs.len(), changes = logged, writes, deletes, "folded");
        Ok(Round { blobs: blobs.len(), changes: logged })
    }
}

/// The node writes of a fold as the messages that queue them inside its `MULTI` (the caller
/// sends `MULTI` before and `EXEC` after): `MSET`s of at most [`CHUNK`] arguments and `DEL`s,
/// each message holding at most ~[`MESSAGE_BYTES`] of keys and values. Each value is dropped
/// once its message is encoded, so the client holds one message's copies at a time rather
/// than the whole fold's.
fn queued(
    sets: Vec<(String, Vec<u8>)>,
    dels: Vec<String>,
) -> impl Iterator<Item = redis::Pipeline> {
    let mut sets = sets.into_iter().peekable();
    let mut dels = dels.into_iter().peekable();
    std::iter::from_fn(move || {
        if sets.peek().is_none() && dels.peek().is_none() {
            return None;
        }
        let mut pipe = redis::pipe();
        let mut bytes = 0;
        fill(&mut pipe, "MSET", &mut sets, &mut bytes, |cmd, (k, v)| {
            let n = k.len() + v.len();
            cmd.arg(k).arg(v);
            n
        });
        fill(&mut pipe, "DEL", &mut dels, &mut bytes, |cmd, k| {
            let n = k.len();
            cmd.arg(k);
            n
        });
        Some(pipe)
    })
}

/// Add `name` commands of at most [`CHUNK`] items each to `pipe`, taking items while the
/// message holds fewer than [`MESSAGE_BYTES`] (`add` appends one item's arguments to the
/// command just started and returns its bytes).
fn fill<T>(
    pipe: &mut redis::Pipeline,
    name: &str,
    items: &mut std::iter::Peekable<std::vec::IntoIter<T>>,
    bytes: &mut usize,
    add: impl Fn(&mut redis::Pipeline, T) -> usize,
) {
    while *bytes < MESSAGE_BYTES && items.peek().is_some() {
        let cmd = pipe.cmd(name);
        for _ in 0..CHUNK {
            let Some(item) = items.next_if(|_| *bytes < MESSAGE_BYTES) else { break };
            *bytes += add(cmd, item);
        }
        cmd.ignore();
    }
}

/// Net changes of the blobs, skipping (with an error log) any blob that is not well formed —
/// only a bug or a foreign write produces one, and skipping keeps the log moving (the shadow
/// then misses those changes until the ids are written again). Also the number of change
/// records, for the pending count.
fn parse<'a>(data_prefix: &str, blobs: &'a [Vec<u8>]) -> (Vec<Change<'a>>, u64) {
    let mut all = Vec::new();
    let mut logged = 0u64;
    for (i, blob) in blobs.iter().enumerate() {
        if let Err(e) = log::parse_blob(data_prefix, blob, &mut all) {
            tracing::error!(blob = i, error = %e, "skipping a malformed change-log blob");
        }
        logged += count_records(blob);
    }
    (log::net(all), logged)
}

/// Number of change records in a log blob (a malformed tail ends the count).
fn count_records(blob: &[u8]) -> u64 {
    let (mut at, mut n) = (0usize, 0u64);
    while let Some(&flags) = blob.get(at) {
        let Some(len) = blob.get(at + 1..).and_then(|r| r.iter().position(|&b| b == 0)) else {
            break;
        };
        at += 1 + len + 1 + 32 * usize::from(flags & 1) + 32 * usize::from((flags >> 1) & 1);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Each message's commands as (name, arguments).
    fn commands(pipe: &redis::Pipeline) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        pipe.cmd_iter()
            .map(|cmd| {
                let mut args = cmd.args_iter().map(|a| match a {
                    redis::Arg::Simple(b) => b.to_vec(),
                    _ => b"<cursor>".to_vec(),
                });
                let name = args.next().unwrap_or_default();
                (name, args.collect())
            })
            .collect()
    }

    proptest! {
        /// The messages queue every write exactly once, in order (sets, then deletes), in
        /// commands of at most `CHUNK` keys, each message over `MESSAGE_BYTES` by at most its
        /// last key and value.
        #[test]
        fn messages_queue_every_write_once_within_their_bounds(
            sizes in proptest::collection::vec(0usize..300_000, 0..40),
            dels in 0usize..5000,
        ) {
            let sets: Vec<(String, Vec<u8>)> =
                sizes.iter().enumerate().map(|(i, &n)| (format!("n{i}"), vec![i as u8; n])).collect();
            let dels: Vec<String> = (0..dels).map(|i| format!("d{i}")).collect();
            let (mut got_sets, mut got_dels) = (Vec::new(), Vec::new());
            for pipe in queued(sets.clone(), dels.clone()) {
                let mut bytes = 0;
                let mut last = 0;
                for (name, args) in commands(&pipe) {
                    match name.as_slice() {
                        b"MSET" => {
                            prop_assert!(args.len() % 2 == 0 && args.len() <= 2 * CHUNK);
                            for kv in args.chunks(2) {
                                last = kv[0].len() + kv[1].len();
                                bytes += last;
                                got_sets.push((String::from_utf8(kv[0].clone()).unwrap(), kv[1].clone()));
                            }
                        }
                        b"DEL" => {
                            prop_assert!(!args.is_empty() && args.len() <= CHUNK);
                            for k in args {
                                last = k.len();
                                bytes += last;
                                got_dels.push(String::from_utf8(k).unwrap());
                            }
                        }
                        other => prop_assert!(false, "unexpected command {other:?}"),
                    }
                }
                prop_assert!(!pipe.is_empty());
                prop_assert!(bytes < MESSAGE_BYTES + last || bytes == last, "{bytes} bytes");
            }
            prop_assert_eq!(got_sets, sets);
            prop_assert_eq!(got_dels, dels);
        }
    }
}
