//! The byte format of everything this crate stores in a blob: WAL entries, the filter snapshot
//! and the log's bookkeeping state.
//!
//! Every record is framed the same way:
//!
//! ```text
//! offset 0   4 bytes  magic: b"SEWE" (entry), b"SEWS" (snapshot), b"SEWM" (state)
//! offset 4   2 bytes  format version, little endian (this build writes and reads 1)
//! offset 6   4 bytes  CRC-32 (crc32fast) of: key (u64 LE) ‖ bytes 0..6 ‖ payload
//! offset 10  ...      payload: bincode 2 (serde, standard config) of the versioned struct
//! ```
//!
//! The key is the entry's sequence number (0 for the snapshot and the state), so a record
//! that ends up under another row (a flipped bit in a B-tree key) fails its checksum instead
//! of being returned as a wrong entry. A newer format is refused by its version, a foreign
//! blob by its magic, a flipped bit by the checksum; decoding borrows from the input and
//! never allocates more than the input's length, so arbitrary bytes can never panic it or
//! exhaust memory (the crate fuzzes [`decode_record`] with proptest).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sync_engine_core::id::HARD_MAX_ID_LEN;
use sync_engine_core::merkle::Digest;
use sync_engine_core::store::FilterSnapshot;
use sync_engine_core::{ContentHash, IdError, ObjectId, Stamp, SyncItem};

/// The record format version this build writes, and the newest it reads.
pub const RECORD_VERSION: u16 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 10;
pub(crate) const ENTRY_MAGIC: [u8; 4] = *b"SEWE";
pub(crate) const SNAPSHOT_MAGIC: [u8; 4] = *b"SEWS";
pub(crate) const STATE_MAGIC: [u8; 4] = *b"SEWM";

/// Why a stored blob is not a valid record. Decoding never returns a wrong item instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the header.
    #[error("record is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    TooShort {
        /// The blob's length.
        len: usize,
    },
    /// The magic is not the one expected for this kind of record.
    #[error("record magic is {found:02x?}, expected {expected:02x?} (not a {what} record)")]
    BadMagic {
        /// The magic found.
        found: [u8; 4],
        /// The magic expected.
        expected: [u8; 4],
        /// Which kind of record was expected.
        what: &'static str,
    },
    /// Written by a newer (or unknown) format version.
    #[error("record format version {found} is not supported (this build reads version {RECORD_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The checksum does not match: a flipped bit, a torn write or a record under the wrong key.
    #[error("record checksum mismatch: stored {stored:08x}, computed {computed:08x} (key {key})")]
    Checksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the blob.
        computed: u32,
        /// The key (sequence number) the record was checked under.
        key: u64,
    },
    /// The payload passed its checksum but does not decode (a bug or a format change).
    #[error("record payload does not decode: {0}")]
    Decode(String),
    /// The payload decoded but left bytes over.
    #[error("record payload has {0} trailing bytes")]
    Trailing(usize),
    /// The stored id is not a valid object id.
    #[error("record holds an invalid id: {0}")]
    InvalidId(#[from] IdError),
    /// Encoding failed (cannot happen for these plain structs; kept rather than a panic).
    #[error("record does not encode: {0}")]
    Encode(String),
}

/// A borrowed byte string that bincode writes as length + raw bytes and reads without copying.
struct Blob<'a>(&'a [u8]);

impl Serialize for Blob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Blob<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Blob)
    }
}

/// Payload of an entry record, format version 1.
#[derive(Serialize, Deserialize)]
struct EntryV1<'a> {
    #[serde(borrow)]
    id: &'a str,
    version: u64,
    updated_at: u64,
    content_hash: [u8; 32],
    tombstone: bool,
    #[serde(borrow)]
    state: Option<&'a str>,
    #[serde(borrow)]
    content: Blob<'a>,
}

/// Payload of a snapshot record, format version 1.
#[derive(Serialize, Deserialize)]
struct SnapshotV1<'a> {
    merkle_root: [u8; 32],
    entries: u64,
    taken_at_ms: u64,
    #[serde(borrow)]
    bytes: Blob<'a>,
}

/// The log's bookkeeping, stored in one checksummed record: the pending entries are exactly
/// the sequence numbers in `(last_removed, last_seq]` (minus those recorded as damaged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogState {
    /// Highest sequence number ever committed.
    pub last_seq: u64,
    /// Every sequence number `<=` this was removed by `remove_through`.
    pub last_removed: u64,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// A record with its header space reserved and the payload encoded, not yet bound to a key.
fn frame(magic: [u8; 4], payload: impl Serialize) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 128);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(payload, &mut out, config())
        .map_err(|e| RecordError::Encode(e.to_string()))?;
    Ok(out)
}

fn crc(key: u64, record: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&key.to_le_bytes());
    h.update(record.get(..6).unwrap_or_default());
    h.update(record.get(HEADER_LEN..).unwrap_or_default());
    h.finalize()
}

