//! Scenario 5: cut or garble the WAL file at random offsets. A child acknowledges durable
//! writes while the (private) SQL server is down, so they all live in the WAL, and is
//! SIGKILLed; its WAL is the crash image. Each trial damages a copy of the image (the main
//! SQLite file or its journal, cut or overwritten at a random offset) and starts an engine
//! process over it with a fresh L3 (SQLite). The start must recover the valid prefix or fail
//! with a clear error naming the file; it must never panic, never drain a wrong item, and
//! every entry committed before the damage must reach L3. Entries the WAL quarantines as
//! damaged (its `damaged` table) are counted, not silently lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sync_engine::store::{ArchiveStore, Wal};
use sync_engine::{ObjectId, SecretUrl, SyncItem};
use sync_engine_sql::{SqlOptions, SqlStore};
use sync_engine_wal::{SqliteWal, WalOptions};

use crate::harness::{drain, pump, r3, Env, Harness, Tally};
use crate::ledger::Ledger;
use crate::protocol::Line;
use crate::servers::PrivateSql;
use crate::summary::ScenarioResult;
use crate::walfile::{Damage, Image, Journal};

/// How one engine start over a damaged WAL ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Started,
    Refused { kind: String, msg: String },
    Panicked(String),
    Hung,
}

/// WAL entries (seq, item) of a WAL file and its quarantined seq ranges.
async fn wal_entries(path: &Path) -> Result<(Vec<(u64, SyncItem)>, Vec<(i64, i64)>), String> {
    let wal = SqliteWal::open(path, WalOptions::default())
        .await
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let entries = wal.peek(usize::MAX).await.map_err(|e| format!("peek: {e}"))?;
    let damaged = wal.damaged().await.map_err(|e| format!("damaged: {e}"))?;
    wal.close().await.map_err(|e| format!("close: {e}"))?;
    Ok((
        entries.into_iter().map(|e| (e.seq, e.item)).collect(),
        damaged.iter().map(|d| (d.first_seq, d.last_seq)).collect(),
    ))
}

/// Per id, the entry with the greatest stamp.
fn newest(entries: &[(u64, SyncItem)]) -> HashMap<String, SyncItem> {
    let mut out: HashMap<String, SyncItem> = HashMap::new();
    for (_, item) in entries {
        let id = item.id().to_string();
        if out.get(&id).is_none_or(|cur| item.stamp() > cur.stamp()) {
            out.insert(id, item.clone());
        }
    }
    out
}

async fn read_l3(url: &str, ids: &[String]) -> Result<HashMap<String, Option<SyncItem>>, String> {
    let store = SqlStore::connect(&SecretUrl::new(url), SqlOptions::default())
        .await
        .map_err(|e| format!("L3 {url}: {e}"))?;
    let oids: Vec<ObjectId> = ids
        .iter()
        .map(|s| ObjectId::new(s).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut out = HashMap::new();
    for chunk in oids.chunks(500) {
        let got = store.get_many(chunk).await.map_err(|e| format!("L3 read: {e}"))?;
        for (id, item) in chunk.iter().zip(got) {
            out.insert(id.to_string(), item);
        }
    }
    store.close().await;
    Ok(out)
}

/// Start an engine process (`chaos-node start`) over `wal` with a fresh SQLite L3 at `l3`.
fn start_over(h: &Harness, dir: &Path, wal: &Path, l3: &str, run: u32) -> Result<Outcome, String> {
    let env = Env::new(l3, None, wal);
    let mut node = h.spawn(dir, &env, run, &["start".to_owned()])?;
    let mut ledger = Ledger::new();
    let mut tally = Tally::default();
    let done =
        pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(60), |e, _| {
            matches!(e.line, Line::Stopped(_) | Line::Fatal { .. })
        });
    let status = node.wait(Duration::from_secs(20));
    drain(&node, &mut ledger, &mut tally);
    let stderr = node.stderr_text();
    if stderr.contains("panicked") || status.is_some_and(|s| s.code() == Some(101)) {
        let line = stderr.lines().find(|l| l.contains("panicked")).unwrap_or("").to_owned();
        return Ok(Outcome::Panicked(line));
    }
    match (done.map(|e| e.line), status) {
        (Some(Line::Fatal { kind, msg }), _) => Ok(Outcome::Refused { kind, msg }),
        (Some(Line::Stopped(_)), Some(_)) => Ok(Outcome::Started),
        _ => Ok(Outcome::Hung),
    }
}

