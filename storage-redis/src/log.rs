//! The change log `put.lua` appends to: one blob per written batch, holding for every item
//! whose shadow digest changed `flags | key | NUL | old digest | new digest` (flags bit 0: an
//! old digest follows, bit 1: a new one; keys never contain NUL). Parsing borrows the ids
//! from the blobs, so a fold allocates nothing per logged change.

use std::collections::HashMap;

use sync_engine_core::merkle::Digest;

/// The change of one leaf: from `old` to `new` (None: not in the shadow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change<'a> {
    pub(crate) id: &'a str,
    pub(crate) old: Option<Digest>,
    pub(crate) new: Option<Digest>,
}

/// A blob that is not what `put.lua` writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("change log entry at byte {0} is malformed")]
pub(crate) struct LogError(pub(crate) usize);

/// Append the changes of `blob`, in order, to `out`; returns how many. On error nothing is
/// appended. Keys outside `data_prefix` are refused.
pub(crate) fn parse_blob<'a>(
    data_prefix: &str,
    blob: &'a [u8],
    out: &mut Vec<Change<'a>>,
) -> Result<u64, LogError> {
    let start = out.len();
    let mut at = 0;
    let mut n = 0;
    while at < blob.len() {
        match parse_one(data_prefix, blob, at) {
            Some((change, next)) => {
                out.push(change);
                at = next;
                n += 1;
            }
            None => {
                out.truncate(start);
                return Err(LogError(at));
            }
        }
    }
    Ok(n)
}

fn parse_one<'a>(data_prefix: &str, blob: &'a [u8], at: usize) -> Option<(Change<'a>, usize)> {
    let flags = *blob.get(at)?;
    if flags == 0 || flags > 3 {
        return None;
    }
    let rest = blob.get(at + 1..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    let key = std::str::from_utf8(&rest[..len]).ok()?;
    let id = key.strip_prefix(data_prefix)?;
    let mut next = at + 1 + len + 1;
    let mut take = |present: bool| -> Option<Option<Digest>> {
        if !present {
            return Some(None);
        }
        let d = Digest(blob.get(next..next + 32)?.try_into().ok()?);
        next += 32;
        Some(Some(d))
    };
    let old = take(flags & 1 != 0)?;
    let new = take(flags & 2 != 0)?;
    Some((Change { id, old, new }, next))
}

/// The net change per id of changes in log order: the first old and the last new digest;
/// ids that end where they started are dropped.
pub(crate) fn net(changes: Vec<Change<'_>>) -> Vec<Change<'_>> {
    let mut at: HashMap<&str, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(changes.len(), Default::default());
    let mut out: Vec<Change<'_>> = Vec::with_capacity(changes.len());
    for c in changes {
        match at.get(c.id) {
            Some(&i) => out[i].new = c.new,
            None => {
                at.insert(c.id, out.len());
                out.push(c);
            }
        }
    }
    out.retain(|c| c.old != c.new);
    out
}

#[cfg(test)]
pub(crate) fn encode(data_prefix: &str, changes: &[Change<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    // Like put.lua, which logs only items whose shadow digest was or becomes present.
    for c in changes.iter().filter(|c| c.old.is_some() || c.new.is_some()) {
        out.push(u8::from(c.old.is_some()) + 2 * u8::from(c.new.is_some()));
        out.extend_from_slice(data_prefix.as_bytes());
        out.extend_from_slice(c.id.as_bytes());
        out.push(0);
        for d in [c.old, c.new].into_iter().flatten() {
            out.extend_from_slice(&d.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_keeps_first_old_and_last_new_and_garbage_is_refused() {
        let (d1, d2) = (Digest([1; 32]), Digest([2; 32]));
        let changes = [
            Change { id: "a", old: None, new: Some(d1) },
            Change { id: "a", old: Some(d1), new: Some(d2) },
            Change { id: "b", old: None, new: Some(d1) },
            Change { id: "b", old: Some(d1), new: None },
        ];
        let blob = encode("p:d:", &changes);
        let mut out = Vec::new();
        assert_eq!(parse_blob("p:d:", &blob, &mut out), Ok(4));
        assert_eq!(out, changes);
        assert_eq!(net(out), vec![Change { id: "a", old: None, new: Some(d2) }]);
        let mut out = Vec::new();
        assert!(parse_blob("p:d:", &blob[..blob.len() - 1], &mut out).is_err());
        assert!(out.is_empty(), "a bad blob appends nothing");
        assert!(parse_blob("q:d:", &blob, &mut out).is_err(), "foreign keys are refused");
    }
}
