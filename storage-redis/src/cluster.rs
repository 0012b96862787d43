//! Redis Cluster (feature `redis-cluster`). Every key of a store — items, Merkle nodes, change
//! log, lock — carries the `{prefix}` hash tag, so the whole store lives in ONE slot, owned by
//! one primary. [`RedisStore::connect_cluster`] asks a seed node which primary owns that slot
//! (`CLUSTER KEYSLOT`, `CLUSTER SLOTS`) and connects to it as to a plain server: the scripts,
//! the fold's `WATCH`/`MULTI` and `SCAN` then work unchanged. Pub/sub `PUBLISH` is broadcast
//! across the cluster, so the invalidation bus works from any node.
//!
//! Limit: the owner is resolved at connect time. After a failover or a resharding that moves
//! the slot, calls get `MOVED` (reported Unavailable, so the engine treats L2 as down and
//! repairs it later) until the store is connected again.

use redis::{ConnectionAddr, RedisResult, Value};
use sync_engine_core::{Result, SecretUrl};
use tracing::Instrument;

use crate::error;
use crate::options::RedisOptions;
use crate::store::{config_error, RedisStore};

/// The `(host, port)` of the primary serving `slot`, from a `CLUSTER SLOTS` reply.
fn owner(slots: &Value, slot: i64) -> Option<(String, u16)> {
    let Value::Array(ranges) = slots else { return None };
    ranges.iter().find_map(|range| {
        let Value::Array(r) = range else { return None };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        if !(*start..=*end).contains(&slot) {
            return None;
        }
        let host = match node.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let Value::Int(port) = node.get(1)? else { return None };
        Some((host, u16::try_from(*port).ok()?))
    })
}

impl RedisStore {
    /// The `host:port` this store is connected to (for a cluster store: its slot's owner).
    pub fn server_addr(&self) -> String {
        self.inner.client.get_connection_info().addr().to_string()
    }

    /// Connect to the store's primary in the Redis Cluster that `seed` (any node) belongs to.
    /// Errors as [`RedisStore::connect`]; a cluster without an owner for the slot is
    /// Unavailable.
    pub async fn connect_cluster(seed: &SecretUrl, opts: RedisOptions) -> Result<RedisStore> {
        let span = tracing::info_span!("redis.connect_cluster", seed = %seed.redacted(), prefix = %opts.prefix);
        async move {
            opts.validate().map_err(|e| config_error(e.to_string()))?;
            let keys = opts.keys().map_err(|e| config_error(e.to_string()))?;
            let client = redis::Client::open(seed.expose()).map_err(|_| {
                config_error(format!("`{}` is not a valid Redis URL", seed.redacted()))
            })?;
            let bound = opts.connect_timeout + opts.response_timeout;
            let ask = async {
                let mut c = client.get_multiplexed_async_connection().await?;
                let slot: i64 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(keys.base())
                    .query_async(&mut c)
                    .await?;
                let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await?;
                RedisResult::Ok((slot, slots))
            };
            let (slot, slots) = tokio::time::timeout(bound, ask)
                .await
                .map_err(|_| error::deadline("connect_cluster", bound))?
                .map_err(|e| error::map(e, "connect_cluster"))?;
            let (host, port) = owner(&slots, slot).ok_or_else(|| {
                sync_engine_core::Error::unavailable(format!(
                    "no primary owns slot {slot} of prefix `{}`",
                    opts.prefix
                ))
                .with_backend(error::BACKEND)
                .with_operation("connect_cluster")
            })?;
            let info = client.get_connection_info().clone();
            let addr = match info.addr() {
                ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host.clone(), port),
                ConnectionAddr::TcpTls { insecure, tls_params, .. } => ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => return Err(config_error("a cluster seed must be a TCP URL".into())),
            };
            let owner = redis::Client::open(info.set_addr(addr))
                .map_err(|e| error::map(e, "connect_cluster"))?;
            tracing::info!(slot, host = %host, port, "store slot owner resolved");
            RedisStore::connect_client(owner, opts).await
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![Value::BulkString(host.as_bytes().to_vec()), Value::Int(port)])
    }

    #[test]
    fn finds_the_owner_of_a_slot() {
        let slots = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("10.0.0.1", 7001)]),
            Value::Array(vec![Value::Int(5461), Value::Int(10922), node("10.0.0.2", 7002)]),
        ]);
        assert_eq!(owner(&slots, 0), Some(("10.0.0.1".into(), 7001)));
        assert_eq!(owner(&slots, 5461), Some(("10.0.0.2".into(), 7002)));
        assert_eq!(owner(&slots, 16000), None);
    }
}
