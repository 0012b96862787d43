//! MySQL writes: the newer-wins item upsert (plain `INSERT` for ids with no row), chunked
//! contents, the tombstone list, node rows.

use sqlx::MySqlConnection;

use super::{content, dq, MySqlDriver, MAX_PARAMS, NEWER};
use crate::codec::bucket_text;
use crate::driver::{fresh_and_over, BucketKey, BucketRow, ItemRow, PathRow};
use crate::error::{unique_is_occupied, Failure, Fallible};
use crate::sqlgen::{chunks, list, tuples};

impl MySqlDriver {
    pub(super) async fn put_items(
        &self,
        c: &mut MySqlConnection,
        rows: &[ItemRow<'_>],
    ) -> Fallible<()> {
        let p = &self.p;
        let inline_max = self.inline_max;
        let size = move |r: &&ItemRow<'_>| {
            let body = if r.content.len() <= inline_max { r.content.len() } else { 0 };
            body + r.id.len() * 2 + r.state.map_or(0, str::len) + 160
        };
        let upsert = format!(
            " ON DUPLICATE KEY UPDATE \
                 parent = IF({NEWER}, VALUES(parent), parent), \
                 seghash = IF({NEWER}, VALUES(seghash), seghash), \
                 updated_at = IF({NEWER}, VALUES(updated_at), updated_at), \
                 content = IF({NEWER}, VALUES(content), content), \
                 chunks = IF({NEWER}, VALUES(chunks), chunks), \
                 state = IF({NEWER}, VALUES(state), state), \
                 leaf = IF({NEWER}, VALUES(leaf), leaf), \
                 tombstone = IF({NEWER}, VALUES(tombstone), tombstone), \
                 content_hash = IF({NEWER}, VALUES(content_hash), content_hash), \
                 version = IF({NEWER}, VALUES(version), version)"
        );
        let (fresh, over) = fresh_and_over(rows);
        let per = MAX_PARAMS / 11;
        let mut work: Vec<(&[&ItemRow<'_>], bool)> = Vec::new();
        work.extend(
            chunks(&fresh, per, self.statement_bytes, size).into_iter().map(|c| (c, false)),
        );
        work.extend(chunks(&over, per, self.statement_bytes, size).into_iter().map(|c| (c, true)));
        for (chunk, is_upsert) in work {
            let sql = format!(
                "INSERT INTO {p}items (id, parent, seghash, version, content_hash, tombstone, \
                 updated_at, content, chunks, state, leaf) VALUES {}{}",
                tuples(chunk.len(), 11),
                if is_upsert { upsert.as_str() } else { "" }
            );
            let mut query = dq(sql);
            for r in chunk {
                let (content, pieces) = if r.content.len() <= inline_max {
                    (Some(r.content), 0)
                } else {
                    (None, content::pieces(r.content.len(), self.inline_max))
                };
                query = query
                    .bind(r.id)
                    .bind(r.parent)
                    .bind(r.seghash)
                    .bind(r.stamp.version)
                    .bind(&r.stamp.content_hash.0[..])
                    .bind(r.stamp.tombstone)
                    .bind(r.updated_at)
                    .bind(content)
                    .bind(i32::try_from(pieces).unwrap_or(i32::MAX))
                    .bind(r.state)
                    .bind(r.leaf.as_ref().map(|d| &d.0[..]));
            }
            // With CLIENT_FOUND_ROWS (set by sqlx) an inserted row counts 1 and an updated row
            // 2; a row the newer-wins comparison left alone counts 1.
            let want: u64 = chunk.iter().map(|r| if r.existed { 2 } else { 1 }).sum();
            let done = query.execute(&mut *c).await.map_err(unique_is_occupied)?.rows_affected();
            if done != want {
                return Err(Failure::Contract(format!(
                    "newer-wins upsert affected {done} rows, expected {want} for {} winning rows",
                    chunk.len()
                )));
            }
        }
        content::write_chunks(c, p, rows, self.inline_max).await?;
        self.list_tombstones(c, rows).await
    }

    pub(super) async fn put_paths(
        &self,
        c: &mut MySqlConnection,
        upserts: &[PathRow],
        deletes: &[String],
    ) -> Fallible<()> {
        let p = &self.p;
        for chunk in upserts.chunks(MAX_PARAMS / 8) {
            let sql = format!(
                "INSERT INTO {p}paths (path, parent, seghash, acc, leaves, entries, split, depth) \
                 VALUES {} ON DUPLICATE KEY UPDATE acc = VALUES(acc), leaves = VALUES(leaves), \
                 entries = VALUES(entries), split = VALUES(split), depth = VALUES(depth)",
                tuples(chunk.len(), 8)
            );
            let mut query = dq(sql);
            for r in chunk {
                query = query
                    .bind(r.path.as_str())
                    .bind(r.parent.as_deref())
                    .bind(r.seghash)
                    .bind(r.value.acc.to_bytes().to_vec())
                    .bind(r.value.count as i64)
                    .bind(r.entries)
                    .bind(r.split)
                    .bind(r.depth);
            }
            query.execute(&mut *c).await?;
        }
        for chunk in deletes.chunks(MAX_PARAMS) {
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
        c: &mut MySqlConnection,
        upserts: &[BucketRow],
        deletes: &[BucketKey],
    ) -> Fallible<()> {
        let p = &self.p;
        for chunk in upserts.chunks(MAX_PARAMS / 6) {
            let sql = format!(
                "INSERT INTO {p}buckets (path, bucket, acc, leaves, entries, split) VALUES {} \
                 ON DUPLICATE KEY UPDATE acc = VALUES(acc), leaves = VALUES(leaves), \
                 entries = VALUES(entries), split = VALUES(split)",
                tuples(chunk.len(), 6)
            );
            let mut query = dq(sql);
            for r in chunk {
                query = query
                    .bind(r.path.as_str())
                    .bind(bucket_text(&r.bucket))
                    .bind(r.value.acc.to_bytes().to_vec())
                    .bind(r.value.count as i64)
                    .bind(r.entries)
                    .bind(r.split);
            }
            query.execute(&mut *c).await?;
        }
        for chunk in deletes.chunks(MAX_PARAMS / 2) {
            let sql = format!(
                "DELETE FROM {p}buckets WHERE (path, bucket) IN ({})",
                tuples(chunk.len(), 2)
            );
            let mut query = dq(sql);
            for (path, bucket) in chunk {
                query = query.bind(path.as_str()).bind(bucket_text(bucket));
            }
            query.execute(&mut *c).await?;
        }
        Ok(())
    }

    /// Keep the `tombstones` side table in step: list rows that became tombstones (with their
    /// age), forget rows that were tombstones and are live again.
    pub(super) async fn list_tombstones(
        &self,
        c: &mut MySqlConnection,
        rows: &[ItemRow<'_>],
    ) -> Fallible<()> {
        let p = &self.p;
        let dead: Vec<&ItemRow<'_>> = rows.iter().filter(|r| r.stamp.tombstone).collect();
        for chunk in dead.chunks(MAX_PARAMS / 2) {
            let sql = format!(
                "INSERT INTO {p}tombstones (id, updated_at) VALUES {} \
                 ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at)",
                tuples(chunk.len(), 2)
            );
            let mut query = dq(sql);
            for r in chunk {
                query = query.bind(r.id).bind(r.updated_at);
            }
            query.execute(&mut *c).await?;
        }
        let revived: Vec<&str> =
            rows.iter().filter(|r| r.was_tombstone && !r.stamp.tombstone).map(|r| r.id).collect();
        for chunk in revived.chunks(MAX_PARAMS) {
            let sql = format!("DELETE FROM {p}tombstones WHERE id IN ({})", list(chunk.len()));
            let mut query = dq(sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *c).await?;
        }
        Ok(())
    }
}
