//! The stored form of one Merkle node (a path node or one of its hash buckets): ONE Redis
//! string, a fixed header followed, for an unsplit node, by its entries.
//!
//! ```text
//! header (45 bytes): acc (32, little-endian) | count (u64 LE) | entries (u32 LE) | split (u8)
//! entries (unsplit nodes only), repeated:
//!     'l' | segment length (u16 BE) | segment | leaf digest (32)     a live leaf  path.segment
//!     'p' | segment length (u16 BE) | segment                        a child path path.segment
//! ```
//!
//! The first 40 bytes are `NodeValue::to_bytes`. A child path's value is not repeated in its
//! parent (it lives in the child's own header), so a change deep down rewrites one node per
//! level, not its parent's whole entry list.

use sync_engine_core::merkle::{Digest, NodeValue, NODE_VALUE_LEN};

/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 45;
/// Entry tag of a leaf.
pub(crate) const LEAF: u8 = b'l';
/// Entry tag of a child path.
pub(crate) const PATH: u8 = b'p';

/// One entry of an unsplit node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A live leaf `path.segment` with its digest.
    Leaf(String, Digest),
    /// A child path node `path.segment` (its value is in its own header).
    Path(String),
}

impl Slot {
    pub(crate) fn segment(&self) -> &str {
        match self {
            Slot::Leaf(s, _) | Slot::Path(s) => s,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_path(&self) -> bool {
        matches!(self, Slot::Path(_))
    }
}

/// A decoded node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Node {
    /// Sum of the leaves beneath.
    pub(crate) value: NodeValue,
    /// Split into 16 sub-buckets (then `slots` is empty).
    pub(crate) split: bool,
    /// The entries of an unsplit node.
    pub(crate) slots: Vec<Slot>,
}

/// Why stored bytes are not a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("Merkle node of {0} bytes is shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("Merkle node entry at byte {0} is malformed")]
    Entry(usize),
    #[error("Merkle node lists {listed} entries in its header but holds {found}")]
    Count { listed: u32, found: usize },
}

fn read<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// The value in the first 40 bytes of a node (or of a longer string starting with one).
pub(crate) fn value_of(b: &[u8]) -> Option<NodeValue> {
    NodeValue::from_bytes(b.get(..NODE_VALUE_LEN)?).ok()
}

/// One stored entry, borrowed from the node's bytes.
enum EntryRef<'b> {
    Leaf(&'b str, [u8; 32]),
    Path(&'b str),
}

impl From<EntryRef<'_>> for Slot {
    fn from(e: EntryRef<'_>) -> Slot {
        match e {
            EntryRef::Leaf(seg, d) => Slot::Leaf(seg.to_owned(), Digest(d)),
            EntryRef::Path(seg) => Slot::Path(seg.to_owned()),
        }
    }
}

/// The entry starting at `at`, and where the next one starts; None if it is malformed.
fn entry_at(b: &[u8], at: usize) -> Option<(EntryRef<'_>, usize)> {
    let tag = *b.get(at)?;
    let len = usize::from(u16::from_be_bytes(read(b, at + 1)?));
    let seg = std::str::from_utf8(b.get(at + 3..at + 3 + len)?).ok()?;
    let next = at + 3 + len;
    match tag {
        LEAF => Some((EntryRef::Leaf(seg, read(b, next)?), next + 32)),
        PATH => Some((EntryRef::Path(seg), next)),
        _ => None,
    }
}

/// The entries of `b` in order, each checked; a malformed one ends the walk with its error
/// (`offset`: where `b` starts in the node, for the error's position).
fn checked_entries(
    b: &[u8],
    offset: usize,
) -> impl Iterator<Item = Result<EntryRef<'_>, NodeError>> {
    let mut at = Some(0);
    std::iter::from_fn(move || {
        let start = at.filter(|&a| a < b.len())?;
        match entry_at(b, start) {
            Some((entry, next)) => {
                at = Some(next);
                Some(Ok(entry))
            }
            None => {
                at = None;
                Some(Err(NodeError::Entry(offset + start)))
            }
        }
    })
}

