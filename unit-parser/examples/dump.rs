//! Prints what systemd delivers from a unit file.
//!
//! `cargo run -p unit-parser --example dump -- --json FILE` prints
//! `[[section, key, value], ...]` (continuations joined, whitespace trimmed, comments
//! dropped, every section in file order) or `{"error": "..."}` when systemd would refuse
//! the file. Without `--json` it prints a readable listing followed by the warnings.

use std::process::ExitCode;

use unit_parser::UnitView;

fn main() -> ExitCode {
    let mut json = false;
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        if arg == "--json" {
            json = true;
        } else {
            files.push(std::path::PathBuf::from(arg));
        }
    }
    let [file] = files.as_slice() else {
        eprintln!("usage: dump [--json] FILE");
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dump: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let view = UnitView::parse_bytes(&bytes).map_err(|e| e.with_path(file));
    if json {
        let out = match &view {
            Ok(v) => {
                let triples: Vec<[&str; 3]> = v
                    .entries()
                    .iter()
                    .map(|e| [&*e.section, &*e.key, &*e.value])
                    .collect();
                serde_json::json!(triples)
            }
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        println!("{out}");
        return ExitCode::SUCCESS;
    }
    match view {
        Ok(v) => {
            let mut section = None;
            for e in v.entries() {
                if section != Some(&e.section) {
                    println!("[{}]", e.section);
                    section = Some(&e.section);
                }
                println!("  {:>5}  {} = {:?}", e.line, e.key, e.value);
            }
            for w in v.warnings() {
                println!("warning: {}: {w}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
