//! Shared helpers: our output in the oracle's JSON shape, and the systemd oracle itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use unit_parser::{ParseError, UnitView};

/// The `strerror()` text systemd's `config_parse()` fails with for each of our errors.
pub(crate) fn errno_text(e: &ParseError) -> &'static str {
    match e {
        ParseError::LineTooLong { .. } | ParseError::ContinuationTooLong { .. } => {
            "No buffer space available"
        }
        ParseError::InvalidUtf8 { .. } => "Invalid argument",
        ParseError::InvalidSectionHeader { .. } | ParseError::BadSectionName { .. } => {
            "Bad message"
        }
        _ => "other",
    }
}

/// What we deliver for `bytes`, shaped like the oracle's output: `[[s, k, v], ...]` or
/// `{"error": strerror}`.
pub(crate) fn ours(bytes: &[u8]) -> Value {
    match UnitView::parse_bytes(bytes) {
        Ok(v) => {
            let t: Vec<[&str; 3]> = v
                .entries()
                .iter()
                .map(|e| [&*e.section, &*e.key, &*e.value])
                .collect();
            json!(t)
        }
        Err(e) => json!({ "error": errno_text(&e) }),
    }
}

pub(crate) fn testdata(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata")
        .join(sub)
}

/// Every file in a testdata folder with the given extension, sorted.
pub(crate) fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn find_shared_lib() -> Option<PathBuf> {
    let dirs = [
        "/usr/lib/x86_64-linux-gnu/systemd",
        "/usr/lib/aarch64-linux-gnu/systemd",
        "/usr/lib/systemd",
        "/lib/systemd",
        "/usr/lib64/systemd",
    ];
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("libsystemd-shared-") && name.ends_with(".so") {
                return Some(e.path());
            }
        }
    }
    None
}

/// Builds (once) the C oracle that runs systemd's own `config_parse()`; `Err` says why
/// it is not available.
pub(crate) fn systemd_oracle() -> Result<PathBuf, String> {
    static ORACLE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ORACLE
        .get_or_init(|| {
            let lib = find_shared_lib()
                .ok_or("libsystemd-shared-*.so not found (install the `systemd` package)")?;
            let dir = lib.parent().unwrap();
            let src =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/config_parse_oracle.c");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config_parse_oracle");
            for cc in ["cc", "gcc", "clang"] {
                let st = Command::new(cc)
                    .arg("-o")
                    .arg(&out)
                    .arg(&src)
                    .arg(format!("-L{}", dir.display()))
                    .arg(format!("-l:{}", lib.file_name().unwrap().to_string_lossy()))
                    .arg(format!("-Wl,-rpath,{}", dir.display()))
                    .status();
                if st.is_ok_and(|s| s.success()) {
                    return Ok(out);
                }
            }
            Err("no C compiler could build the oracle (tried cc, gcc, clang)".to_owned())
        })
        .clone()
}

/// Runs the oracle over `files` (batched), one JSON value per file.
pub(crate) fn run_oracle(oracle: &Path, files: &[PathBuf]) -> Vec<Value> {
    let mut all = Vec::with_capacity(files.len());
    for chunk in files.chunks(200) {
        let out = Command::new(oracle)
            .args(chunk)
            .output()
            .expect("run oracle");
        assert!(
            out.status.success(),
            "oracle failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("oracle output is UTF-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("oracle JSON"))
            .collect();
        assert_eq!(lines.len(), chunk.len(), "one oracle line per file");
        all.extend(lines);
    }
    all
}
