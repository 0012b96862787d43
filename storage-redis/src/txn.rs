//! Optimistic batch writes: the same newer-wins decision and change log as `put.lua`, but
//! decided by the client on a snapshot that Redis guarantees is still current when the writes
//! commit, so the data is written with native commands instead of through Lua.
//!
//! One batch, on a connection nobody else uses meanwhile:
//!
//! 1. `WATCH w:epoch` · `MGET` the batch's data keys (one round trip);
//! 2. [`plan`]: for each op in order, the newer-wins test against the stored value (exactly
//!    `put.lua`'s), the final value per key and the change-log blob (same format);
//! 3. `MULTI` · `SET … PX` (TTL'd) · `MSET` · `DEL` · `RPUSH m:log` · `INCRBY m:pending` ·
//!    `INCR w:epoch` · `EXEC` (one round trip).
//!
//! Every writer of the store's data keys — this path and `put.lua` alike — increments `w:epoch`
//! in the same atomic unit as its writes, so `EXEC` commits only if no write landed between the
//! `MGET` and the `EXEC`; otherwise Redis refuses the whole transaction (nothing is written)
//! and the caller runs the batch through `put.lua` instead. A late older write therefore never
//! overwrites a newer one, and the log always describes the data it was written with. Keys
//! that merely expire in between change nothing the decision relies on: an expired value is
//! treated as absent, and values with a TTL are never in the shadow.
//!
//! Why: in Redis 7's Lua every argument and every reply string is interned (hashed byte by
//! byte), so passing 512-byte values through a script costs more than the raw `SET`s
//! themselves (README, cost model). A `WATCH` per data key is no alternative: Redis checks a
//! new watched key against every key the client already watches (quadratic in the batch).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};
use sync_engine_core::store::PutOutcome;
use sync_engine_core::{Error, ErrorKind};

use crate::batch::{Kind, Op};
use crate::codec::{FORMAT, HEADER_LEN};
use crate::error::{self, BACKEND};
use crate::keys::Keys;
use crate::store::RedisStore;

/// Flags byte of a shadowed, live item (`codec::FLAG_SHADOW` with no other bit).
const SHADOWED: u8 = crate::codec::FLAG_SHADOW;

/// A stored value under `key` is not an item in this format (and the op does not remove it):
/// the batch must not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Foreign {
    pub(crate) key: String,
}

/// What one batch writes, decided on the stored values it read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan<'a> {
    /// Keys and values written without TTL.
    pub(crate) set: Vec<(String, &'a [u8])>,
    /// Keys, values and TTLs (ms) written with `PX`.
    pub(crate) set_ttl: Vec<(String, &'a [u8], u64)>,
    /// Keys deleted.
    pub(crate) del: Vec<String>,
    /// The change-log blob (`log.rs` format); empty when no shadow digest changes.
    pub(crate) log: Vec<u8>,
    /// Shadow changes in `log`.
    pub(crate) changes: u64,
    /// Counts, as `put.lua` returns them.
    pub(crate) outcome: PutOutcome,
}

impl Plan<'_> {
    /// True when nothing is written.
    pub(crate) fn is_empty(&self) -> bool {
        self.set.is_empty() && self.set_ttl.is_empty() && self.del.is_empty()
    }
}

/// `put.lua`'s `newer`: the incoming value's stamp is strictly greater than the stored one's
/// (version, then content hash — both big-endian, so bytes 2..42 compare lexicographically —
/// then the tombstone flag). Both values are at least [`HEADER_LEN`] bytes.
fn newer(new: &[u8], old: &[u8]) -> bool {
    match new[2..42].cmp(&old[2..42]) {
        std::cmp::Ordering::Equal => (new[1] & 1) > (old[1] & 1),
        o => o == std::cmp::Ordering::Greater,
    }
}

/// The final state of one key: `None` removed, else the value and its TTL.
type Final<'a> = Option<(&'a [u8], Option<u64>)>;

/// One key of a batch: the key, its current value as the ops so far left it, and its final
/// state if an op changed it.
struct Slot<'a> {
    key: String,
    cur: Option<&'a [u8]>,
    fin: Option<Final<'a>>,
}

