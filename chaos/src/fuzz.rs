//! Fuzz targets over every decoder of untrusted input, as proptest runners with any number of
//! cases (the tests read `SYNC_ENGINE_FUZZ_CASES`, default small; `cargo xtask chaos` runs
//! 100,000 per target). A target fails when an input makes the code panic (proptest catches
//! the unwind and shrinks the input) or breaks a stated promise: errors must be clear (a
//! non-empty message naming what is wrong), valid inputs round-trip, damaged encodings are
//! refused, and no error message shows a URL's password.
//!
//! Targets: `ObjectId::new`; `Config::from_toml_str`; `Config::from_env_vars`;
//! `CuckooFilter::import`; `sync_engine_wal::record::{decode_record, decode_snapshot}`;
//! `NodeKey::decode` and `NodeValue::from_bytes`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use sync_engine::{Config, ObjectId, SyncItem};
use sync_engine_core::merkle::{Digest, NodeKey, NodeValue, NODE_VALUE_LEN};
use sync_engine_core::store::FilterSnapshot;
use sync_engine_cuckoo::{CuckooFilter, CHECKSUM_SEED};
use sync_engine_wal::record::{
    decode_record, decode_snapshot, encode_record, encode_snapshot, HEADER_LEN,
};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::summary::ScenarioResult;

/// The password planted in generated URLs; no error message may contain it.
pub const SECRET: &str = "pw-S3CR3T-9f2";

/// The result of one target.
#[derive(Debug, Clone)]
pub struct FuzzOutcome {
    /// Target name (`fuzz.<name>` in the summary).
    pub target: &'static str,
    /// Cases run (up to and including the first failing one, when a case failed).
    pub cases: u32,
    /// Wall time.
    pub seconds: f64,
    /// The minimal failing input and why, if any.
    pub failure: Option<String>,
}

impl FuzzOutcome {
    /// As a summary entry: trials = cases, lost = failing targets (0 or 1).
    pub fn to_result(&self) -> ScenarioResult {
        let mut r = ScenarioResult::new(format!("fuzz.{}", self.target));
        r.trials = u64::from(self.cases);
        r.lost = 0;
        r.seconds = crate::harness::r3(self.seconds);
        r.set("failures", u64::from(self.failure.is_some()));
        if let Some(f) = &self.failure {
            r.set("failure_detail", f.chars().take(2000).collect::<String>());
        }
        r
    }
}

/// Cases per target: `SYNC_ENGINE_FUZZ_CASES`, else `default`.
pub fn cases_from_env(default: u32) -> u32 {
    std::env::var("SYNC_ENGINE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A fuzz target: runs `cases` cases from `seed`.
pub type Target = fn(u32, u64) -> FuzzOutcome;

/// Every target: name and runner.
pub const TARGETS: [(&str, Target); 6] = [
    ("object_id", object_id),
    ("config_toml", config_toml),
    ("config_env", config_env),
    ("cuckoo_import", cuckoo_import),
    ("wal_record", wal_record),
    ("merkle_node", merkle_node),
];

/// Run every target with `cases` cases.
pub fn run_all(cases: u32, seed: u64) -> Vec<FuzzOutcome> {
    TARGETS.iter().map(|(_, f)| f(cases, seed)).collect()
}

fn go<S: Strategy>(
    target: &'static str,
    cases: u32,
    seed: u64,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> FuzzOutcome {
    let started = Instant::now();
    let config = PtConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..PtConfig::default()
    };
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    seed_bytes[8..16].copy_from_slice(&(target.len() as u64).to_le_bytes());
    for (i, b) in target.bytes().enumerate() {
        seed_bytes[16 + i % 16] ^= b;
    }
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes));
    // Count cases up to the first failure (shrinking runs more afterwards).
    let ran = AtomicU32::new(0);
    let first_failure = AtomicU32::new(0);
    let failure = runner
        .run(&strategy, |value| {
            let n = ran.fetch_add(1, Ordering::Relaxed) + 1;
            let r =
                std::panic::catch_unwind(AssertUnwindSafe(|| test(value))).unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(TestCaseError::fail(format!("panicked: {msg}")))
                });
            if r.is_err() {
                let _ = first_failure.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed);
            }
            r
        })
        .err()
        .map(|e| e.to_string());
    let cases = if failure.is_some() { first_failure.load(Ordering::Relaxed) } else { cases };
    FuzzOutcome { target, cases, seconds: started.elapsed().as_secs_f64(), failure }
}

