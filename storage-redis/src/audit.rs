//! The deep audit ([`CacheStore::audit`](sync_engine_core::store::CacheStore::audit)): every
//! stored item under a path checked against its own integrity data and against the Merkle
//! shadow, which a change made behind the store's back (a plain `SET`, `SETRANGE`, `DEL`, bit
//! rot) leaves describing the old value.
//!
//! 1. **Values**: `SCAN MATCH` over the data keys under the path, `MGET` per step; each value
//!    is decoded with the same check reads use ([`codec::decode`]: payload against its content
//!    hash, header against its leaf digest) and must carry flags this crate writes. Its
//!    expected shadow leaf follows `put.lua`'s rule: the stored digest when the flags byte is
//!    exactly "in the shadow", none otherwise.
//! 2. **Shadow**: the leaves under the path, by a walk of the Merkle reads (each folds first).
//! 3. **Compare**: a value that fails its checks, a leaf that differs from its value's, a leaf
//!    without a value, a value that should have a leaf and has none — suspects.
//! 4. **Confirm** each suspect alone: read its value, its leaf (after a fold), its value again.
//!    If the two value reads differ, a write is in flight: the id is *changing*, not corrupt.
//!    Otherwise the verdict stands, with the exact value and leaf seen as evidence.
//! 5. **Evict** (when asked): `heal.lua` removes each corrupt entry if it is still exactly the
//!    value seen, logging the shadow's own leaf as the old digest, so the fold removes the leaf
//!    that is really there (a plain removal would log the digest in the damaged bytes).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use redis::Value;
use sync_engine_core::merkle::{join, nibble, segment_hash, split_id, validate_path};
use sync_engine_core::merkle::{Children, Digest, Entry, NodeKey};
use sync_engine_core::store::{AuditReport, MerkleStore};
use sync_engine_core::{id::HARD_MAX_ID_LEN, Error, ObjectId, Result};
use tracing::Instrument;

use crate::codec::{self, FLAG_SHADOW, FLAG_TOMBSTONE, HEADER_LEN};
use crate::error::{self, BACKEND};
use crate::store::RedisStore;

/// Keys per `SCAN` step (and `MGET`).
const SCAN_STEP: usize = 1000;
/// Entries per `heal.lua` invocation.
const HEAL_STEP: usize = 500;
/// Bucket nibbles of a leaf lookup: the fold never splits deeper (`fold::MAX_DEPTH`).
const LEAF_NIBBLES: usize = 16;

/// What a stored value says its shadow leaf should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The value fails its checks: whatever the shadow says, it is corrupt.
    Bad,
    /// A leaf with this digest.
    Leaf(Digest),
    /// No leaf (a tombstone, or an item written with a TTL).
    NoLeaf,
}

/// Judge one stored value of `id` (None: no value).
fn expect(id: &ObjectId, raw: Option<Bytes>) -> Option<Expect> {
    let raw = raw?;
    if raw.len() < HEADER_LEN || raw[1] & !(FLAG_TOMBSTONE | FLAG_SHADOW) != 0 {
        return Some(Expect::Bad);
    }
    if codec::decode(id.clone(), raw.clone()).is_err() {
        return Some(Expect::Bad);
    }
    Some(if raw[1] == FLAG_SHADOW {
        let mut d = [0u8; 32];
        d.copy_from_slice(&raw[50..82]);
        Expect::Leaf(Digest(d))
    } else {
        Expect::NoLeaf
    })
}

/// Whether a value judged `e` (None: absent) and a shadow leaf `leaf` agree.
fn agrees(e: Option<Expect>, leaf: Option<Digest>) -> bool {
    match e {
        None | Some(Expect::NoLeaf) => leaf.is_none(),
        Some(Expect::Leaf(d)) => leaf == Some(d),
        Some(Expect::Bad) => false,
    }
}

/// A confirmed corrupt entry: the value and the shadow leaf the audit saw.
struct Finding {
    id: ObjectId,
    value: Option<Bytes>,
    leaf: Option<Digest>,
}

