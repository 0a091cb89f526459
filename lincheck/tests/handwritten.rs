//! Small hand-written histories whose verdicts are known.

use lincheck::{Budget, History, Op, Outcome, Verdict, check};

use crate::util::{absent, timed, val};

fn verdict(h: &History) -> Verdict {
    check(h, Budget::steps(100_000))
}

#[test]
fn empty_history_is_linearizable() {
    assert!(verdict(&History::new()).is_linearizable());
}

#[test]
fn sequential_history_is_linearizable() {
    let h = timed(&[
        (1, Op::get("k"), 0, Some(1), absent()),
        (1, Op::set("k", "a"), 2, Some(3), Outcome::Ok),
        (2, Op::get("k"), 4, Some(5), val("a")),
        (2, Op::cas("k", "a", "b"), 6, Some(7), Outcome::Ok),
        (1, Op::cas("k", "a", "c"), 8, Some(9), Outcome::Failed),
        (1, Op::create("k", "z"), 10, Some(11), Outcome::Failed),
        (2, Op::delete("k"), 12, Some(13), Outcome::Ok),
        (2, Op::delete("k"), 14, Some(15), Outcome::Failed),
        (1, Op::create("k", "z"), 16, Some(17), Outcome::Ok),
        (1, Op::cad("k", "y"), 18, Some(19), Outcome::Failed),
        (1, Op::cad("k", "z"), 20, Some(21), Outcome::Ok),
        (1, Op::get("k"), 22, Some(23), absent()),
    ]);
    let v = verdict(&h);
    assert!(v.is_linearizable(), "{v}");
}

#[test]
fn concurrent_reads_may_see_either_side_of_a_write() {
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::set("k", "b"), 2, Some(10), Outcome::Ok),
        (3, Op::get("k"), 3, Some(4), val("b")),
        // Reads after another read saw "b" must not go back to "a".
        (4, Op::get("k"), 5, Some(6), val("b")),
    ]);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn stale_read_is_caught() {
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (1, Op::set("k", "b"), 2, Some(3), Outcome::Ok),
        (2, Op::get("k"), 4, Some(5), val("a")),
    ]);
    let v = verdict(&h);
    let Verdict::NotLinearizable(vs) = &v else {
        panic!("expected a violation, got {v}");
    };
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0].key, "k");
    // The stale read and the write it missed are the core; the first write is needed too,
    // since without it "a" could never be read.
    assert!(vs[0].core_is_minimal);
    assert_eq!(vs[0].core.len(), 3, "{v}");
    assert_eq!(
        vs[0].blocked.as_ref().map(|b| b.op.clone()),
        Some(Op::get("k"))
    );
    assert!(v.to_string().contains("cannot be placed"), "{v}");
}

#[test]
fn lost_write_is_caught() {
    // A write was acknowledged, yet a later read sees the key as it was before it.
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::get("k"), 2, Some(3), absent()),
    ]);
    assert!(verdict(&h).is_violation());
}

#[test]
fn observed_then_unobserved_write_is_caught() {
    // Overlapping the write, one read sees it, and a later read (after that one finished)
    // does not: the write cannot be both before and after.
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(100), Outcome::Ok),
        (2, Op::get("k"), 10, Some(20), val("a")),
        (3, Op::get("k"), 30, Some(40), absent()),
    ]);
    let v = verdict(&h);
    let Verdict::NotLinearizable(vs) = &v else {
        panic!("expected a violation, got {v}");
    };
    // The core is the two reads: even a write free to happen at any time cannot be both
    // seen and then unseen. Without either read, the rest is fine.
    assert_eq!(vs[0].core.len(), 2, "{v}");
    assert!(vs[0].core.iter().all(|op| op.op == Op::get("k")), "{v}");
}