/// Broken promises that are not crashes, counted per class over the whole run (so that one
/// known class does not stop the fuzzing of everything else), with the first example of each.
#[derive(Default)]
struct Findings(std::sync::Mutex<std::collections::BTreeMap<&'static str, (u64, String)>>);

impl Findings {
    fn note(&self, class: &'static str, example: impl FnOnce() -> String) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(class).or_insert_with(|| (0, example()));
        e.0 += 1;
    }

    /// Fold the findings into the outcome: a failure naming each class, its count and example.
    fn into_outcome(self, mut out: FuzzOutcome) -> FuzzOutcome {
        let m = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        if !m.is_empty() && out.failure.is_none() {
            let lines: Vec<String> = m
                .iter()
                .map(|(k, (n, ex))| format!("{k}: {n} of {} cases, e.g. {ex}", out.cases))
                .collect();
            out.failure = Some(lines.join("; "));
        }
        out
    }
}

fn shows_secret(msg: &str) -> bool {
    msg.contains(SECRET)
}

fn reference_id_rules(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.split('.').all(|seg| !seg.is_empty())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `ObjectId::new`: accepted exactly when the documented rules hold; accepted ids are stored
/// verbatim; errors name the rule at a valid position and stay short even for 10 kB inputs.
pub fn object_id(cases: u32, seed: u64) -> FuzzOutcome {
    let strategy = prop_oneof![
        any::<String>(),
        "[a-z0-9._%:{}*/\\\\'\"` \\t\\n\\x00;-]{0,40}",
        "(\\.\\./)?([a-z%_]{1,8}\\.){0,5}[a-z]{1,8}",
        prop::collection::vec(any::<char>(), 200..1100).prop_map(String::from_iter),
        (1usize..12_000).prop_map(|n| "x".repeat(n)),
    ];
    go("object_id", cases, seed, strategy, |s| {
        for max in [255usize, 1024] {
            let r = ObjectId::with_max_len(&s, max);
            prop_assert_eq!(r.is_ok(), reference_id_rules(&s, max), "{:?}", s);
            match r {
                Ok(id) => prop_assert_eq!(id.as_str(), s.as_str()),
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.starts_with("invalid object id"), "{}", msg);
                    prop_assert!(msg.len() < 600, "message of {} bytes", msg.len());
                    prop_assert!(e.position <= s.len() && s.is_char_boundary(e.position));
                }
            }
        }
        Ok(())
    })
}

fn url_with_secret() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "mysql", "postgres", "redis", "rediss", "sqlite", "http", "mariadb",
        ]),
        "[a-z]{0,6}",
        prop::sample::select(vec!["127.0.0.1:1", "[::1", "h:99999", "", "db.example"]),
        "[a-z/?=&%]{0,10}",
    )
        .prop_map(|(scheme, user, host, rest)| format!("{scheme}://{user}:{SECRET}@{host}/{rest}"))
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| toml::Value::Float(v).to_string()),
        any::<bool>().prop_map(|v| v.to_string()),
        "[a-z0-9 :/._-]{0,20}".prop_map(|s| toml::Value::String(s).to_string()),
        url_with_secret().prop_map(|s| toml::Value::String(s).to_string()),
        Just("[1, 2]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        Just("".to_owned()),
        "[\\x00-\\x7f]{0,8}",
    ]
}

/// `Config::from_toml_str`: never panics; a config it returns validates; an error names a
/// field and never shows a URL's password.
pub fn config_toml(cases: u32, seed: u64) -> FuzzOutcome {
    let fields = Config::field_names();
    let key = prop_oneof![prop::sample::select(fields.clone()), "[a-z_]{1,16}"];
    let doc = prop::collection::vec((key, toml_value()), 0..8).prop_map(move |kv| {
        let text = kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>();
        // One syntactically valid line setting a known field: an error must name a field.
        let sole = match kv.as_slice() {
            [(k, _)] if fields.contains(k) && text.parse::<toml::Table>().is_ok() => {
                Some(k.clone())
            }
            _ => None,
        };
        (text, sole)
    });
    let strategy = prop_oneof![
        doc,
        any::<String>().prop_map(|t| (t, None)),
        "[a-z_ =\"\\[\\]{}\\n0-9.]{0,60}".prop_map(|t| (t, None)),
    ];
    let findings = Findings::default();
    let out = go("config_toml", cases, seed, strategy, |(text, sole)| {
        match Config::from_toml_str(&text) {
            Ok(c) => prop_assert!(c.validate().is_ok()),
            Err(e) => {
                prop_assert!(!e.field.is_empty() && !e.message.is_empty(), "{:?}", e);
                prop_assert!(e.to_string().starts_with("config field"));
                if shows_secret(&e.to_string()) {
                    findings.note("error shows the password", || format!("{text:?} -> {e}"));
                }
                if sole.is_some() && !Config::field_names().contains(&e.field) {
                    findings.note("error names no field", || format!("{text:?} -> {e}"));
                }
            }
        }
        Ok(())
    });
    findings.into_outcome(out)
}

