//! Damaged copies of a WAL file: truncated or bit-flipped at seeded random offsets, the main
//! file and SQLite's `-wal` journal. Opening one never panics and never returns a wrong entry:
//! it is either refused with an error naming the file, or it opens with every entry committed
//! before the damage, each one byte-identical, anything else accounted for in `damaged()`.

#[path = "support/util.rs"]
mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_engine_core::store::Wal;
use sync_engine_core::{ErrorKind, SyncItem};
use sync_engine_wal::{SqliteWal, WalOptions};
use util::{item, same, sibling};

const BATCH: usize = 3;
const BATCHES: u64 = 40;

/// A log of 40 committed batches of 3 items. Returns the items (item i has seq i + 1), the
/// journal length after each batch with the item count so far, and the bytes of the main
/// file and of the journal as they were on disk with the log still open (a crash image).
struct Image {
    items: Vec<SyncItem>,
    marks: Vec<(u64, usize)>,
    main: Vec<u8>,
    journal: Vec<u8>,
    /// The main file after a clean close (everything checkpointed into it, no journal).
    closed_main: Vec<u8>,
}

async fn build(dir: &Path) -> Image {
    let path = dir.join("src/wal.db");
    let wal = SqliteWal::open(&path, WalOptions::default()).await.unwrap();
    let mut items = Vec::new();
    let mut marks = Vec::new();
    for b in 0..BATCHES {
        let batch: Vec<SyncItem> = (0..BATCH as u64).map(|i| item(b * BATCH as u64 + i)).collect();
        wal.append(&batch).await.unwrap();
        items.extend(batch);
        let len = std::fs::metadata(sibling(&path, "-wal")).unwrap().len();
        marks.push((len, items.len()));
    }
    assert!(
        marks.windows(2).all(|w| w[0].0 < w[1].0),
        "the journal was checkpointed mid-test: {marks:?}"
    );
    let main = std::fs::read(&path).unwrap();
    let journal = std::fs::read(sibling(&path, "-wal")).unwrap();
    wal.close().await.unwrap();
    assert!(!sibling(&path, "-wal").exists(), "a clean close checkpoints and removes the journal");
    let closed_main = std::fs::read(&path).unwrap();
    Image { items, marks, main, journal, closed_main }
}

fn write_copy(dir: &Path, name: &str, main: &[u8], journal: Option<&[u8]>) -> PathBuf {
    let path = dir.join(name).join("wal.db");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, main).unwrap();
    if let Some(j) = journal {
        std::fs::write(sibling(&path, "-wal"), j).unwrap();
    }
    path
}

/// Entries committed in batches whose journal end is at or before `offset`.
fn committed_before(img: &Image, offset: u64) -> usize {
    img.marks.iter().filter(|m| m.0 <= offset).map(|m| m.1).max().unwrap_or(0)
}

/// Open a damaged copy. Refused: the error names the file. Opened: every entry returned is the
/// original at its seq, and every original entry is returned or accounted for as damaged.
/// Returns the number of entries returned, or None when refused.
async fn check_open(path: &Path, img: &Image) -> Option<usize> {
    let wal = match SqliteWal::open(path, WalOptions::default()).await {
        Err(e) => {
            let shown = path.display().to_string();
            assert!(e.to_string().contains(&shown), "error does not name the file: {e}");
            assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Unsupported),
                "damage must be reported as corrupt/unsupported, got {:?}: {e}",
                e.kind()
            );
            return None;
        }
        Ok(w) => w,
    };
    let entries = match wal.peek(usize::MAX).await {
        Ok(e) => e,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            return None;
        }
    };
    let mut present = BTreeSet::new();
    for e in &entries {
        let original =
            img.items.get(e.seq as usize - 1).unwrap_or_else(|| panic!("unknown seq {}", e.seq));
        assert!(
            same(&e.item, original),
            "seq {} returned a wrong item: {:?} vs {:?}",
            e.seq,
            e.item,
            original
        );
        present.insert(e.seq);
    }
    let damaged = wal.damaged().await.unwrap();
    let covered =
        |s: u64| damaged.iter().any(|d| d.first_seq <= s as i64 && s as i64 <= d.last_seq);
    let highest = entries.last().map_or(0, |e| e.seq);
    for s in 1..=highest {
        assert!(
            present.contains(&s) || covered(s),
            "seq {s} silently missing (damaged: {damaged:?})"
        );
    }
    wal.close().await.unwrap();
    Some(entries.len())
}

