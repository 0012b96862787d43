//! The fold: applying logged leaf changes to the stored Merkle nodes — pure logic, no I/O.
//!
//! [`Fold`] is a small state machine: it asks for node strings (`Step::Read`, answered in the
//! same order), and finally answers the strings to write and the keys to delete
//! (`Step::Done`). The caller runs it under the fold lock, so nothing else changes the nodes
//! between reads, and writes the result atomically.
//!
//! Shape (README "Merkle shape"): every path node is a node; an unsplit node lists its entries
//! (leaves with their digest, child paths by name); a node with more than `cap` entries splits
//! into 16 buckets by the next nibble of the entries' segment hash (at most 16 levels). Values
//! are sums, so each leaf change adds one delta to every node on its chain: its bucket, the
//! buckets above it, its path node, and so on up every ancestor path — O(depth) nodes, each
//! read and written once per fold however many changes share it.

use std::collections::HashMap;

use sync_engine_core::merkle::{join, Digest, NodeValue};

use crate::batch::split_last;
use crate::keys::Keys;
use crate::log::Change;
use crate::nibbles::{hash_prefix, mask, nibble, IdMap, NodeId};
use crate::node::{self, NodeError, Raw, Slot};

/// Deepest bucket level (bucket keys hold at most 16 hash nibbles).
pub(crate) const MAX_DEPTH: u8 = 16;

/// What the fold needs next.
#[derive(Debug)]
pub(crate) enum Step<'s> {
    /// These node keys, as Redis holds them (None: absent), in this order.
    Read(&'s [String]),
    /// Write `sets`, delete `dels`; done.
    Done { sets: Vec<(String, Vec<u8>)>, dels: Vec<String> },
}

/// Why a fold stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FoldError {
    #[error("stored Merkle node {key}: {err}")]
    Node { key: String, err: NodeError },
    #[error("the fold was handed {got} values for {asked} keys")]
    Answer { asked: usize, got: usize },
}

struct PathInfo<'a> {
    path: &'a str,
    entries: Vec<u32>,
}

enum Kind {
    Leaf { old: Option<Digest>, new: Option<Digest> },
    Child(u32),
}

struct EntryChange<'a> {
    path: u32,
    seg: &'a str,
    /// The segment's hash prefix, computed when a split node first needs it (an entry of an
    /// unsplit node never does).
    hp: Option<u64>,
    kind: Kind,
    /// The deepest node of its chain found so far (finally: its unsplit bucket).
    at: Option<u32>,
}

struct NodeState {
    id: NodeId,
    /// The node's Redis key (built once: read, then written under it).
    key: String,
    parent: Option<u32>,
    node: Raw,
    orig: NodeValue,
    existed: bool,
    dirty: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Paths,
    Buckets,
    Splits,
    Done,
}

/// One fold of a set of net changes (see the module documentation).
pub(crate) struct Fold<'k, 'a> {
    keys: &'k Keys,
    cap: usize,
    paths: Vec<PathInfo<'a>>,
    /// Keys come from user ids: a seeded hasher, not a fixed one (SipHash took ~6% of the
    /// fold's CPU).
    path_index: HashMap<&'a str, u32, foldhash::fast::RandomState>,
    entries: Vec<EntryChange<'a>>,
    nodes: Vec<NodeState>,
    by_id: IdMap<u32>,
    /// The nodes asked for by the last `Read`, with their parent node, and their keys.
    asked: Vec<(NodeId, Option<u32>)>,
    asked_keys: Vec<String>,
    /// The child path nodes asked for by the split `Read`, and their values once read.
    split_asked: Vec<String>,
    extra: HashMap<String, NodeValue>,
    stage: Stage,
}