#[test]
fn unknown_write_may_take_effect_late_or_never() {
    // A timed-out write may appear long after the client gave up...
    let late = timed(&[
        (1, Op::set("k", "a"), 0, None, Outcome::Unknown),
        (2, Op::get("k"), 10, Some(11), absent()),
        (2, Op::get("k"), 20, Some(21), val("a")),
    ]);
    assert!(verdict(&late).is_linearizable());
    // ...or never.
    let never = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Unknown),
        (2, Op::get("k"), 10, Some(11), absent()),
    ]);
    assert!(verdict(&never).is_linearizable());
    // But not before it was invoked.
    let early = timed(&[
        (2, Op::get("k"), 0, Some(1), val("a")),
        (1, Op::set("k", "a"), 5, None, Outcome::Unknown),
    ]);
    assert!(verdict(&early).is_violation());
    // And only once: a value cannot come back after being overwritten.
    let twice = timed(&[
        (1, Op::set("k", "a"), 0, None, Outcome::Unknown),
        (2, Op::get("k"), 10, Some(11), val("a")),
        (2, Op::set("k", "b"), 12, Some(13), Outcome::Ok),
        (2, Op::get("k"), 14, Some(15), val("a")),
    ]);
    assert!(verdict(&twice).is_violation());
}

#[test]
fn not_applied_ops_are_ignored() {
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::NotApplied),
        (2, Op::get("k"), 10, Some(11), absent()),
    ]);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn cas_succeeding_twice_from_one_value_is_caught() {
    // Two CAS from "a" cannot both succeed unless something put "a" back in between.
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::cas("k", "a", "b"), 2, Some(10), Outcome::Ok),
        (3, Op::cas("k", "a", "c"), 3, Some(11), Outcome::Ok),
    ]);
    assert!(verdict(&h).is_violation());
    let restored = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::cas("k", "a", "b"), 2, Some(10), Outcome::Ok),
        (3, Op::cas("k", "a", "c"), 3, Some(11), Outcome::Ok),
        (4, Op::cas("k", "b", "a"), 4, Some(12), Outcome::Ok),
    ]);
    assert!(verdict(&restored).is_linearizable());
}

#[test]
fn cas_failing_when_it_must_succeed_is_caught() {
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::cas("k", "a", "b"), 2, Some(3), Outcome::Failed),
    ]);
    assert!(verdict(&h).is_violation());
    // With a concurrent overwrite the failure is explained.
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::cas("k", "a", "b"), 2, Some(5), Outcome::Failed),
        (3, Op::set("k", "x"), 3, Some(4), Outcome::Ok),
    ]);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn cas_on_absent_key_succeeding_is_caught() {
    let h = timed(&[(1, Op::cas("k", "a", "b"), 0, Some(1), Outcome::Ok)]);
    assert!(verdict(&h).is_violation());
}

#[test]
fn create_twice_is_caught() {
    let h = timed(&[
        (1, Op::create("k", "a"), 0, Some(5), Outcome::Ok),
        (2, Op::create("k", "b"), 1, Some(6), Outcome::Ok),
    ]);
    assert!(verdict(&h).is_violation());
    let h = timed(&[
        (1, Op::create("k", "a"), 0, Some(5), Outcome::Ok),
        (2, Op::create("k", "b"), 1, Some(6), Outcome::Failed),
        (3, Op::get("k"), 7, Some(8), val("a")),
    ]);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn delete_semantics() {
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (1, Op::delete("k"), 2, Some(3), Outcome::Ok),
        (2, Op::get("k"), 4, Some(5), val("a")),
    ]);
    assert!(verdict(&h).is_violation());
    let h = timed(&[(1, Op::delete("k"), 0, Some(1), Outcome::Ok)]);
    assert!(
        verdict(&h).is_violation(),
        "deleting a missing key cannot succeed"
    );
}