/// Bind a framed record to its key: write the checksum. The writer thread calls this once
/// it has assigned the sequence number.
pub(crate) fn seal(record: &mut [u8], key: u64) {
    let sum = crc(key, record);
    if let Some(slot) = record.get_mut(6..HEADER_LEN) {
        slot.copy_from_slice(&sum.to_le_bytes());
    }
}

/// Check the header and checksum of `record` under `key`; returns the payload.
fn unframe<'a>(
    magic: [u8; 4],
    what: &'static str,
    key: u64,
    record: &'a [u8],
) -> Result<&'a [u8], RecordError> {
    let Some((head, payload)) = record.split_first_chunk::<HEADER_LEN>() else {
        return Err(RecordError::TooShort { len: record.len() });
    };
    let found = [head[0], head[1], head[2], head[3]];
    if found != magic {
        return Err(RecordError::BadMagic { found, expected: magic, what });
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != RECORD_VERSION {
        return Err(RecordError::UnsupportedVersion { found: version });
    }
    let stored = u32::from_le_bytes([head[6], head[7], head[8], head[9]]);
    let computed = crc(key, record);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed, key });
    }
    Ok(payload)
}

fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, RecordError> {
    let (value, used) = bincode::serde::borrow_decode_from_slice::<T, _>(payload, config())
        .map_err(|e| RecordError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(RecordError::Trailing(payload.len().saturating_sub(used)));
    }
    Ok(value)
}

/// Encode `item` as an entry record whose checksum is not yet bound to a sequence number.
pub(crate) fn frame_entry(item: &SyncItem) -> Result<Vec<u8>, RecordError> {
    let stamp = item.stamp();
    frame(
        ENTRY_MAGIC,
        EntryV1 {
            id: item.id().as_str(),
            version: stamp.version,
            updated_at: item.updated_at(),
            content_hash: stamp.content_hash.0,
            tombstone: stamp.tombstone,
            state: item.state(),
            content: Blob(item.content()),
        },
    )
}

/// Encode `item` as the entry record stored under sequence number `seq`.
pub fn encode_record(seq: u64, item: &SyncItem) -> Result<Vec<u8>, RecordError> {
    let mut out = frame_entry(item)?;
    seal(&mut out, seq);
    Ok(out)
}

/// Decode the entry record stored under sequence number `seq`.
///
/// Never panics and never returns an item other than the one encoded under `seq`: any other
/// input (a flipped bit, a truncated blob, a record stored under another sequence number, a
/// newer format, arbitrary bytes) is a [`RecordError`].
pub fn decode_record(seq: u64, bytes: &[u8]) -> Result<SyncItem, RecordError> {
    let payload = unframe(ENTRY_MAGIC, "WAL entry", seq, bytes)?;
    let e: EntryV1<'_> = decode_payload(payload)?;
    let id = ObjectId::with_max_len(e.id, HARD_MAX_ID_LEN)?;
    let stamp = Stamp {
        version: e.version,
        content_hash: ContentHash(e.content_hash),
        tombstone: e.tombstone,
    };
    Ok(SyncItem::from_stored(
        id,
        stamp,
        e.updated_at,
        Bytes::copy_from_slice(e.content.0),
        e.state.map(str::to_owned),
    ))
}

/// Encode a filter snapshot record.
pub fn encode_snapshot(snapshot: &FilterSnapshot) -> Result<Vec<u8>, RecordError> {
    let mut out = frame(
        SNAPSHOT_MAGIC,
        SnapshotV1 {
            merkle_root: snapshot.merkle_root.0,
            entries: snapshot.entries,
            taken_at_ms: snapshot.taken_at_ms,
            bytes: Blob(&snapshot.bytes),
        },
    )?;
    seal(&mut out, 0);
    Ok(out)
}

/// Decode a filter snapshot record; never panics, never returns a different snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<FilterSnapshot, RecordError> {
    let payload = unframe(SNAPSHOT_MAGIC, "filter snapshot", 0, bytes)?;
    let s: SnapshotV1<'_> = decode_payload(payload)?;
    Ok(FilterSnapshot {
        bytes: Bytes::copy_from_slice(s.bytes.0),
        merkle_root: Digest(s.merkle_root),
        entries: s.entries,
        taken_at_ms: s.taken_at_ms,
    })
}

pub(crate) fn encode_state(state: &LogState) -> Result<Vec<u8>, RecordError> {
    let mut out = frame(STATE_MAGIC, state)?;
    seal(&mut out, 0);
    Ok(out)
}

pub(crate) fn decode_state(bytes: &[u8]) -> Result<LogState, RecordError> {
    decode_payload(unframe(STATE_MAGIC, "log state", 0, bytes)?)
}

