//! Human tables and `--json` output.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::Value;

/// Print rows of (key, value) as a two-column table, or as one JSON object.
pub fn print_pairs(json: bool, title: &str, rows: &[(String, Value)]) {
    if json {
        let obj: serde_json::Map<String, Value> = rows.iter().cloned().collect();
        println!("{}", Value::Object(obj));
        return;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![title, ""]);
    for (k, v) in rows {
        let shown = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        t.add_row(vec![k.clone(), shown]);
    }
    println!("{t}");
}

/// A value for people: UTF-8 text as is, anything else as hex.
pub fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("0x{}", hex::encode(b)),
    }
}

/// A key-value row.
pub fn row(k: &str, v: impl Into<Value>) -> (String, Value) {
    (k.to_owned(), v.into())
}
