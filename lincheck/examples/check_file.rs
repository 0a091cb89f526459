//! Checks history files and prints each verdict with its explanation.
//!
//! ```text
//! cargo run -p lincheck --example check_file -- lincheck/testdata/jepsen-etcd/etcd_000.log
//! cargo run --release -p lincheck --example check_file -- --quiet --no-shrink --repeat 5 FILES...
//! ```
//!
//! Files starting with `# lincheck history v1` are read as `lincheck::text`, files ending
//! in `.log` as Jepsen etcd logs, others as Porcupine key/value EDN. `--no-shrink` skips
//! shrinking violations, `--repeat N` checks every file N times (for timing with
//! `/usr/bin/time`), `--quiet` prints one line per file. Exit status 1 if any file is not
//! linearizable (or undecided), 2 on a bad file.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use lincheck::jepsen::{parse_etcd_log, parse_kv_edn};
use lincheck::{Budget, History, check_report};

fn main() -> ExitCode {
    let mut shrink = true;
    let mut quiet = false;
    let mut repeat = 1u32;
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-shrink" => shrink = false,
            "--quiet" => quiet = true,
            "--repeat" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => repeat = n,
                None => {
                    eprintln!("--repeat needs a number");
                    return ExitCode::from(2);
                }
            },
            _ => paths.push(arg),
        }
    }
    let mut histories: Vec<(String, History)> = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::from(2);
            }
        };
        let parsed = if text.starts_with(lincheck::text::HEADER) {
            lincheck::text::parse_text(&text)
        } else if path.ends_with(".log") {
            parse_etcd_log(&text)
        } else {
            parse_kv_edn(&text)
        };
        match parsed {
            Ok(h) => histories.push((path, h)),
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let budget = Budget::time(Duration::from_secs(60)).with_shrink(shrink);
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for round in 0..repeat {
        for (path, history) in &histories {
            let report = check_report(history, budget);
            failed |= !report.verdict.is_linearizable();
            if round + 1 < repeat {
                continue;
            }
            let steps: u64 = report.keys.iter().map(|k| k.steps).sum();
            let verdict = if quiet {
                match &report.verdict {
                    v if v.is_linearizable() => "linearizable".to_owned(),
                    v if v.is_violation() => "NOT linearizable".to_owned(),
                    v => v.to_string(),
                }
            } else {
                report.verdict.to_string()
            };
            let written = writeln!(
                out,
                "{path}: {} ops, {} keys, {steps} steps, {:?}: {verdict}",
                history.len(),
                report.keys.len(),
                report.elapsed,
            );
            if written.is_err() {
                // A closed pipe (`| head`) is the reader's choice, not a failure.
                return ExitCode::SUCCESS;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
