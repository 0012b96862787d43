//! The L2 shadow as a [`MerkleStore`]: `read.lua` answers one node question atomically; this
//! module checks the key, decodes the reply, and narrows a bucket that lies below an unsplit
//! node to the entries whose segment hash matches the remaining nibbles.

use async_trait::async_trait;
use redis::Value;
use sync_engine_core::merkle::{
    nibble, segment_hash, validate_path, Children, Entry, NodeKey, NodeValue, MAX_BUCKET_NIBBLES,
};
use sync_engine_core::store::MerkleStore;
use sync_engine_core::{Error, ErrorKind, Result};
use tracing::Instrument;

use std::collections::HashMap;

use crate::error::{self, BACKEND};
use crate::keys::nibbles_hex;
use crate::node::{self, Slot};
use crate::store::{eval_pipeline, RedisStore};

/// What `read.lua` answered.
enum Reply {
    /// Logged changes await the fold.
    Pending,
    /// Nothing beneath.
    Absent,
    /// The node's value.
    Value(NodeValue),
    /// The 16 sub-bucket values of a split node (EMPTY where absent).
    Buckets(Vec<NodeValue>),
    /// The entries of the unsplit bucket `depth` nibbles deep that holds the node.
    Entries { depth: usize, entries: Vec<Entry> },
}

