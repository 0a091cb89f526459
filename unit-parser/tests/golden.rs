//! Golden edge cases: `testdata/edge/NAME.service` and what systemd 252's `config_parse()`
//! delivered for it (`NAME.json`, recorded with `tests/oracle/config_parse_oracle.c`).

use crate::util::{files_with_ext, ours, testdata};

#[test]
fn edge_cases_match_recorded_systemd_output() {
    let mut failures = Vec::new();
    let files = files_with_ext(&testdata("edge"), "service");
    assert!(files.len() > 50);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f.with_extension("json")).unwrap())
                .unwrap();
        let got = ours(&bytes);
        if got != expected {
            failures.push(format!("{}: ours {got} systemd {expected}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn edge_cases_round_trip_losslessly() {
    for f in files_with_ext(&testdata("edge"), "service") {
        let bytes = std::fs::read(&f).unwrap();
        if let Ok(doc) = unit_parser::UnitFile::parse_bytes(&bytes) {
            assert_eq!(doc.to_bytes(), bytes, "{}", f.display());
        }
    }
}
