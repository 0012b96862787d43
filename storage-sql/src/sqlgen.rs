//! Small SQL text builders for the drivers that bind row by row (SQLite, MySQL; PostgreSQL
//! binds arrays): `?` placeholder lists, padded `IN` lists (few distinct statement texts, so
//! prepared statements stay cached), and statement chunking under bind-parameter and byte limits.

/// `(?,?,...),(?,...)` for `rows` rows of `cols` parameters.
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
pub(crate) fn tuples(rows: usize, cols: usize) -> String {
    let one = format!("({})", list(cols));
    let mut s = String::with_capacity(rows * (one.len() + 1));
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push_str(&one);
    }
    s
}

/// `?,?,...` for `n` parameters (an `IN` list).
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
pub(crate) fn list(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s
}

/// The padded size of an `IN` list of `n` values: the next power of two (at least 1), so a
/// driver prepares at most ~log2(max) distinct statements per query shape. Padding repeats a
/// value already in the list, which changes nothing for `IN`.
#[cfg_attr(not(any(feature = "sqlite", feature = "mysql")), allow(dead_code))]
pub(crate) fn padded(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// Split `rows` into consecutive chunks of at most `max_rows` rows and (unless a single row is
/// larger) at most `max_bytes` bytes as measured by `size`.
pub(crate) fn chunks<T>(
    rows: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, row) in rows.iter().enumerate() {
        let s = size(row);
        let full = i - start >= max_rows || (i > start && bytes.saturating_add(s) > max_bytes);
        if full {
            out.push(&rows[start..i]);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(s);
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// The eight keyset-scan statements, built by `build(op, upper, all)`: lower bound `>=` or `>`,
/// with or without an upper bound, live ids only or every id (tombstones too). Indexed by
/// [`scan_index`].
pub(crate) fn scan_statements<T>(build: impl Fn(&str, bool, bool) -> T) -> [T; 8] {
    let four = |all| {
        [(">=", false), (">=", true), (">", false), (">", true)].map(|(op, up)| build(op, up, all))
    };
    let [a, b, c, d] = four(false);
    let [e, f, g, h] = four(true);
    [a, b, c, d, e, f, g, h]
}

/// The statement of [`scan_statements`] that scans `range`.
pub(crate) fn scan_index(range: &crate::codec::KeyRange, live_only: bool) -> usize {
    usize::from(!live_only) * 4
        + usize::from(range.lower_exclusive) * 2
        + usize::from(range.upper.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn placeholders() {
        assert_eq!(tuples(2, 3), "(?,?,?),(?,?,?)");
        assert_eq!(list(2), "?,?");
        assert_eq!(list(0), "");
        assert_eq!((padded(0), padded(1), padded(5), padded(1024)), (1, 1, 8, 1024));
    }

    proptest! {
        #[test]
        fn chunks_cover_everything_within_limits(
            sizes in proptest::collection::vec(0usize..100, 0..60),
            max_rows in 1usize..10,
            max_bytes in 1usize..300,
        ) {
            let parts = chunks(&sizes, max_rows, max_bytes, |s| *s);
            let joined: Vec<usize> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(&joined, &sizes);
            for p in &parts {
                prop_assert!(!p.is_empty() && p.len() <= max_rows);
                prop_assert!(p.len() == 1 || p.iter().sum::<usize>() <= max_bytes);
            }
        }
    }
}
