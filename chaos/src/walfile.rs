//! The WAL file on disk, for scenario 5: copy a crash image, damage it (cut or garble the main
//! SQLite file or its `-wal` journal at an offset), and compute which transactions were
//! committed before a given journal offset.
//!
//! SQLite's journal is a 32-byte header followed by frames of `24 + page size` bytes; a frame
//! whose header has a non-zero "database size after commit" field ends a transaction. SQLite
//! uses the frames up to the last valid commit frame and ignores everything after the first
//! frame that fails its checksum, so the transactions committed before a damaged byte are
//! exactly those whose commit frame ends at or before the start of the damaged frame.

use std::fs;
use std::path::{Path, PathBuf};

use rand::Rng;

/// `path` with `suffix` appended to its file name (`wal.db` → `wal.db-wal`).
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// The layout of a journal: page size and the end offset of every commit frame, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Journal {
    /// Page size from the header (0 when the header is absent or invalid).
    pub page_size: u64,
    /// End offsets of the commit frames whose salts match the header.
    pub commits: Vec<u64>,
}

impl Journal {
    /// Parse `bytes` (a `-wal` file). Frames are followed while their salts match the header.
    pub fn parse(bytes: &[u8]) -> Journal {
        let be = |at: usize| -> Option<u32> {
            bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(magic), Some(page), Some(salt1), Some(salt2)) = (be(0), be(8), be(16), be(20))
        else {
            return Journal::default();
        };
        if magic & 0xffff_fffe != 0x377f_0682 || !(512..=65536).contains(&page) {
            return Journal::default();
        }
        let frame = 24 + page as usize;
        let mut commits = Vec::new();
        let mut at = 32usize;
        while at + frame <= bytes.len() {
            if be(at + 8) != Some(salt1) || be(at + 12) != Some(salt2) {
                break;
            }
            if be(at + 4).is_some_and(|size| size != 0) {
                commits.push((at + frame) as u64);
            }
            at += frame;
        }
        Journal { page_size: u64::from(page), commits }
    }

    /// The start of the frame holding byte `offset` (0 for the header).
    pub fn frame_start(&self, offset: u64) -> u64 {
        if offset < 32 || self.page_size == 0 {
            return 0;
        }
        let frame = 24 + self.page_size;
        32 + (offset - 32) / frame * frame
    }

    /// The end of the last commit at or before `limit` (0: none, only the main file counts).
    pub fn committed_before(&self, limit: u64) -> u64 {
        self.commits.iter().copied().filter(|&c| c <= limit).max().unwrap_or(0)
    }
}

/// Which file is damaged, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The journal is cut at `offset`.
    JournalCut(u64),
    /// `len` journal bytes at `offset` are overwritten with random bytes.
    JournalGarble(u64, u64),
    /// The main file is cut at `offset`.
    MainCut(u64),
    /// `len` main-file bytes at `offset` are overwritten with random bytes.
    MainGarble(u64, u64),
}

impl Damage {
    /// Short name for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Damage::JournalCut(_) => "journal_cut",
            Damage::JournalGarble(..) => "journal_garble",
            Damage::MainCut(_) => "main_cut",
            Damage::MainGarble(..) => "main_garble",
        }
    }

    /// True for damage to the journal.
    pub fn in_journal(&self) -> bool {
        matches!(self, Damage::JournalCut(_) | Damage::JournalGarble(..))
    }

    /// For journal damage: the journal offset before which every commit must survive.
    pub fn survival_limit(&self, journal: &Journal) -> Option<u64> {
        match *self {
            Damage::JournalCut(at) => Some(journal.committed_before(at)),
            Damage::JournalGarble(at, _) => Some(journal.committed_before(journal.frame_start(at))),
            _ => None,
        }
    }

    /// Pick damage of kind `i % 4` at a random offset of the image.
    pub fn random(i: usize, main_len: u64, journal_len: u64, rng: &mut impl Rng) -> Damage {
        let garble = |rng: &mut dyn rand::RngCore| rand::Rng::random_range(rng, 1..=64u64);
        match (i % 4, journal_len) {
            (0, j) if j > 0 => Damage::JournalCut(rng.random_range(0..=j)),
            (1, j) if j > 0 => Damage::JournalGarble(rng.random_range(0..j), garble(rng)),
            (2, _) | (0, _) => Damage::MainCut(rng.random_range(0..main_len.max(1))),
            _ => Damage::MainGarble(rng.random_range(0..main_len.max(1)), garble(rng)),
        }
    }
}