/// Decode the entries that follow a header (or stand alone, as the read script returns them).
pub(crate) fn decode_slots(b: &[u8], offset: usize) -> Result<Vec<Slot>, NodeError> {
    checked_entries(b, offset).map(|e| e.map(Slot::from)).collect()
}

/// Check a stored node, handing each entry to `visit`: its value, split flag and number of
/// entries (which an unsplit node's header must list).
fn walk<'b>(
    b: &'b [u8],
    mut visit: impl FnMut(EntryRef<'b>),
) -> Result<(NodeValue, bool, usize), NodeError> {
    if b.len() < HEADER_LEN {
        return Err(NodeError::Short(b.len()));
    }
    let value = value_of(b).ok_or(NodeError::Short(b.len()))?;
    let listed = u32::from_le_bytes(read(b, 40).ok_or(NodeError::Short(b.len()))?);
    let split = b[44] == 1;
    let mut found = 0;
    for entry in checked_entries(&b[HEADER_LEN..], HEADER_LEN) {
        visit(entry?);
        found += 1;
    }
    if !split && found != listed as usize {
        return Err(NodeError::Count { listed, found });
    }
    Ok((value, split, found))
}

/// Decode a stored node.
pub(crate) fn decode(b: &[u8]) -> Result<Node, NodeError> {
    let mut slots = Vec::new();
    let (value, split, _) = walk(b, |e| slots.push(Slot::from(e)))?;
    Ok(Node { value, split, slots })
}

/// Encode a node (entries are written only for an unsplit node).
#[cfg(test)]
pub(crate) fn encode(n: &Node) -> Vec<u8> {
    let body: usize = if n.split {
        0
    } else {
        n.slots.iter().map(|s| 3 + s.segment().len() + if s.is_path() { 0 } else { 32 }).sum()
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body);
    out.extend_from_slice(&n.value.to_bytes());
    let count = if n.split { 0 } else { u32::try_from(n.slots.len()).unwrap_or(u32::MAX) };
    out.extend_from_slice(&count.to_le_bytes());
    out.push(u8::from(n.split));
    if !n.split {
        for s in &n.slots {
            // Segments are parts of ids (at most 1024 bytes), so the length fits in u16.
            let seg = s.segment().as_bytes();
            let len = u16::try_from(seg.len()).unwrap_or(u16::MAX);
            out.push(if s.is_path() { PATH } else { LEAF });
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&seg[..usize::from(len)]);
            if let Slot::Leaf(_, d) = s {
                out.extend_from_slice(&d.0);
            }
        }
    }
    out
}

/// A node kept in its stored form while a fold edits it: the header fields decoded, the
/// entries left as bytes and edited in place (replace a digest, append, splice out), so a
/// change costs a scan of at most a bucket's entries and no allocation per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) value: NodeValue,
    pub(crate) split: bool,
    nent: u32,
    /// Header (rewritten by [`Raw::into_bytes`]) followed by the entries.
    bytes: Vec<u8>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw { value: NodeValue::EMPTY, split: false, nent: 0, bytes: vec![0; HEADER_LEN] }
    }
}

/// Walk the entries of `b` (from `HEADER_LEN`): yields (start, tag, segment, end).
fn entries(b: &[u8]) -> impl Iterator<Item = (usize, u8, &[u8], usize)> + '_ {
    let mut at = HEADER_LEN;
    std::iter::from_fn(move || {
        let tag = *b.get(at)?;
        let len = usize::from(u16::from_be_bytes(read(b, at + 1)?));
        let seg = b.get(at + 3..at + 3 + len)?;
        let end = at + 3 + len + if tag == LEAF { 32 } else { 0 };
        let start = at;
        at = end;
        Some((start, tag, seg, end))
    })
}

