//! The `wal` suite: durable appends of the SQLite WAL against raw rusqlite, same file system,
//! same `journal_mode=WAL` + `synchronous=FULL`, same row bytes, measured in the same run.
//!
//! - `wal.raw_single_txn.*`: one thread, one INSERT per transaction (one fsync per item).
//! - `wal.append{1,4,16}.*`: 1, 4, 16 concurrent tasks each appending one item at a time and
//!   waiting for its durable ack; group commit folds concurrent appends into one transaction.
//!   `wal.append16.vs_single_txn` = 16-appender rate ÷ raw single-transaction rate (goal ≥ 8).
//! - `wal.raw_batch.*` / `wal.batch_append.*`: 1000 rows per transaction, raw vs one
//!   `append(&[1000 items])`; `wal.batch_append.vs_raw` (goal ≥ 0.8). Deep ids
//!   (`t{0..99}.u{0..999}.i{n}`); the `.flat` variants repeat it with flat ids (`items.{n}`).
//!
//! Every file is warmed first (see [`Warm`]): figures are for a log in its steady state.
//!
//! Raw rows are the WAL's own encoded records (an entry record of a 512-byte item, ~590
//! bytes) inserted as `(seq, blob)`, so the baseline writes the same bytes and excludes only
//! what the WAL adds: encoding, checksums, the channel to its writer thread and its
//! bookkeeping row. Files live in a fresh directory under the system temp dir (same disk as
//! the target dir on this machine); each repetition starts from an empty file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rusqlite::{params, Connection};
use sync_engine_core::store::Wal;
use sync_engine_core::{ObjectId, SyncItem};
use sync_engine_wal::{encode_record, SqliteWal, WalOptions};

use crate::report::{median, rate, Figure, Latency, Opts};

