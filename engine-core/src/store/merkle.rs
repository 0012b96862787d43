use async_trait::async_trait;
use futures_util::future::try_join_all;
use sync_engine_merkle::{Children, Digest, NodeKey, NodeValue};

use crate::error::Result;

/// A Merkle tree kept beside a store's data (L3: truth; L2: shadow), read-only through this
/// trait: the owning store changes it together with its data (in the same transaction for L3,
/// the same script for L2), and every answer describes every change committed before the
/// question (a store that logs leaf changes and folds them later folds before answering).
///
/// Promises:
/// - A node's value is the sum of the leaf digests of the live items beneath it
///   (`sync_engine_merkle`), so the root is a pure function of the set of live items, equal
///   across stores holding the same items.
/// - `children` of a split node lists its non-empty buckets; of an unsplit node, its entries.
/// - `children_many(keys)` answers exactly what `children` answers for each key, at the same
///   index; a store that can answer many questions in one round trip overrides it.
#[async_trait]
pub trait MerkleStore: Send + Sync {
    /// The value of a node, `None` when nothing is beneath it.
    async fn node(&self, key: &NodeKey) -> Result<Option<NodeValue>>;

    /// The children of a node.
    async fn children(&self, key: &NodeKey) -> Result<Children>;

    /// The children of each of `keys`, in the order asked. The default asks `children` for up
    /// to [`CHILDREN_CONCURRENCY`] keys at a time.
    async fn children_many(&self, keys: &[NodeKey]) -> Result<Vec<Children>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(CHILDREN_CONCURRENCY) {
            let asked: Vec<_> = chunk.iter().map(|k| self.children(k)).collect();
            out.extend(try_join_all(asked).await?);
        }
        Ok(out)
    }
}

/// Concurrent `children` questions of the default [`MerkleStore::children_many`].
pub const CHILDREN_CONCURRENCY: usize = 32;

/// Conveniences over [`MerkleStore`].
#[async_trait]
pub trait MerkleExt: MerkleStore {
    /// The root hash ([`Digest::ZERO`] when empty).
    async fn root_hash(&self) -> Result<Digest> {
        Ok(self.node(&NodeKey::root()).await?.unwrap_or_default().hash())
    }

    /// The hash of the subtree under a dotted path prefix.
    async fn subtree_hash(&self, path: &str) -> Result<Digest> {
        Ok(self.node(&NodeKey::path(path)).await?.unwrap_or_default().hash())
    }
}

impl<T: MerkleStore + ?Sized> MerkleExt for T {}
