//! Entries of many `(path, seghash range)` questions in one query per table: the questions
//! are bound as arrays, unnested with their index, and each answered by a range scan of the
//! `(parent, seghash)` indexes, so every row comes back tagged with the question it answers.

use sqlx::{PgConnection, Row};

use super::rows::leaf_of;
use super::{q, PgDriver};
use crate::codec::{from_ord, to_ord, value_from};
use crate::driver::EntryRow;
use crate::error::{Failure, Fallible};

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
fn index(i: i64, len: usize) -> Fallible<usize> {
    usize::try_from(i - 1)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| Failure::Contract(format!("entry row of question {i} of {len}")))
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
}
