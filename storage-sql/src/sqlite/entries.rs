//! The folded tree's leaf entries (`entries`), the table only a fold writes besides the node
//! rows (the change log's statements are alike on every database: `crate::logsql`).

use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::SqliteDriver;
use crate::driver::{entry_row, entry_size, EntryRow, EntryWrites, LeafEntry};
use crate::error::{entry_clash_is_contract, Fallible};
use crate::sqlgen::{chunks, tuples};

/// How an entry whose id had a leaf takes its new one.
const UPSERT: &str = " ON CONFLICT (parent, seghash, id) DO UPDATE SET leaf = excluded.leaf";

impl SqliteDriver {
    pub(super) async fn entries_write(
        &self,
        c: &mut SqliteConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        let EntryWrites { fresh, over, gone } = EntryWrites::of(entries);
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
                entry_row(parent, crate::codec::from_ord(r.try_get(1)?), id, &leaf)
            })
            .collect()
    }
}
