//! Crash test: a child process appends with durable acks from 4 concurrent tasks and is
//! SIGKILLed at a seeded random moment, 24 times over the same file. After every kill the
//! file is reopened and every acknowledged entry must be there, in order, byte for byte,
//! except those a `remove_through` was asked to remove; nothing acknowledged as removed may
//! come back. Set `WAL_CRASH_SEED` to replay a run.

#[path = "support/crash_content.rs"]
mod crash_content;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sync_engine_core::store::Wal;
use sync_engine_wal::{SqliteWal, WalOptions};

const TRIALS: u64 = 24;

/// One acknowledged append: items (gen, task, first..first+n) at seqs last-n+1..=last.
#[derive(Debug, Clone, Copy)]
struct Ack {
    generation: u64,
    task: u64,
    first: u64,
    n: u64,
    last_seq: u64,
}

#[derive(Default)]
struct Log {
    acks: Vec<Ack>,
    max_rm_req: u64,
    max_rm_ack: u64,
}

fn parse(generation: u64, lines: &[String], log: &mut Log) {
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        match f.first().copied() {
            Some("ACK") => {
                if let (Some(task), Some(first), Some(n), Some(last_seq)) =
                    (num(1), num(2), num(3), num(4))
                {
                    log.acks.push(Ack { generation, task, first, n, last_seq });
                }
            }
            Some("RMREQ") => log.max_rm_req = log.max_rm_req.max(num(1).unwrap()),
            Some("RMACK") => log.max_rm_ack = log.max_rm_ack.max(num(1).unwrap()),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_an_acknowledged_entry() {
    let seed: u64 =
        std::env::var("WAL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0005);
    eprintln!("crash test seed {seed} (set WAL_CRASH_SEED to replay)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash/wal.db");
    let child_bin = env!("CARGO_BIN_EXE_wal-crash-child");
    let mut log = Log::default();
    let started = Instant::now();
    let mut total_checked = 0usize;
    for generation in 0..TRIALS {
        let mut child = Command::new(child_bin)
            .arg(&path)
            .arg(generation.to_string())
            .arg(rng.random::<u64>().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the crash child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            // Only complete lines count: a line cut by the kill has no newline and is dropped
            // by `lines()` only if empty, so check the terminator ourselves.
            let mut lines = Vec::new();
            let mut r = BufReader::new(stdout);
            let mut buf = String::new();
            while r.read_line(&mut buf).map(|n| n > 0).unwrap_or(false) {
                if buf.ends_with('\n') {
                    lines.push(buf.trim_end().to_string());
                }
                buf.clear();
            }
            lines
        });
        // Half the kills land anywhere from spawn (open and recovery included), half while
        // appending at full speed.
        let delay = if generation % 2 == 0 {
            rng.random_range(0..250u64)
        } else {
            rng.random_range(150..500u64)
        };
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL the child");
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, not finished");
        let lines = reader.join().unwrap();
        parse(generation, &lines, &mut log);

        // Reopen after the crash and check every acknowledged entry.
        let wal =
            SqliteWal::open(&path, WalOptions::default()).await.expect("reopen after SIGKILL");
        assert_eq!(wal.damaged_count(), 0, "a SIGKILL must not damage any entry");
        let entries = wal.peek(usize::MAX).await.unwrap();
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq), "peek out of order");
        let stats = wal.stats().await.unwrap();
        assert_eq!(stats.items, entries.len() as u64, "stats disagree with peek");
        let by_seq: BTreeMap<u64, &sync_engine_core::SyncItem> =
            entries.iter().map(|e| (e.seq, &e.item)).collect();
        for ack in &log.acks {
            for i in 0..ack.n {
                let seq = ack.last_seq - ack.n + 1 + i;
                if seq <= log.max_rm_req {
                    continue; // a removal was requested through it: it may be gone
                }
                let counter = ack.first + i;
                let item = by_seq.get(&seq).unwrap_or_else(|| {
                    panic!("generation {generation}: acknowledged entry seq {seq} ({ack:?}) lost after SIGKILL")
                });
                assert_eq!(
                    item.id().as_str(),
                    format!("crash.g{}.t{}.n{counter}", ack.generation, ack.task),
                    "seq {seq}"
                );
                assert_eq!(
                    &item.content()[..],
                    &crash_content::content(ack.generation, ack.task, counter)[..],
                    "seq {seq}"
                );
                assert_eq!(item.version(), counter + 1);
                total_checked += 1;
            }
        }
        if let Some(first) = entries.first() {
            assert!(
                first.seq > log.max_rm_ack,
                "entry {} came back after remove_through({}) was acknowledged",
                first.seq,
                log.max_rm_ack
            );
        }
        wal.close().await.unwrap();
    }
    eprintln!(
        "{TRIALS} SIGKILLs, {} acknowledged appends, {total_checked} entry checks, {:.1}s",
        log.acks.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        log.acks.len() > 100,
        "the child acknowledged too little to make the test meaningful: {}",
        log.acks.len()
    );
    assert!(log.max_rm_ack > 0, "no removal was ever acknowledged: the removal path went untested");
}
