//! Porcupine's Jepsen histories: every verdict must match the published one.

use std::collections::BTreeMap;

use lincheck::jepsen::{parse_etcd_log, parse_kv_edn};
use lincheck::{Budget, Verdict, check};

use crate::util::testdata;

fn verdicts() -> BTreeMap<String, bool> {
    let text = std::fs::read_to_string(testdata("jepsen-etcd").join("VERDICTS.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, verdict) = l.split_once(' ').unwrap();
            let ok = match verdict.trim() {
                "linearizable" => true,
                "NOT-linearizable" => false,
                other => panic!("unknown verdict {other:?}"),
            };
            (file.to_owned(), ok)
        })
        .collect()
}

#[test]
fn every_etcd_history_matches_its_verdict() {
    let verdicts = verdicts();
    assert_eq!(verdicts.len(), 102);
    let mut mismatches = Vec::new();
    for (file, expected) in &verdicts {
        let text = std::fs::read_to_string(testdata("jepsen-etcd").join(file)).unwrap();
        let history = parse_etcd_log(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!history.is_empty(), "{file} is empty");
        let verdict = check(&history, Budget::steps(2_000_000).with_shrink(false));
        let got = match verdict {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            other => panic!("{file}: {other}"),
        };
        if got != *expected {
            mismatches.push(file.clone());
        }
    }
    assert!(mismatches.is_empty(), "wrong verdicts: {mismatches:?}");
}

#[test]
fn the_empty_etcd_log_parses_to_an_empty_history() {
    // etcd_095.log has no verdict: that run's cluster never started.
    let text = std::fs::read_to_string(testdata("jepsen-etcd").join("etcd_095.log")).unwrap();
    assert!(parse_etcd_log(&text).unwrap().is_empty());
}

#[test]
fn an_etcd_violation_is_explained() {
    let text = std::fs::read_to_string(testdata("jepsen-etcd").join("etcd_000.log")).unwrap();
    let history = parse_etcd_log(&text).unwrap();
    let verdict = check(&history, Budget::steps(2_000_000));
    let Verdict::NotLinearizable(vs) = &verdict else {
        panic!("expected a violation, got {verdict}");
    };
    let v = &vs[0];
    assert_eq!(v.key, "r");
    assert!(v.blocked.is_some());
    assert!(!v.attempts.is_empty());
    // Shrinking leaves a handful of the history's ~90 operations, among them the blocked read.
    assert!(v.core.len() < 15, "{verdict}");
    assert!(v.core.contains(v.blocked.as_ref().unwrap()), "{verdict}");
}

#[test]
fn kv_histories_match_their_names() {
    for name in [
        "c01-ok", "c01-bad", "c10-ok", "c10-bad", "c50-ok", "c50-bad",
    ] {
        let text = std::fs::read_to_string(testdata("kv").join(format!("{name}.txt"))).unwrap();
        let history = parse_kv_edn(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let verdict = check(&history, Budget::steps(2_000_000).with_shrink(false));
        let want_ok = name.ends_with("-ok");
        assert_eq!(verdict.is_linearizable(), want_ok, "{name}: {verdict}");
        assert!(!verdict.is_unknown(), "{name}: {verdict}");
    }
}
