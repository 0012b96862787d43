//! The change-log statements, alike on every database but for the connection type and the bind
//! placeholder: [`leaflog_methods!`] expands the four `Driver` methods of the `leaflog` table
//! inside each driver's `impl Driver` block.

/// `append_log`, `read_log`, `clear_log` and `has_log` for a driver with a `p` (table prefix)
/// and a `pool` field, on connection type `$conn`, binding with placeholder `$ph`.
macro_rules! leaflog_methods {
    ($conn:ty, $ph:literal) => {
        async fn append_log(&self, c: &mut $conn, rows: &[Vec<u8>]) -> Fallible<()> {
            let sql =
                format!(concat!("INSERT INTO {}leaflog (changes) VALUES (", $ph, ")"), self.p);
            for row in rows {
                sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(row.as_slice())
                    .execute(&mut *c)
                    .await?;
            }
            Ok(())
        }

        async fn read_log(&self, c: &mut $conn) -> Fallible<Vec<(i64, Vec<u8>)>> {
            let sql = format!("SELECT seq, changes FROM {}leaflog ORDER BY seq", self.p);
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *c).await?;
            rows.iter()
                .map(|r| Ok((sqlx::Row::try_get(r, 0)?, sqlx::Row::try_get(r, 1)?)))
                .collect()
        }

        async fn clear_log(&self, c: &mut $conn, upto: i64) -> Fallible<()> {
            let sql = format!(concat!("DELETE FROM {}leaflog WHERE seq <= ", $ph), self.p);
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(upto).execute(&mut *c).await?;
            Ok(())
        }

        async fn has_log(&self) -> Fallible<bool> {
            let sql = format!("SELECT seq FROM {}leaflog LIMIT 1", self.p);
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&self.pool).await?;
            Ok(row.is_some())
        }
    };
}

pub(crate) use leaflog_methods;
