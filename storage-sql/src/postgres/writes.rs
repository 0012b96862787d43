//! PostgreSQL writes: the newer-wins item upsert (plain `INSERT` for ids with no row), node
//! rows, all bound as arrays.

use std::sync::Arc;

use sqlx::PgConnection;

use super::{q, PgDriver, FOLD_ROWS_PER_STATEMENT, MAX_STATEMENT_BYTES};
use crate::codec::{bucket_text, to_ord};
use crate::driver::{fresh_and_over, item_size, BucketKey, BucketRow, ItemRow, PathRow};
use crate::error::{unique_is_occupied, Failure, Fallible};
use crate::sqlgen::chunks;

impl PgDriver {
    pub(super) async fn put_items(
        &self,
        c: &mut PgConnection,
        rows: &[ItemRow<'_>],
    ) -> Fallible<()> {
        let (fresh, over) = fresh_and_over(rows);
        let mut work: Vec<(&[&ItemRow<'_>], &Arc<str>)> = Vec::new();
        work.extend(
            chunks(&fresh, usize::MAX, MAX_STATEMENT_BYTES, item_size)
                .into_iter()
                .map(|c| (c, &self.sql.insert_items)),
        );
        work.extend(
            chunks(&over, usize::MAX, MAX_STATEMENT_BYTES, item_size)
                .into_iter()
                .map(|c| (c, &self.sql.upsert_items)),
        );
        for (chunk, sql) in work {
            let hashes: Vec<&[u8]> = chunk.iter().map(|r| &r.stamp.content_hash.0[..]).collect();
            let leaves: Vec<Option<&[u8]>> =
                chunk.iter().map(|r| r.leaf.as_ref().map(|d| &d.0[..])).collect();
            let done = q(sql)
                .bind(chunk.iter().map(|r| r.id).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.parent).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| to_ord(r.seghash)).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| to_ord(r.stamp.version)).collect::<Vec<_>>())
                .bind(hashes)
                .bind(chunk.iter().map(|r| r.stamp.tombstone).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| to_ord(r.updated_at)).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.content).collect::<Vec<_>>())
                .bind(chunk.iter().map(|r| r.state).collect::<Vec<_>>())
                .bind(leaves)
                .execute(&mut *c)
                .await
                .map_err(unique_is_occupied)?
                .rows_affected();
            if done != chunk.len() as u64 {
                return Err(Failure::Contract(format!(
                    "newer-wins upsert applied {done} of {} winning rows",
                    chunk.len()
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn put_paths(
        &self,
        c: &mut PgConnection,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> Fallible<()> {
        for upserts in upserts.chunks(FOLD_ROWS_PER_STATEMENT) {
            let accs: Vec<Vec<u8>> =
                upserts.iter().map(|r| r.value.acc.to_bytes().to_vec()).collect();
            q(&self.sql.upsert_paths)
                .bind(upserts.iter().map(|r| r.path.as_str()).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| r.parent.as_deref()).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| to_ord(r.seghash)).collect::<Vec<_>>())
                .bind(accs)
                .bind(upserts.iter().map(|r| r.value.count as i64).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| r.entries).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| r.split).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| i16::from(r.depth)).collect::<Vec<_>>())
                .execute(&mut *c)
                .await?;
        }
        for deletes in deletes.chunks(FOLD_ROWS_PER_STATEMENT) {
            q(&self.sql.delete_paths).bind(deletes).execute(&mut *c).await?;
            q(&self.sql.delete_path_buckets).bind(deletes).execute(&mut *c).await?;
        }
        Ok(())
    }

    pub(super) async fn put_buckets(
        &self,
        c: &mut PgConnection,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> Fallible<()> {
        for upserts in upserts.chunks(FOLD_ROWS_PER_STATEMENT) {
            let accs: Vec<Vec<u8>> =
                upserts.iter().map(|r| r.value.acc.to_bytes().to_vec()).collect();
            q(&self.sql.upsert_buckets)
                .bind(upserts.iter().map(|r| r.path.as_str()).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| bucket_text(&r.bucket)).collect::<Vec<_>>())
                .bind(accs)
                .bind(upserts.iter().map(|r| r.value.count as i64).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| r.entries).collect::<Vec<_>>())
                .bind(upserts.iter().map(|r| r.split).collect::<Vec<_>>())
                .execute(&mut *c)
                .await?;
        }
        for deletes in deletes.chunks(FOLD_ROWS_PER_STATEMENT) {
            q(&self.sql.delete_buckets)
                .bind(deletes.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>())
                .bind(deletes.iter().map(|(_, b)| bucket_text(b)).collect::<Vec<_>>())
                .execute(&mut *c)
                .await?;
        }
        Ok(())
    }
}
