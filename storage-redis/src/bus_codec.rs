//! Wire format of an invalidation message: compact, versioned, checksummed binary.
//!
//! ```text
//! magic "SEIV" | format u8 = 1 | origin u128 | count u32 |
//!   count × ( id_len u16 | id bytes | version u64 | content_hash [32] | tombstone u8 ) |
//! crc: first 8 bytes of SHA-256 over everything before it
//! ```
//! All integers little-endian. A message that fails any check is an error: the subscriber
//! then reports a gap (it cannot know which ids the message named).

use sha2::{Digest as _, Sha256};
use sync_engine_core::store::{Change, InstanceId, Invalidation};
use sync_engine_core::{ContentHash, ObjectId, Stamp};

const MAGIC: &[u8; 4] = b"SEIV";
const FORMAT: u8 = 1;
const CHECK: usize = 8;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not this format (magic or version), or cut short.
    #[error("invalidation message: {0}")]
    Malformed(&'static str),
    /// The checksum does not match.
    #[error("invalidation message: checksum mismatch")]
    Checksum,
    /// An id is not a valid object id.
    #[error("invalidation message: invalid id: {0}")]
    Id(String),
}

fn check(bytes: &[u8]) -> [u8; CHECK] {
    let d = Sha256::digest(bytes);
    let mut out = [0u8; CHECK];
    out.copy_from_slice(&d[..CHECK]);
    out
}

/// Encode a message.
pub fn encode(msg: &Invalidation) -> Vec<u8> {
    let ids: usize = msg.changes.iter().map(|c| c.id.as_str().len() + 43).sum();
    let mut out = Vec::with_capacity(4 + 1 + 16 + 4 + ids + CHECK);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.extend_from_slice(&msg.origin.0.to_le_bytes());
    out.extend_from_slice(&(msg.changes.len() as u32).to_le_bytes());
    for c in &msg.changes {
        let id = c.id.as_str().as_bytes();
        // Ids are at most 1024 bytes (ObjectId's hard limit), so the length fits in u16.
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&c.stamp.version.to_le_bytes());
        out.extend_from_slice(&c.stamp.content_hash.0);
        out.push(u8::from(c.stamp.tombstone));
    }
    let sum = check(&out);
    out.extend_from_slice(&sum);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Malformed("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Decode a message.
pub fn decode(bytes: &[u8]) -> Result<Invalidation, DecodeError> {
    if bytes.len() < MAGIC.len() + 1 + 16 + 4 + CHECK {
        return Err(DecodeError::Malformed("cut short"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECK);
    if &body[..4] != MAGIC {
        return Err(DecodeError::Malformed("not an invalidation message"));
    }
    if check(body) != sum {
        return Err(DecodeError::Checksum);
    }
    let mut r = Reader(&body[4..]);
    if r.array::<1>()?[0] != FORMAT {
        return Err(DecodeError::Malformed("unknown format version"));
    }
    let origin = InstanceId(u128::from_le_bytes(r.array()?));
    let count = u32::from_le_bytes(r.array()?) as usize;
    // Each change takes at least 43 bytes: a count beyond that is a lie, not an allocation.
    if count > r.0.len() / 43 {
        return Err(DecodeError::Malformed("count larger than the message"));
    }
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u16::from_le_bytes(r.array()?) as usize;
        let raw = r.take(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| DecodeError::Id("not UTF-8".into()))?;
        let id = ObjectId::with_max_len(text, sync_engine_core::id::HARD_MAX_ID_LEN)
            .map_err(|e| DecodeError::Id(e.to_string()))?;
        let version = u64::from_le_bytes(r.array()?);
        let content_hash = ContentHash(r.array()?);
        let tombstone = match r.array::<1>()?[0] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Malformed("tombstone flag not 0 or 1")),
        };
        changes.push(Change { id, stamp: Stamp { version, content_hash, tombstone } });
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    Ok(Invalidation { origin, changes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sync_engine_core::SyncItem;

    fn msg(ids: &[(String, u64, bool)]) -> Invalidation {
        Invalidation {
            origin: InstanceId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            changes: ids
                .iter()
                .map(|(id, v, t)| {
                    let id = ObjectId::new(id).unwrap();
                    let item = if *t {
                        SyncItem::tombstone(id, *v)
                    } else {
                        SyncItem::new(id, *v, format!("c{v}"))
                    };
                    Change { id: item.id().clone(), stamp: item.stamp() }
                })
                .collect(),
        }
    }

    proptest! {
        #[test]
        fn round_trips(ids in prop::collection::vec(("[a-z]{1,8}(\\.[a-z0-9]{1,5}){0,3}", any::<u64>(), any::<bool>()), 0..40)) {
            let m = msg(&ids);
            prop_assert_eq!(decode(&encode(&m)).unwrap(), m);
        }

        #[test]
        fn any_flipped_bit_or_cut_is_an_error(pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<bool>()) {
            let bytes = encode(&msg(&[("a.b".into(), 7, false), ("c".into(), 9, true)]));
            let i = pos.index(bytes.len());
            let bad = if cut { bytes[..i].to_vec() } else {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                b
            };
            prop_assert!(decode(&bad).is_err());
        }
    }
}