impl RedisStore {
    /// See the module documentation.
    pub(crate) async fn audit_path(&self, path: &str, evict: bool) -> Result<AuditReport> {
        validate_path(path).map_err(|e| {
            Error::invalid(format!("audit prefix `{path}`: {e}"))
                .with_operation("audit")
                .with_backend(BACKEND)
        })?;
        let span =
            tracing::info_span!("redis.audit", prefix = %self.inner.opts.prefix, path, evict);
        async move {
            let (values, checked) = self.audit_values(path).await?;
            let leaves = self.shadow_leaves(path).await?;
            let mut suspects: Vec<ObjectId> = values
                .iter()
                .filter(|(id, e)| !agrees(Some(**e), leaves.get(id.as_str()).copied()))
                .map(|(id, _)| id.clone())
                .collect();
            let named: HashSet<&str> = values.keys().map(|id| id.as_str()).collect();
            for id in leaves.keys() {
                if !named.contains(id.as_str()) {
                    match ObjectId::with_max_len(id, HARD_MAX_ID_LEN) {
                        Ok(id) => suspects.push(id),
                        Err(e) => tracing::warn!(%id, error = %e, "shadow leaf with an invalid id"),
                    }
                }
            }
            drop(named);
            drop(values);
            let (findings, changing) = self.confirm(suspects).await?;
            let mut report = AuditReport {
                checked,
                corrupt: findings.iter().map(|f| f.id.clone()).collect(),
                evicted: Vec::new(),
                changing,
            };
            if evict {
                report.evicted = self.heal(&findings).await?;
            }
            tracing::info!(
                checked,
                corrupt = report.corrupt.len(),
                evicted = report.evicted.len(),
                changing,
                "L2 entries audited"
            );
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Passes 4 and 5 for the given ids.
    pub(crate) async fn audit_some(&self, ids: &[ObjectId], evict: bool) -> Result<AuditReport> {
        let span = tracing::debug_span!("redis.audit_ids", ids = ids.len(), evict);
        async move {
            let (findings, changing) = self.confirm(ids.to_vec()).await?;
            let mut report = AuditReport {
                checked: ids.len() as u64,
                corrupt: findings.iter().map(|f| f.id.clone()).collect(),
                evicted: Vec::new(),
                changing,
            };
            if evict {
                report.evicted = self.heal(&findings).await?;
            }
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Pass 1: every stored value under `path`, judged; and how many were checked.
    async fn audit_values(&self, path: &str) -> Result<(BTreeMap<ObjectId, Expect>, u64)> {
        let pattern = self.inner.keys.data_scan_pattern(path);
        let data_prefix = self.inner.keys.data_prefix();
        let mut out = BTreeMap::new();
        let mut foreign = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = self.scan_step("audit", cursor, &pattern, SCAN_STEP).await?;
            if !keys.is_empty() {
                let keys = &keys;
                let raw: Vec<Option<Vec<u8>>> = self
                    .run("audit", |mut c| async move {
                        redis::cmd("MGET").arg(keys).query_async(&mut c).await
                    })
                    .await?;
                if raw.len() != keys.len() {
                    return Err(error::contract(
                        "audit",
                        format!("{} values for {} keys", raw.len(), keys.len()),
                    ));
                }
                for (key, v) in keys.iter().zip(raw) {
                    let id = std::str::from_utf8(key)
                        .ok()
                        .and_then(|k| k.strip_prefix(data_prefix.as_str()))
                        .and_then(|id| ObjectId::with_max_len(id, HARD_MAX_ID_LEN).ok());
                    let Some(id) = id else {
                        foreign += 1;
                        continue;
                    };
                    // Gone since the SCAN (expired, removed): its leaf, if any, is a suspect.
                    if let Some(e) = expect(&id, v.map(Bytes::from)) {
                        out.insert(id, e);
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if foreign > 0 {
            tracing::warn!(foreign, "keys in the items' namespace that are not valid ids: ignored");
        }
        let checked = out.len() as u64;
        Ok((out, checked))
    }

    /// Pass 2: the shadow's leaves under `path` (id → digest), as the Merkle reads show them.
    async fn shadow_leaves(&self, path: &str) -> Result<HashMap<String, Digest>> {
        let mut leaves = HashMap::new();
        let mut todo = vec![NodeKey::path(path)];
        while let Some(key) = todo.pop() {
            match self.children(&key).await? {
                Children::Buckets(buckets) => {
                    todo.extend(buckets.into_iter().map(|(n, _)| key.child_bucket(n)));
                }
                Children::Entries(entries) => {
                    for e in entries {
                        match e {
                            Entry::Leaf { segment, digest } => {
                                leaves.insert(join(&key.path, &segment), digest);
                            }
                            Entry::Path { segment, .. } => todo.push(key.child_path(&segment)),
                        }
                    }
                }
            }
        }
        Ok(leaves)
    }

    /// The shadow's leaf of one id (after a fold).
    async fn leaf_of(&self, id: &ObjectId) -> Result<Option<Digest>> {
        let (parent, seg) =
            split_id(id.as_str()).map_err(|e| error::contract("audit", format!("id {id}: {e}")))?;
        let h = segment_hash(seg);
        let key = NodeKey {
            path: parent.to_owned(),
            bucket: (0..LEAF_NIBBLES).map(|i| nibble(&h, i)).collect(),
        };
        match self.children(&key).await? {
            Children::Entries(entries) => Ok(entries.into_iter().find_map(|e| match e {
                Entry::Leaf { segment, digest } if segment == seg => Some(digest),
                _ => None,
            })),
            Children::Buckets(_) => Err(error::contract(
                "audit",
                format!("the shadow is split deeper than {LEAF_NIBBLES} nibbles under `{parent}`"),
            )),
        }
    }

    async fn mget(&self, ids: &[ObjectId]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<String> = ids.iter().map(|id| self.inner.keys.data(id)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in keys.chunks(SCAN_STEP) {
            let raw: Vec<Option<Vec<u8>>> = self
                .run("audit", |mut c| async move {
                    redis::cmd("MGET").arg(chunk).query_async(&mut c).await
                })
                .await?;
            if raw.len() != chunk.len() {
                return Err(error::contract("audit", "MGET answered a different count"));
            }
            out.extend(raw);
        }
        Ok(out)
    }

    /// Pass 4: look at each suspect again, alone; returns the confirmed findings and how many
    /// were changing.
    async fn confirm(&self, mut suspects: Vec<ObjectId>) -> Result<(Vec<Finding>, u64)> {
        suspects.sort();
        suspects.dedup();
        let first = self.mget(&suspects).await?;
        let mut leaves = Vec::with_capacity(suspects.len());
        for id in &suspects {
            leaves.push(self.leaf_of(id).await?);
        }
        let second = self.mget(&suspects).await?;
        let mut findings = Vec::new();
        let mut changing = 0;
        for (((id, a), b), leaf) in suspects.into_iter().zip(first).zip(second).zip(leaves) {
            if a != b {
                changing += 1;
                continue;
            }
            let value = a.map(Bytes::from);
            if !agrees(expect(&id, value.clone()), leaf) {
                findings.push(Finding { id, value, leaf });
            }
        }
        Ok((findings, changing))
    }

    /// Pass 5: remove the findings that are still as seen; returns their ids.
    async fn heal(&self, findings: &[Finding]) -> Result<Vec<ObjectId>> {
        let inner = &self.inner;
        let (log, pending, epoch) = (inner.keys.log(), inner.keys.pending(), inner.keys.epoch());
        let mut healed = Vec::new();
        for chunk in findings.chunks(HEAL_STEP) {
            let mut inv = inner.heal.prepare_invoke();
            for f in chunk {
                inv.key(inner.keys.data(&f.id));
            }
            inv.key(&log).key(&pending).key(&epoch);
            for f in chunk {
                let mut seen = Vec::with_capacity(1 + f.value.as_ref().map_or(0, Bytes::len));
                match &f.value {
                    Some(v) => {
                        seen.push(b'1');
                        seen.extend_from_slice(v);
                    }
                    None => seen.push(b'0'),
                }
                inv.arg(seen);
                inv.arg(f.leaf.map(|d| d.0.to_vec()).unwrap_or_default());
            }
            let inv = &inv;
            let reply: Value =
                self.run("audit", |mut c| async move { inv.invoke_async(&mut c).await }).await?;
            let Value::Array(done) = reply else {
                return Err(error::contract("audit", format!("heal script answered {reply:?}")));
            };
            for v in done {
                let i = match v {
                    Value::Int(i) => usize::try_from(i).ok().and_then(|i| i.checked_sub(1)),
                    _ => None,
                };
                let f = i.and_then(|i| chunk.get(i)).ok_or_else(|| {
                    error::contract("audit", "heal script answered an unknown entry")
                })?;
                healed.push(f.id.clone());
            }
        }
        Ok(healed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_engine_core::SyncItem;

    fn id(s: &str) -> ObjectId {
        ObjectId::new(s).unwrap()
    }

    #[test]
    fn values_are_judged_like_reads_and_like_put_lua() {
        let item = SyncItem::new(id("a.b"), 3, "payload");
        let shadow = codec::encode(&item, true).unwrap();
        let ttl = codec::encode(&item, false).unwrap();
        let d = item.leaf_digest();
        let judge = |s: &str, v: &[u8]| expect(&id(s), Some(Bytes::copy_from_slice(v)));
        assert_eq!(judge("a.b", &shadow), Some(Expect::Leaf(d)));
        assert_eq!(judge("a.b", &ttl), Some(Expect::NoLeaf));
        assert_eq!(expect(&id("a.b"), None), None);
        // Another id's value: its leaf digest does not match this id.
        assert_eq!(judge("a.c", &shadow), Some(Expect::Bad));
        // A flag put.lua does not know.
        let mut odd = shadow.clone();
        odd[1] |= 4;
        assert_eq!(judge("a.b", &odd), Some(Expect::Bad));
        let mut changed = shadow.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(judge("a.b", &changed), Some(Expect::Bad));
        assert_eq!(judge("a.b", b"garbage"), Some(Expect::Bad));
    }

    #[test]
    fn values_and_leaves_agree_only_when_they_describe_the_same_thing() {
        let d = Digest([7; 32]);
        assert!(agrees(None, None));
        assert!(!agrees(None, Some(d)));
        assert!(agrees(Some(Expect::Leaf(d)), Some(d)));
        assert!(!agrees(Some(Expect::Leaf(d)), Some(Digest([8; 32]))));
        assert!(!agrees(Some(Expect::Leaf(d)), None));
        assert!(agrees(Some(Expect::NoLeaf), None));
        assert!(!agrees(Some(Expect::NoLeaf), Some(d)));
        assert!(!agrees(Some(Expect::Bad), None));
    }
}
