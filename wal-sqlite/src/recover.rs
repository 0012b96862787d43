//! Recovery at open and quarantine: the log's bookkeeping state, the verification scan, and
//! what happens to an entry that fails its checksum or a sequence number that went missing.
//!
//! Policy (see README.md): a damaged entry is never returned and never silently dropped. It is
//! moved, raw bytes and reason, into the `damaged` table in one transaction, with an ERROR
//! log naming its sequence number, and the log goes on with the entries after it (which are
//! newer, so draining them first is harmless under newer-wins). Sequence numbers that should
//! be pending but are absent (SQLite lost rows without reporting corruption) are recorded in
//! the same table as a range, with the same ERROR log. Operators read them with
//! [`crate::SqliteWal::damaged`].

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sync_engine_core::{now_ms, Result};

use crate::errors::sql_error;
use crate::record::{decode_record, decode_state, encode_state, LogState};
use crate::schema::STATE_SLOT;

const OP: &str = "open";
/// Damage found at open is logged one line per entry up to this many, then summarised.
const LOG_LINES: usize = 20;

/// Pending depth of the log, as `stats` reports it, plus the damaged rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Pending entries.
    pub items: u64,
    /// Pending record bytes.
    pub bytes: u64,
    /// Rows of the `damaged` table.
    pub damaged: u64,
}

/// Write the log state record (inside the caller's transaction).
pub(crate) fn write_state(tx: &Transaction<'_>, state: &LogState) -> rusqlite::Result<()> {
    let record =
        encode_state(state).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached("INSERT OR REPLACE INTO meta(slot, record) VALUES (?1, ?2)")?
        .execute(params![STATE_SLOT, record])?;
    Ok(())
}

/// Move the entry `seq` to the `damaged` table with `reason`; returns its record length if
/// it was still pending.
pub(crate) fn quarantine(
    tx: &Transaction<'_>,
    seq: i64,
    reason: &str,
) -> rusqlite::Result<Option<u64>> {
    let len: Option<i64> = tx
        .prepare_cached("SELECT length(record) FROM entries WHERE seq = ?1")?
        .query_row([seq], |r| r.get(0))
        .optional()?;
    let Some(len) = len else { return Ok(None) };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO damaged(first_seq, last_seq, record, reason, detected_at_ms)
         SELECT seq, seq, record, ?2, ?3 FROM entries WHERE seq = ?1",
    )?
    .execute(params![seq, reason, now_ms() as i64])?;
    tx.prepare_cached("DELETE FROM entries WHERE seq = ?1")?.execute([seq])?;
    Ok(Some(u64::try_from(len).unwrap_or(0)))
}

/// The sub-ranges of `[a, b]` not covered by `ranges` (sorted by start, non-overlapping).
pub(crate) fn uncovered(a: u64, b: u64, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if a > b {
        return out;
    }
    let mut cur = a;
    for &(first, last) in ranges {
        if last < cur {
            continue;
        }
        if first > b {
            break;
        }
        if first > cur {
            out.push((cur, first - 1));
        }
        if last >= b {
            return out;
        }
        cur = last + 1;
    }
    out.push((cur, b));
    out
}

