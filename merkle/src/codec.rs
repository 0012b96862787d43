//! Storage encodings of node keys and node values.
//!
//! [`NodeKey::encode`] is canonical and unambiguous: `version (1 byte = 1) ‖ path length (u32
//! big-endian) ‖ path (UTF-8) ‖ bucket length (1 byte, at most [`MAX_BUCKET_NIBBLES`]) ‖ one byte
//! per nibble`. All keys of one path node share the prefix `version ‖ length ‖ path`, so a store
//! that sorts keys bytewise keeps a path node's buckets together. [`NodeKey::decode`] accepts
//! exactly the encodings [`NodeKey::encode`] produces and never panics.
//!
//! [`NodeValue::to_bytes`] is `acc (32 bytes, little-endian) ‖ count (8 bytes, little-endian)`.

use crate::key::{validate_path, IdError, NodeKey};
use crate::types::{Acc, NodeValue};

/// Format version byte leading every encoded [`NodeKey`].
pub const KEY_FORMAT_VERSION: u8 = 1;

/// Deepest bucket a key may name: a SHA-256 segment hash has 64 nibbles.
pub const MAX_BUCKET_NIBBLES: usize = 64;

/// Length of [`NodeValue::to_bytes`].
pub const NODE_VALUE_LEN: usize = 40;