#[test]
fn keys_are_independent() {
    // A violation on one key is reported with that key only; the other key is fine.
    let h = timed(&[
        (1, Op::set("x", "1"), 0, Some(1), Outcome::Ok),
        (2, Op::get("y"), 0, Some(1), absent()),
        (2, Op::get("x"), 2, Some(3), absent()),
        (1, Op::set("y", "1"), 2, Some(3), Outcome::Ok),
        (1, Op::get("y"), 4, Some(5), val("1")),
    ]);
    let report = lincheck::check_report(&h, Budget::steps(10_000).with_all_keys(true));
    let Verdict::NotLinearizable(vs) = &report.verdict else {
        panic!("expected a violation, got {}", report.verdict);
    };
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0].key, "x");
    assert_eq!(report.keys.len(), 2);
    assert_eq!(report.keys[1].result, lincheck::KeyResult::Linearizable);
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // With a coarse clock, a read returning at the same instant a write is invoked may be
    // ordered either way.
    let h = timed(&[
        (1, Op::set("k", "a"), 5, Some(6), Outcome::Ok),
        (2, Op::get("k"), 0, Some(5), val("a")),
    ]);
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn budget_exhaustion_is_unknown_not_a_pass() {
    // Many concurrent writes and a final impossible read: the search must try every order
    // of the writes, which a tiny budget cannot cover.
    let mut ops = Vec::new();
    for c in 0..12u64 {
        ops.push((c, Op::set("k", format!("{c}")), 0, Some(100), Outcome::Ok));
    }
    ops.push((99, Op::get("k"), 200, Some(201), val("nope")));
    let h = timed(&ops);
    let v = check(&h, Budget::steps(50).with_shrink(false));
    assert!(v.is_unknown(), "{v}");
    let v = check(&h, Budget::steps(1_000_000).with_shrink(false));
    assert!(v.is_violation(), "{v}");
}

#[test]
fn logical_order_recording_from_threads() {
    use std::sync::Arc;
    let h = Arc::new(History::new());
    let threads: Vec<_> = (0..4u64)
        .map(|c| {
            let h = h.clone();
            std::thread::spawn(move || {
                let key = format!("k{c}");
                for i in 0..20 {
                    let id = h.invoke(c, Op::set(key.clone(), i.to_string()));
                    h.ret(id, Outcome::Ok).unwrap();
                    let id = h.invoke(c, Op::get(key.clone()));
                    h.ret(id, Outcome::Value(Some(i.to_string()))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(verdict(&h).is_linearizable());
}

#[test]
fn time_budget_ends_a_hard_search() {
    // 24 concurrent writes and an impossible final read: proving it impossible means
    // visiting every subset of the writes, far more than a fraction of a second allows.
    let mut ops = Vec::new();
    for c in 0..24u64 {
        ops.push((c, Op::set("k", format!("{c}")), 0, Some(100), Outcome::Ok));
    }
    ops.push((99, Op::get("k"), 200, Some(201), val("nope")));
    let h = timed(&ops);
    let start = std::time::Instant::now();
    let v = check(&h, Budget::time(std::time::Duration::from_millis(200)));
    assert!(v.is_unknown(), "{v}");
    // Generous: the point is that it ends, on a loaded 2-core machine too.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn records_round_trip_through_from_records() {
    let h = timed(&[
        (1, Op::set("k", "a"), 0, Some(1), Outcome::Ok),
        (2, Op::get("k"), 2, None, Outcome::Unknown),
    ]);
    let copy = History::from_records(h.ops()).unwrap();
    assert_eq!(copy.ops(), h.ops());
    let mut bad = h.ops();
    bad[0].returned = Some((0, Outcome::Value(None)));
    assert!(History::from_records(bad).is_err());
}

#[test]
fn malformed_records_give_a_verdict_not_a_panic() {
    let h = timed(&[
        (1, Op::set("k", "a"), 5, Some(6), Outcome::Ok),
        (2, Op::get("k"), 7, Some(8), val("a")),
    ]);
    let mut records = h.ops();
    // A return before its invocation, and a read completing with "ok".
    records[0].returned = Some((1, Outcome::Ok));
    records[1].returned = Some((8, Outcome::Ok));
    let report = lincheck::check_records(&records, Budget::steps(1_000));
    assert!(report.verdict.is_violation(), "{}", report.verdict);
    assert!(History::from_records(records).is_err());
}
