//! Contents too large for one MySQL packet.
//!
//! `max_allowed_packet` bounds every statement and every result row (16 MiB by default on
//! MariaDB, exactly the default `max_payload_bytes`). A content longer than the inline limit (a
//! quarter of the packet) is stored as numbered pieces in the `chunks` table, written in the
//! same transaction as its item row (`content` NULL, `chunks` = number of pieces), one piece per
//! statement. Reads fetch the row and its pieces inside one consistent snapshot and check the
//! reassembled content against the stored content hash before returning it.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, MySqlPool, Row};
use sync_engine_core::ContentHash;

use crate::driver::{ItemRow, StoredItem};
use crate::error::{Failure, Fallible};
use crate::sqlgen::list;

/// Number of pieces a content of `len` bytes is cut into.
pub(super) fn pieces(len: usize, size: usize) -> usize {
    len.div_ceil(size.max(1)).max(1)
}

/// Replace the pieces of every row that had or now has a chunked content.
pub(super) async fn write_chunks(
    c: &mut MySqlConnection,
    p: &str,
    rows: &[ItemRow<'_>],
    inline_max: usize,
) -> Fallible<()> {
    let clear: Vec<&str> = rows
        .iter()
        .filter(|r| r.was_chunked || r.content.len() > inline_max)
        .map(|r| r.id)
        .collect();
    for ids in clear.chunks(1000) {
        let sql = format!("DELETE FROM {p}chunks WHERE id IN ({})", list(ids.len()));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *c).await?;
    }
    let insert: Arc<str> = format!("INSERT INTO {p}chunks (id, seq, data) VALUES (?, ?, ?)").into();
    for r in rows.iter().filter(|r| r.content.len() > inline_max) {
        for (seq, piece) in r.content.chunks(inline_max.max(1)).enumerate() {
            sqlx::query(AssertSqlSafe(Arc::clone(&insert)))
                .bind(r.id)
                .bind(i32::try_from(seq).unwrap_or(i32::MAX))
                .bind(piece)
                .execute(&mut *c)
                .await?;
        }
    }
    Ok(())
}

/// Items with chunked contents, each row and its pieces read in one consistent snapshot.
pub(super) async fn read_chunked(
    pool: &MySqlPool,
    p: &str,
    get_one: &Arc<str>,
    ids: &[String],
) -> Fallible<Vec<StoredItem>> {
    let mut conn = pool.acquire().await?;
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await?;
    let mut tx = conn.begin_with("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await?;
    let pieces_sql: Arc<str> =
        format!("SELECT data FROM {p}chunks WHERE id = ? ORDER BY seq").into();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = sqlx::query(AssertSqlSafe(Arc::clone(get_one)))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { continue };
        let (mut item, n) = super::rows::item_row(&row)?;
        if n > 0 {
            let parts = sqlx::query(AssertSqlSafe(Arc::clone(&pieces_sql)))
                .bind(id.as_str())
                .fetch_all(&mut *tx)
                .await?;
            if parts.len() != usize::try_from(n).unwrap_or(0) {
                return Err(Failure::Corrupt(format!(
                    "item {id:?} has {} stored pieces, its row says {n}",
                    parts.len()
                )));
            }
            let mut content = Vec::new();
            for part in &parts {
                let bytes: &[u8] = part.try_get(0)?;
                content.extend_from_slice(bytes);
            }
            if ContentHash::of(&content) != item.stamp.content_hash {
                return Err(Failure::Corrupt(format!(
                    "the pieces of item {id:?} do not hash to its content hash"
                )));
            }
            item.content = content.into();
        }
        out.push(item);
    }
    tx.commit().await?;
    Ok(out)
}