fn bulk(v: Option<&Value>) -> Option<&[u8]> {
    match v {
        Some(Value::BulkString(b)) => Some(b),
        Some(Value::SimpleString(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

fn value(bytes: &[u8]) -> Option<NodeValue> {
    NodeValue::from_bytes(bytes).ok()
}

fn decode(op: &'static str, v: &Value) -> Result<Reply> {
    let bad = |what: &str| error::contract(op, format!("Merkle read script answered {what}"));
    let Value::Array(a) = v else { return Err(bad("a non-array")) };
    match bulk(a.first()) {
        Some(b"N") => Ok(Reply::Absent),
        Some(b"V") => {
            bulk(a.get(1)).and_then(value).map(Reply::Value).ok_or_else(|| bad("a bad value"))
        }
        Some(b"B") => {
            let vals = a
                .iter()
                .skip(1)
                .map(|x| match bulk(Some(x)) {
                    Some([]) => Some(NodeValue::EMPTY),
                    Some(b) => value(b),
                    None => None,
                })
                .collect::<Option<Vec<NodeValue>>>()
                .filter(|v| v.len() == 16)
                .ok_or_else(|| bad("bad bucket values"))?;
            Ok(Reply::Buckets(vals))
        }
        Some(b"E") => {
            let depth = match a.get(1) {
                Some(Value::Int(d)) => usize::try_from(*d).map_err(|_| bad("a negative depth"))?,
                _ => return Err(bad("no depth")),
            };
            let raw = bulk(a.get(2)).ok_or_else(|| bad("no node"))?;
            let stored = node::decode(raw).map_err(|e| {
                Error::new(ErrorKind::Corrupt, e.to_string())
                    .with_operation(op)
                    .with_backend(BACKEND)
            })?;
            let mut paths: HashMap<&[u8], NodeValue> = HashMap::new();
            for pair in a.get(3..).unwrap_or_default().chunks(2) {
                let (Some(seg), Some(v)) = (bulk(pair.first()), bulk(pair.get(1)).and_then(value))
                else {
                    return Err(bad("an odd child-path list"));
                };
                paths.insert(seg, v);
            }
            let entries = stored
                .slots
                .into_iter()
                .filter_map(|s| match s {
                    Slot::Leaf(segment, digest) => Some(Entry::Leaf { segment, digest }),
                    Slot::Path(segment) => {
                        paths.get(segment.as_bytes()).map(|v| Entry::Path { value: *v, segment })
                    }
                })
                .collect();
            Ok(Reply::Entries { depth, entries })
        }
        Some(b"F") => Ok(Reply::Pending),
        _ => Err(bad("an unknown tag")),
    }
}

/// Keep the entries whose segment hash has nibbles `rest` from position `from` on.
fn narrow(entries: Vec<Entry>, bucket: &[u8], from: usize) -> Vec<Entry> {
    if from >= bucket.len() {
        return entries;
    }
    entries
        .into_iter()
        .filter(|e| {
            let h = segment_hash(e.segment());
            bucket.iter().enumerate().skip(from).all(|(i, &n)| nibble(&h, i) == n)
        })
        .collect()
}

fn sort(entries: &mut [Entry]) {
    entries.sort_by(|x, y| {
        (x.segment(), matches!(x, Entry::Path { .. }))
            .cmp(&(y.segment(), matches!(y, Entry::Path { .. })))
    });
}

impl RedisStore {
    async fn read_node(
        &self,
        op: &'static str,
        key: &NodeKey,
        mode: &'static str,
    ) -> Result<Reply> {
        self.read_nodes(op, std::slice::from_ref(key), mode)
            .await?
            .pop()
            .ok_or_else(|| error::contract(op, "read script gave no answer"))
    }

    /// One `read.lua` answer per key, in the order asked: every question in ONE pipeline
    /// (each script answers atomically). Fold first: while the change log is not empty the
    /// script refuses to answer; the store folds and asks those keys again, and after a few
    /// folds under a steady stream of writes answers anyway (the tree then describes the data
    /// as of a moment during this call).
    async fn read_nodes(
        &self,
        op: &'static str,
        keys: &[NodeKey],
        mode: &'static str,
    ) -> Result<Vec<Reply>> {
        let invalid = |what: String| Error::invalid(what).with_operation(op).with_backend(BACKEND);
        let mut questions = Vec::with_capacity(keys.len());
        for key in keys {
            validate_path(&key.path).map_err(|e| invalid(format!("node path: {e}")))?;
            if key.bucket.len() > MAX_BUCKET_NIBBLES {
                return Err(invalid(format!(
                    "bucket of {} nibbles, at most {MAX_BUCKET_NIBBLES}",
                    key.bucket.len()
                )));
            }
            let hex =
                nibbles_hex(&key.bucket).ok_or_else(|| invalid("bucket byte above 15".into()))?;
            questions.push((self.inner.keys.node(&key.path, ""), key.path.as_str(), hex));
        }
        let inner = &self.inner;
        let log = inner.keys.log();
        let sha = inner.read.get_hash();
        let mut answers: Vec<Option<Reply>> = keys.iter().map(|_| None).collect();
        let mut open: Vec<usize> = (0..keys.len()).collect();
        for attempt in 0..FOLD_ATTEMPTS {
            if open.is_empty() {
                break;
            }
            let check = if attempt + 1 < FOLD_ATTEMPTS { "1" } else { "0" };
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &i in &open {
                let (record, path, hex) = &questions[i];
                pipe.cmd("EVALSHA")
                    .arg(sha)
                    .arg(2)
                    .arg(record)
                    .arg(&log)
                    .arg(inner.keys.base())
                    .arg(*path)
                    .arg(hex)
                    .arg(mode)
                    .arg(check);
            }
            let pipe = &pipe;
            let span = tracing::debug_span!("redis.merkle", op, nodes = open.len(), attempt);
            let replies = self
                .run(op, |mut c| async move { eval_pipeline(&mut c, &inner.read, pipe).await })
                .instrument(span)
                .await?;
            if replies.len() != open.len() {
                return Err(error::contract(
                    op,
                    "read pipeline answered another number of replies",
                ));
            }
            let mut pending = Vec::new();
            for (i, reply) in open.into_iter().zip(&replies) {
                match decode(op, reply)? {
                    Reply::Pending => pending.push(i),
                    other => answers[i] = Some(other),
                }
            }
            if !pending.is_empty() {
                self.fold().await?;
            }
            open = pending;
        }
        if !open.is_empty() {
            return Err(error::contract(op, "read script asked for a fold after the last attempt"));
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

/// Read attempts: all but the last refuse to answer while changes are pending.
const FOLD_ATTEMPTS: usize = 3;

#[async_trait]
impl MerkleStore for RedisStore {
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>> {
        let v = match self.read_node("merkle_node", key, "node").await? {
            Reply::Absent => NodeValue::EMPTY,
            Reply::Value(v) => v,
            Reply::Entries { depth, entries } => narrow(entries, &key.bucket, depth)
                .iter()
                .fold(NodeValue::EMPTY, |acc, e| acc.plus(e.value())),
            Reply::Buckets(_) | Reply::Pending => {
                return Err(error::contract(
                    "merkle_node",
                    "read script listed buckets for a value",
                ))
            }
        };
        Ok((v.count != 0).then_some(v))
    }

    async fn children(&self, key: &NodeKey) -> Result<Children> {
        listing(self.read_node("merkle_children", key, "children").await?, key)
    }

    /// All questions in one pipeline of `read.lua` calls (see `read_nodes`), in chunks of
    /// [`CHILDREN_PER_PIPELINE`].
    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHILDREN_PER_PIPELINE) {
            for (key, reply) in
                chunk.iter().zip(self.read_nodes("merkle_children", chunk, "children").await?)
            {
                out.push(listing(reply, key)?);
            }
        }
        Ok(out)
    }
}

/// Node questions sent in one pipeline by `children_many`.
const CHILDREN_PER_PIPELINE: usize = 1024;

/// The children of `key` from its `read.lua` answer.
fn listing(reply: Reply, key: &NodeKey) -> Result<Children> {
    Ok(match reply {
        Reply::Absent => Children::Entries(Vec::new()),
        Reply::Buckets(vals) => Children::Buckets(
            vals.into_iter()
                .enumerate()
                .filter(|(_, v)| v.count != 0)
                .map(|(n, v)| (n as u8, v))
                .collect(),
        ),
        Reply::Entries { depth, entries } => {
            let mut entries = narrow(entries, &key.bucket, depth);
            sort(&mut entries);
            Children::Entries(entries)
        }
        Reply::Value(_) | Reply::Pending => {
            return Err(error::contract("merkle_children", "read script answered a value"))
        }
    })
}
