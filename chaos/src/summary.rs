//! The figures of a chaos run, written to `target/chaos/summary.json` as an array of
//! `{"scenario": "...", "trials": N, "acknowledged": N, "lost": 0, "seconds": S, ...}`
//! (format of `shared/BENCH.md`), with scenario-specific fields such as `drain_s`,
//! `repaired`, `found`.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Stable dotted name (`kill.mariadb`, `sql_outage.postgres`, `fuzz.object_id`, ...).
    pub scenario: String,
    /// Trials (kills, outages, damaged files, fuzz cases).
    pub trials: u64,
    /// Durable operations acknowledged.
    pub acknowledged: u64,
    /// Acknowledged operations not read back at their version (lost, regressed, resurrected
    /// or wrong) — the figure that must be 0; for fuzz targets, failing cases.
    pub lost: u64,
    /// Wall time of the scenario.
    pub seconds: f64,
    /// Scenario-specific figures.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ScenarioResult {
    /// A result with no extra fields yet.
    pub fn new(scenario: impl Into<String>) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.into(),
            trials: 0,
            acknowledged: 0,
            lost: 0,
            seconds: 0.0,
            extra: Map::new(),
        }
    }

    /// Add (or replace) an extra field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut ScenarioResult {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// An extra field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// True when the scenario met its promise: nothing lost and no failure recorded in the
    /// conventional extra fields (`failures`, `panics`, `wrong`, `read_errors`). A negative
    /// control (`"control": true`) passes when it did detect losses.
    pub fn passed(&self) -> bool {
        if self.get("control").and_then(Value::as_bool) == Some(true) {
            // A negative control passes when the harness caught the losses it provokes.
            return self.lost > 0;
        }
        let zero = |k: &str| self.get(k).and_then(Value::as_u64).unwrap_or(0) == 0;
        self.lost == 0 && zero("failures") && zero("panics") && zero("wrong") && zero("read_errors")
    }

    /// One line for the console.
    pub fn describe(&self) -> String {
        let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "{:<28} {} trials={} acknowledged={} lost={} seconds={:.1} {}",
            self.scenario,
            if self.passed() { "PASS" } else { "FAIL" },
            self.trials,
            self.acknowledged,
            self.lost,
            self.seconds,
            extra.join(" ")
        )
    }
}

/// Where the summary goes: `$CARGO_TARGET_DIR/chaos/summary.json`, else
/// `<workspace>/target/chaos/summary.json`.
pub fn default_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("target")
    });
    target.join("chaos").join("summary.json")
}

/// Write `results` as a JSON array to `path` (parent directories created).
pub fn write(path: &Path, results: &[ScenarioResult]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| format!("cannot encode the summary: {e}"))?;
    std::fs::write(path, json + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_documented_shape() {
        let mut r = ScenarioResult::new("kill.mariadb");
        r.trials = 30;
        r.acknowledged = 1234;
        r.seconds = 12.5;
        r.set("drain_s", 1.5);
        let v: Value = serde_json::to_value(vec![r.clone()]).unwrap();
        let o = &v[0];
        assert_eq!(o["scenario"], "kill.mariadb");
        assert_eq!(o["trials"], 30);
        assert_eq!(o["acknowledged"], 1234);
        assert_eq!(o["lost"], 0);
        assert_eq!(o["drain_s"], 1.5);
        assert!(r.passed());
        r.set("panics", 1);
        assert!(!r.passed());
    }
}
