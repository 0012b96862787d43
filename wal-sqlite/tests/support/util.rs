//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sync_engine_core::{ObjectId, SyncItem};

/// Item `k` of a test: id `t.k{k}`, version `k + 1`, 512 bytes derived from `k`.
pub fn item(k: u64) -> SyncItem {
    let content: Vec<u8> =
        (0..512u64).map(|i| (i.wrapping_mul(31) ^ k.wrapping_mul(131)) as u8).collect();
    SyncItem::new(ObjectId::new(&format!("t.k{k}")).unwrap(), k + 1, content)
}

/// `path` with `suffix` appended to the file name.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Same id, stamp, content and state (`updated_at` is the clock at creation).
pub fn same(a: &SyncItem, b: &SyncItem) -> bool {
    a.id() == b.id()
        && a.stamp() == b.stamp()
        && a.content() == b.content()
        && a.state() == b.state()
}
