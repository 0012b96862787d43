//! Test helper (feature `crash-child`): appends to a WAL from several concurrent tasks and
//! prints every acknowledgement, so that the crash test can SIGKILL it at a random moment and
//! check that everything acknowledged survived.
//!
//! Usage: `wal-crash-child <path> <generation> <seed>`. Output lines (each printed only after
//! the operation returned):
//! - `READY` once the log is open;
//! - `ACK <task> <first_counter> <n> <last_seq>`: items `crash.g<gen>.t<task>.n<first..first+n>`
//!   were appended in one call and hold sequence numbers `last_seq-n+1 ..= last_seq`;
//! - `RMREQ <through>` before and `RMACK <through>` after a `remove_through(through)`.
//!
//! The content of item (gen, task, counter) is `content` in tests/support/crash_content.rs.

use std::io::Write;
use std::sync::Arc;

use sync_engine_core::store::Wal;
use sync_engine_core::{ObjectId, SyncItem};
use sync_engine_wal::{SqliteWal, WalOptions};

const TASKS: u64 = 4;

#[path = "../../tests/support/crash_content.rs"]
mod crash_content;
use crash_content::content;

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A tiny deterministic generator (xorshift), enough for batch sizes.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(generation), Some(seed)) = (
        args.get(1),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
        args.get(3).and_then(|s| s.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: wal-crash-child <path> <generation> <seed>");
        std::process::exit(2);
    };
    let wal = match SqliteWal::open(path, WalOptions::default()).await {
        Ok(w) => Arc::new(w),
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    say("READY".into());
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let wal = wal.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (task + 1);
            let mut counter = 0u64;
            let mut appends = 0u64;
            loop {
                let n = 1 + next(&mut rng) % 8;
                let items: Vec<SyncItem> = (counter..counter + n)
                    .map(|c| {
                        let id = ObjectId::new(&format!("crash.g{generation}.t{task}.n{c}"))
                            .unwrap_or_else(|e| panic!("{e}"));
                        SyncItem::new(id, c + 1, content(generation, task, c))
                    })
                    .collect();
                match wal.append(&items).await {
                    Ok(last) => say(format!("ACK {task} {counter} {n} {last}")),
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        std::process::exit(1);
                    }
                }
                counter += n;
                appends += 1;
                if task == 0 && appends % 25 == 0 {
                    // Remove a prefix, as a drain would after the archive committed it.
                    let through = wal.peek(40).await.ok().and_then(|v| v.last().map(|e| e.seq));
                    if let Some(through) = through {
                        say(format!("RMREQ {through}"));
                        if wal.remove_through(through).await.is_ok() {
                            say(format!("RMACK {through}"));
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
}