/// Decide what `ops` do given `stored` (the value under each op's key before the batch, in op
/// order, as `MGET` answered), exactly as `put.lua` would: ops apply in order (an id may
/// repeat), writes are newer-wins, removals unconditional; every change of a key's shadow
/// digest is logged as `flags | key | NUL | old digest | new digest`.
pub(crate) fn plan<'a>(
    keys: &Keys,
    ops: &'a [Op<'a>],
    stored: &'a [Option<Vec<u8>>],
) -> Result<Plan<'a>, Foreign> {
    let mut plan = Plan::default();
    // Per key (in first-seen order): the current value, then the final state.
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(ops.len());
    let mut slots: Vec<Slot<'a>> = Vec::with_capacity(ops.len());
    for (op, old) in ops.iter().zip(stored) {
        let slot = match index.get(op.id.as_str()) {
            Some(&s) => s,
            None => {
                index.insert(op.id.as_str(), slots.len());
                slots.push(Slot { key: keys.data(op.id), cur: old.as_deref(), fin: None });
                slots.len() - 1
            }
        };
        let Slot { key, cur, fin } = &mut slots[slot];
        let mut c = *cur;
        let mut bad = false;
        if let Some(v) = c {
            if v.len() < HEADER_LEN || v[0] != FORMAT {
                if op.kind != Kind::Remove {
                    return Err(Foreign { key: key.clone() });
                }
                c = None;
                bad = true;
            }
        }
        // Some(None): removed; Some(Some(..)): written; None: unchanged.
        let next: Option<Final<'a>> = match op.kind {
            Kind::Remove => (c.is_some() || bad).then_some(None),
            Kind::Set | Kind::SetTtl(_) => {
                let v = &op.value[..];
                if c.is_none_or(|c| newer(v, c)) {
                    plan.outcome.applied += 1;
                    let ttl = match op.kind {
                        Kind::SetTtl(ms) => Some(ms),
                        _ => None,
                    };
                    Some(Some((v, ttl)))
                } else {
                    plan.outcome.stale += 1;
                    None
                }
            }
        };
        let Some(next) = next else { continue };
        let od = c.filter(|c| c[1] == SHADOWED);
        let nd = next.map(|(v, _)| v).filter(|v| v.get(1) == Some(&SHADOWED));
        if od.is_some() || nd.is_some() {
            plan.changes += 1;
            plan.log.push(u8::from(od.is_some()) | (u8::from(nd.is_some()) << 1));
            plan.log.extend_from_slice(key.as_bytes());
            plan.log.push(0);
            for d in [od, nd].into_iter().flatten() {
                plan.log.extend_from_slice(&d[50..82]);
            }
        }
        *cur = next.map(|(v, _)| v);
        *fin = Some(next);
    }
    for Slot { key, fin, .. } in slots {
        match fin {
            None => {}
            Some(None) => plan.del.push(key),
            Some(Some((v, None))) => plan.set.push((key, v)),
            Some(Some((v, Some(ttl)))) => plan.set_ttl.push((key, v, ttl)),
        }
    }
    Ok(plan)
}

/// The `MULTI`/`EXEC` pipeline writing `plan`; its LAST reply is the pending count
/// (`INCRBY`, or `GET` when nothing was logged).
pub(crate) fn commit_pipeline(keys: &Keys, plan: &Plan<'_>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (k, v, ttl) in &plan.set_ttl {
        pipe.cmd("SET").arg(k).arg(*v).arg("PX").arg(*ttl);
    }
    if !plan.set.is_empty() {
        let mset = pipe.cmd("MSET");
        for (k, v) in &plan.set {
            mset.arg(k).arg(*v);
        }
    }
    if !plan.del.is_empty() {
        pipe.cmd("DEL").arg(&plan.del);
    }
    if !plan.is_empty() {
        pipe.cmd("INCR").arg(keys.epoch());
    }
    if plan.changes > 0 {
        pipe.cmd("RPUSH").arg(keys.log()).arg(&plan.log[..]);
        pipe.cmd("INCRBY").arg(keys.pending()).arg(plan.changes);
    } else {
        pipe.cmd("GET").arg(keys.pending());
    }
    pipe
}

