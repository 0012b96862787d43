//! The seeded workload shared by the child (`chaos-node`, which performs it) and the harness
//! (which checks it): which ids exist, which worker owns an id, what content an operation
//! writes, and how to recognise that content when it is read back.
//!
//! Every operation has an [`OpKey`] (run, worker, sequence number). Its content starts with
//! `<id>|<key>|` followed by a deterministic filler, so a value read back names the exact
//! operation that wrote it, and the harness can recompute every byte of it.

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One operation's identity: the child run (trial) it happened in, the worker task that
/// performed it, and that worker's sequence number. Per id, operations are ordered by
/// `(run, n)` (one worker owns an id), which is the order they were submitted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpKey {
    /// Child run (trial) number.
    pub run: u32,
    /// Worker task within the run.
    pub worker: u32,
    /// Sequence number within the worker.
    pub n: u64,
}

impl fmt::Display for OpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}w{}n{}", self.run, self.worker, self.n)
    }
}

impl OpKey {
    /// Parse the `r<run>w<worker>n<n>` form written by `Display`.
    pub fn parse(s: &str) -> Option<OpKey> {
        let rest = s.strip_prefix('r')?;
        let (run, rest) = rest.split_once('w')?;
        let (worker, n) = rest.split_once('n')?;
        Some(OpKey { run: run.parse().ok()?, worker: worker.parse().ok()?, n: n.parse().ok()? })
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A durable write of `content(id, key)`.
    Put,
    /// A durable delete.
    Del,
}

impl Kind {
    /// `put` or `del`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Put => "put",
            Kind::Del => "del",
        }
    }

    /// Inverse of [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "put" => Some(Kind::Put),
            "del" => Some(Kind::Del),
            _ => None,
        }
    }
}

/// The id with index `index` in the id space of `tag`: a three-level dotted path, so that the
/// Merkle trees have real depth (`c.<tag>.t<index % 16>.i<index>`).
pub fn id_for(tag: &str, index: u64) -> String {
    format!("c.{tag}.t{}.i{index}", index % 16)
}

/// The content written by operation `key` on `id`: `<id>|<key>|` then 32..=400 filler bytes
/// derived from both, so that every byte can be recomputed and checked.
pub fn content(id: &str, key: OpKey) -> Vec<u8> {
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    for b in id.bytes().chain(key.to_string().into_bytes()) {
        seed ^= u64::from(b);
        seed = seed.wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = rng.random_range(32..=400usize);
    let mut out = format!("{id}|{key}|").into_bytes();
    out.extend((0..len).map(|_| rng.random_range(b'a'..=b'z')));
    out
}

/// The id and operation named at the start of a value written by [`content`]; `None` when the
/// value does not have that shape.
pub fn parse_content(bytes: &[u8]) -> Option<(String, OpKey)> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(600))?).ok()?;
    let mut parts = text.splitn(3, '|');
    let id = parts.next()?;
    let key = OpKey::parse(parts.next()?)?;
    parts.next()?;
    Some((id.to_owned(), key))
}

/// The shape of an ingest: how many ids, how many workers, how often a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Id space tag (one per scenario, so scenarios never share ids).
    pub tag: String,
    /// Number of ids.
    pub ids: u64,
    /// Worker tasks; worker `w` owns the ids whose index is `w` modulo `workers`.
    pub workers: u32,
    /// Percentage of operations that are deletes.
    pub delete_pct: u32,
}

impl Plan {
    /// The operation stream of one worker in one run, reproducible from `seed`.
    pub fn worker_ops(&self, seed: u64, run: u32, worker: u32) -> WorkerOps {
        let mix = seed ^ (u64::from(run) << 32) ^ u64::from(worker).wrapping_mul(0x9e37_79b9);
        WorkerOps { rng: ChaCha8Rng::seed_from_u64(mix), plan: self.clone(), run, worker, n: 0 }
    }

    /// Every id of the plan.
    pub fn all_ids(&self) -> Vec<String> {
        (0..self.ids).map(|i| id_for(&self.tag, i)).collect()
    }
}

/// The endless, seeded operation stream of one worker.
pub struct WorkerOps {
    rng: ChaCha8Rng,
    plan: Plan,
    run: u32,
    worker: u32,
    n: u64,
}

impl Iterator for WorkerOps {
    type Item = (OpKey, String, Kind);

    fn next(&mut self) -> Option<Self::Item> {
        let workers = u64::from(self.plan.workers.max(1));
        let owned = (self.plan.ids / workers).max(1);
        let index = u64::from(self.worker) + workers * self.rng.random_range(0..owned);
        let kind = if self.rng.random_range(0..100) < self.plan.delete_pct {
            Kind::Del
        } else {
            Kind::Put
        };
        let key = OpKey { run: self.run, worker: self.worker, n: self.n };
        self.n += 1;
        Some((key, id_for(&self.plan.tag, index), kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_names_its_operation_and_is_deterministic() {
        let key = OpKey { run: 3, worker: 1, n: 77 };
        let c = content("c.x.t1.i17", key);
        assert_eq!(c, content("c.x.t1.i17", key));
        assert_ne!(c, content("c.x.t1.i17", OpKey { n: 78, ..key }));
        assert_eq!(parse_content(&c), Some(("c.x.t1.i17".to_owned(), key)));
        assert_eq!(parse_content(b"garbage"), None);
        assert_eq!(OpKey::parse(&key.to_string()), Some(key));
    }

    #[test]
    fn workers_own_disjoint_ids() {
        let plan = Plan { tag: "t".into(), ids: 100, workers: 4, delete_pct: 20 };
        for w in 0..4 {
            for (key, id, _) in plan.worker_ops(9, 0, w).take(200) {
                let index: u64 = id.rsplit(".i").next().unwrap().parse().unwrap();
                assert_eq!(index % 4, u64::from(w), "{id}");
                assert_eq!(key.worker, w);
            }
        }
        let a: Vec<_> = plan.worker_ops(9, 0, 1).take(50).collect();
        let b: Vec<_> = plan.worker_ops(9, 0, 1).take(50).collect();
        assert_eq!(a, b, "seeded streams are reproducible");
    }
}
