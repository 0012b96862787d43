//! The tables only a fold writes besides the node rows: the Merkle leaf-change log (`leaflog`:
//! rows appended inside `put_batch`'s transaction, read and cleared by a fold holding the tree
//! lock, see `crate::tree::log`) and the folded tree's leaf entries (`entries`).

use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::SqliteDriver;
use crate::driver::{entry_size, EntryRow, LeafEntry};
use crate::error::{entry_clash_is_contract, Fallible};
use crate::sqlgen::{chunks, tuples};

/// How an entry whose id had a leaf takes its new one.
const UPSERT: &str = " ON CONFLICT (parent, seghash, id) DO UPDATE SET leaf = excluded.leaf";

impl SqliteDriver {
    pub(super) async fn log_append(
        &self,
        c: &mut SqliteConnection,
        rows: &[Vec<u8>],
    ) -> Fallible<()> {
        let sql = format!("INSERT INTO {}leaflog (changes) VALUES (?)", self.p);
        for row in rows {
            sqlx::query(AssertSqlSafe(sql.as_str())).bind(row.as_slice()).execute(&mut *c).await?;
        }
        Ok(())
    }

    pub(super) async fn log_read(&self, c: &mut SqliteConnection) -> Fallible<Vec<(i64, Vec<u8>)>> {
        let sql = format!("SELECT seq, changes FROM {}leaflog ORDER BY seq", self.p);
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *c).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub(super) async fn log_clear(&self, c: &mut SqliteConnection, upto: i64) -> Fallible<()> {
        let sql = format!("DELETE FROM {}leaflog WHERE seq <= ?", self.p);
        sqlx::query(AssertSqlSafe(sql)).bind(upto).execute(&mut *c).await?;
        Ok(())
    }

    pub(super) async fn log_pending(&self) -> Fallible<bool> {
        let sql = format!("SELECT seq FROM {}leaflog LIMIT 1", self.p);
        Ok(sqlx::query(AssertSqlSafe(sql)).fetch_optional(&self.pool).await?.is_some())
    }

    pub(super) async fn entries_write(
        &self,
        c: &mut SqliteConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        let (live, gone): (Vec<&LeafEntry<'_>>, Vec<&LeafEntry<'_>>) =
            entries.iter().partition(|e| e.leaf.is_some());
        let (fresh, over): (Vec<&LeafEntry<'_>>, Vec<&LeafEntry<'_>>) =
            live.into_iter().partition(|e| e.fresh);
        let p = &self.p;
        let work = [(fresh, ""), (over, UPSERT)];
        for (rows, clause) in &work {
            for chunk in chunks(rows, self.max_params / 4, super::MAX_STATEMENT_BYTES, entry_size) {
                let sql = format!(
                    "INSERT INTO {p}entries (parent, seghash, id, leaf) VALUES {}{clause}",
                    tuples(chunk.len(), 4)
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for e in chunk {
                    let leaf = e.leaf.as_ref().map(|d| &d.0[..]);
                    query = query
                        .bind(e.parent)
                        .bind(crate::codec::to_ord(e.seghash))
                        .bind(e.id)
                        .bind(leaf);
                }
                query.execute(&mut *c).await.map_err(entry_clash_is_contract)?;
            }
        }
        for chunk in chunks(&gone, self.max_params / 3, super::MAX_STATEMENT_BYTES, entry_size) {
            let sql = format!(
                "DELETE FROM {p}entries WHERE (parent, seghash, id) IN (VALUES {})",
                tuples(chunk.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                query = query.bind(e.parent).bind(crate::codec::to_ord(e.seghash)).bind(e.id);
            }
            query.execute(&mut *c).await?;
        }
        Ok(())
    }

    pub(super) async fn entries_all(&self) -> Fallible<Vec<(String, EntryRow)>> {
        let sql = format!("SELECT parent, seghash, id, leaf FROM {}entries", self.p);
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let parent: String = r.try_get(0)?;
                let id: String = r.try_get(2)?;
                let leaf: Vec<u8> = r.try_get(3)?;
                let digest = crate::codec::digest_from(&leaf, "entry leaf digest")?;
                Ok((
                    parent,
                    EntryRow::Leaf { id, digest, seghash: crate::codec::from_ord(r.try_get(1)?) },
                ))
            })
            .collect()
    }
}
