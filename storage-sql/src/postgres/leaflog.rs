//! The tables only a fold writes besides the node rows: the Merkle leaf-change log (`leaflog`:
//! rows appended inside `put_batch`'s transaction, read and cleared by a fold holding the tree
//! lock, see `crate::tree::log`) and the folded tree's leaf entries (`entries`).

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::PgDriver;
use crate::codec::to_ord;
use crate::driver::{EntryRow, LeafEntry};
use crate::error::{entry_clash_is_contract, Fallible};

impl PgDriver {
    pub(super) async fn log_append(&self, c: &mut PgConnection, rows: &[Vec<u8>]) -> Fallible<()> {
        let sql = format!("INSERT INTO {}leaflog (changes) VALUES ($1)", self.p);
        for row in rows {
            sqlx::query(AssertSqlSafe(sql.as_str())).bind(row.as_slice()).execute(&mut *c).await?;
        }
        Ok(())
    }

    pub(super) async fn log_read(&self, c: &mut PgConnection) -> Fallible<Vec<(i64, Vec<u8>)>> {
        let sql = format!("SELECT seq, changes FROM {}leaflog ORDER BY seq", self.p);
        let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(&mut *c).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub(super) async fn log_clear(&self, c: &mut PgConnection, upto: i64) -> Fallible<()> {
        let sql = format!("DELETE FROM {}leaflog WHERE seq <= $1", self.p);
        sqlx::query(AssertSqlSafe(sql)).bind(upto).execute(&mut *c).await?;
        Ok(())
    }

    pub(super) async fn log_pending(&self) -> Fallible<bool> {
        let sql = format!("SELECT seq FROM {}leaflog LIMIT 1", self.p);
        Ok(sqlx::query(AssertSqlSafe(sql)).fetch_optional(&self.pool).await?.is_some())
    }

    pub(super) async fn entries_write(
        &self,
        c: &mut PgConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        let (live, gone): (Vec<&LeafEntry<'_>>, Vec<&LeafEntry<'_>>) =
            entries.iter().partition(|e| e.leaf.is_some());
        let (fresh, over): (Vec<&LeafEntry<'_>>, Vec<&LeafEntry<'_>>) =
            live.into_iter().partition(|e| e.fresh);
        let p = &self.p;
        let upsert = " ON CONFLICT (parent, seghash, id) DO UPDATE SET leaf = excluded.leaf";
        for (rows, clause) in [(fresh, ""), (over, upsert)] {
            if rows.is_empty() {
                continue;
            }
            let sql = format!(
                "INSERT INTO {p}entries (parent, seghash, id, leaf) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::bytea[]){clause}"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(rows.iter().map(|e| e.parent).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| to_ord(e.seghash)).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| e.id).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| e.leaf.map(|d| d.0.to_vec())).collect::<Vec<_>>())
                .execute(&mut *c)
                .await
                .map_err(entry_clash_is_contract)?;
        }
        if !gone.is_empty() {
            let sql = format!(
                "DELETE FROM {p}entries WHERE (parent, seghash, id) IN \
                 (SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[]))"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(gone.iter().map(|e| e.parent).collect::<Vec<_>>())
                .bind(gone.iter().map(|e| to_ord(e.seghash)).collect::<Vec<_>>())
                .bind(gone.iter().map(|e| e.id).collect::<Vec<_>>())
                .execute(&mut *c)
                .await?;
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