/// Why bytes are not an encoded [`NodeKey`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes end before the field named.
    #[error("encoded node key truncated: missing {0}")]
    Truncated(&'static str),
    /// The leading version byte is not [`KEY_FORMAT_VERSION`].
    #[error("encoded node key has format version {0}, expected {KEY_FORMAT_VERSION}")]
    Version(u8),
    /// The path bytes are not UTF-8.
    #[error("encoded node key path is not UTF-8")]
    PathNotUtf8,
    /// The path is not a valid dotted path.
    #[error("encoded node key path is invalid: {0}")]
    Path(#[from] IdError),
    /// The bucket is deeper than [`MAX_BUCKET_NIBBLES`].
    #[error("encoded node key bucket has {0} nibbles, at most {MAX_BUCKET_NIBBLES} allowed")]
    BucketTooDeep(usize),
    /// A bucket byte is not a nibble.
    #[error("encoded node key bucket byte {0:#04x} is not a nibble (0..16)")]
    NotANibble(u8),
    /// Bytes remain after the bucket.
    #[error("encoded node key has {0} trailing bytes")]
    Trailing(usize),
    /// The key cannot be encoded (path longer than 4 GiB, bad nibble or too deep a bucket).
    #[error("node key cannot be encoded: {0}")]
    Unencodable(&'static str),
}

/// Why bytes are not an encoded [`NodeValue`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("encoded node value must be {NODE_VALUE_LEN} bytes, got {0}")]
pub struct ValueError(pub usize);

impl NodeKey {
    /// The canonical byte form (see the module documentation).
    ///
    /// Fails only for keys no store can hold: a path over `u32::MAX` bytes, a bucket byte
    /// that is not a nibble, or a bucket deeper than [`MAX_BUCKET_NIBBLES`].
    pub fn encode(&self) -> Result<Vec<u8>, KeyError> {
        let path_len =
            u32::try_from(self.path.len()).map_err(|_| KeyError::Unencodable("path too long"))?;
        if self.bucket.len() > MAX_BUCKET_NIBBLES {
            return Err(KeyError::Unencodable("bucket deeper than 64 nibbles"));
        }
        if self.bucket.iter().any(|&n| n > 0x0f) {
            return Err(KeyError::Unencodable("bucket byte is not a nibble"));
        }
        let mut out = Vec::with_capacity(1 + 4 + self.path.len() + 1 + self.bucket.len());
        out.push(KEY_FORMAT_VERSION);
        out.extend_from_slice(&path_len.to_be_bytes());
        out.extend_from_slice(self.path.as_bytes());
        // At most 64, checked above.
        out.push(self.bucket.len() as u8);
        out.extend_from_slice(&self.bucket);
        Ok(out)
    }

    /// Inverse of [`NodeKey::encode`]; refuses, with the reason, anything it would not produce.
    pub fn decode(bytes: &[u8]) -> Result<NodeKey, KeyError> {
        let (&version, rest) = bytes.split_first().ok_or(KeyError::Truncated("version"))?;
        if version != KEY_FORMAT_VERSION {
            return Err(KeyError::Version(version));
        }
        let (len_bytes, rest) =
            rest.split_first_chunk::<4>().ok_or(KeyError::Truncated("path length"))?;
        let path_len = usize::try_from(u32::from_be_bytes(*len_bytes))
            .map_err(|_| KeyError::Truncated("path"))?;
        if rest.len() < path_len {
            return Err(KeyError::Truncated("path"));
        }
        let (path_bytes, rest) = rest.split_at(path_len);
        let path = std::str::from_utf8(path_bytes).map_err(|_| KeyError::PathNotUtf8)?;
        validate_path(path)?;
        let (&depth, rest) = rest.split_first().ok_or(KeyError::Truncated("bucket length"))?;
        let depth = usize::from(depth);
        if depth > MAX_BUCKET_NIBBLES {
            return Err(KeyError::BucketTooDeep(depth));
        }
        if rest.len() < depth {
            return Err(KeyError::Truncated("bucket"));
        }
        let (bucket, rest) = rest.split_at(depth);
        if let Some(&bad) = bucket.iter().find(|&&n| n > 0x0f) {
            return Err(KeyError::NotANibble(bad));
        }
        if !rest.is_empty() {
            return Err(KeyError::Trailing(rest.len()));
        }
        Ok(NodeKey { path: path.to_owned(), bucket: bucket.to_vec() })
    }
}

impl NodeValue {
    /// The storage form: `acc` little-endian, then `count` little-endian.
    pub fn to_bytes(&self) -> [u8; NODE_VALUE_LEN] {
        let mut out = [0u8; NODE_VALUE_LEN];
        out[..32].copy_from_slice(&self.acc.to_bytes());
        out[32..].copy_from_slice(&self.count.to_le_bytes());
        out
    }

    /// Inverse of [`NodeValue::to_bytes`]; refuses any length but [`NODE_VALUE_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Result<NodeValue, ValueError> {
        let fixed: &[u8; NODE_VALUE_LEN] = bytes.try_into().map_err(|_| ValueError(bytes.len()))?;
        let (acc, count) = fixed.split_at(32);
        let acc: [u8; 32] = acc.try_into().map_err(|_| ValueError(bytes.len()))?;
        let count: [u8; 8] = count.try_into().map_err(|_| ValueError(bytes.len()))?;
        Ok(NodeValue { acc: Acc::from_bytes(&acc), count: u64::from_le_bytes(count) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_refuses_damage() {
        let key = NodeKey { path: "t1.u2".into(), bucket: vec![3, 15, 0] };
        let bytes = key.encode().unwrap();
        assert_eq!(NodeKey::decode(&bytes), Ok(key.clone()));
        assert_eq!(NodeKey::decode(&bytes[..bytes.len() - 1]), Err(KeyError::Truncated("bucket")));
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(NodeKey::decode(&extra), Err(KeyError::Trailing(1)));
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() = 16;
        assert_eq!(NodeKey::decode(&bad), Err(KeyError::NotANibble(16)));
        let mut version = bytes;
        version[0] = 2;
        assert_eq!(NodeKey::decode(&version), Err(KeyError::Version(2)));
        assert_eq!(NodeKey::decode(&[]), Err(KeyError::Truncated("version")));
    }

    #[test]
    fn key_decode_refuses_invalid_paths() {
        let key = NodeKey::path("a..b");
        let bytes = key.encode().unwrap();
        assert!(matches!(NodeKey::decode(&bytes), Err(KeyError::Path(IdError::EmptySegment(_)))));
        let root = NodeKey::root().encode().unwrap();
        assert_eq!(root, vec![1, 0, 0, 0, 0, 0]);
        assert_eq!(NodeKey::decode(&root), Ok(NodeKey::root()));
    }

    #[test]
    fn encode_refuses_non_nibbles() {
        let key = NodeKey { path: String::new(), bucket: vec![16] };
        assert!(key.encode().is_err());
    }

    #[test]
    fn value_round_trips_and_checks_length() {
        let v = NodeValue { acc: Acc([1, 2, 3, u64::MAX]), count: 77 };
        assert_eq!(NodeValue::from_bytes(&v.to_bytes()), Ok(v));
        assert_eq!(NodeValue::from_bytes(&[0u8; 39]), Err(ValueError(39)));
    }
}