/// `Config::from_env_vars`: never panics; errors name the variable or field, never a password.
pub fn config_env(cases: u32, seed: u64) -> FuzzOutcome {
    let names: Vec<String> = Config::field_names()
        .into_iter()
        .map(|f| format!("SYNC_ENGINE_{}", f.to_ascii_uppercase()))
        .collect();
    let name = prop_oneof![prop::sample::select(names), "SYNC_ENGINE_[A-Z_]{1,12}", "[A-Z_]{1,10}"];
    let value = prop_oneof![
        any::<String>(),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        prop::sample::select(vec!["true", "no", "YES", " 1 ", ""]).prop_map(str::to_owned),
        url_with_secret(),
    ];
    let strategy = prop::collection::vec((name, value), 0..6);
    let findings = Findings::default();
    let out = go("config_env", cases, seed, strategy, |vars| {
        let shown = format!("{vars:?}");
        match Config::from_env_vars(vars) {
            Ok(c) => prop_assert!(c.validate().is_ok()),
            Err(e) => {
                prop_assert!(!e.field.is_empty() && !e.message.is_empty(), "{:?}", e);
                if shows_secret(&e.to_string()) {
                    findings.note("error shows the password", || format!("{shown} -> {e}"));
                }
            }
        }
        Ok(())
    });
    findings.into_outcome(out)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Append(Vec<u8>),
    Overwrite(prop::sample::Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..24))
            .prop_map(|(i, v)| Mutation::Overwrite(i, v)),
    ]
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    match m {
        Mutation::Flip(i, bit) => {
            let at = i.index(out.len());
            out[at] ^= 1 << bit;
        }
        Mutation::Truncate(i) => out.truncate(i.index(out.len())),
        Mutation::Append(v) => out.extend_from_slice(v),
        Mutation::Overwrite(i, v) => {
            let at = i.index(out.len());
            for (slot, b) in out[at..].iter_mut().zip(v) {
                *slot = *b;
            }
        }
    }
    out
}

/// `CuckooFilter::import`: never panics on any bytes; an intact export imports with every key
/// present (no false negative); any change to an export is refused unless the checksum is
/// recomputed, and even then it never panics.
pub fn cuckoo_import(cases: u32, seed: u64) -> FuzzOutcome {
    let valid =
        (prop::collection::vec(any::<u64>(), 0..300), 1usize..600, mutation(), any::<bool>());
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048).prop_map(|b| (b, None)),
        valid.prop_map(|(keys, cap, m, reseal)| {
            let f = CuckooFilter::with_capacity(cap);
            let mut inserted = Vec::new();
            for k in keys {
                if f.insert(&k.to_le_bytes()).is_ok() {
                    inserted.push(k);
                }
            }
            (f.export(), Some((inserted, m, reseal)))
        }),
    ];
    go("cuckoo_import", cases, seed, strategy, |(bytes, plan)| {
        let Some((keys, m, reseal)) = plan else {
            if let Err(e) = CuckooFilter::import(&bytes) {
                prop_assert!(!e.to_string().is_empty());
            }
            return Ok(());
        };
        let intact = CuckooFilter::import(&bytes);
        prop_assert!(intact.is_ok(), "an intact export was refused: {:?}", intact.err());
        if let Ok(f) = intact {
            for k in &keys {
                prop_assert!(f.contains(&k.to_le_bytes()), "false negative after import");
            }
        }
        let mut damaged = mutate(&bytes, &m);
        if reseal && damaged.len() >= 8 {
            let body = damaged.len() - 8;
            let sum = xxh3_64_with_seed(&damaged[..body], CHECKSUM_SEED);
            damaged[body..].copy_from_slice(&sum.to_le_bytes());
        }
        match CuckooFilter::import(&damaged) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(f) => {
                prop_assert!(reseal || damaged == bytes, "a changed export was accepted: {:?}", m);
                for k in &keys {
                    let _ = f.contains(&k.to_le_bytes());
                }
            }
        }
        Ok(())
    })
}

