//! Decoding MySQL rows into the driver's row types. Key columns are `VARBINARY`: they are read
//! as bytes and must be UTF-8.

use sqlx::mysql::MySqlRow;
use sqlx::Row;
use sync_engine_core::merkle::Digest;
use sync_engine_core::{ContentHash, Stamp};

use crate::codec::{digest_from, parse_bucket, value_from};
use crate::driver::{BucketRow, PathRow, StoredItem};
use crate::error::{Failure, Fallible};

pub(super) fn stamp_of(version: u64, hash: &[u8], tombstone: bool) -> Fallible<Stamp> {
    let h = digest_from(hash, "content hash")?;
    Ok(Stamp { version, content_hash: ContentHash(h.0), tombstone })
}

pub(super) fn leaf_of(bytes: Option<Vec<u8>>) -> Fallible<Option<Digest>> {
    bytes.map(|b| digest_from(&b, "leaf digest")).transpose()
}

pub(super) fn path_row(r: &MySqlRow) -> Fallible<PathRow> {
    let path = text(r, 0)?;
    let acc: Vec<u8> = r.try_get(3)?;
    Ok(PathRow {
        value: value_from(&acc, r.try_get(4)?, &format!("path {path:?}"))?,
        parent: opt_text(r, 1)?,
        seghash: r.try_get(2)?,
        entries: r.try_get(5)?,
        split: r.try_get(6)?,
        depth: r.try_get(7)?,
        path,
    })
}

pub(super) fn bucket_row(r: &MySqlRow) -> Fallible<BucketRow> {
    let path = text(r, 0)?;
    let bucket = text(r, 1)?;
    let acc: Vec<u8> = r.try_get(2)?;
    Ok(BucketRow {
        value: value_from(&acc, r.try_get(3)?, &format!("bucket {bucket:?} of {path:?}"))?,
        bucket: parse_bucket(&bucket)?,
        entries: r.try_get(4)?,
        split: r.try_get(5)?,
        path,
    })
}

/// A stored item and how many chunks its content has (0: inline).
pub(super) fn item_row(r: &MySqlRow) -> Fallible<(StoredItem, i32)> {
    let hash: Vec<u8> = r.try_get(2)?;
    let content: Option<Vec<u8>> = r.try_get(5)?;
    let chunks: i32 = r.try_get(7)?;
    let item = StoredItem {
        id: text(r, 0)?,
        stamp: stamp_of(r.try_get(1)?, &hash, r.try_get(3)?)?,
        updated_at: r.try_get(4)?,
        content: content.unwrap_or_default().into(),
        state: r.try_get(6)?,
    };
    Ok((item, chunks))
}

/// A `VARBINARY` text column (ids, paths, buckets) as a string; not UTF-8 is corruption.
pub(super) fn text(r: &MySqlRow, i: usize) -> Fallible<String> {
    let bytes: Vec<u8> = r.try_get(i)?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::Corrupt(format!("stored key column {i} is not UTF-8")))
}

pub(super) fn opt_text(r: &MySqlRow, i: usize) -> Fallible<Option<String>> {
    let bytes: Option<Vec<u8>> = r.try_get(i)?;
    bytes
        .map(|b| {
            String::from_utf8(b)
                .map_err(|_| Failure::Corrupt(format!("stored key column {i} is not UTF-8")))
        })
        .transpose()
}
