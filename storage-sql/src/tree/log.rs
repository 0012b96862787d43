//! The leaf-change log: what `put_batch` records about the Merkle tree inside its transaction,
//! folded into the node rows later (see [`crate::ops`]).
//!
//! One log row holds the leaf changes of (part of) one batch, encoded as
//! `version (1 byte = 1)` then, per change, `flags (bit 0: old present, bit 1: new present) ‖ id
//! length (u16 big-endian) ‖ id (UTF-8) ‖ old digest (32 bytes, if present) ‖ new digest (32
//! bytes, if present)`. [`decode`] accepts exactly what [`encode`] produces and never panics;
//! anything else is reported as corrupt, naming what was wrong.

use sync_engine_core::merkle::{split_id, ChangeError, ChangeSet, Digest, LeafChange};

use crate::error::{Failure, Fallible};

/// Format version byte leading every log row.
const LOG_FORMAT_VERSION: u8 = 1;

/// Changes per log row: keeps a row well under every database's packet and value limits
/// (at most ~4.5 MB with 1-KiB ids, ~300 KB with typical ones).
pub(crate) const CHANGES_PER_ROW: usize = 4096;

/// The changes of `set` (no-op changes left out), as log rows of at most [`CHANGES_PER_ROW`]
/// changes each, in id order.
pub(crate) fn encode(set: &ChangeSet) -> Vec<Vec<u8>> {
    let real: Vec<&LeafChange> = set.iter().filter(|c| c.old != c.new).collect();
    real.chunks(CHANGES_PER_ROW)
        .map(|chunk| {
            let mut out = Vec::with_capacity(1 + chunk.len() * 100);
            out.push(LOG_FORMAT_VERSION);
            for c in chunk {
                out.push(u8::from(c.old.is_some()) | (u8::from(c.new.is_some()) << 1));
                // Ids are at most HARD_MAX_ID_LEN (1024) bytes, checked before any write.
                let len = u16::try_from(c.id.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&c.id.as_bytes()[..usize::from(len)]);
                for d in [c.old, c.new].into_iter().flatten() {
                    out.extend_from_slice(&d.0);
                }
            }
            out
        })
        .collect()
}

/// One record of a log row, cut from the row's bytes and checked, not yet copied.
struct Record<'a> {
    id: &'a str,
    old: Option<Digest>,
    new: Option<Digest>,
}

fn corrupt(what: String) -> Failure {
    Failure::Corrupt(format!("Merkle change-log row: {what}"))
}

/// The records of a row, in order: its version checked, then each record cut and checked. A
/// damaged row or record is the walk's last item, an error naming what was wrong.
fn records_of(bytes: &[u8]) -> impl Iterator<Item = Fallible<Record<'_>>> {
    let (mut rest, mut failed) = match bytes.split_first() {
        None => (&[][..], Some(corrupt("empty".into()))),
        Some((&LOG_FORMAT_VERSION, rest)) => (rest, None),
        Some((&version, _)) => (
            &[][..],
            Some(corrupt(format!(
                "format version {version}, this build reads {LOG_FORMAT_VERSION}"
            ))),
        ),
    };
    let mut n = 0;
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let (&flags, tail) = rest.split_first()?;
        let record = cut(n, flags, tail);
        n += 1;
        Some(match record {
            Ok((record, tail)) => {
                rest = tail;
                Ok(record)
            }
            Err(e) => {
                rest = &[];
                Err(e)
            }
        })
    })
}

