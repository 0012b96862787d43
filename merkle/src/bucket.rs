//! The adaptive hash-bucket tree inside one path node of a [`crate::MemTree`].
//!
//! A bucket is either *flat* (a short list of slots, one per segment) or *split* into 16
//! sub-buckets by the next nibble of the segments' hashes. A flat bucket that grows past the
//! tree's capacity splits; nothing ever merges, but empty sub-buckets are freed. Every bucket
//! keeps the sum of the values beneath it, so one slot change walks one chain of buckets.

use crate::key::{nibble, segment_hash, Entry};
use crate::seg::Seg;
use crate::types::{Digest, NodeValue};

/// Deepest bucket level a `MemTree` creates: the slots cache 16 nibbles of their segment hash.
/// A flat bucket at this depth simply grows (it would take 17 segments sharing 64 hash bits).
pub(crate) const MAX_DEPTH: usize = 16;

/// One segment directly under a path node: its leaf and/or its child path node.
/// Its hash prefix lives beside it in [`Flat::hashes`], so that a lookup scans 8 bytes a slot.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) seg: Seg,
    /// The leaf digest when `path.seg` is a live id.
    pub(crate) leaf: Option<Digest>,
    /// The child path node's value when `path.seg` is a prefix of live ids (rare: boxed).
    pub(crate) path: Option<Box<NodeValue>>,
}

impl Slot {
    fn value(&self) -> NodeValue {
        let path = self.path_value();
        match &self.leaf {
            Some(d) => path.plus(NodeValue::leaf(d)),
            None => path,
        }
    }

    fn path_value(&self) -> NodeValue {
        self.path.as_deref().copied().unwrap_or(NodeValue::EMPTY)
    }

    fn is_vacant(&self) -> bool {
        self.leaf.is_none() && self.path.is_none()
    }

    /// The entries this slot contributes to a children listing.
    pub(crate) fn push_entries(&self, out: &mut Vec<Entry>) {
        if let Some(d) = self.leaf {
            out.push(Entry::Leaf { segment: self.seg.as_str().to_owned(), digest: d });
        }
        if let Some(v) = self.path.as_deref() {
            out.push(Entry::Path { segment: self.seg.as_str().to_owned(), value: *v });
        }
    }
}

/// A flat bucket: slots and, at the same index, the first 16 nibbles of their segment hash.
#[derive(Clone, Debug, Default)]
pub(crate) struct Flat {
    pub(crate) hashes: Vec<u64>,
    pub(crate) slots: Vec<Slot>,
}

impl Flat {
    fn position(&self, seg: &str, hash: u64) -> Option<usize> {
        self.hashes
            .iter()
            .enumerate()
            .filter(|(_, &h)| h == hash)
            .map(|(i, _)| i)
            .find(|&i| self.slots.get(i).is_some_and(|s| s.seg.as_bytes() == seg.as_bytes()))
    }

    /// Nibble `i` of slot `k`'s segment hash (the cached prefix up to 16, the full hash beyond).
    pub(crate) fn nibble(&self, k: usize, i: usize) -> Option<u8> {
        if i < MAX_DEPTH {
            self.hashes.get(k).map(|&h| nibble_of(h, i))
        } else if i < 64 {
            self.slots.get(k).map(|s| nibble(&segment_hash(s.seg.as_str()), i))
        } else {
            None
        }
    }
}

/// The first 64 bits of a segment hash, big-endian, so that nibble `i` is bits `60-4i..64-4i`.
pub(crate) fn hash_prefix(seg: &str) -> u64 {
    let h = segment_hash(seg);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.0[..8]);
    u64::from_be_bytes(b)
}

/// Nibble `i` (< 16) of a 64-bit hash prefix.
pub(crate) fn nibble_of(hash: u64, i: usize) -> u8 {
    ((hash >> (60 - 4 * i)) & 0x0f) as u8
}

/// What to do to the slot of one segment.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SlotOp {
    /// Set (Some) or clear (None) the leaf.
    SetLeaf(Option<Digest>),
    /// Add a (wrapping, possibly negative) delta to the child path node's value.
    AddPath(NodeValue),
}

/// A bucket tree node. Split nodes keep their sub-buckets' values side by side, so listing
/// them reads one array, and descending a level follows one pointer.
#[derive(Clone, Debug, Default)]
pub(crate) enum Node {
    /// Nothing beneath (only as a sub-bucket, or the root of an empty path node).
    #[default]
    Empty,
    /// At most `cap` slots (more only at [`MAX_DEPTH`]).
    Flat(Flat),
    /// 16 sub-buckets by the next nibble.
    Split(Box<Split>),
}

/// The 16 sub-buckets of a split node and their values (EMPTY where the sub-bucket is Empty).
#[derive(Clone, Debug, Default)]
pub(crate) struct Split {
    pub(crate) values: [NodeValue; 16],
    pub(crate) kids: [Node; 16],
}

/// The top bucket of a path node: its value and its node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bucket {
    pub(crate) value: NodeValue,
    pub(crate) node: Node,
}

impl Bucket {
    /// The leaf digest of `seg`, if any.
    pub(crate) fn leaf(&self, seg: &str, hash: u64) -> Option<Digest> {
        let mut n = &self.node;
        let mut depth = 0;
        loop {
            match n {
                Node::Empty => return None,
                Node::Flat(flat) => return flat.slots.get(flat.position(seg, hash)?)?.leaf,
                Node::Split(split) => {
                    n = &split.kids[usize::from(nibble_of(hash, depth))];
                    depth += 1;
                }
            }
        }
    }

