//! Entries of many `(path, seghash range)` questions in one query per table: the ranges are
//! OR-ed (MySQL and MariaDB scan them as ranges of the entries' `(parent, seghash, id)` key), and the rows
//! are given back to the questions by their parent and `seghash`.

use sqlx::{MySqlConnection, Row};

use super::rows::{leaf_of, text};
use super::{dq, q, MySqlDriver};
use crate::codec::value_from;
use crate::driver::{assign, EntryRow};
use crate::error::{Failure, Fallible};
use crate::sqlgen::padded;

/// Questions per statement (three parameters each; padded to a power of two).
const PER_STATEMENT: usize = 256;

/// `(parent = ? AND seghash BETWEEN ? AND ?) OR ...` for `n` questions.
fn ranges(n: usize) -> String {
    vec!["(parent = ? AND seghash BETWEEN ? AND ?)"; n].join(" OR ")
}

impl MySqlDriver {
    /// `read_entries` of every question, at the same index.
    pub(super) async fn entries_many(
        &self,
        c: &mut MySqlConnection,
        questions: &[(String, (u64, u64))],
    ) -> Fallible<Vec<Vec<EntryRow>>> {
        let mut out = Vec::with_capacity(questions.len());
        for chunk in questions.chunks(PER_STATEMENT) {
            let n = padded(chunk.len());
            let bind = |sql: String| {
                let mut query = dq(sql);
                for i in 0..n {
                    if let Some((path, (lo, hi))) = chunk.get(i).or(chunk.first()) {
                        query = query.bind(path.as_str()).bind(*lo).bind(*hi);
                    }
                }
                query
            };
            let mut rows = Vec::new();
            let sql = format!(
                "SELECT parent, id, leaf, seghash FROM {}entries WHERE {}",
                self.p,
                ranges(n)
            );
            for r in bind(sql).fetch_all(&mut *c).await? {
                let id = text(&r, 1)?;
                let digest = leaf_of(r.try_get(2)?)?.ok_or_else(|| {
                    Failure::Corrupt(format!("live item {id:?} has no stored leaf digest"))
                })?;
                rows.push((text(&r, 0)?, EntryRow::Leaf { id, digest, seghash: r.try_get(3)? }));
            }
            let sql = format!(
                "SELECT parent, path, acc, leaves, seghash FROM {}paths WHERE {}",
                self.p,
                ranges(n)
            );
            for r in bind(sql).fetch_all(&mut *c).await? {
                let child = text(&r, 1)?;
                let acc: Vec<u8> = r.try_get(2)?;
                let value = value_from(&acc, r.try_get(3)?, &format!("path {child:?}"))?;
                let row = EntryRow::Path { path: child, value, seghash: r.try_get(4)? };
                rows.push((text(&r, 0)?, row));
            }
            out.extend(assign(chunk, rows));
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
}
