//! Checks history files and prints each verdict with its explanation.
//!
//! ```text
//! cargo run -p lincheck --example check_file -- lincheck/testdata/jepsen-etcd/etcd_000.log
//! ```
//!
//! Files starting with `# lincheck history v1` are read as `lincheck::text`, files ending
//! in `.log` as Jepsen etcd logs, others as Porcupine key/value EDN.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use lincheck::jepsen::{parse_etcd_log, parse_kv_edn};
use lincheck::{Budget, check_report};

fn main() -> ExitCode {
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for path in std::env::args().skip(1) {
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
        let history = match parsed {
            Ok(h) => h,
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::from(2);
            }
        };
        let report = check_report(&history, Budget::time(Duration::from_secs(60)));
        let steps: u64 = report.keys.iter().map(|k| k.steps).sum();
        let written = writeln!(
            out,
            "{path}: {} ops, {} keys, {steps} steps, {:?}: {}",
            history.len(),
            report.keys.len(),
            report.elapsed,
            report.verdict
        );
        if written.is_err() {
            // A closed pipe (`| head`) is the reader's choice, not a failure.
            return ExitCode::SUCCESS;
        }
        failed |= !report.verdict.is_linearizable();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
