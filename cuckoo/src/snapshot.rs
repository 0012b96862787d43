//! Export / import: a versioned header, the filter parameters, the packed words of every level,
//! and a checksum over all of it.
//!
//! Format version 1, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SECUCKOO` |
//! | 8 | 2 | format version (1) |
//! | 10 | 1 | fingerprint bits (12) |
//! | 11 | 1 | slots per bucket (4) |
//! | 12 | 4 | hash version ([`HASH_VERSION`]) |
//! | 16 | 8 | key hash seed ([`KEY_HASH_SEED`]) |
//! | 24 | 4 | level count `L` (1 ..= [`MAX_LEVELS`]) |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 8 | total fingerprints |
//! | 40 | 16 × L | per level: bucket count, fingerprint count |
//! | … | 8 × words | per level, in order: its `ceil(48 · buckets / 64) + 1` words |
//! | end − 8 | 8 | xxh3-64 (seed [`CHECKSUM_SEED`]) of every byte before it |
//!
//! Import checks, in order: length, magic, version, checksum, parameters, the level table, the
//! exact byte length it implies, zero padding bits, and that every level's stored count equals
//! the number of non-empty slots. Any failure is an error and no filter is built. The trust
//! state is not exported: an imported filter is `Untrusted` until the engine warms it.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::error::SnapshotError;
use crate::filter::{CuckooFilter, MAX_LEVELS};
use crate::hash::{FP_BITS, HASH_VERSION, KEY_HASH_SEED};
use crate::level::{count_slots, words_for, Level, MAX_BUCKETS, SLOTS_PER_BUCKET};

/// First bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"SECUCKOO";
/// Snapshot format version written by this build (and the only one it reads).
pub const FORMAT_VERSION: u16 = 1;
/// Seed of the trailing xxh3-64 checksum.
pub const CHECKSUM_SEED: u64 = 0x6368_6563_6b73_756d;

const HEADER_LEN: usize = 40;
const LEVEL_ENTRY_LEN: usize = 16;

impl CuckooFilter {
    /// A self-describing snapshot of every fingerprint, taken with writers excluded (it holds
    /// every insert and removal that returned before it started).
    pub fn export(&self) -> Vec<u8> {
        self.with_writer_excluded(|| {
            let levels: Vec<&Level> = self.levels().collect();
            let words: usize = levels.iter().map(|l| l.memory_bytes()).sum();
            let mut out =
                Vec::with_capacity(HEADER_LEN + LEVEL_ENTRY_LEN * levels.len() + words + 8);
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            out.push(FP_BITS as u8);
            out.push(SLOTS_PER_BUCKET as u8);
            out.extend_from_slice(&HASH_VERSION.to_le_bytes());
            out.extend_from_slice(&KEY_HASH_SEED.to_le_bytes());
            out.extend_from_slice(&(levels.len() as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            let total: u64 = levels.iter().map(|l| l.count()).sum();
            out.extend_from_slice(&total.to_le_bytes());
            for level in &levels {
                out.extend_from_slice(&level.buckets().to_le_bytes());
                out.extend_from_slice(&level.count().to_le_bytes());
            }
            for level in &levels {
                for w in level.words() {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            let sum = xxh3_64_with_seed(&out, CHECKSUM_SEED);
            out.extend_from_slice(&sum.to_le_bytes());
            out
        })
    }

    /// Rebuild a filter from [`export`](Self::export) bytes. Corrupt, truncated, foreign or
    /// future-version bytes give an error, never a filter. The result is `Untrusted`.
    pub fn import(bytes: &[u8]) -> Result<CuckooFilter, SnapshotError> {
        let mut r = Reader { bytes, pos: 0 };
        if bytes.len() < HEADER_LEN + 8 {
            return Err(truncated(HEADER_LEN + 8, bytes.len()));
        }
        if r.take(8)? != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let (body, tail) = bytes.split_at(bytes.len() - 8);
        let stored = u64::from_le_bytes(tail.try_into().unwrap_or([0; 8]));
        let computed = xxh3_64_with_seed(body, CHECKSUM_SEED);
        if stored != computed {
            return Err(SnapshotError::ChecksumMismatch { stored, computed });
        }
        r.bytes = body;
        expect("fingerprint_bits", u64::from(r.u8()?), u64::from(FP_BITS))?;
        expect("slots_per_bucket", u64::from(r.u8()?), SLOTS_PER_BUCKET)?;
        expect("hash_version", u64::from(r.u32()?), u64::from(HASH_VERSION))?;
        expect("key_hash_seed", r.u64()?, KEY_HASH_SEED)?;
        let level_count = r.u32()? as usize;
        if level_count == 0 || level_count > MAX_LEVELS {
            return Err(malformed(format!("{level_count} levels (expected 1 ..= {MAX_LEVELS})")));
        }
        if r.u32()? != 0 {
            return Err(malformed("reserved header field is not zero".into()));
        }
        let total = r.u64()?;
        let mut table = Vec::with_capacity(level_count);
        let mut needed = HEADER_LEN + LEVEL_ENTRY_LEN * level_count;
        for i in 0..level_count {
            let buckets = r.u64()?;
            let count = r.u64()?;
            if buckets == 0 || buckets > MAX_BUCKETS {
                return Err(malformed(format!("level {i} has {buckets} buckets")));
            }
            let words = words_for(buckets)
                .ok_or_else(|| malformed(format!("level {i} is too large for this machine")))?;
            needed = words
                .checked_mul(8)
                .and_then(|b| needed.checked_add(b))
                .ok_or_else(|| malformed(format!("level {i} is too large for this machine")))?;
            table.push((buckets, count, words));
        }
        if needed > body.len() {
            return Err(truncated(needed + 8, bytes.len()));
        }
        if needed < body.len() {
            return Err(SnapshotError::TrailingBytes { extra: (body.len() - needed) as u64 });
        }
        let mut levels = Vec::with_capacity(level_count);
        let mut sum = 0u64;
        for (i, (buckets, count, n)) in table.into_iter().enumerate() {
            let raw = r.take(n * 8)?;
            let words: Vec<u64> = raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            let counted = count_slots(buckets, &words).ok_or_else(|| {
                malformed(format!("level {i} has bits set beyond its last bucket"))
            })?;
            if counted != count {
                return Err(malformed(format!(
                    "level {i} declares {count} fingerprints but holds {counted}"
                )));
            }
            sum += count;
            levels.push(Level::from_words(buckets, words, count));
        }
        if sum != total {
            return Err(malformed(format!(
                "header declares {total} fingerprints, levels hold {sum}"
            )));
        }
        Ok(CuckooFilter::from_levels(levels))
    }
}

fn truncated(needed: usize, found: usize) -> SnapshotError {
    SnapshotError::Truncated { needed: needed as u64, found: found as u64 }
}

fn malformed(what: String) -> SnapshotError {
    SnapshotError::Malformed(what)
}

fn expect(field: &'static str, found: u64, expected: u64) -> Result<(), SnapshotError> {
    if found == expected {
        Ok(())
    } else {
        Err(SnapshotError::ParameterMismatch { field, found, expected })
    }
}

/// Bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| truncated(self.pos.saturating_add(n) + 8, self.bytes.len()))?;
        let s = self.bytes.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let s = self.take(N)?;
        Ok(s.try_into().unwrap_or([0; N]))
    }

    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}
