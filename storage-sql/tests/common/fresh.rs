//! Batches of new ids are written without a stamp read; a batch that turns out to hold stored
//! ids is rolled back and written again with the read. Whichever way a batch went, its outcome,
//! the stored rows and the Merkle tree must be those of the reference archive.

use sync_engine_core::conformance::unique_ns;
use sync_engine_core::memory::MemoryArchive;
use sync_engine_core::merkle::NodeKey;
use sync_engine_core::store::{ArchiveStore, MerkleStore};
use sync_engine_core::{ObjectId, SyncItem};
use sync_engine_sql::SqlStore;

async fn apply(store: &SqlStore, reference: &MemoryArchive, batch: &[SyncItem]) {
    let ours = store.put_batch(batch).await.unwrap();
    let theirs = reference.put_batch(batch).await.unwrap();
    assert_eq!(ours, theirs, "outcome of a batch of {} items", batch.len());
}

/// Rounds of a batch of only new ids followed by a batch of new ids mixed with stored ones (a
/// newer version, a stale one, a replay, a tombstone): nothing of the first, assumed-new attempt
/// of a mixed batch may stay (its new rows would make the second attempt count them stale, its
/// stale row would overwrite a newer one).
pub async fn new_ids_then_stored_ids(store: &SqlStore) {
    let ns = unique_ns("fresh");
    let id = |s: String| ObjectId::new(&format!("{ns}.{s}")).unwrap();
    let reference = MemoryArchive::new();
    let mut ids = Vec::new();
    for round in 0..4 {
        let new: Vec<SyncItem> = (0..40)
            .map(|i| SyncItem::new(id(format!("r{round}.n{i}")), 5, format!("new {round} {i}")))
            .collect();
        apply(store, &reference, &new).await;
        let mut mixed: Vec<SyncItem> = (0..40)
            .map(|i| SyncItem::new(id(format!("r{round}.m{i}")), 1, format!("mixed {i}")))
            .collect();
        mixed.push(SyncItem::new(id(format!("r{round}.n0")), 4, "stale"));
        mixed.push(SyncItem::new(id(format!("r{round}.n1")), 6, "newer"));
        mixed.push(new[2].clone());
        mixed.push(SyncItem::tombstone(id(format!("r{round}.n3")), 9));
        mixed.push(SyncItem::tombstone(id(format!("r{round}.gone")), 2));
        apply(store, &reference, &mixed).await;
        ids.extend(new.iter().chain(&mixed).map(|i| i.id().clone()));
    }
    let (got, want) =
        (store.get_many(&ids).await.unwrap(), reference.get_many(&ids).await.unwrap());
    assert_eq!(got, want, "stored items");
    let key = NodeKey::path(&ns);
    assert_eq!(store.node(&key).await.unwrap(), reference.node(&key).await.unwrap(), "tree");
    let check = store.verify_merkle().await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
}