/// The crash image of a WAL: its main file and journal as they were at the SIGKILL.
#[derive(Debug, Clone)]
pub struct Image {
    /// Main SQLite file.
    pub main: Vec<u8>,
    /// The `-wal` journal (empty when there was none).
    pub journal: Vec<u8>,
}

impl Image {
    /// Read the image of the WAL at `path` (without its `-shm` index, which SQLite rebuilds).
    pub fn read(path: &Path) -> Result<Image, String> {
        let main = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let journal = fs::read(sibling(path, "-wal")).unwrap_or_default();
        Ok(Image { main, journal })
    }

    /// Write a copy to `path` (journal cut to `journal_len` bytes when given), no damage.
    pub fn write_prefix(&self, path: &Path, journal_len: Option<u64>) -> Result<(), String> {
        let j = journal_len.map_or(self.journal.len(), |l| (l as usize).min(self.journal.len()));
        write_files(path, &self.main, &self.journal[..j])
    }

    /// Write a damaged copy to `path`.
    pub fn write_damaged(
        &self,
        path: &Path,
        damage: Damage,
        rng: &mut impl Rng,
    ) -> Result<(), String> {
        let (mut main, mut journal) = (self.main.clone(), self.journal.clone());
        let garble = |buf: &mut Vec<u8>, at: u64, len: u64, rng: &mut dyn rand::RngCore| {
            let start = (at as usize).min(buf.len());
            let end = (start + len as usize).min(buf.len());
            for b in &mut buf[start..end] {
                *b = rand::Rng::random(rng);
            }
        };
        match damage {
            Damage::JournalCut(at) => journal.truncate(at as usize),
            Damage::JournalGarble(at, len) => garble(&mut journal, at, len, rng),
            Damage::MainCut(at) => main.truncate(at as usize),
            Damage::MainGarble(at, len) => garble(&mut main, at, len, rng),
        }
        write_files(path, &main, &journal)
    }
}

fn write_files(path: &Path, main: &[u8], journal: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    fs::write(path, main).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if !journal.is_empty() {
        let j = sibling(path, "-wal");
        fs::write(&j, journal).map_err(|e| format!("cannot write {}: {e}", j.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(page: u32, frames: &[bool]) -> Vec<u8> {
        let mut j = Vec::new();
        j.extend_from_slice(&0x377f_0682u32.to_be_bytes());
        j.extend_from_slice(&3_007_000u32.to_be_bytes());
        j.extend_from_slice(&page.to_be_bytes());
        j.extend_from_slice(&0u32.to_be_bytes());
        j.extend_from_slice(&7u32.to_be_bytes());
        j.extend_from_slice(&9u32.to_be_bytes());
        j.extend_from_slice(&[0; 8]);
        for (i, commit) in frames.iter().enumerate() {
            j.extend_from_slice(&(i as u32 + 1).to_be_bytes());
            j.extend_from_slice(&(if *commit { 5u32 } else { 0 }).to_be_bytes());
            j.extend_from_slice(&7u32.to_be_bytes());
            j.extend_from_slice(&9u32.to_be_bytes());
            j.extend_from_slice(&[0; 8]);
            j.extend(std::iter::repeat_n(0u8, page as usize));
        }
        j
    }

    #[test]
    fn commits_and_limits() {
        let j = Journal::parse(&journal(512, &[false, true, true, false, true]));
        let f = 24 + 512;
        assert_eq!(j.commits, vec![32 + 2 * f, 32 + 3 * f, 32 + 5 * f]);
        assert_eq!(j.committed_before(32 + 3 * f), 32 + 3 * f);
        assert_eq!(j.committed_before(32 + 3 * f - 1), 32 + 2 * f);
        assert_eq!(j.frame_start(32 + f + 7), 32 + f);
        assert_eq!(Damage::JournalGarble(10, 4).survival_limit(&j), Some(0));
        assert_eq!(Damage::JournalGarble(32 + 4 * f, 1).survival_limit(&j), Some(32 + 3 * f));
        assert_eq!(Journal::parse(b"short"), Journal::default());
    }
}
