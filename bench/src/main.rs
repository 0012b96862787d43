//! `cargo xtask bench <suite> [--quick] [--items N]` lands here (built with the suite's feature).
//!
//! Each suite module measures its figures against raw baselines in the same run and returns
//! them; this binary writes `target/bench/<suite>.json` and prints a table.

mod report;

#[cfg(feature = "cuckoo")]
mod cuckoo;
#[cfg(feature = "engine")]
mod engine;
#[cfg(feature = "merkle")]
mod merkle;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sql")]
mod sql;
#[cfg(feature = "wal")]
mod wal;

use report::{Figure, Opts};

fn usage() -> ! {
    eprintln!(
        "usage: sync-engine-bench <merkle|cuckoo|wal|sql|redis|engine> [--quick] [--items N]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(suite) = args.next() else { usage() };
    let mut opts = Opts { quick: false, items: None };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--items" => {
                let n = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
                opts.items = Some(n);
            }
            _ => usage(),
        }
    }
    let result: Result<Vec<Figure>, String> = match suite.as_str() {
        #[cfg(feature = "merkle")]
        "merkle" => merkle::run(&opts),
        #[cfg(feature = "cuckoo")]
        "cuckoo" => cuckoo::run(&opts),
        #[cfg(feature = "wal")]
        "wal" => wal::run(&opts),
        #[cfg(feature = "sql")]
        "sql" => sql::run(&opts),
        #[cfg(feature = "redis")]
        "redis" => redis::run(&opts),
        #[cfg(feature = "engine")]
        "engine" => engine::run(&opts),
        other => {
            Err(format!("suite `{other}` is not compiled into this binary (enable its feature)"))
        }
    };
    match result {
        Ok(figures) => match report::write(&suite, &figures) {
            Ok(path) => println!("\nwrote {}", path.display()),
            Err(e) => {
                eprintln!("error: cannot write figures: {e}");
                std::process::exit(1)
            }
        },
        Err(e) => {
            eprintln!("error: bench {suite}: {e}");
            std::process::exit(1)
        }
    }
}