/// Record `n` (its `flags` already read) from the front of `rest`; returns it and what follows.
fn cut(n: usize, flags: u8, mut rest: &[u8]) -> Fallible<(Record<'_>, &[u8])> {
    if flags > 3 {
        return Err(corrupt(format!("change {n} has flags {flags:#04x}")));
    }
    let mut take = |len: usize, what: &str| -> Fallible<&[u8]> {
        let field = rest
            .get(..len)
            .ok_or_else(|| corrupt(format!("change {n} truncated in its {what}")))?;
        rest = &rest[len..];
        Ok(field)
    };
    let len = take(2, "id length")?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let id = std::str::from_utf8(take(len, "id")?)
        .map_err(|_| corrupt(format!("change {n} has an id that is not UTF-8")))?;
    let mut digest = |present: bool, what: &str| -> Fallible<Option<Digest>> {
        if !present {
            return Ok(None);
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(take(32, what)?);
        Ok(Some(Digest(d)))
    };
    let old = digest(flags & 1 != 0, "old digest")?;
    let new = digest(flags & 2 != 0, "new digest")?;
    Ok((Record { id, old, new }, rest))
}

/// The changes of one log row, in the order they were written.
#[cfg(test)]
pub(crate) fn decode(bytes: &[u8]) -> Fallible<Vec<LeafChange>> {
    let mut out = Vec::new();
    decode_into(bytes, &mut out)?;
    Ok(out)
}

/// [`decode`] appending to `out`.
fn decode_into(bytes: &[u8], out: &mut Vec<LeafChange>) -> Fallible<()> {
    for record in records_of(bytes) {
        let Record { id, old, new } = record?;
        out.push(LeafChange { id: id.to_owned(), old, new });
    }
    Ok(())
}

/// The number of changes a well-formed log row holds (of a damaged one, the changes up to the
/// damage, which [`decode`] then reports), without copying any.
fn records(bytes: &[u8]) -> usize {
    records_of(bytes).take_while(Result::is_ok).count()
}

/// The net change of log rows read in commit order, one per id, sorted by id: each id from its
/// first `old` to its last `new` (a net no-op included). A row whose change of an id does not
/// start where the previous one ended, or an id the tree cannot place, means the log and the
/// items disagree: reported as corrupt, nothing applied.
///
/// Memory: one [`LeafChange`] per logged change (~100 bytes and its id), merged in place — half
/// of what a [`ChangeSet`] of the same changes holds (a B-tree, its nodes part-filled, keyed by
/// a second copy of every id): at the default `fold_changes` this was the largest allocation of
/// a fold (16 MB of 65,536 changes).
pub(crate) fn merge<'a>(
    rows: impl IntoIterator<Item = &'a [u8]> + Clone,
) -> Fallible<Vec<LeafChange>> {
    // Exact capacity: grown by pushing, the vector held up to twice the changes.
    let mut all = Vec::with_capacity(rows.clone().into_iter().map(records).sum());
    for row in rows {
        decode_into(row, &mut all)?;
    }
    // Stable: the changes of one id stay in commit order.
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut kept = 0;
    for i in 0..all.len() {
        if kept > 0 && all[kept - 1].id == all[i].id {
            let (done, rest) = all.split_at_mut(i);
            let (net, next) = (&mut done[kept - 1], &rest[0]);
            if net.new != next.old {
                let e = ChangeError::BrokenChain {
                    id: next.id.clone(),
                    expected: net.new,
                    got: next.old,
                };
                return Err(Failure::Corrupt(format!("Merkle change-log rows do not chain: {e}")));
            }
            net.new = next.new;
        } else {
            split_id(&all[i].id).map_err(|e| {
                Failure::Corrupt(format!("Merkle change-log row: id {:?}: {e}", all[i].id))
            })?;
            all.swap(kept, i);
            kept += 1;
        }
    }
    all.truncate(kept);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest() -> impl Strategy<Value = Option<Digest>> {
        proptest::option::of(any::<[u8; 32]>().prop_map(Digest))
    }

    fn change_set() -> impl Strategy<Value = ChangeSet> {
        proptest::collection::btree_map(
            "[a-c]{1,3}(\\.[a-z0-9_:{}]{1,12}){0,3}",
            (digest(), digest()),
            0..40,
        )
        .prop_map(|m| {
            let mut set = ChangeSet::new();
            for (id, (old, new)) in m {
                set.push(&id, old, new).expect("generated ids are valid");
            }
            set
        })
    }

    fn real<'a>(changes: impl IntoIterator<Item = &'a LeafChange>) -> Vec<LeafChange> {
        changes.into_iter().filter(|c| c.old != c.new).cloned().collect()
    }

    fn real_set(set: &ChangeSet) -> Vec<LeafChange> {
        real(set.iter())
    }

    /// Rows of chained changes over a few ids: each row a change set of some of the events
    /// (an id and the digest it goes to), in order; also the set of all events pushed in order.
    fn chained_rows() -> impl Strategy<Value = (Vec<ChangeSet>, ChangeSet)> {
        let event = (0usize..6, digest());
        proptest::collection::vec(proptest::collection::vec(event, 0..8), 0..8).prop_map(|rows| {
            let ids = ["a.x", "a.y", "b", "b.c.d", "c", "c.e"];
            let mut current: [Option<Digest>; 6] = [None; 6];
            let mut all = ChangeSet::new();
            let sets = rows
                .into_iter()
                .map(|events| {
                    let mut set = ChangeSet::new();
                    for (i, new) in events {
                        set.push(ids[i], current[i], new).expect("chained");
                        all.push(ids[i], current[i], new).expect("chained");
                        current[i] = new;
                    }
                    set
                })
                .collect();
            (sets, all)
        })
    }

    proptest! {
        /// Encoding then merging gives back exactly the set's real changes.
        #[test]
        fn round_trip(set in change_set()) {
            let rows = encode(&set);
            prop_assert!(rows.iter().all(|r| r.len() > 1));
            prop_assert_eq!(real(&merge(rows.iter().map(Vec::as_slice)).unwrap()), real_set(&set));
        }

        /// Any damage of a row is either refused as corrupt or decodes to well-formed changes;
        /// never a panic. Cutting a row short inside a change is always refused.
        #[test]
        fn damaged_rows_never_panic(set in change_set(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            for row in encode(&set) {
                let i = at.index(row.len());
                let mut flipped = row.clone();
                flipped[i] = byte;
                // Counting never panics and never counts past what the row can hold.
                prop_assert!(records(&flipped) <= flipped.len() / 3);
                match decode(&flipped) {
                    Ok(_) => {}
                    Err(e) => prop_assert!(matches!(e, Failure::Corrupt(ref m) if m.contains("change-log")), "{e:?}"),
                }
                let cut = &row[..i.max(1)];
                let ends_on_boundary = decode(cut).is_ok();
                if !ends_on_boundary {
                    prop_assert!(matches!(decode(cut), Err(Failure::Corrupt(_))));
                }
            }
        }

        /// Merging rows in commit order gives, sorted by id, the net changes that pushing every
        /// change into one change set gives.
        #[test]
        fn merge_equals_one_change_set((sets, all) in chained_rows()) {
            let rows: Vec<Vec<u8>> = sets.iter().flat_map(encode).collect();
            let merged = merge(rows.iter().map(Vec::as_slice)).unwrap();
            prop_assert!(merged.windows(2).all(|w| w[0].id < w[1].id), "not sorted by id, one per id");
            prop_assert_eq!(real(&merged), real_set(&all));
        }

        /// The record count of a row is the number of changes it decodes to.
        #[test]
        fn records_counts_the_changes(set in change_set()) {
            for row in encode(&set) {
                prop_assert_eq!(records(&row), decode(&row).unwrap().len());
            }
        }

        /// Merging two rows in commit order keeps each id's first old and last new.
        #[test]
        fn merge_chains_rows(a in change_set(), next in digest()) {
            let mut second = ChangeSet::new();
            for c in a.iter() {
                second.push(&c.id, c.new, next).unwrap();
            }
            let rows = [encode(&a), encode(&second)].concat();
            let merged = merge(rows.iter().map(Vec::as_slice)).unwrap();
            for c in a.iter() {
                let m = merged.iter().find(|m| m.id == c.id);
                if c.old == next {
                    prop_assert!(m.is_none_or(|m| m.old == m.new), "{m:?}");
                } else {
                    let m = m.expect("an id that changed over both rows is in the merge");
                    prop_assert_eq!((m.old, m.new), (c.old, next));
                }
            }
        }
    }

    #[test]
    fn a_broken_chain_and_a_wrong_version_are_refused_by_name() {
        let mut a = ChangeSet::new();
        a.push("x.y", None, Some(Digest([1; 32]))).unwrap();
        let mut b = ChangeSet::new();
        b.push("x.y", Some(Digest([2; 32])), None).unwrap();
        let rows = [encode(&a), encode(&b)].concat();
        let e = merge(rows.iter().map(Vec::as_slice)).unwrap_err();
        assert!(matches!(e, Failure::Corrupt(ref m) if m.contains("x.y")), "{e:?}");
        let mut row = encode(&a).remove(0);
        row[0] = 9;
        assert!(matches!(decode(&row), Err(Failure::Corrupt(m)) if m.contains("version 9")));
        assert!(matches!(decode(&[]), Err(Failure::Corrupt(m)) if m.contains("empty")));
        // A row that decodes but names an id the tree cannot place ("a..b": empty segment).
        let mut bad = vec![LOG_FORMAT_VERSION, 2, 0, 4];
        bad.extend_from_slice(b"a..b");
        bad.extend_from_slice(&[7; 32]);
        let e = merge([bad.as_slice()]).unwrap_err();
        assert!(matches!(e, Failure::Corrupt(ref m) if m.contains("a..b")), "{e:?}");
    }
}