impl Raw {
    /// Take a stored node, checking it as [`decode`] does (without building its entries).
    pub(crate) fn decode(b: Vec<u8>) -> Result<Raw, NodeError> {
        let (value, split, found) = walk(&b, |_| {})?;
        Ok(Raw { value, split, nent: found as u32, bytes: b })
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.nent as usize
    }

    fn find(&self, tag: u8, seg: &str) -> Option<(usize, usize)> {
        entries(&self.bytes).find(|e| e.1 == tag && e.2 == seg.as_bytes()).map(|e| (e.0, e.3))
    }

    fn append(&mut self, tag: u8, seg: &str, digest: Option<&Digest>) {
        let seg = seg.as_bytes();
        let len = u16::try_from(seg.len()).unwrap_or(u16::MAX);
        self.bytes.push(tag);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&seg[..usize::from(len)]);
        if let Some(d) = digest {
            self.bytes.extend_from_slice(&d.0);
        }
        self.nent += 1;
    }

    /// Set leaf `seg` to `digest`; `known_new` skips the search (the caller knows it is absent).
    pub(crate) fn put_leaf(&mut self, seg: &str, digest: &Digest, known_new: bool) {
        if !known_new {
            if let Some((_, end)) = self.find(LEAF, seg) {
                self.bytes[end - 32..end].copy_from_slice(&digest.0);
                return;
            }
        }
        self.append(LEAF, seg, Some(digest));
    }

    /// Add the child path `seg` (the caller knows it is absent).
    pub(crate) fn put_path(&mut self, seg: &str) {
        self.append(PATH, seg, None);
    }

    /// Remove the entry (`is_path`, `seg`) if present.
    pub(crate) fn remove(&mut self, is_path: bool, seg: &str) {
        if let Some((start, end)) = self.find(if is_path { PATH } else { LEAF }, seg) {
            self.bytes.drain(start..end);
            self.nent -= 1;
        }
    }

    /// The segments of the child-path entries.
    pub(crate) fn path_segments(&self) -> Vec<String> {
        entries(&self.bytes)
            .filter(|e| e.1 == PATH)
            .map(|e| String::from_utf8_lossy(e.2).into_owned())
            .collect()
    }

    /// The entries, decoded (for splits).
    pub(crate) fn take_slots(&mut self) -> Vec<Slot> {
        let slots = decode_slots(&self.bytes[HEADER_LEN..], HEADER_LEN).unwrap_or_default();
        self.bytes.truncate(HEADER_LEN);
        self.nent = 0;
        slots
    }

    /// A split node with `value`.
    pub(crate) fn split_node(value: NodeValue) -> Raw {
        Raw { value, split: true, ..Raw::default() }
    }

    /// An unsplit node holding `slots` with `value`.
    pub(crate) fn from_slots(value: NodeValue, slots: &[Slot]) -> Raw {
        let mut r = Raw { value, ..Raw::default() };
        for s in slots {
            match s {
                Slot::Leaf(seg, d) => r.append(LEAF, seg, Some(d)),
                Slot::Path(seg) => r.append(PATH, seg, None),
            }
        }
        r
    }

    /// The stored form.
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        if self.split {
            self.bytes.truncate(HEADER_LEN);
            self.nent = 0;
        }
        self.bytes[..40].copy_from_slice(&self.value.to_bytes());
        self.bytes[40..44].copy_from_slice(&self.nent.to_le_bytes());
        self.bytes[44] = u8::from(self.split);
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sync_engine_core::merkle::Acc;

    fn slot() -> impl Strategy<Value = Slot> {
        prop_oneof![
            ("[a-z0-9:{}*é]{1,12}", any::<[u8; 32]>()).prop_map(|(s, d)| Slot::Leaf(s, Digest(d))),
            "[a-z0-9:{}*é]{1,12}".prop_map(Slot::Path),
        ]
    }

    proptest! {
        #[test]
        fn nodes_round_trip(acc in any::<[u64; 4]>(), count in any::<u64>(), split in any::<bool>(),
                            slots in proptest::collection::vec(slot(), 0..20)) {
            let n = Node { value: NodeValue { acc: Acc(acc), count }, split, slots: if split { vec![] } else { slots } };
            let b = encode(&n);
            prop_assert_eq!(decode(&b).unwrap(), n.clone());
            prop_assert_eq!(value_of(&b), Some(n.value));
        }

        #[test]
        fn truncated_nodes_are_refused(slots in proptest::collection::vec(slot(), 1..5), cut in 1usize..40) {
            let n = Node { value: NodeValue::EMPTY, split: false, slots };
            let b = encode(&n);
            let cut = cut.min(b.len() - HEADER_LEN);
            prop_assert!(decode(&b[..b.len() - cut]).is_err());
        }
    }

    proptest! {
        /// In-place edits give the same node as re-encoding the edited entry list.
        #[test]
        fn raw_edits_match_reencoding(
            start in proptest::collection::vec(slot(), 0..12),
            ops in proptest::collection::vec((any::<bool>(), "[a-c]{1,2}", any::<bool>(), any::<[u8; 32]>()), 0..20),
        ) {
            let mut model: Vec<Slot> = Vec::new();
            for s in start {
                if !model.iter().any(|m| m.is_path() == s.is_path() && m.segment() == s.segment()) {
                    model.push(s);
                }
            }
            let value = NodeValue { acc: Acc([1, 2, 3, 4]), count: 9 };
            let mut raw = Raw::decode(encode(&Node { value, split: false, slots: model.clone() })).unwrap();
            for (put, seg, is_path, d) in ops {
                let at = model.iter().position(|m| m.is_path() == is_path && m.segment() == seg);
                match (put, is_path, at) {
                    (true, false, Some(i)) => { model[i] = Slot::Leaf(seg.clone(), Digest(d)); raw.put_leaf(&seg, &Digest(d), false); }
                    (true, false, None) => { model.push(Slot::Leaf(seg.clone(), Digest(d))); raw.put_leaf(&seg, &Digest(d), true); }
                    (true, true, None) => { model.push(Slot::Path(seg.clone())); raw.put_path(&seg); }
                    (true, true, Some(_)) => {}
                    (false, _, Some(i)) => { model.remove(i); raw.remove(is_path, &seg); }
                    (false, _, None) => raw.remove(is_path, &seg),
                }
            }
            prop_assert_eq!(raw.len(), model.len());
            let got = decode(&raw.into_bytes()).unwrap();
            prop_assert_eq!(got, Node { value, split: false, slots: model });
        }
    }

    proptest! {
        /// `Raw::decode` (which checks without building entries) accepts and refuses exactly
        /// what `decode` does, with the same error, on well-formed and damaged bytes alike.
        #[test]
        fn raw_decode_judges_bytes_like_decode(
            slots in proptest::collection::vec(slot(), 0..6), split in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in 0usize..8,
        ) {
            let n = Node { value: NodeValue::EMPTY, split, slots: if split { vec![] } else { slots } };
            let mut b = encode(&n);
            for (i, v) in flips {
                let at = i.index(b.len());
                if at >= 40 { b[at] = v; }
            }
            b.truncate(b.len().saturating_sub(cut));
            let full = decode(&b);
            let raw = Raw::decode(b.clone());
            match (full, raw) {
                (Ok(n), Ok(r)) => {
                    prop_assert_eq!(r.len(), n.slots.len());
                    prop_assert_eq!((r.value, r.split), (n.value, n.split));
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "decode {:?} vs Raw::decode {:?}", a, b.map(|r| r.len())),
            }
        }
    }

    #[test]
    fn short_and_garbled_nodes_are_refused() {
        assert_eq!(decode(&[0u8; 10]), Err(NodeError::Short(10)));
        let mut b = encode(&Node { slots: vec![Slot::Path("a".into())], ..Node::default() });
        b[HEADER_LEN] = b'x';
        assert_eq!(decode(&b), Err(NodeError::Entry(HEADER_LEN)));
    }
}
