//! The folded tree's leaf entries (`entries`): written by folds, listed with the child path
//! nodes for node answers and splits. Entries of many `(path, seghash range)` questions come in
//! one query per table: one range scan of the `(parent, seghash)` key per question, joined by
//! `UNION ALL`, each row tagged with the index of the question it answers.

use sqlx::{AssertSqlSafe, MySqlConnection, Row};

use super::rows::{leaf_of, text};
use super::{dq, q, MySqlDriver};
use crate::codec::value_from;
use crate::driver::{entry_row, entry_size, question_index, EntryRow, EntryWrites, LeafEntry};
use crate::error::{entry_clash_is_contract, Failure, Fallible};
use crate::sqlgen::{chunks, padded, tuples};

/// Questions per statement (three parameters each; padded to a power of two).
const PER_STATEMENT: usize = 256;

/// How an entry whose id had a leaf takes its new one.
const UPSERT: &str = " ON DUPLICATE KEY UPDATE leaf = VALUES(leaf)";

/// `SELECT <i>, <cols> FROM <table> WHERE parent = ? AND seghash BETWEEN ? AND ?` for each
/// question `i` of `n`, joined by `UNION ALL`. Each question is its own range scan and its rows
/// come back tagged with its index. (The OR of `n` ranges in one WHERE, which MariaDB also scans
/// as ranges, is evaluated again for every row read: with every question under one wide parent
/// that is `n` comparisons per row, most of such a query's time.)
fn union(n: usize, cols: &str, table: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "SELECT {i} AS q, {cols} FROM {table} WHERE parent = ? AND seghash BETWEEN ? AND ?"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The question index a row is tagged with, checked against the `asked` questions of its
/// statement (padding questions ask for an empty range, so no row names one).
fn question(r: &sqlx::mysql::MySqlRow, asked: usize) -> Fallible<usize> {
    question_index(r.try_get(0)?, asked)
}

impl MySqlDriver {
    /// `read_entries` of every question, at the same index.
    pub(super) async fn entries_many(
        &self,
        c: &mut MySqlConnection,
        questions: &[(String, (u64, u64))],
    ) -> Fallible<Vec<Vec<EntryRow>>> {
        let mut out: Vec<Vec<EntryRow>> = questions.iter().map(|_| Vec::new()).collect();
        for (k, chunk) in questions.chunks(PER_STATEMENT).enumerate() {
            let base = k * PER_STATEMENT;
            let n = padded(chunk.len());
            let bind = |sql: String| {
                let mut query = dq(sql);
                for i in 0..n {
                    query = match chunk.get(i) {
                        Some((path, (lo, hi))) => query.bind(path.as_str()).bind(*lo).bind(*hi),
                        // Padding up to the statement's size: an empty range reads nothing.
                        None => query.bind("").bind(1u64).bind(0u64),
                    };
                }
                query
            };
            let sql = union(n, "id, leaf, seghash", &format!("{}entries", self.p));
            for r in bind(sql).fetch_all(&mut *c).await? {
                let i = question(&r, chunk.len())?;
                let id = text(&r, 1)?;
                let digest = leaf_of(r.try_get(2)?)?.ok_or_else(|| {
                    Failure::Corrupt(format!("live item {id:?} has no stored leaf digest"))
                })?;
                out[base + i].push(EntryRow::Leaf { id, digest, seghash: r.try_get(3)? });
            }
            let sql = union(n, "path, acc, leaves, seghash", &format!("{}paths", self.p));
            for r in bind(sql).fetch_all(&mut *c).await? {
                let i = question(&r, chunk.len())?;
                let child = text(&r, 1)?;
                let acc: Vec<u8> = r.try_get(2)?;
                let value = value_from(&acc, r.try_get(3)?, &format!("path {child:?}"))?;
                out[base + i].push(EntryRow::Path { path: child, value, seghash: r.try_get(4)? });
            }
        }
        Ok(out)
    }

    /// `read_entries` of one question.
    pub(super) async fn entries_one(
        &self,
        c: &mut MySqlConnection,
        path: &str,
        range: (u64, u64),
    ) -> Fallible<Vec<EntryRow>> {
        let mut out = Vec::new();
        let leaves = q(&self.entries_leaves)
            .bind(path)
            .bind(range.0)
            .bind(range.1)
            .fetch_all(&mut *c)
            .await?;
        for r in leaves {
            let id = text(&r, 0)?;
            let digest = leaf_of(r.try_get(1)?)?.ok_or_else(|| {
                Failure::Corrupt(format!("live item {id:?} has no stored leaf digest"))
            })?;
            out.push(EntryRow::Leaf { id, digest, seghash: r.try_get(2)? });
        }
        let paths = q(&self.entries_paths)
            .bind(path)
            .bind(range.0)
            .bind(range.1)
            .fetch_all(&mut *c)
            .await?;
        for r in paths {
            let child = text(&r, 0)?;
            let acc: Vec<u8> = r.try_get(1)?;
            let value = value_from(&acc, r.try_get(2)?, &format!("path {child:?}"))?;
            out.push(EntryRow::Path { path: child, value, seghash: r.try_get(3)? });
        }
        Ok(out)
    }

    pub(super) async fn entries_write(
        &self,
        c: &mut MySqlConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        let EntryWrites { fresh, over, gone } = EntryWrites::of(entries);
        let p = &self.p;
        let work = [(fresh, ""), (over, UPSERT)];
        for (rows, clause) in &work {
            for chunk in chunks(rows, super::MAX_PARAMS / 4, self.statement_bytes, entry_size) {
                let sql = format!(
                    "INSERT INTO {p}entries (parent, seghash, id, leaf) VALUES {}{clause}",
                    tuples(chunk.len(), 4)
                );
                let mut query = sqlx::query(AssertSqlSafe(sql));
                for e in chunk {
                    let leaf = e.leaf.as_ref().map(|d| &d.0[..]);
                    query = query.bind(e.parent).bind(e.seghash).bind(e.id).bind(leaf);
                }
                query.execute(&mut *c).await.map_err(entry_clash_is_contract)?;
            }
        }
        for chunk in chunks(&gone, super::MAX_PARAMS / 3, self.statement_bytes, entry_size) {
            let sql = format!(
                "DELETE FROM {p}entries WHERE (parent, seghash, id) IN ({})",
                tuples(chunk.len(), 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                query = query.bind(e.parent).bind(e.seghash).bind(e.id);
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
                let parent = super::rows::text(r, 0)?;
                let id = super::rows::text(r, 2)?;
                let leaf: Vec<u8> = r.try_get(3)?;
                entry_row(parent, r.try_get(1)?, id, &leaf)
            })
            .collect()
    }
}