impl<'k, 'a> Fold<'k, 'a> {
    /// A fold of net `changes` (one per id) into the tree under `keys`.
    pub(crate) fn new(keys: &'k Keys, cap: usize, changes: &[Change<'a>]) -> Fold<'k, 'a> {
        let mut f = Fold {
            keys,
            cap: cap.max(1),
            paths: Vec::new(),
            path_index: HashMap::default(),
            entries: Vec::with_capacity(changes.len() * 2),
            nodes: Vec::new(),
            by_id: IdMap::default(),
            asked: Vec::new(),
            asked_keys: Vec::new(),
            split_asked: Vec::new(),
            extra: HashMap::new(),
            stage: Stage::Paths,
        };
        f.add_path("");
        for c in changes {
            let (parent, seg) = split_last(c.id);
            let p = f.add_path(parent);
            let e = f.entries.len() as u32;
            let kind = Kind::Leaf { old: c.old, new: c.new };
            f.entries.push(EntryChange { path: p, seg, hp: None, kind, at: None });
            f.paths[p as usize].entries.push(e);
        }
        f
    }

    /// The index of `path`, adding it (after its ancestors) when new.
    fn add_path(&mut self, path: &'a str) -> u32 {
        if let Some(&i) = self.path_index.get(path) {
            return i;
        }
        let parent = (!path.is_empty()).then(|| self.add_path(split_last(path).0));
        let seg = if path.is_empty() { "" } else { split_last(path).1 };
        let i = self.paths.len() as u32;
        self.paths.push(PathInfo { path, entries: Vec::new() });
        if let Some(p) = parent {
            let e = self.entries.len() as u32;
            let kind = Kind::Child(i);
            self.entries.push(EntryChange { path: p, seg, hp: None, kind, at: None });
            self.paths[p as usize].entries.push(e);
        }
        self.path_index.insert(path, i);
        i
    }

    fn key(&self, id: NodeId) -> String {
        self.keys.node_at(self.paths[id.0 as usize].path, id.2, id.1)
    }

    /// Ask for the nodes in `asked`: their keys, built once and kept for the write.
    fn ask(&mut self) -> Step<'_> {
        self.asked_keys = self.asked.iter().map(|(id, _)| self.key(*id)).collect();
        Step::Read(&self.asked_keys)
    }

    /// Advance: hand in the values of the keys asked for last, in order (empty at the start).
    pub(crate) fn step(&mut self, read: Vec<Option<Vec<u8>>>) -> Result<Step<'_>, FoldError> {
        let stage = self.stage;
        if stage == Stage::Splits {
            let asked = std::mem::take(&mut self.split_asked);
            for (key, raw) in asked.into_iter().zip(read) {
                if let Some(v) = raw.as_deref().and_then(node::value_of) {
                    self.extra.insert(key, v);
                }
            }
        } else {
            let asked = std::mem::take(&mut self.asked);
            let keys = std::mem::take(&mut self.asked_keys);
            if asked.len() != read.len() {
                return Err(FoldError::Answer { asked: asked.len(), got: read.len() });
            }
            for (((id, parent), key), raw) in asked.into_iter().zip(keys).zip(read) {
                let (node, existed) = match raw {
                    Some(b) => match Raw::decode(b) {
                        Ok(node) => (node, true),
                        Err(err) => return Err(FoldError::Node { key, err }),
                    },
                    None => (Raw::default(), false),
                };
                self.insert(NodeState {
                    id,
                    key,
                    parent,
                    orig: node.value,
                    node,
                    existed,
                    dirty: false,
                });
            }
        }
        match stage {
            Stage::Paths => {
                self.stage = Stage::Buckets;
                self.asked = (0..self.paths.len() as u32).map(|p| ((p, 0, 0), None)).collect();
                Ok(self.ask())
            }
            Stage::Buckets => {
                if self.walk() {
                    return Ok(self.ask());
                }
                self.apply_changes();
                self.stage = Stage::Splits;
                self.split_asked = self.split_reads();
                if !self.split_asked.is_empty() {
                    return Ok(Step::Read(&self.split_asked));
                }
                self.step(Vec::new())
            }
            Stage::Splits => {
                self.split_all();
                self.stage = Stage::Done;
                Ok(self.writes())
            }
            Stage::Done => Ok(Step::Done { sets: Vec::new(), dels: Vec::new() }),
        }
    }

    fn insert(&mut self, st: NodeState) -> u32 {
        let i = self.nodes.len() as u32;
        self.by_id.insert(st.id, i);
        self.nodes.push(st);
        i
    }

    /// Extend every entry's chain down split buckets; true when nodes must be read first
    /// (they are then in `asked`).
    fn walk(&mut self) -> bool {
        let mut wanted: IdMap<()> = IdMap::default();
        let nodes = &self.nodes;
        for e in &mut self.entries {
            let mut cur = match e.at {
                Some(n) => n,
                None => match self.by_id.get(&(e.path, 0, 0)) {
                    Some(&n) => n,
                    None => continue,
                },
            };
            loop {
                e.at = Some(cur);
                let st = &nodes[cur as usize];
                if !st.node.split || st.id.1 >= MAX_DEPTH {
                    break;
                }
                let depth = st.id.1 + 1;
                let hp = *e.hp.get_or_insert_with(|| hash_prefix(e.seg));
                let id = (e.path, depth, hp & mask(depth));
                match self.by_id.get(&id) {
                    Some(&n) => cur = n,
                    None => {
                        if wanted.insert(id, ()).is_none() {
                            self.asked.push((id, Some(cur)));
                        }
                        break;
                    }
                }
            }
        }
        !self.asked.is_empty()
    }

    /// Apply every change, deepest path first (a path's total is known before its parent's).
    fn apply_changes(&mut self) {
        for p in (0..self.paths.len()).rev() {
            for e in std::mem::take(&mut self.paths[p].entries) {
                let entry = &self.entries[e as usize];
                let Some(leaf_bucket) = entry.at else { continue };
                let seg = entry.seg;
                let (delta, op) = match entry.kind {
                    Kind::Leaf { old, new } => {
                        let op = match new {
                            Some(d) => Op::Leaf(seg, d, old.is_none()),
                            None => Op::Remove(false, seg),
                        };
                        (leaf(new).minus(leaf(old)), Some(op))
                    }
                    Kind::Child(c) => {
                        let Some(&n) = self.by_id.get(&(c, 0, 0)) else { continue };
                        let (before, after) =
                            (self.nodes[n as usize].orig, self.nodes[n as usize].node.value);
                        let op = match (before.count != 0, after.count != 0) {
                            (false, true) => Some(Op::Path(seg)),
                            (true, false) => Some(Op::Remove(true, seg)),
                            _ => None,
                        };
                        (after.minus(before), op)
                    }
                };
                if delta == NodeValue::EMPTY && op.is_none() {
                    continue;
                }
                let mut n = Some(leaf_bucket);
                while let Some(i) = n {
                    let st = &mut self.nodes[i as usize];
                    st.node.value = st.node.value.plus(delta);
                    st.dirty = true;
                    n = st.parent;
                }
                let st = &mut self.nodes[leaf_bucket as usize];
                match op {
                    Some(Op::Leaf(seg, d, known_new)) => st.node.put_leaf(seg, &d, known_new),
                    Some(Op::Path(seg)) => st.node.put_path(seg),
                    Some(Op::Remove(is_path, seg)) => st.node.remove(is_path, seg),
                    None => {}
                }
            }
        }
    }

    fn too_big(&self, st: &NodeState) -> bool {
        st.dirty && !st.node.split && st.node.len() > self.cap && st.id.1 < MAX_DEPTH
    }

    /// The value of the child path `path.seg`, if the fold knows it.
    fn child_value(&self, path: &str, seg: &str) -> Option<NodeValue> {
        let full = join(path, seg);
        match self.path_index.get(full.as_str()) {
            Some(&c) => self.by_id.get(&(c, 0, 0)).map(|&n| self.nodes[n as usize].node.value),
            None => self.extra.get(&self.keys.node(&full, "")).copied(),
        }
    }

    /// Child path nodes (untouched by this fold) whose values a split needs.
    fn split_reads(&self) -> Vec<String> {
        let mut wanted = Vec::new();
        for st in self.nodes.iter().filter(|st| self.too_big(st)) {
            let path = self.paths[st.id.0 as usize].path;
            for seg in st.node.path_segments() {
                let full = join(path, &seg);
                if !self.path_index.contains_key(full.as_str()) {
                    wanted.push(self.keys.node(&full, ""));
                }
            }
        }
        wanted
    }

    fn split_all(&mut self) {
        let todo: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| self.too_big(&self.nodes[n as usize]))
            .collect();
        for n in todo {
            let st = &mut self.nodes[n as usize];
            let slots: Vec<(Slot, u64)> = st
                .node
                .take_slots()
                .into_iter()
                .map(|s| {
                    let h = hash_prefix(s.segment());
                    (s, h)
                })
                .collect();
            st.node.split = true;
            self.split_into(n, slots);
        }
    }

    /// Create the sub-buckets of node `n` from its slots, splitting those still too big.
    fn split_into(&mut self, n: u32, slots: Vec<(Slot, u64)>) {
        let (p, depth, nibbles) = self.nodes[n as usize].id;
        let path = self.paths[p as usize].path;
        let mut kids: Vec<Vec<(Slot, u64)>> = (0..16).map(|_| Vec::new()).collect();
        for (s, h) in slots {
            kids[usize::from(nibble(h, depth))].push((s, h));
        }
        for (k, kid) in kids.into_iter().enumerate() {
            if kid.is_empty() {
                continue;
            }
            let mut value = NodeValue::EMPTY;
            for (s, _) in &kid {
                value = value.plus(match s {
                    Slot::Leaf(_, d) => NodeValue::leaf(d),
                    Slot::Path(seg) => self.child_value(path, seg).unwrap_or_default(),
                });
            }
            let id = (p, depth + 1, nibbles | ((k as u64) << (60 - 4 * u32::from(depth))));
            let split = kid.len() > self.cap && depth + 1 < MAX_DEPTH;
            let node = if split {
                Raw::split_node(value)
            } else {
                let slots: Vec<Slot> = kid.iter().map(|(s, _)| s.clone()).collect();
                Raw::from_slots(value, &slots)
            };
            let st = NodeState {
                id,
                key: self.key(id),
                parent: Some(n),
                node,
                orig: NodeValue::EMPTY,
                existed: false,
                dirty: true,
            };
            let c = self.insert(st);
            if split {
                self.split_into(c, kid);
            }
        }
    }

    fn writes(&mut self) -> Step<'static> {
        let mut sets = Vec::new();
        let mut dels = Vec::new();
        for st in std::mem::take(&mut self.nodes) {
            if !st.dirty {
                continue;
            }
            let key = st.key;
            if st.node.value.count == 0 {
                if st.existed {
                    dels.push(key);
                }
            } else {
                sets.push((key, st.node.into_bytes()));
            }
        }
        self.by_id.clear();
        Step::Done { sets, dels }
    }
}

enum Op<'a> {
    /// Set a leaf's digest (the bool: it is known to be absent, append without searching).
    Leaf(&'a str, Digest, bool),
    /// Add a child path (known to be absent).
    Path(&'a str),
    Remove(bool, &'a str),
}

fn leaf(d: Option<Digest>) -> NodeValue {
    d.map(|d| NodeValue::leaf(&d)).unwrap_or(NodeValue::EMPTY)
}
