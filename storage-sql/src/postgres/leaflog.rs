//! The Merkle leaf-change log table (`leaflog`): rows appended inside `put_batch`'s
//! transaction, read and cleared by a fold holding the tree lock (see `crate::tree::log`).

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::PgDriver;
use crate::error::Fallible;

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
}