/// The pending count from the replies of [`commit_pipeline`] (an aborted `EXEC` is handled by
/// the caller); `Err` names the first reply that is not what the commands answer.
pub(crate) fn pending_of(replies: &[Value]) -> Result<u64, String> {
    if let Some(bad) = replies.iter().find(|v| matches!(v, Value::ServerError(_))) {
        return Err(format!("a write of the batch failed: {bad:?}"));
    }
    match replies.last() {
        Some(Value::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
        Some(Value::Nil) => Ok(0),
        Some(Value::BulkString(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("pending count is {b:?}, not a number")),
        other => Err(format!("pending count reply is {other:?}")),
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;

/// Why an optimistic write did not commit.
pub(crate) enum Miss {
    /// Another write committed between the read and the `EXEC` (nothing was written), or the
    /// connection failed: run the batch through `put.lua`.
    Retry,
    /// An error to report as is (a foreign value: nothing was written; a timeout).
    Fail(Error),
}

impl RedisStore {
    /// Write `ops` (at most [`crate::batch::OPS_PER_SCRIPT`]) optimistically on the store's
    /// write connection, which the caller holds; returns the outcome and the pending count.
    pub(crate) async fn write_optimistic(
        &self,
        op: &'static str,
        conn: &mut Option<MultiplexedConnection>,
        ops: &[Op<'_>],
    ) -> Result<(PutOutcome, u64), Miss> {
        let o = &self.inner.opts;
        let bound = o.connect_timeout + o.response_timeout + Duration::from_millis(200);
        match tokio::time::timeout(bound, self.try_write(op, conn, ops)).await {
            Ok(Ok(Some(done))) => Ok(done),
            Ok(Ok(None)) => Err(Miss::Retry),
            Ok(Err(Miss::Retry)) => {
                // The connection may be broken or hold a WATCH: start afresh next time.
                *conn = None;
                Err(Miss::Retry)
            }
            Ok(Err(fail)) => {
                *conn = None;
                Err(fail)
            }
            Err(_) => {
                *conn = None;
                Err(Miss::Fail(error::deadline(op, bound)))
            }
        }
    }

    /// One attempt: `Ok(None)` when `EXEC` was refused because another write intervened.
    async fn try_write(
        &self,
        op: &'static str,
        slot: &mut Option<MultiplexedConnection>,
        ops: &[Op<'_>],
    ) -> Result<Option<(PutOutcome, u64)>, Miss> {
        let keys = &self.inner.keys;
        let conn = match slot {
            Some(c) => c,
            None => {
                let o = &self.inner.opts;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(o.connect_timeout))
                    .set_response_timeout(Some(o.response_timeout));
                let c = self
                    .inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| {
                        tracing::debug!(error = %e, "no write connection; using the script");
                        Miss::Retry
                    })?;
                slot.insert(c)
            }
        };
        let retry = |e: redis::RedisError| {
            tracing::debug!(operation = op, error = %e, "optimistic write failed; using the script");
            Miss::Retry
        };
        let data_keys: Vec<String> = ops.iter().map(|o| keys.data(o.id)).collect();
        let mut read = redis::pipe();
        read.cmd("WATCH").arg(keys.epoch()).ignore().cmd("MGET").arg(&data_keys);
        let (stored,): (Vec<Option<Vec<u8>>>,) = read.query_async(conn).await.map_err(retry)?;
        if stored.len() != ops.len() {
            return Err(Miss::Retry);
        }
        let plan = match plan(keys, ops, &stored) {
            Ok(p) => p,
            Err(Foreign { key }) => {
                let _: RedisResult<()> = redis::cmd("UNWATCH").query_async(conn).await;
                let message = format!("stored value of {key} is not an item in this format");
                return Err(Miss::Fail(
                    Error::new(ErrorKind::Corrupt, message)
                        .with_operation(op)
                        .with_backend(BACKEND),
                ));
            }
        };
        let replies: Option<Vec<Value>> =
            commit_pipeline(keys, &plan).query_async(conn).await.map_err(retry)?;
        let Some(replies) = replies else { return Ok(None) };
        let pending = pending_of(&replies).map_err(|what| Miss::Fail(error::contract(op, what)))?;
        Ok(Some((plan.outcome, pending)))
    }
}
