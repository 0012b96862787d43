//! SQLite writes: the newer-wins item upsert (plain `INSERT` for ids with no row), node rows.

use sqlx::SqliteConnection;

use super::{dq, SqliteDriver, MAX_STATEMENT_BYTES};
use crate::codec::to_ord;
use crate::driver::{fresh_and_over, item_size, BucketKey, BucketRow, ItemRow, PathRow};
use crate::error::{unique_is_occupied, Failure, Fallible};
use crate::sqlgen::{chunks, list, tuples};

impl SqliteDriver {
    pub(super) async fn put_items(
        &self,
        c: &mut SqliteConnection,
        rows: &[ItemRow<'_>],
    ) -> Fallible<()> {
        let p = &self.p;
        let upsert = format!(
            " ON CONFLICT (id) DO UPDATE SET parent = excluded.parent, \
             seghash = excluded.seghash, version = excluded.version, \
             content_hash = excluded.content_hash, tombstone = excluded.tombstone, \
             updated_at = excluded.updated_at, content = excluded.content, \
             state = excluded.state, leaf = excluded.leaf \
             WHERE (excluded.version, excluded.content_hash, excluded.tombstone) \
             > ({p}items.version, {p}items.content_hash, {p}items.tombstone)"
        );
        let (fresh, over) = fresh_and_over(rows);
        let per = self.max_params / 10;
        let mut work: Vec<(&[&ItemRow<'_>], &str)> = Vec::new();
        work.extend(
            chunks(&fresh, per, MAX_STATEMENT_BYTES, item_size).into_iter().map(|c| (c, "")),
        );
        work.extend(
            chunks(&over, per, MAX_STATEMENT_BYTES, item_size)
                .into_iter()
                .map(|c| (c, upsert.as_str())),
        );
        for (chunk, clause) in work {
            let sql = format!(
                "INSERT INTO {p}items (id, parent, seghash, version, content_hash, tombstone, \
                 updated_at, content, state, leaf) VALUES {}{clause}",
                tuples(chunk.len(), 10)
            );
            let mut query = dq(sql);
            for r in chunk {
                query = query
                    .bind(r.id)
                    .bind(r.parent)
                    .bind(to_ord(r.seghash))
                    .bind(to_ord(r.stamp.version))
                    .bind(&r.stamp.content_hash.0[..])
                    .bind(r.stamp.tombstone)
                    .bind(to_ord(r.updated_at))
                    .bind(r.content)
                    .bind(r.state)
                    .bind(r.leaf.as_ref().map(|d| &d.0[..]));
            }
            let done = query.execute(&mut *c).await.map_err(unique_is_occupied)?.rows_affected();
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
        c: &mut SqliteConnection,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> Fallible<()> {
        let p = &self.p;
        for chunk in upserts.chunks(self.max_params / 8) {
            let sql = format!(
                "INSERT INTO {p}paths (path, parent, seghash, acc, leaves, entries, split, depth) \
                 VALUES {} ON CONFLICT (path) DO UPDATE SET acc = excluded.acc, \
                 leaves = excluded.leaves, entries = excluded.entries, split = excluded.split, \
                 depth = excluded.depth",
                tuples(chunk.len(), 8)
            );
            let mut query = dq(sql);
            for r in chunk {
                query = query
                    .bind(r.path.as_str())
                    .bind(r.parent.as_deref())
                    .bind(to_ord(r.seghash))
                    .bind(r.value.acc.to_bytes().to_vec())
                    .bind(r.value.count as i64)
                    .bind(r.entries)
                    .bind(r.split)
                    .bind(i64::from(r.depth));
            }
            query.execute(&mut *c).await?;
        }
        for chunk in deletes.chunks(self.max_params) {
            for table in ["paths", "buckets"] {
                let sql = format!("DELETE FROM {p}{table} WHERE path IN ({})", list(chunk.len()));
                let mut query = dq(sql);
                for path in chunk {
                    query = query.bind(path.as_str());
                }
                query.execute(&mut *c).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn put_buckets(
        &self,
        c: &mut SqliteConnection,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> Fallible<()> {
        let p = &self.p;
        for chunk in upserts.chunks(self.max_params / 6) {
            let sql = format!(
                "INSERT INTO {p}buckets (path, bucket, acc, leaves, entries, split) VALUES {} \
                 ON CONFLICT (path, bucket) DO UPDATE SET acc = excluded.acc, \
                 leaves = excluded.leaves, entries = excluded.entries, split = excluded.split",
                tuples(chunk.len(), 6)
            );
            let mut query = dq(sql);
            for r in chunk {
                query = query
                    .bind(r.path.as_str())
                    .bind(crate::codec::bucket_text(&r.bucket))
                    .bind(r.value.acc.to_bytes().to_vec())
                    .bind(r.value.count as i64)
                    .bind(r.entries)
                    .bind(r.split);
            }
            query.execute(&mut *c).await?;
        }
        for chunk in deletes.chunks(self.max_params / 2) {
            let sql = format!(
                "DELETE FROM {p}buckets WHERE (path, bucket) IN (VALUES {})",
                tuples(chunk.len(), 2)
            );
            let mut query = dq(sql);
            for (path, bucket) in chunk {
                query = query.bind(path.as_str()).bind(crate::codec::bucket_text(bucket));
            }
            query.execute(&mut *c).await?;
        }
        Ok(())
    }
}