impl fmt::Debug for Blob<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(
        id: &str,
        version: u64,
        content: Vec<u8>,
        tomb: bool,
        state: Option<String>,
    ) -> SyncItem {
        let id = ObjectId::new(id).unwrap();
        let mut it = if tomb {
            SyncItem::tombstone(id, version)
        } else {
            SyncItem::new(id, version, content)
        };
        if let Some(s) = state {
            it = it.with_state(s);
        }
        it.with_updated_at(version.wrapping_mul(7))
    }

    fn any_item() -> impl Strategy<Value = SyncItem> {
        (
            "[a-z]{1,8}(\\.[a-z0-9]{1,8}){0,3}",
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
            prop::option::of("[a-z]{0,10}"),
        )
            .prop_map(|(id, v, c, t, s)| item(&id, v, c, t, s))
    }

    #[test]
    fn header_layout_is_stable() {
        let rec = encode_record(5, &item("a.b", 3, b"xyz".to_vec(), false, None)).unwrap();
        assert_eq!(&rec[..4], b"SEWE");
        assert_eq!(u16::from_le_bytes([rec[4], rec[5]]), 1);
        assert!(rec.len() > HEADER_LEN + 3 + 32);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let it = item("a.b", 3, b"xyz".to_vec(), false, Some("s".into()));
        let rec = encode_record(5, &it).unwrap();
        assert!(matches!(decode_record(6, &rec), Err(RecordError::Checksum { key: 6, .. })));
        assert!(matches!(decode_record(5, &rec[..4]), Err(RecordError::TooShort { len: 4 })));
        let mut future = rec.clone();
        future[4] = 2;
        assert_eq!(decode_record(5, &future), Err(RecordError::UnsupportedVersion { found: 2 }));
        let snap = encode_snapshot(&FilterSnapshot {
            bytes: Bytes::from_static(b"f"),
            merkle_root: Digest([9; 32]),
            entries: 1,
            taken_at_ms: 2,
        })
        .unwrap();
        let e = decode_record(0, &snap).unwrap_err();
        assert!(e.to_string().contains("not a WAL entry record"), "{e}");
        // A valid checksum over an invalid id: the id check still refuses it.
        let mut bad = frame(
            ENTRY_MAGIC,
            EntryV1 {
                id: "a..b",
                version: 1,
                updated_at: 0,
                content_hash: [0; 32],
                tombstone: false,
                state: None,
                content: Blob(b""),
            },
        )
        .unwrap();
        seal(&mut bad, 1);
        assert!(matches!(decode_record(1, &bad), Err(RecordError::InvalidId(_))));
        // Trailing bytes under a valid checksum.
        let mut long = frame_entry(&it).unwrap();
        long.push(0);
        seal(&mut long, 9);
        assert_eq!(decode_record(9, &long), Err(RecordError::Trailing(1)));
    }

    #[test]
    fn state_round_trips() {
        let s = LogState { last_seq: 77, last_removed: 12 };
        assert_eq!(decode_state(&encode_state(&s).unwrap()), Ok(s));
        assert!(
            decode_state(&encode_record(0, &item("a", 1, vec![], false, None)).unwrap()).is_err()
        );
    }

    proptest! {
        #[test]
        fn entries_round_trip(seq in any::<u64>(), it in any_item()) {
            let got = decode_record(seq, &encode_record(seq, &it).unwrap()).unwrap();
            prop_assert_eq!(got.id(), it.id());
            prop_assert_eq!(got.stamp(), it.stamp());
            prop_assert_eq!(got.content(), it.content());
            prop_assert_eq!(got.state(), it.state());
            prop_assert_eq!(got.updated_at(), it.updated_at());
            prop_assert_eq!(got, it);
        }

        #[test]
        fn any_flipped_bit_is_an_error(seq in any::<u64>(), it in any_item(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut rec = encode_record(seq, &it).unwrap();
            let i = pos.index(rec.len());
            rec[i] ^= 1 << bit;
            prop_assert!(decode_record(seq, &rec).is_err());
        }

        #[test]
        fn any_truncation_is_an_error(seq in any::<u64>(), it in any_item(), pos in any::<prop::sample::Index>()) {
            let rec = encode_record(seq, &it).unwrap();
            let cut = pos.index(rec.len());
            prop_assert!(decode_record(seq, &rec[..cut]).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(seq in any::<u64>(), bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_record(seq, &bytes);
            let _ = decode_snapshot(&bytes);
            let _ = decode_state(&bytes);
        }

        #[test]
        fn valid_header_with_arbitrary_payload_never_panics(seq in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..200)) {
            // Seal arbitrary payloads so the fuzzing reaches the bincode decoder, not only the CRC.
            let mut rec = ENTRY_MAGIC.to_vec();
            rec.extend_from_slice(&RECORD_VERSION.to_le_bytes());
            rec.extend_from_slice(&[0; 4]);
            rec.extend_from_slice(&payload);
            seal(&mut rec, seq);
            let _ = decode_record(seq, &rec);
            let mut snap = SNAPSHOT_MAGIC.to_vec();
            snap.extend_from_slice(&rec[4..]);
            seal(&mut snap, 0);
            let _ = decode_snapshot(&snap);
        }

        #[test]
        fn snapshots_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..500), root in any::<[u8; 32]>(), n in any::<u64>(), at in any::<u64>()) {
            let s = FilterSnapshot { bytes: Bytes::from(bytes), merkle_root: Digest(root), entries: n, taken_at_ms: at };
            prop_assert_eq!(decode_snapshot(&encode_snapshot(&s).unwrap()).unwrap(), s);
        }
    }
}
