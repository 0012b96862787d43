//! Turning a batch of writes or removals into invocations of `put.lua` (see its header for the
//! argument layout). The client does what Lua cannot do cheaply: SHA-256 (leaf digests and
//! segment hashes), and the list of path nodes the ids live under.

use std::collections::HashSet;
use std::time::Duration;

use sync_engine_core::store::CacheEntry;
use sync_engine_core::{Error, ObjectId};

use crate::codec;
use crate::error::BACKEND;
use crate::keys::Keys;

/// Ops per script invocation: bounds how long one script blocks Redis (a few ms). Larger batches
/// become several invocations sent in ONE pipeline (one round trip).
pub(crate) const OPS_PER_SCRIPT: usize = 1000;

/// Longest TTL passed to Redis, in ms (about 31 years): keeps `PX` far inside its range.
const MAX_TTL_MS: u64 = 1_000_000_000_000;

/// What one op does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Newer-wins write without TTL.
    Set,
    /// Newer-wins write expiring after this many ms.
    SetTtl(u64),
    /// Unconditional removal.
    Remove,
}

/// One op: the id, the encoded item (empty for a removal), the kind.
#[derive(Debug, Clone)]
pub(crate) struct Op<'a> {
    pub(crate) id: &'a ObjectId,
    pub(crate) value: Vec<u8>,
    pub(crate) kind: Kind,
}

/// TTL in whole milliseconds, rounded up, at least 1, at most [`MAX_TTL_MS`].
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).clamp(1, MAX_TTL_MS)
}

/// The ops of a `put_batch`: items are encoded here; a tombstone without its own TTL gets the
/// store's tombstone TTL. Refuses (naming the id) an item the format cannot carry.
pub(crate) fn put_ops<'a>(
    entries: &'a [CacheEntry],
    tombstone_ttl: Option<Duration>,
) -> Result<Vec<Op<'a>>, Error> {
    entries
        .iter()
        .map(|e| {
            let ttl = if e.item.is_tombstone() { e.ttl.or(tombstone_ttl) } else { e.ttl };
            let value = codec::encode(&e.item, ttl.is_none()).map_err(|err| {
                Error::invalid(format!("item {}: {err}", e.item.id()))
                    .with_operation("put_batch")
                    .with_backend(BACKEND)
            })?;
            let kind = match ttl {
                Some(t) => Kind::SetTtl(ttl_ms(t)),
                None => Kind::Set,
            };
            Ok(Op { id: e.item.id(), value, kind })
        })
        .collect()
}

/// The ops of a `remove_many`.
pub(crate) fn remove_ops(ids: &[ObjectId]) -> Vec<Op<'_>> {
    ids.iter().map(|id| Op { id, value: Vec::new(), kind: Kind::Remove }).collect()
}

/// `id` split at its last dot: (parent path, last segment).
pub(crate) fn split_last(id: &str) -> (&str, &str) {
    match id.rfind('.') {
        Some(i) => (&id[..i], &id[i + 1..]),
        None => ("", id),
    }
}

/// One `EVALSHA put.lua` command for `ops` (at most [`OPS_PER_SCRIPT`] of them, not enforced).
pub(crate) fn put_command(sha: &str, keys: &Keys, ops: &[Op<'_>]) -> redis::Cmd {
    let mut seen = HashSet::with_capacity(ops.len());
    let dups = !ops.iter().all(|op| seen.insert(op.id.as_str()));
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha).arg(ops.len() + 3);
    for op in ops {
        cmd.arg(keys.data(op.id));
    }
    cmd.arg(keys.log()).arg(keys.pending()).arg(keys.epoch());
    let kinds: Vec<u8> = ops
        .iter()
        .map(|op| match op.kind {
            Kind::Set => b'S',
            Kind::SetTtl(_) => b'X',
            Kind::Remove => b'R',
        })
        .collect();
    cmd.arg(kinds).arg(if dups { "1" } else { "0" });
    for op in ops {
        cmd.arg(&op.value[..]);
    }
    for op in ops {
        if let Kind::SetTtl(ms) = op.kind {
            cmd.arg(ms);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_is_bounded() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_ms(Duration::from_millis(300)), 300);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn split_last_separates_parent_and_segment() {
        assert_eq!(split_last("a.b.c"), ("a.b", "c"));
        assert_eq!(split_last("a"), ("", "a"));
    }

    fn args(cmd: &redis::Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn commands_carry_kinds_repeats_values_and_ttls() {
        let keys = Keys::new("p:").unwrap();
        let ids: Vec<ObjectId> =
            ["a.b", "c", "a.b"].iter().map(|s| ObjectId::new(s).unwrap()).collect();
        let ops = vec![
            Op { id: &ids[0], value: b"v0".to_vec(), kind: Kind::Set },
            Op { id: &ids[1], value: b"v1".to_vec(), kind: Kind::SetTtl(300) },
            Op { id: &ids[2], value: Vec::new(), kind: Kind::Remove },
        ];
        let a = args(&put_command("sha", &keys, &ops));
        let s = |i: usize| String::from_utf8(a[i].clone()).unwrap();
        // EVALSHA sha 6 k0 k1 k2 log pending epoch kinds dups v0 v1 v2 ttl
        assert_eq!((s(0), s(1), s(2)), ("EVALSHA".into(), "sha".into(), "6".into()));
        assert_eq!(s(3), "p:{p:}d:a.b");
        assert_eq!((s(6), s(7), s(8)), (keys.log(), keys.pending(), keys.epoch()));
        assert_eq!((s(9), s(10)), ("SXR".into(), "1".into()));
        assert_eq!(
            (s(11), s(12), s(13), s(14)),
            ("v0".into(), "v1".into(), String::new(), "300".into())
        );
        assert_eq!(a.len(), 15);
        let single = args(&put_command("sha", &keys, &ops[..2]));
        assert_eq!(String::from_utf8(single[9].clone()).unwrap(), "0", "no repeats");
    }
}