fn any_item() -> impl Strategy<Value = SyncItem> {
    (
        "[a-z%_:{}*]{1,8}(\\.[a-z0-9]{1,8}){0,3}",
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        prop::option::of("[a-z]{0,10}"),
    )
        .prop_map(|(id, v, c, tomb, state)| {
            let id =
                ObjectId::new(&id).unwrap_or_else(|_| ObjectId::new("fallback").expect("valid id"));
            let it = if tomb { SyncItem::tombstone(id, v) } else { SyncItem::new(id, v, c) };
            match state {
                Some(s) if !tomb => it.with_state(s),
                _ => it,
            }
        })
}

fn reseal(record: &mut [u8], key: u64) {
    if record.len() < HEADER_LEN {
        return;
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&key.to_le_bytes());
    h.update(&record[..6]);
    h.update(&record[HEADER_LEN..]);
    record[6..HEADER_LEN].copy_from_slice(&h.finalize().to_le_bytes());
}

/// WAL record decoding: arbitrary bytes never panic and give a clear error; a valid record
/// round-trips; any flipped bit or cut is refused; resealed garbage never panics.
pub fn wal_record(cases: u32, seed: u64) -> FuzzOutcome {
    let strategy = (
        any::<u64>(),
        any_item(),
        mutation(),
        prop::collection::vec(any::<u8>(), 0..400),
        any::<[u8; 32]>(),
    );
    go("wal_record", cases, seed, strategy, |(seq, item, m, junk, root)| {
        for bytes in [&junk[..], &junk[..junk.len().min(HEADER_LEN + 2)]] {
            if let Err(e) = decode_record(seq, bytes) {
                prop_assert!(!e.to_string().is_empty());
            }
            let _ = decode_snapshot(bytes);
        }
        let rec = encode_record(seq, &item).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = decode_record(seq, &rec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, &item);
        let damaged = mutate(&rec, &m);
        if damaged != rec {
            prop_assert!(decode_record(seq, &damaged).is_err(), "damaged record accepted: {:?}", m);
        }
        prop_assert!(
            decode_record(seq.wrapping_add(1), &rec).is_err(),
            "record accepted under another seq"
        );
        // Resealed: arbitrary payload behind a valid header and checksum.
        let mut forged = rec[..HEADER_LEN].to_vec();
        forged.extend_from_slice(&junk);
        reseal(&mut forged, seq);
        if let Ok(i) = decode_record(seq, &forged) {
            prop_assert!(ObjectId::new(i.id().as_str()).is_ok() || i.id().as_str().len() > 255);
        }
        let snap = FilterSnapshot {
            bytes: Bytes::from(junk.clone()),
            merkle_root: Digest(root),
            entries: seq,
            taken_at_ms: seq / 3,
        };
        let s = encode_snapshot(&snap).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decode_snapshot(&s).ok(), Some(snap));
        let sd = mutate(&s, &m);
        if sd != s {
            prop_assert!(decode_snapshot(&sd).is_err(), "damaged snapshot accepted");
        }
        Ok(())
    })
}

/// Merkle node decoding: `NodeKey::decode` never panics and accepts exactly canonical
/// encodings; `NodeValue::from_bytes` accepts exactly 40 bytes and round-trips.
pub fn merkle_node(cases: u32, seed: u64) -> FuzzOutcome {
    let key =
        ("([a-z0-9_%]{1,6}(\\.[a-z0-9_:]{1,6}){0,4})?", prop::collection::vec(0u8..16, 0..=64))
            .prop_map(|(path, bucket)| NodeKey { path, bucket });
    let strategy = (key, mutation(), prop::collection::vec(any::<u8>(), 0..120), any::<u32>());
    go("merkle_node", cases, seed, strategy, |(key, m, junk, len)| {
        let enc = key.encode().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(NodeKey::decode(&enc).ok(), Some(key.clone()));
        for bytes in [mutate(&enc, &m), junk.clone()] {
            match NodeKey::decode(&bytes) {
                Ok(k) => prop_assert_eq!(
                    k.encode().ok(),
                    Some(bytes.clone()),
                    "non-canonical key accepted"
                ),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        // A huge declared path length must be refused without allocating it.
        let mut huge = vec![1u8];
        huge.extend_from_slice(&len.to_be_bytes());
        huge.extend_from_slice(&junk);
        let _ = NodeKey::decode(&huge);
        match NodeValue::from_bytes(&junk) {
            Ok(v) => {
                prop_assert_eq!(junk.len(), NODE_VALUE_LEN);
                prop_assert_eq!(&v.to_bytes()[..], &junk[..]);
            }
            Err(e) => {
                prop_assert_ne!(junk.len(), NODE_VALUE_LEN);
                prop_assert!(e.to_string().contains(&junk.len().to_string()));
            }
        }
        Ok(())
    })
}