#[tokio::test]
async fn truncated_journal_keeps_every_transaction_committed_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let img = build(dir.path()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    let len = img.journal.len() as u64;
    let mut cuts: Vec<u64> = vec![0, 31, 32, 33, len - 1, len];
    cuts.extend((0..30).map(|_| rng.random_range(0..=len)));
    for (i, cut) in cuts.into_iter().enumerate() {
        let path = write_copy(
            dir.path(),
            &format!("cut{i}"),
            &img.main,
            Some(&img.journal[..cut as usize]),
        );
        let n = check_open(&path, &img)
            .await
            .unwrap_or_else(|| panic!("a torn journal (cut at {cut}) must open"));
        let want = committed_before(&img, cut);
        assert!(n >= want, "cut at {cut}: {n} entries, but {want} were committed before it");
        assert_eq!(n % BATCH, 0, "cut at {cut}: a batch was half kept ({n} entries)");
    }
}

#[tokio::test]
async fn flipped_journal_byte_keeps_every_transaction_before_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    let img = build(dir.path()).await;
    let page = u64::from(u32::from_be_bytes(img.journal[8..12].try_into().unwrap()));
    let frame = 24 + page;
    let mut rng = ChaCha8Rng::seed_from_u64(52);
    for i in 0..30 {
        let mut journal = img.journal.clone();
        let at = rng.random_range(0..journal.len());
        journal[at] ^= 1 << rng.random_range(0..8);
        let path = write_copy(dir.path(), &format!("flip{i}"), &img.main, Some(&journal));
        let frame_start = if at < 32 { 0 } else { 32 + (at as u64 - 32) / frame * frame };
        let n = check_open(&path, &img)
            .await
            .unwrap_or_else(|| panic!("journal flipped at {at} must open"));
        let want = committed_before(&img, frame_start);
        assert!(n >= want, "flip at {at}: {n} entries, {want} were committed before its frame");
        assert_eq!(n % BATCH, 0, "flip at {at}: a batch was half kept ({n} entries)");
    }
}

#[tokio::test]
async fn truncated_main_file_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = build(dir.path()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(53);
    let len = img.closed_main.len();
    let mut cuts = vec![0, 1, 99, 100, 4096, len - 1];
    cuts.extend((0..25).map(|_| rng.random_range(0..len)));
    for (i, cut) in cuts.into_iter().enumerate() {
        let path = write_copy(dir.path(), &format!("main{i}"), &img.closed_main[..cut], None);
        assert_eq!(
            check_open(&path, &img).await,
            None,
            "main file cut at {cut} of {len} was not refused"
        );
        assert_eq!(
            std::fs::read(&path).unwrap().len(),
            cut,
            "a refused file must be left untouched"
        );
    }
    // The intact copy opens with everything.
    let path = write_copy(dir.path(), "intact", &img.closed_main, None);
    assert_eq!(check_open(&path, &img).await, Some(img.items.len()));
}

#[tokio::test]
async fn truncated_main_file_with_journal_never_returns_a_wrong_entry() {
    let dir = tempfile::tempdir().unwrap();
    let img = build(dir.path()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(54);
    let (mut refused, mut opened) = (0, 0);
    for i in 0..25 {
        let cut = rng.random_range(0..img.main.len());
        let path =
            write_copy(dir.path(), &format!("mainj{i}"), &img.main[..cut], Some(&img.journal));
        match check_open(&path, &img).await {
            None => refused += 1,
            Some(_) => opened += 1,
        }
    }
    eprintln!("main file cut under a live journal: {refused} refused, {opened} opened intact");
}

#[tokio::test]
async fn flipped_main_file_bytes_never_return_a_wrong_entry() {
    let dir = tempfile::tempdir().unwrap();
    let img = build(dir.path()).await;
    let mut rng = ChaCha8Rng::seed_from_u64(55);
    let (mut refused, mut full, mut partial) = (0, 0, 0);
    for i in 0..60 {
        let mut main = img.closed_main.clone();
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..main.len());
            main[at] ^= 1 << rng.random_range(0..8);
        }
        let path = write_copy(dir.path(), &format!("mflip{i}"), &main, None);
        match check_open(&path, &img).await {
            None => refused += 1,
            Some(n) if n == img.items.len() => full += 1,
            Some(_) => partial += 1,
        }
    }
    eprintln!("main file flips: {refused} refused, {full} opened intact, {partial} opened with damage accounted");
}