fn seq_u64(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

/// Load the state record, rebuilding it (with a warning) when it is missing or damaged.
fn load_state(conn: &Connection, path: &Path) -> Result<(LogState, bool)> {
    let sql = |e| sql_error(OP, path, e);
    let raw: Option<Option<Vec<u8>>> = conn
        .query_row("SELECT record FROM meta WHERE slot = ?1", [STATE_SLOT], |r| {
            Ok(r.get_ref(0)?.as_blob().ok().map(<[u8]>::to_vec))
        })
        .optional()
        .map_err(sql)?;
    let problem = match raw {
        Some(Some(raw)) => match decode_state(&raw) {
            Ok(state) => return Ok((state, false)),
            Err(e) => e.to_string(),
        },
        Some(None) => "not a blob".to_string(),
        None => "missing".to_string(),
    };
    let (max_entry, min_entry): (Option<i64>, Option<i64>) = conn
        .query_row("SELECT max(seq), min(seq) FROM entries", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(sql)?;
    let max_damaged: Option<i64> =
        conn.query_row("SELECT max(last_seq) FROM damaged", [], |r| r.get(0)).map_err(sql)?;
    let last_seq = seq_u64(max_entry.unwrap_or(0)).max(seq_u64(max_damaged.unwrap_or(0)));
    let last_removed = min_entry.map_or(last_seq, |m| seq_u64(m).saturating_sub(1));
    tracing::warn!(
        path = %path.display(),
        problem = %problem,
        last_seq,
        last_removed,
        "the WAL's state record is {problem}; rebuilt from the entries (missing entries at the tail can no longer be detected)"
    );
    Ok((LogState { last_seq, last_removed }, true))
}

/// Counts read without decoding, and whether they agree with the state: every seq in
/// `(last_removed, last_seq]` is pending or known damaged, and no pending seq lies outside.
struct Quick {
    items: u64,
    bytes: u64,
    consistent: bool,
}

fn quick_counts(
    conn: &Connection,
    path: &Path,
    state: &LogState,
    known: &[(u64, u64)],
) -> Result<Quick> {
    let (items, bytes, min, max): (i64, i64, Option<i64>, Option<i64>) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(length(record)), 0), min(seq), max(seq) FROM entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(|e| sql_error(OP, path, e))?;
    let (lo, hi) = (state.last_removed.saturating_add(1), state.last_seq);
    let damaged_in_range: u64 = known
        .iter()
        .map(|&(a, b)| {
            let (a, b) = (a.max(lo), b.min(hi));
            if a > b {
                0
            } else {
                b - a + 1
            }
        })
        .sum();
    // Entries appended later under the seq of a quarantined damaged key are in both tables.
    let overlap: i64 = conn
        .query_row(
            "SELECT count(*) FROM damaged d JOIN entries e ON e.seq BETWEEN d.first_seq AND d.last_seq",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_error(OP, path, e))?;
    let damaged_in_range = damaged_in_range.saturating_sub(seq_u64(overlap));
    let expected = hi.saturating_sub(state.last_removed);
    let inside = match (min, max) {
        (Some(min), Some(max)) => min >= 0 && seq_u64(min) >= lo && seq_u64(max) <= hi,
        _ => true,
    };
    let consistent = inside && seq_u64(items).saturating_add(damaged_in_range) == expected;
    Ok(Quick { items: seq_u64(items), bytes: seq_u64(bytes), consistent })
}

/// Bring the log to a consistent state at open and count it.
///
/// With `verify`, every pending entry is decoded and checked against its sequence number;
/// damaged entries are quarantined and missing sequence numbers recorded (see the module
/// doc). Without it, only counts are read, unless they disagree with the state record, in
/// which case the full verification runs anyway (entries then get checked at `peek`).
pub(crate) fn recover(
    conn: &mut Connection,
    path: &Path,
    verify: bool,
) -> Result<(LogState, Counters)> {
    let sql = |e| sql_error(OP, path, e);
    let (mut state, mut dirty) = load_state(conn, path)?;
    let known: Vec<(u64, u64)> = {
        let mut stmt = conn
            .prepare("SELECT first_seq, last_seq FROM damaged ORDER BY first_seq")
            .map_err(sql)?;
        let rows =
            stmt.query_map([], |r| Ok((seq_u64(r.get(0)?), seq_u64(r.get(1)?)))).map_err(sql)?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql)?
    };
    let fast = quick_counts(conn, path, &state, &known)?;
    let verify = verify || !fast.consistent;
    if !fast.consistent {
        tracing::warn!(path = %path.display(), "the WAL's entries do not match its bookkeeping; verifying every entry");
    }
    let mut counters = Counters::default();
    let mut bad: Vec<(i64, String)> = Vec::new();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut stale = 0u64;
    if verify {
        let mut stmt = conn.prepare("SELECT seq, record FROM entries ORDER BY seq").map_err(sql)?;
        let mut rows = stmt.query([]).map_err(sql)?;
        let mut prev = state.last_removed;
        while let Some(row) = rows.next().map_err(sql)? {
            let seq: i64 = row.get(0).map_err(sql)?;
            let useq = seq_u64(seq);
            let check = match row.get_ref(1).map_err(sql)? {
                rusqlite::types::ValueRef::Blob(b) if seq >= 0 => {
                    decode_record(useq, b).map(|_| b.len() as u64).map_err(|e| e.to_string())
                }
                _ if seq < 0 => Err(format!("negative sequence number {seq}")),
                _ => Err("record is not a blob".to_string()),
            };
            match check {
                Ok(len) => {
                    counters.items += 1;
                    counters.bytes += len;
                }
                Err(reason) => {
                    // A damaged row's key is untrusted: it neither fills nor opens a gap.
                    bad.push((seq, reason));
                    continue;
                }
            }
            if useq <= state.last_removed {
                stale += 1;
                continue;
            }
            if useq > prev.saturating_add(1) {
                gaps.push((prev + 1, useq - 1));
            }
            prev = useq;
        }
        if state.last_seq > prev {
            gaps.push((prev + 1, state.last_seq));
        } else if prev > state.last_seq {
            tracing::warn!(path = %path.display(), recorded = state.last_seq, found = prev, "entries beyond the recorded last sequence number; keeping them");
            state.last_seq = prev;
            dirty = true;
        }
    } else {
        counters.items = fast.items;
        counters.bytes = fast.bytes;
    }
    if stale > 0 {
        tracing::warn!(path = %path.display(), stale, "entries at or below the last removed sequence number are still stored; they will be drained again (harmless: newer wins)");
    }
    // Seqs quarantined now count as accounted for, like those quarantined before.
    let mut known = known;
    known.extend(bad.iter().filter(|b| b.0 >= 0).map(|b| (seq_u64(b.0), seq_u64(b.0))));
    known.sort_unstable();
    let missing: Vec<(u64, u64)> =
        gaps.iter().flat_map(|&(a, b)| uncovered(a, b, &known)).collect();
    if !bad.is_empty() || !missing.is_empty() || dirty {
        let now = now_ms() as i64;
        let tx = conn.transaction().map_err(sql)?;
        for (i, (seq, reason)) in bad.iter().enumerate() {
            if i < LOG_LINES {
                tracing::error!(path = %path.display(), seq, reason = %reason, "WAL entry failed its check: quarantined into the `damaged` table, NOT drained");
            }
            quarantine(&tx, *seq, reason).map_err(sql)?;
        }
        for (i, (a, b)) in missing.iter().enumerate() {
            if i < LOG_LINES {
                tracing::error!(path = %path.display(), first_seq = a, last_seq = b, "WAL entries missing from the file (lost to corruption): recorded in the `damaged` table");
            }
            tx.prepare_cached(
                "INSERT OR REPLACE INTO damaged(first_seq, last_seq, record, reason, detected_at_ms) VALUES (?1, ?2, NULL, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![*a as i64, *b as i64, "missing from the file at open", now]))
            .map_err(sql)?;
        }
        if bad.len() + missing.len() > LOG_LINES {
            tracing::error!(path = %path.display(), damaged = bad.len(), missing_ranges = missing.len(), "more damaged WAL entries than logged above");
        }
        write_state(&tx, &state).map_err(sql)?;
        tx.commit().map_err(sql)?;
    }
    let damaged: i64 =
        conn.query_row("SELECT count(*) FROM damaged", [], |r| r.get(0)).map_err(sql)?;
    counters.damaged = seq_u64(damaged);
    Ok((state, counters))
}

#[cfg(test)]
mod tests {
    use super::uncovered;

    #[test]
    fn uncovered_subtracts_known_ranges() {
        assert_eq!(uncovered(1, 10, &[]), vec![(1, 10)]);
        assert_eq!(uncovered(1, 10, &[(3, 4), (7, 7)]), vec![(1, 2), (5, 6), (8, 10)]);
        assert_eq!(uncovered(1, 10, &[(0, 20)]), vec![]);
        assert_eq!(uncovered(5, 6, &[(1, 2), (6, u64::MAX)]), vec![(5, 5)]);
        assert_eq!(uncovered(5, 4, &[]), vec![]);
        assert_eq!(uncovered(1, 3, &[(1, 3)]), vec![]);
    }
}
