//! Decoding PostgreSQL rows into the driver's row types.

use sqlx::postgres::PgRow;
use sqlx::Row;
use sync_engine_core::merkle::Digest;
use sync_engine_core::{ContentHash, Stamp};

use crate::codec::{digest_from, from_ord, parse_bucket, value_from};
use crate::driver::{BucketRow, PathRow, StoredItem};
use crate::error::Fallible;

/// Bytes a row adds to a statement.
pub(super) fn stamp_of(version: i64, hash: &[u8], tombstone: bool) -> Fallible<Stamp> {
    let h = digest_from(hash, "content hash")?;
    Ok(Stamp { version: from_ord(version), content_hash: ContentHash(h.0), tombstone })
}

pub(super) fn leaf_of(bytes: Option<Vec<u8>>) -> Fallible<Option<Digest>> {
    bytes.map(|b| digest_from(&b, "leaf digest")).transpose()
}

pub(super) fn path_row(r: &PgRow) -> Fallible<PathRow> {
    let path: String = r.try_get(0)?;
    let acc: Vec<u8> = r.try_get(3)?;
    Ok(PathRow {
        value: value_from(&acc, r.try_get(4)?, &format!("path {path:?}"))?,
        parent: r.try_get(1)?,
        seghash: from_ord(r.try_get(2)?),
        entries: r.try_get(5)?,
        split: r.try_get(6)?,
        depth: u8::try_from(r.try_get::<i16, _>(7)?).unwrap_or(u8::MAX),
        path,
    })
}

pub(super) fn bucket_row(r: &PgRow) -> Fallible<BucketRow> {
    let path: String = r.try_get(0)?;
    let bucket: String = r.try_get(1)?;
    let acc: Vec<u8> = r.try_get(2)?;
    Ok(BucketRow {
        value: value_from(&acc, r.try_get(3)?, &format!("bucket {bucket:?} of {path:?}"))?,
        bucket: parse_bucket(&bucket)?,
        entries: r.try_get(4)?,
        split: r.try_get(5)?,
        path,
    })
}

pub(super) fn item_row(r: &PgRow) -> Fallible<StoredItem> {
    let hash: Vec<u8> = r.try_get(2)?;
    let content: Vec<u8> = r.try_get(5)?;
    Ok(StoredItem {
        id: r.try_get(0)?,
        stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
        updated_at: from_ord(r.try_get(4)?),
        content: content.into(),
        state: r.try_get(6)?,
    })
}
