//! The subcommands (everything but the demo).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use sync_engine::store::{KeyScan, MerkleExt, WalExt};
use sync_engine::{Config, Error, ErrorKind, Node, SecretUrl, SubmitOptions};

use crate::cli::{Cli, Command, WalAction};
use crate::output::{print_pairs, row, show_bytes};

/// Configuration from defaults, the file, the environment, then flags; validated.
pub fn config(cli: &Cli) -> sync_engine::Result<Config> {
    let mut c = Config::load(cli.config.as_deref())?;
    if let Some(sql) = &cli.sql {
        c.sql_url = SecretUrl::new(sql.clone());
    }
    if let Some(redis) = &cli.redis {
        c.redis_url = Some(SecretUrl::new(redis.clone()));
    }
    if let Some(wal) = &cli.wal {
        c.wal_path = wal.clone();
    }
    c.validate()?;
    Ok(c)
}

fn spinner(msg: &'static str, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// Run one command.
pub async fn run(cli: Cli) -> sync_engine::Result<()> {
    let cfg = config(&cli)?;
    if let Command::Demo { items, payload } = cli.command {
        return crate::demo::run(cfg, items, payload, cli.json).await;
    }
    let json = cli.json;
    let node = sync_engine::connect(cfg).await?;
    let result = command(&node, cli.command, json).await;
    let stopped = node.engine.shutdown().await;
    result.and(stopped)
}

async fn command(node: &Node, command: Command, json: bool) -> sync_engine::Result<()> {
    let engine = &node.engine;
    match command {
        Command::Demo { .. } => Ok(()),
        Command::Put { id, value, file, version } => {
            let bytes = match (value, file) {
                (Some(v), None) => v.into_bytes(),
                (None, Some(path)) => std::fs::read(&path).map_err(|e| {
                    Error::new(ErrorKind::Io, format!("cannot read {}: {e}", path.display()))
                })?,
                _ => return Err(Error::invalid("put needs exactly one of VALUE or --file")),
            };
            let opts = SubmitOptions { version, durable: true, ..Default::default() };
            let v = engine.submit_with(&id, bytes, opts).await?;
            print_pairs(json, "put", &[row("id", id), row("version", v)]);
            Ok(())
        }
        Command::Get { id } => match engine.get(&id).await? {
            Some(item) => {
                print_pairs(
                    json,
                    "get",
                    &[
                        row("id", id),
                        row("version", item.version()),
                        row("bytes", item.content().len()),
                        row("content_hash", item.content_hash().to_hex()),
                        row("value", show_bytes(item.content())),
                    ],
                );
                Ok(())
            }
            None => Err(Error::new(ErrorKind::InvalidInput, format!("`{id}` not found"))
                .with_operation("get")),
        },
        Command::Delete { id } => {
            let v = engine.delete_with(&id, SubmitOptions::durable()).await?;
            print_pairs(json, "delete", &[row("id", id), row("tombstone_version", v)]);
            Ok(())
        }
        Command::Scan { prefix, limit } => {
            let ids = node.backends.l3.scan_keys(&KeyScan::prefix(prefix, limit.max(1))).await?;
            if json {
                let list: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
                println!("{}", serde_json::json!({ "ids": list }));
            } else {
                for id in &ids {
                    println!("{id}");
                }
            }
            Ok(())
        }
        Command::Verify { .. } | Command::Repair { .. } if node.backends.l2.is_none() => {
            Err(Error::new(
                ErrorKind::Unsupported,
                "verify and repair compare L2 with L3: give --redis URL",
            ))
        }
        Command::Verify { prefix, deep } => {
            let pb = spinner("verifying", json);
            let r =
                if deep { engine.verify_deep(&prefix).await } else { engine.verify(&prefix).await };
            pb.finish_and_clear();
            let r = r?;
            print_pairs(json, "verify", &report_rows(&r));
            Ok(())
        }
        Command::Repair { prefix, deep } => {
            let pb = spinner("repairing", json);
            let r =
                if deep { engine.repair_deep(&prefix).await } else { engine.repair(&prefix).await };
            pb.finish_and_clear();
            let r = r?;
            print_pairs(json, "repair", &report_rows(&r));
            Ok(())
        }
        Command::Wal { action: WalAction::Status } => {
            let s = node.backends.wal.stats().await?;
            print_pairs(
                json,
                "wal",
                &[row("pending_items", s.items), row("pending_bytes", s.bytes)],
            );
            Ok(())
        }
        Command::Wal { action: WalAction::Drain } => {
            let pb = spinner("draining", json);
            let r = node.backends.wal.drain_to(node.backends.l3.as_ref(), 1000).await;
            pb.finish_and_clear();
            let r = r?;
            print_pairs(json, "wal drain", &[row("drained", r.drained), row("batches", r.batches)]);
            Ok(())
        }
        Command::Stats => {
            let h = engine.health();
            let l3_count = node.backends.l3.count("").await?;
            let l3_root = node.backends.l3.root_hash().await?;
            let mut rows = vec![
                row("state", format!("{:?}", h.state)),
                row("l3_backend", h.l3.backend.clone()),
                row("l3_items", l3_count),
                row("l3_root", l3_root.to_hex()),
                row("wal_depth", h.wal_depth),
                row("filter", h.filter.to_string()),
                row("filter_ids", h.filter_len),
                row("l1_bytes", h.l1_bytes),
                row("l1_capacity", h.l1_capacity),
            ];
            if let Some(l2) = &node.backends.l2 {
                rows.push(row("l2_root", l2.root_hash().await?.to_hex()));
            }
            print_pairs(json, "stats", &rows);
            Ok(())
        }
    }
}

fn report_rows(r: &sync_engine::RepairReport) -> Vec<(String, serde_json::Value)> {
    vec![
        row("prefix", r.prefix.clone()),
        row("in_sync", r.in_sync),
        row("nodes_compared", r.nodes_compared),
        row("differing", r.differing as u64),
        row("repaired", r.repaired as u64),
        row("removed", r.removed as u64),
        row("deep", r.deep),
        row("audited", r.audited),
        row("corrupt", r.corrupt as u64),
        row("ms", r.duration.as_secs_f64() * 1000.0),
    ]
}
