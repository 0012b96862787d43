//! The README's configuration table is generated from `Config`'s doc comments and defaults; this
//! test fails (printing the table to paste) whenever the two drift apart.

use std::path::Path;

use sync_engine::Config;

/// The table as it must appear in the README.
fn expected_table() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let src = std::fs::read_to_string(root.join("engine-core/src/config.rs")).expect("config.rs");
    let body = &src[src.find("pub struct Config {").expect("struct")..];
    let body = &body[..body.find("\n}\n").expect("end of struct")];
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let mut out = String::from(
        "| option (TOML key; env `SYNC_ENGINE_<KEY>`) | default | meaning |\n|---|---|---|\n",
    );
    let mut doc = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(d) = line.strip_prefix("///") {
            doc.push(d.trim().to_owned());
        } else if let Some(field) = line.strip_prefix("pub ").and_then(|l| l.split(':').next()) {
            let default =
                defaults.get(field).map(|v| v.to_string()).unwrap_or_else(|| "none".into());
            out.push_str(&format!("| `{field}` | `{default}` | {} |\n", doc.join(" ")));
            doc.clear();
        }
    }
    out
}

#[test]
fn readme_configuration_table_matches_config() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let table = expected_table();
    assert!(
        readme.contains(&table),
        "README.md's configuration table is out of date; replace it with:\n\n{table}"
    );
    assert!(table.lines().count() > Config::field_names().len(), "every field has a row");
}
