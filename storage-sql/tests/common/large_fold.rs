//! One fold carrying more rows of each kind than a database writes in one statement (the
//! PostgreSQL store writes a fold's node and entry rows 8,192 per statement): every row must
//! still land, so the stored tree equals a from-scratch build and the reference tree.

use sync_engine_core::conformance::unique_ns;
use sync_engine_core::merkle::MemTree;
use sync_engine_core::store::{ArchiveStore, MerkleExt};
use sync_engine_core::SyncItem;
use sync_engine_sql::SqlStore;

use super::oid;

/// Distinct parents (path rows) and flat siblings (entries, bucket rows) in the first fold.
const PARENTS: usize = 9_000;
const FLAT: usize = 9_000;

async fn check(store: &SqlStore, reference: &MemTree, what: &str) {
    // A Merkle read folds everything logged so far, in one transaction.
    assert_eq!(store.root_hash().await.unwrap(), reference.root_hash(), "{what}: root");
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{what}: {:?}", check.problems);
}

/// Write 18,000 new ids (9,000 parents, 9,000 siblings under one path) with no fold in
/// between, fold once; then delete every other id (9,000 entries gone) and overwrite every
/// third of the rest in a second fold.
/// `store` must be opened with `fold_changes` above 36,000 so that each fold is a single one.
pub async fn a_fold_larger_than_a_statement(store: &SqlStore) {
    let ns = unique_ns("big");
    let ids: Vec<String> = (0..PARENTS)
        .map(|i| format!("{ns}.p{i}.x"))
        .chain((0..FLAT).map(|i| format!("{ns}.flat.k{i}")))
        .collect();
    let mut reference = MemTree::new();
    for chunk in ids.chunks(1000) {
        let items: Vec<SyncItem> =
            chunk.iter().map(|id| SyncItem::new(oid(id), 1, format!("v1 {id}"))).collect();
        store.put_batch(&items).await.unwrap();
        for it in &items {
            reference.upsert(it.id().as_str(), it.leaf_digest()).unwrap();
        }
    }
    check(store, &reference, "after 18,000 inserts").await;

    let second: Vec<SyncItem> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 || i % 3 == 0)
        .map(|(i, id)| match i % 2 {
            0 => SyncItem::tombstone(oid(id), 2),
            _ => SyncItem::new(oid(id), 2, format!("v2 {id}")),
        })
        .collect();
    for chunk in second.chunks(1000) {
        store.put_batch(chunk).await.unwrap();
        for it in chunk {
            if it.is_tombstone() {
                reference.remove(it.id().as_str()).unwrap();
            } else {
                reference.upsert(it.id().as_str(), it.leaf_digest()).unwrap();
            }
        }
    }
    check(store, &reference, "after overwrites and deletes").await;
}