    /// Apply `op` to the slot of `seg` (creating or freeing it), adding `delta` — the change of
    /// the slot's value that `op` causes, computed by the caller — to every bucket on the way.
    pub(crate) fn apply(&mut self, seg: &str, hash: u64, op: SlotOp, delta: NodeValue, cap: usize) {
        apply(&mut self.node, &mut self.value, 0, seg, hash, op, delta, cap);
    }

    /// The node at `nibbles` with its value, or the deepest flat node above it, with the number
    /// of nibbles consumed. None when that bucket is empty.
    pub(crate) fn find(&self, nibbles: &[u8]) -> Option<(&Node, NodeValue, usize)> {
        let (mut n, mut v) = (&self.node, self.value);
        for (depth, &nib) in nibbles.iter().enumerate() {
            match n {
                Node::Empty => return None,
                Node::Flat(_) => return Some((n, v, depth)),
                Node::Split(split) => {
                    let i = usize::from(nib);
                    n = split.kids.get(i)?;
                    v = *split.values.get(i)?;
                }
            }
        }
        (!matches!(n, Node::Empty)).then_some((n, v, nibbles.len()))
    }
}

#[allow(clippy::too_many_arguments)]
fn apply(
    node: &mut Node,
    value: &mut NodeValue,
    depth: usize,
    seg: &str,
    hash: u64,
    op: SlotOp,
    delta: NodeValue,
    cap: usize,
) {
    *value = value.plus(delta);
    if let Node::Empty = node {
        *node = Node::Flat(Flat::default());
    }
    match node {
        Node::Empty => {}
        Node::Split(split) => {
            let i = usize::from(nibble_of(hash, depth));
            apply(&mut split.kids[i], &mut split.values[i], depth + 1, seg, hash, op, delta, cap);
        }
        Node::Flat(flat) => {
            let i = match flat.position(seg, hash) {
                Some(i) => i,
                None => {
                    flat.hashes.push(hash);
                    flat.slots.push(Slot { seg: Seg::new(seg), leaf: None, path: None });
                    flat.slots.len() - 1
                }
            };
            if let Some(slot) = flat.slots.get_mut(i) {
                match op {
                    SlotOp::SetLeaf(d) => slot.leaf = d,
                    SlotOp::AddPath(d) => {
                        let v = slot.path_value().plus(d);
                        slot.path = (v.count != 0).then(|| Box::new(v));
                    }
                }
                if slot.is_vacant() {
                    flat.slots.swap_remove(i);
                    flat.hashes.swap_remove(i);
                }
            }
            if flat.slots.len() > cap && depth < MAX_DEPTH {
                split(node, depth, cap);
            }
        }
    }
    if value.count == 0 {
        *node = Node::Empty;
    }
}

/// Turn a flat node at `depth` into 16 sub-buckets (recursively if one is still too big).
fn split(node: &mut Node, depth: usize, cap: usize) {
    let Node::Flat(flat) = std::mem::take(node) else {
        return;
    };
    let Flat { hashes, slots } = flat;
    let mut split = Box::<Split>::default();
    for (hash, slot) in hashes.into_iter().zip(slots) {
        let i = usize::from(nibble_of(hash, depth));
        split.values[i] = split.values[i].plus(slot.value());
        if let Node::Empty = split.kids[i] {
            split.kids[i] = Node::Flat(Flat::default());
        }
        if let Node::Flat(f) = &mut split.kids[i] {
            f.hashes.push(hash);
            f.slots.push(slot);
        }
    }
    for kid in split.kids.iter_mut() {
        let too_big = matches!(kid, Node::Flat(f) if f.slots.len() > cap);
        if too_big && depth + 1 < MAX_DEPTH {
            self::split(kid, depth + 1, cap);
        }
    }
    *node = Node::Split(split);
}

impl Node {
    /// Count of bucket nodes (this one included unless Empty), slots, and approximate heap bytes
    /// beneath (this node's own allocation included).
    pub(crate) fn stats(&self, buckets: &mut usize, slots: &mut usize, bytes: &mut usize) {
        match self {
            Node::Empty => {}
            Node::Flat(f) => {
                *buckets += 1;
                *slots += f.slots.len();
                *bytes += heap_size(f.slots.capacity() * std::mem::size_of::<Slot>());
                *bytes += heap_size(f.hashes.capacity() * 8);
                for s in &f.slots {
                    *bytes += heap_size(s.seg.heap_len());
                    if s.path.is_some() {
                        *bytes += heap_size(std::mem::size_of::<NodeValue>());
                    }
                }
            }
            Node::Split(split) => {
                *buckets += 1;
                *bytes += heap_size(std::mem::size_of::<Split>());
                for kid in &split.kids {
                    kid.stats(buckets, slots, bytes);
                }
            }
        }
    }
}

/// Approximate bytes a heap allocation of `n` bytes occupies (glibc: 8 bytes of header,
/// 16-byte granularity, 32 bytes at least).
pub(crate) fn heap_size(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + 8).div_ceil(16).max(2) * 16
    }
}
