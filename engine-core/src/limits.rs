//! Input limits checked before anything is stored: id length, payload size, state tag length.

use crate::error::{Error, Result};
use crate::id::{validate, DEFAULT_MAX_ID_LEN};
use crate::item::SyncItem;

/// Default maximum payload, in bytes (16 MiB).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// Default maximum state tag length, in bytes.
pub const DEFAULT_MAX_STATE_LEN: usize = 64;

/// The input limits of one engine (from [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum id length in bytes.
    pub max_id_len: usize,
    /// Maximum content length in bytes.
    pub max_payload_bytes: usize,
    /// Maximum state tag length in bytes.
    pub max_state_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_id_len: DEFAULT_MAX_ID_LEN,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_state_len: DEFAULT_MAX_STATE_LEN,
        }
    }
}

impl Limits {
    /// Check an item; the error names the id and the limit broken.
    pub fn check(&self, item: &SyncItem) -> Result<()> {
        validate(item.id().as_str(), self.max_id_len)?;
        let len = item.content().len();
        if len > self.max_payload_bytes {
            return Err(Error::invalid(format!(
                "payload of `{}` is {len} bytes, over max_payload_bytes = {}",
                item.id(),
                self.max_payload_bytes
            )));
        }
        if let Some(state) = item.state() {
            if state.len() > self.max_state_len {
                return Err(Error::invalid(format!(
                    "state tag of `{}` is {} bytes, over max_state_len = {}",
                    item.id(),
                    state.len(),
                    self.max_state_len
                )));
            }
            if let Some(c) = state.chars().find(|c| c.is_control()) {
                return Err(Error::invalid(format!(
                    "state tag of `{}` contains the control character {:?}",
                    item.id(),
                    c
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, ObjectId};

    #[test]
    fn oversized_payload_and_state_are_rejected_by_name() {
        let limits = Limits { max_payload_bytes: 4, ..Limits::default() };
        let id = ObjectId::new("a.b").unwrap();
        assert!(limits.check(&SyncItem::new(id.clone(), 1, "1234")).is_ok());
        let e = limits.check(&SyncItem::new(id.clone(), 1, "12345")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("max_payload_bytes"), "{e}");
        let e = limits.check(&SyncItem::new(id, 1, "").with_state("x".repeat(65))).unwrap_err();
        assert!(e.to_string().contains("max_state_len"), "{e}");
    }
}
