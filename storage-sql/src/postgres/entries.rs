//! The folded tree's leaf entries (`entries`): written by folds, listed with the child path
//! nodes for node answers and splits. Entries of many `(path, seghash range)` questions come in
//! one query per table: the questions are bound as arrays, unnested with their index, and each
//! answered by a range scan of the `(parent, seghash)` keys, so every row comes back tagged with
//! the question it answers.

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::rows::leaf_of;
use super::{q, PgDriver, FOLD_ROWS_PER_STATEMENT};
use crate::codec::{from_ord, to_ord, value_from};
use crate::driver::{entry_row, question_index, EntryRow, EntryWrites, LeafEntry};
use crate::error::{entry_clash_is_contract, Failure, Fallible};

/// The two statements (prefix applied): live leaves, then child paths. Each question is a
/// LATERAL subquery fenced with `OFFSET 0`, so the planner runs one range scan of the
/// `(parent, seghash)` index per question instead of joining on `parent` alone (which, with
/// every question under one wide parent, compares each of its rows with every question).
pub(super) fn statements(p: &str) -> [String; 2] {
    let questions =
        "unnest($1::text[], $2::int8[], $3::int8[]) WITH ORDINALITY AS q(parent, lo, hi, i)";
    let range = "parent = q.parent AND seghash BETWEEN q.lo AND q.hi";
    [
        format!(
            "SELECT q.i, t.id, t.leaf, t.seghash FROM {questions} CROSS JOIN LATERAL \
             (SELECT id, leaf, seghash FROM {p}entries WHERE {range} OFFSET 0) t"
        ),
        format!(
            "SELECT q.i, t.path, t.acc, t.leaves, t.seghash FROM {questions} CROSS JOIN LATERAL \
             (SELECT path, acc, leaves, seghash FROM {p}paths WHERE {range} OFFSET 0) t"
        ),
    ]
}

/// The question index of a row's 1-based ordinality.
fn index(ordinality: i64, len: usize) -> Fallible<usize> {
    question_index(ordinality.saturating_sub(1), len)
}

impl PgDriver {
    /// `read_entries` of every question, at the same index.
    pub(super) async fn entries_many(
        &self,
        c: &mut PgConnection,
        questions: &[(String, (u64, u64))],
    ) -> Fallible<Vec<Vec<EntryRow>>> {
        let paths: Vec<&str> = questions.iter().map(|(p, _)| p.as_str()).collect();
        let lo: Vec<i64> = questions.iter().map(|(_, r)| to_ord(r.0)).collect();
        let hi: Vec<i64> = questions.iter().map(|(_, r)| to_ord(r.1)).collect();
        let mut out: Vec<Vec<EntryRow>> = questions.iter().map(|_| Vec::new()).collect();
        let leaves = q(&self.sql.entries_leaves_many)
            .bind(&paths)
            .bind(&lo)
            .bind(&hi)
            .fetch_all(&mut *c)
            .await?;
        for r in leaves {
            let i = index(r.try_get(0)?, out.len())?;
            let id: String = r.try_get(1)?;
            let digest = leaf_of(r.try_get(2)?)?.ok_or_else(|| {
                Failure::Corrupt(format!("live item {id:?} has no stored leaf digest"))
            })?;
            out[i].push(EntryRow::Leaf { id, digest, seghash: from_ord(r.try_get(3)?) });
        }
        let children = q(&self.sql.entries_paths_many)
            .bind(&paths)
            .bind(&lo)
            .bind(&hi)
            .fetch_all(&mut *c)
            .await?;
        for r in children {
            let i = index(r.try_get(0)?, out.len())?;
            let child: String = r.try_get(1)?;
            let acc: Vec<u8> = r.try_get(2)?;
            let value = value_from(&acc, r.try_get(3)?, &format!("path {child:?}"))?;
            out[i].push(EntryRow::Path { path: child, value, seghash: from_ord(r.try_get(4)?) });
        }
        Ok(out)
    }

    pub(super) async fn entries_write(
        &self,
        c: &mut PgConnection,
        entries: &[LeafEntry<'_>],
    ) -> Fallible<()> {
        let EntryWrites { fresh, over, gone } = EntryWrites::of(entries);
        let p = &self.p;
        let upsert = " ON CONFLICT (parent, seghash, id) DO UPDATE SET leaf = excluded.leaf";
        for (all, clause) in [(fresh, ""), (over, upsert)] {
            for rows in all.chunks(FOLD_ROWS_PER_STATEMENT) {
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
        }
        for gone in gone.chunks(FOLD_ROWS_PER_STATEMENT) {
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
                entry_row(parent, crate::codec::from_ord(r.try_get(1)?), id, &leaf)
            })
            .collect()
    }
}
