//! The database itself enforces newer-wins: rows handed to `write_items` as winners that are
//! not newer than the stored row are left alone by the SQL and the batch is refused; rows that
//! are newer replace every column (on MySQL this checks the left-to-right evaluation of the
//! `ON DUPLICATE KEY UPDATE` assignments). Run on every database whose URL is set.

use sync_engine_core::conformance::unique_ns;
use sync_engine_core::store::ArchiveStore;
use sync_engine_core::{ObjectId, SecretUrl, Stamp, SyncItem};

use super::{Inner, SqlStore};
use crate::codec::{seg_hash, split_last};
use crate::driver::{Driver, ItemRow};
use crate::error::Failure;
use crate::ops::Core;
use crate::options::SqlOptions;

fn row<'a>(item: &'a SyncItem, existed: bool) -> ItemRow<'a> {
    let (parent, seg) = split_last(item.id().as_str());
    ItemRow {
        id: item.id().as_str(),
        parent,
        seghash: seg_hash(seg),
        stamp: item.stamp(),
        updated_at: item.updated_at(),
        content: item.content().as_ref(),
        state: item.state(),
        leaf: (!item.is_tombstone()).then(|| item.leaf_digest()),
        existed,
        was_chunked: false,
        was_tombstone: false,
    }
}

/// Hand `item` to the database as a winner over the stored row; true when the SQL applied it.
async fn force<D: Driver>(core: &Core<D>, item: &SyncItem) -> bool {
    let (mut tx, _) = core.driver.begin_write().await.unwrap();
    let res = core.driver.write_items(&mut tx, &[row(item, true)]).await;
    match res {
        Ok(()) => {
            tx.commit().await.unwrap();
            true
        }
        Err(Failure::Contract(_)) => {
            tx.rollback().await.unwrap();
            false
        }
        Err(e) => panic!("unexpected failure {e:?}"),
    }
}

async fn stored<D: Driver>(core: &Core<D>, id: &ObjectId) -> Option<(Stamp, Vec<u8>)> {
    let got = core.get_many(std::slice::from_ref(id)).await.unwrap().pop().flatten();
    got.map(|i| (i.stamp(), i.content().to_vec()))
}

async fn raw_stamp<D: Driver>(core: &Core<D>, id: &ObjectId) -> Stamp {
    let mut c = core.driver.pool().acquire().await.unwrap();
    core.driver.read_stamps(&mut c, &[id.as_str()]).await.unwrap().pop().unwrap().stamp
}

async fn enforce<D: Driver>(core: &Core<D>) {
    let ns = unique_ns("enf");
    let id = ObjectId::new(&format!("{ns}.x")).unwrap();
    let v5 = SyncItem::new(id.clone(), 5, "five").with_state("s5");
    core.put_batch(std::slice::from_ref(&v5)).await.unwrap();
    // Older version: refused by the database, nothing changed.
    let v4 = SyncItem::new(id.clone(), 4, "four");
    assert!(!force(core, &v4).await, "an older version was applied");
    assert_eq!(stored(core, &id).await, Some((v5.stamp(), b"five".to_vec())));
    // Equal stamp (a replay): refused.
    assert!(!force(core, &v5).await, "a replay was applied");
    // Same version, other content: the greater content hash wins, whatever the order; every
    // column follows.
    let (p, q) = (SyncItem::new(id.clone(), 5, "p"), SyncItem::new(id.clone(), 5, "q"));
    let (lo, hi) = if p.content_hash() < q.content_hash() { (p, q) } else { (q, p) };
    let current = if v5.content_hash() < hi.content_hash() {
        assert!(force(core, &hi).await, "same version, greater hash refused");
        hi.clone()
    } else {
        assert!(!force(core, &hi).await);
        v5.clone()
    };
    assert_eq!(raw_stamp(core, &id).await, current.stamp());
    assert_eq!(stored(core, &id).await.map(|s| s.1), Some(current.content().to_vec()));
    if lo.content_hash() < current.content_hash() {
        assert!(!force(core, &lo).await, "same version, smaller hash applied");
    }
    // Tombstone over an equal (version, hash) write: the tombstone flag breaks the tie.
    let empty_id = ObjectId::new(&format!("{ns}.e")).unwrap();
    let live = SyncItem::new(empty_id.clone(), 7, "");
    core.put_batch(std::slice::from_ref(&live)).await.unwrap();
    let dead = SyncItem::tombstone(empty_id.clone(), 7);
    assert!(force(core, &dead).await, "tombstone with equal version and hash refused");
    assert_eq!(raw_stamp(core, &empty_id).await, dead.stamp());
    assert!(!force(core, &live).await, "live write resurrected an equal tombstone");
    // A newer version replaces everything, the state tag included.
    let v9 = SyncItem::new(id.clone(), 9, "nine").with_state("s9");
    assert!(force(core, &v9).await);
    let got = core.get_many(std::slice::from_ref(&id)).await.unwrap().pop().flatten().unwrap();
    assert_eq!(
        (got.stamp(), got.content().as_ref(), got.state()),
        (v9.stamp(), &b"nine"[..], Some("s9"))
    );
    assert_eq!(got.updated_at(), v9.updated_at());
}

async fn run(url: String) {
    let opts = SqlOptions::default().with_table_prefix(format!("se_enf_{}_", std::process::id()));
    let store: SqlStore = SqlStore::connect(&SecretUrl::new(url), opts).await.unwrap();
    match &store.inner {
        #[cfg(feature = "sqlite")]
        Inner::Sqlite(c) => enforce(c).await,
        #[cfg(feature = "mysql")]
        Inner::MySql(c) => enforce(c).await,
        #[cfg(feature = "postgres")]
        Inner::Postgres(c) => enforce(c).await,
        #[cfg(not(any(feature = "sqlite", feature = "mysql", feature = "postgres")))]
        Inner::NoDriver(never) => match *never {},
    }
    store.ping().await.unwrap();
    store.drop_tables().await.unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_enforces_newer_wins() {
    let dir = tempfile::tempdir().unwrap();
    run(format!("sqlite:{}/enf.db", dir.path().display())).await;
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_enforces_newer_wins() {
    if let Some(url) = sync_engine_core::conformance::server_url("SYNC_ENGINE_TEST_MYSQL_URL") {
        run(url).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_enforces_newer_wins() {
    if let Some(url) = sync_engine_core::conformance::server_url("SYNC_ENGINE_TEST_POSTGRES_URL") {
        run(url).await;
    }
}