/// Build the crash image: ingest with the SQL server down, SIGKILL. Returns the WAL path and
/// the ledger of acknowledged operations.
fn crash_image(
    h: &Harness,
    sql: &mut PrivateSql,
    dir: &Path,
    seed: u64,
) -> Result<(PathBuf, Ledger, u64), String> {
    let db = h.unique("waldamage");
    let sql_url = sql.create_database(&db)?;
    let wal = dir.join("crash").join("wal.db");
    let env = Env::new(&sql_url, None, &wal);
    let target: u64 = h.pick(400, 1500);
    let args: Vec<String> = [
        "ingest",
        "--run",
        "1",
        "--seed",
        &seed.to_string(),
        "--tag",
        "w",
        "--ids",
        "600",
        "--workers",
        "8",
        "--delete-pct",
        "15",
        "--wait-go",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = h.spawn(dir, &env, 1, &args)?;
    let mut ledger = Ledger::new();
    let mut tally = Tally::default();
    pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(60), |e, _| {
        matches!(e.line, Line::Ready { .. } | Line::Fatal { .. })
    });
    if tally.ready_at.is_none() {
        return Err(format!("wal_damage: the engine did not start: {:?}", tally.fatal));
    }
    sql.crash_stop()?;
    node.send("go")?;
    pump(&node, &mut ledger, &mut tally, Instant::now() + Duration::from_secs(120), |_, t| {
        t.acks >= target
    });
    node.kill();
    drain(&node, &mut ledger, &mut tally);
    sql.start_again()?;
    Ok((wal, ledger, tally.acks))
}