const PAYLOAD: usize = 512;
const BATCH: usize = 1000;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A ratio figure named `name`: `num / den`, with `den` as baseline.
fn over(name: &str, num: &Figure, den: &Figure) -> Figure {
    let r = num.value / den.value.max(f64::MIN_POSITIVE);
    Figure {
        name: name.into(),
        value: r,
        unit: "ratio".into(),
        baseline: Some(den.name.clone()),
        ratio: Some(r),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Deep,
    Flat,
}

fn items(
    n: usize,
    start: u64,
    shape: Shape,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<SyncItem>, String> {
    (0..n as u64)
        .map(|i| {
            let k = start + i;
            let id = match shape {
                Shape::Deep => format!("t{}.u{}.i{k}", k % 100, (k / 100) % 1000),
                Shape::Flat => format!("items.{k}"),
            };
            let mut content = vec![0u8; PAYLOAD];
            rng.fill(&mut content[..]);
            Ok(SyncItem::new(ObjectId::new(&id).map_err(err)?, k + 1, content))
        })
        .collect()
}

/// A fresh scratch directory for one measurement; removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(root: &Path, tag: &str) -> Result<Scratch, String> {
        let dir = root.join(tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(err)?;
        Ok(Scratch(dir))
    }
    fn db(&self) -> PathBuf {
        self.0.join("wal.db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Data written, untimed, into every file before a measurement: 8 transactions of 1000 rows
/// (~4.7 MB, past SQLite's 1000-page auto-checkpoint), so that the journal file has reached
/// its working size and been checkpointed. Measurements then see the steady state of a
/// long-running log (commits overwrite an allocated journal) instead of the first minutes of
/// a new file (every commit extends it, which costs a file-system journal commit per fsync).
struct Warm {
    items: Vec<SyncItem>,
    rows: Vec<Vec<u8>>,
}

/// Raw rusqlite with the WAL's durability settings and the same table shape, warmed.
fn raw_conn(path: &Path, warm: &Warm) -> Result<Connection, String> {
    let mut c = Connection::open(path).map_err(err)?;
    let mode: String =
        c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(err)?;
    if mode != "wal" {
        return Err(format!("raw baseline: journal_mode is {mode}"));
    }
    c.pragma_update(None, "synchronous", "FULL").map_err(err)?;
    c.execute_batch("CREATE TABLE entries (seq INTEGER PRIMARY KEY, record BLOB NOT NULL)")
        .map_err(err)?;
    for (b, chunk) in warm.rows.chunks(BATCH).enumerate() {
        let tx = c.transaction().map_err(err)?;
        {
            let mut s = tx
                .prepare_cached("INSERT INTO entries(seq, record) VALUES (?1, ?2)")
                .map_err(err)?;
            for (i, row) in chunk.iter().enumerate() {
                s.execute(params![-((b * BATCH + i + 1) as i64), row.as_slice()]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
    }
    Ok(c)
}

/// Our WAL, opened and warmed like [`raw_conn`].
async fn our_wal(path: &Path, warm: &Warm) -> Result<SqliteWal, String> {
    let wal = SqliteWal::open(path, WalOptions::default()).await.map_err(err)?;
    for chunk in warm.items.chunks(BATCH) {
        wal.append(chunk).await.map_err(err)?;
    }
    Ok(wal)
}

fn records(items: &[SyncItem], first_seq: u64) -> Result<Vec<Vec<u8>>, String> {
    items.iter().zip(first_seq..).map(|(it, s)| encode_record(s, it).map_err(err)).collect()
}

/// Appender counts measured against the raw single-transaction baseline.
const LEVELS: [usize; 3] = [1, 4, 16];
/// Operations per block: raw and 1 appender, then 4 and 16 appenders (each block takes a
/// few hundred milliseconds, so every variant samples the same stretch of disk behaviour).
const BLOCK: [usize; 4] = [100, 100, 200, 400];

/// One repetition of the single-item measurements: the raw baseline and our WAL with 1, 4
/// and 16 appenders, each on its own warmed file, run round-robin in blocks. The first round
/// is a warm-up. Returns items/s per variant (raw first) and records every op's latency.
fn single_rep(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    warm: &Warm,
    rounds: usize,
    rng: &mut ChaCha8Rng,
    lats: &mut [Latency; 4],
) -> Result<[f64; 4], String> {
    let raw_dir = Scratch::new(root, "raw-single")?;
    let mut raw = raw_conn(&raw_dir.db(), warm)?;
    let dirs: Vec<Scratch> = LEVELS
        .iter()
        .map(|n| Scratch::new(root, &format!("ours-{n}")))
        .collect::<Result<_, _>>()?;
    let wals: Vec<Arc<SqliteWal>> = dirs
        .iter()
        .map(|d| rt.block_on(our_wal(&d.db(), warm)).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let total = rounds + 1;
    let raw_rows = records(&items(BLOCK[0] * total, 0, Shape::Deep, rng)?, 1)?;
    let mut ours_items: Vec<Vec<SyncItem>> = Vec::new();
    for (v, _) in LEVELS.iter().enumerate() {
        ours_items.push(items(BLOCK[v + 1] * total, (v as u64 + 1) * 1_000_000, Shape::Deep, rng)?);
    }
    let mut busy = [Duration::ZERO; 4];
    let mut done = [0usize; 4];
    for round in 0..total {
        let counted = round > 0;
        // Raw: one INSERT per transaction.
        let start = Instant::now();
        for (i, row) in raw_rows[round * BLOCK[0]..(round + 1) * BLOCK[0]].iter().enumerate() {
            let t = Instant::now();
            let tx = raw.transaction().map_err(err)?;
            tx.prepare_cached("INSERT INTO entries(seq, record) VALUES (?1, ?2)")
                .and_then(|mut s| {
                    s.execute(params![(round * BLOCK[0] + i + 1) as i64, row.as_slice()])
                })
                .map_err(err)?;
            tx.commit().map_err(err)?;
            if counted {
                lats[0].record(t.elapsed());
            }
        }
        if counted {
            busy[0] += start.elapsed();
            done[0] += BLOCK[0];
        }
        // Ours: `tasks` concurrent appenders share the block, each waiting for its ack.
        for (v, &tasks) in LEVELS.iter().enumerate() {
            let block = &ours_items[v][round * BLOCK[v + 1]..(round + 1) * BLOCK[v + 1]];
            let (elapsed, samples) = rt.block_on(concurrent_block(&wals[v], tasks, block))?;
            if counted {
                busy[v + 1] += elapsed;
                done[v + 1] += block.len();
                for s in samples {
                    lats[v + 1].record(s);
                }
            }
        }
    }
    for wal in wals {
        if let Ok(wal) = Arc::try_unwrap(wal) {
            rt.block_on(wal.close()).map_err(err)?;
        }
    }
    Ok([0, 1, 2, 3].map(|v| rate(done[v], busy[v])))
}

/// `tasks` tasks append `block` (split evenly) one item at a time, each awaiting its durable
/// ack before the next. Returns the wall time of the block and every append's latency.
async fn concurrent_block(
    wal: &Arc<SqliteWal>,
    tasks: usize,
    block: &[SyncItem],
) -> Result<(Duration, Vec<Duration>), String> {
    let per = block.len().div_ceil(tasks).max(1);
    let gate = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let mut handles = Vec::new();
    for mine in block.chunks(per) {
        let (wal, gate, mine) = (wal.clone(), gate.clone(), mine.to_vec());
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            let mut lats = Vec::with_capacity(mine.len());
            for it in &mine {
                let t = Instant::now();
                wal.append(std::slice::from_ref(it)).await.map_err(err)?;
                lats.push(t.elapsed());
            }
            Ok::<_, String>(lats)
        }));
    }
    for _ in handles.len()..tasks {
        // Fewer chunks than tasks (tiny blocks): release the barrier for the missing ones.
        let gate = gate.clone();
        handles.push(tokio::spawn(async move {
            gate.wait().await;
            Ok(Vec::new())
        }));
    }
    gate.wait().await;
    let start = Instant::now();
    let mut samples = Vec::with_capacity(block.len());
    for h in handles {
        samples.extend(h.await.map_err(err)??);
    }
    Ok((start.elapsed(), samples))
}

/// 1000-row transactions, raw and ours interleaved batch by batch (alternating which goes
/// first) so that both see the same disk conditions. Returns (raw items/s, ours items/s).
fn batches_interleaved(
    rt: &tokio::runtime::Runtime,
    root: &Path,
    warm: &Warm,
    all: &[SyncItem],
    rows: &[Vec<u8>],
) -> Result<(f64, f64), String> {
    let raw_dir = Scratch::new(root, "raw-batch")?;
    let our_dir = Scratch::new(root, "ours-batch")?;
    let mut c = raw_conn(&raw_dir.db(), warm)?;
    let our_path = our_dir.db();
    rt.block_on(async {
        let wal = our_wal(&our_path, warm).await?;
        let (mut raw_t, mut our_t) = (Duration::ZERO, Duration::ZERO);
        for (b, (chunk, row_chunk)) in all.chunks(BATCH).zip(rows.chunks(BATCH)).enumerate() {
            for side in [b % 2, 1 - b % 2] {
                let t = Instant::now();
                if side == 0 {
                    let tx = c.transaction().map_err(err)?;
                    {
                        let mut s = tx
                            .prepare_cached("INSERT INTO entries(seq, record) VALUES (?1, ?2)")
                            .map_err(err)?;
                        for (i, row) in row_chunk.iter().enumerate() {
                            s.execute(params![(b * BATCH + i + 1) as i64, row.as_slice()])
                                .map_err(err)?;
                        }
                    }
                    tx.commit().map_err(err)?;
                    raw_t += t.elapsed();
                } else {
                    wal.append(chunk).await.map_err(err)?;
                    our_t += t.elapsed();
                }
            }
        }
        wal.close().await.map_err(err)?;
        Ok((rate(all.len(), raw_t), rate(all.len(), our_t)))
    })
}

fn latency_figures(prefix: &str, lat: &Latency) -> Vec<Figure> {
    vec![
        Figure::plain(format!("{prefix}.p50_us"), lat.quantile_us(0.50), "us"),
        Figure::plain(format!("{prefix}.p99_us"), lat.quantile_us(0.99), "us"),
        Figure::plain(format!("{prefix}.p999_us"), lat.quantile_us(0.999), "us"),
        Figure::plain(format!("{prefix}.latency_ops"), lat.len() as f64, "ops"),
    ]
}

/// Run the suite. `--items N` sets the single-item operations per repetition and variant
/// (rounded up to whole blocks of 100; default 3400, so that 3 repetitions give >= 10,000
/// latency samples per variant; `--quick` 200); 4 and 16 appenders run 2x and 4x as many.
/// Batch runs use 50 batches of 1000 (`--quick` 5).
pub fn run(opts: &Opts) -> Result<Vec<Figure>, String> {
    let rounds = opts.items_or(3400, 200).div_ceil(BLOCK[0]).max(1);
    let batches = if opts.quick { 5 } else { 50 };
    let reps = opts.reps();
    let root = std::env::temp_dir().join(format!("sync-engine-bench-wal-{}", std::process::id()));
    std::fs::create_dir_all(&root).map_err(err)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(err)?;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    println!(
        "wal: {reps} reps of {rounds} rounds (+1 warm-up) of blocks {BLOCK:?} (raw, 1, 4, 16 appenders); {batches} batches of {BATCH}; files under {}",
        root.display()
    );
    let warm_items = items(8 * BATCH, 10_000_000, Shape::Deep, &mut rng)?;
    let warm = Warm { rows: records(&warm_items, 1)?, items: warm_items };

    let mut lats: [Latency; 4] = std::array::from_fn(|_| Latency::new());
    let mut rates: [Vec<f64>; 4] = Default::default();
    for rep in 0..reps {
        let r = single_rep(&rt, &root, &warm, rounds, &mut rng, &mut lats)?;
        println!(
            "  rep {rep}: raw {:.0}/s; appenders 1/4/16: {:.0}/{:.0}/{:.0} per s",
            r[0], r[1], r[2], r[3]
        );
        for v in 0..4 {
            rates[v].push(r[v]);
        }
    }
    if lats.iter().any(Latency::is_empty) {
        return Err("a single-item variant recorded no latency (too few --items?)".into());
    }
    let raw =
        Figure::plain("wal.raw_single_txn.per_s", median(std::mem::take(&mut rates[0])), "items/s");
    let mut figs = vec![raw.clone()];
    figs.extend(latency_figures("wal.raw_single_txn", &lats[0]));
    for (l, &tasks) in LEVELS.iter().enumerate() {
        let f = Figure::vs(
            format!("wal.append{tasks}.per_s"),
            median(std::mem::take(&mut rates[l + 1])),
            "items/s",
            &raw,
        );
        if tasks == 16 {
            figs.push(over("wal.append16.vs_single_txn", &f, &raw));
        }
        figs.push(f);
        figs.extend(latency_figures(&format!("wal.append{tasks}"), &lats[l + 1]));
    }

    for shape in [Shape::Deep, Shape::Flat] {
        let suffix = if shape == Shape::Deep { "" } else { ".flat" };
        let all = items(batches * BATCH, 0, shape, &mut rng)?;
        let rows = records(&all, 1)?;
        let (mut raw_rates, mut our_rates) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let (r, o) = batches_interleaved(&rt, &root, &warm, &all, &rows)?;
            raw_rates.push(r);
            our_rates.push(o);
        }
        println!("  batches{suffix}: raw {raw_rates:.0?}/s, ours {our_rates:.0?}/s");
        let raw_b =
            Figure::plain(format!("wal.raw_batch{suffix}.per_s"), median(raw_rates), "items/s");
        let ours_b = Figure::vs(
            format!("wal.batch_append{suffix}.per_s"),
            median(our_rates),
            "items/s",
            &raw_b,
        );
        figs.push(over(&format!("wal.batch_append{suffix}.vs_raw"), &ours_b, &raw_b));
        figs.push(raw_b);
        figs.push(ours_b);
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(figs)
}