/// Run the scenario (the SQL server is stopped while the image is built, then restarted).
pub fn run(h: &Harness, sql: &mut PrivateSql) -> Result<ScenarioResult, String> {
    let started = Instant::now();
    let name = "wal_damage";
    let dir = h.dir(name)?;
    let seed = h.seed_for(name);
    let (wal, mut ledger, acks) = crash_image(h, sql, &dir, seed)?;
    let image = Image::read(&wal)?;
    let journal = Journal::parse(&image.journal);
    let ids = ledger.ids();
    let mut failures: Vec<String> = Vec::new();

    // Baseline: the undamaged image drains everything acknowledged.
    let base = dir.join("baseline");
    image.write_prefix(&base.join("wal.db"), None)?;
    let base_l3 = format!("sqlite://{}", base.join("archive.db").display());
    let outcome = start_over(h, &base, &base.join("wal.db"), &base_l3, 1000)?;
    if outcome != Outcome::Started {
        failures.push(format!("the undamaged crash image did not start: {outcome:?}"));
    }
    let seen = h.rt.block_on(read_l3(&base_l3, &ids))?;
    let baseline = ledger.evaluate(&seen);
    if baseline.violations() > 0 {
        failures.push(format!("undamaged image, seed {seed}: {}", baseline.describe()));
    }
    ledger.settle(&seen);

    // Entries of the image, and of clean journal prefixes (the oracle of journal damage).
    let full_copy = dir.join("image-copy").join("wal.db");
    image.write_prefix(&full_copy, None)?;
    let (all_entries, _) = h.rt.block_on(wal_entries(&full_copy))?;
    let all_ids: Vec<String> = {
        let mut v: Vec<String> = all_entries.iter().map(|(_, i)| i.id().to_string()).collect();
        v.sort();
        v.dedup();
        v
    };
    let mut oracle_cache: HashMap<u64, HashMap<String, SyncItem>> = HashMap::new();
    let all_newest = newest(&all_entries);
    let mut trial_log: Vec<String> = Vec::new();

    let trials: usize = h.pick(8, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xda4a_6e00);
    let (mut started_n, mut refused, mut panics, mut hung) = (0u64, 0u64, 0u64, 0u64);
    let (mut silent_lost, mut wrong, mut quarantined, mut unclear) = (0u64, 0u64, 0u64, 0u64);
    let mut kinds: HashMap<&'static str, u64> = HashMap::new();
    for i in 0..trials {
        let damage =
            Damage::random(i, image.main.len() as u64, image.journal.len() as u64, &mut rng);
        *kinds.entry(damage.kind()).or_default() += 1;
        let tdir = dir.join(format!("trial-{i}"));
        let twal = tdir.join("wal.db");
        image.write_damaged(&twal, damage, &mut rng)?;
        let l3_url = format!("sqlite://{}", tdir.join("archive.db").display());
        let outcome = start_over(h, &tdir, &twal, &l3_url, 2000 + i as u32)?;
        let l3 = h.rt.block_on(read_l3(&l3_url, &all_ids))?;
        // Never a wrong item: whatever reached L3 is byte-identical to an image entry.
        for (id, item) in &l3 {
            if let Some(item) = item {
                let known = all_entries.iter().any(|(_, e)| {
                    e.id().as_str() == id
                        && e.stamp() == item.stamp()
                        && e.content() == item.content()
                });
                if !known {
                    wrong += 1;
                    failures.push(format!(
                        "trial {i} ({damage:?}): L3 holds a value for {id} that no WAL entry had"
                    ));
                }
            }
        }
        // What must have survived.
        let must: HashMap<String, SyncItem> = match (&outcome, damage.survival_limit(&journal)) {
            (Outcome::Started, Some(limit)) => {
                if let Some(o) = oracle_cache.get(&limit) {
                    o.clone()
                } else {
                    let odir = dir.join(format!("oracle-{limit}")).join("wal.db");
                    image.write_prefix(&odir, Some(limit))?;
                    let (entries, _) = h.rt.block_on(wal_entries(&odir))?;
                    let o = newest(&entries);
                    oracle_cache.insert(limit, o.clone());
                    o
                }
            }
            (Outcome::Started, None) => {
                // Main-file damage that still opened: everything not quarantined.
                let (_, damaged) = h.rt.block_on(wal_entries(&twal)).unwrap_or_default();
                let gone =
                    |seq: u64| damaged.iter().any(|&(a, b)| a <= seq as i64 && seq as i64 <= b);
                let q = all_entries.iter().filter(|(s, _)| gone(*s)).count() as u64;
                quarantined += q;
                newest(&all_entries.iter().filter(|(s, _)| !gone(*s)).cloned().collect::<Vec<_>>())
            }
            _ => HashMap::new(),
        };
        for (id, want) in &must {
            let got = l3.get(id).cloned().flatten();
            let later_delete = all_entries.iter().any(|(_, e)| {
                e.id().as_str() == id && e.is_tombstone() && e.stamp() > want.stamp()
            });
            let ok = match (&got, want.is_tombstone()) {
                (None, true) => true,
                (None, false) => later_delete,
                (Some(g), _) => g.stamp() >= want.stamp(),
            };
            if !ok {
                silent_lost += 1;
                if silent_lost <= 5 {
                    failures.push(format!(
                        "trial {i} ({damage:?}): {id} committed before the damage at v{} but L3 has {:?}",
                        want.version(),
                        got.map(|g| g.version())
                    ));
                }
            }
        }
        let kept = all_newest
            .iter()
            .filter(|(id, want)| {
                let got = l3.get(*id).cloned().flatten();
                match got {
                    None => want.is_tombstone(),
                    Some(g) => g.stamp() == want.stamp(),
                }
            })
            .count();
        let short = match &outcome {
            Outcome::Started => "started".to_owned(),
            Outcome::Refused { kind, .. } => format!("refused ({kind})"),
            Outcome::Panicked(_) => "PANIC".to_owned(),
            Outcome::Hung => "hung".to_owned(),
        };
        trial_log.push(format!(
            "{damage:?}: {short}; must keep {} ids, newest kept for {kept}/{} ids",
            must.len(),
            all_newest.len()
        ));
        match outcome {
            Outcome::Started => started_n += 1,
            Outcome::Refused { kind, msg } => {
                refused += 1;
                let named = msg.contains("wal.db");
                if !named || msg.trim().is_empty() {
                    unclear += 1;
                    failures.push(format!(
                        "trial {i} ({damage:?}): unclear start error ({kind}): {msg}"
                    ));
                }
            }
            Outcome::Panicked(line) => {
                panics += 1;
                failures.push(format!("trial {i} ({damage:?}): PANIC {line}"));
            }
            Outcome::Hung => {
                hung += 1;
                failures.push(format!(
                    "trial {i} ({damage:?}): the engine neither started nor failed within 60 s"
                ));
            }
        }
    }
    let mut res = ScenarioResult::new(name);
    res.trials = trials as u64;
    res.acknowledged = acks;
    res.lost = baseline.violations() as u64 + silent_lost + wrong;
    res.seconds = r3(started.elapsed().as_secs_f64());
    let mut kinds: Vec<(&str, u64)> = kinds.into_iter().collect();
    kinds.sort();
    res.set("seed", seed)
        .set("wal_entries", all_entries.len() as u64)
        .set("journal_commits", journal.commits.len() as u64)
        .set("damage_kinds", kinds.iter().map(|(k, n)| format!("{k}:{n}")).collect::<Vec<_>>())
        .set("started", started_n)
        .set("refused_clear_error", refused - unclear)
        .set("refused_unclear_error", unclear)
        .set("quarantined_entries", quarantined)
        .set("silently_lost", silent_lost)
        .set("wrong", wrong)
        .set("panics", panics)
        .set("hung", hung)
        .set("failures", failures.len() as u64)
        .set("trial_log", trial_log);
    if !failures.is_empty() {
        res.set("failure_detail", failures.into_iter().take(12).collect::<Vec<_>>());
    }
    Ok(res)
}
