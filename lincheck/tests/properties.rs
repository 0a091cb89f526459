//! Property tests: histories produced by a real sequential register, with random but
//! consistent overlapping intervals, are linearizable; corrupting one read breaks that.

use std::collections::HashMap;

use lincheck::{Budget, History, Op, Outcome, check};
use proptest::prelude::*;

/// One generated operation: client, key, kind, argument, and whether the client times out
/// (and if so, whether the operation took effect anyway).
#[derive(Debug, Clone)]
struct Spec {
    client: u64,
    key: u8,
    kind: u8,
    arg: u8,
    timeout: bool,
    applied_anyway: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..4u64,
        0..2u8,
        0..7u8,
        0..4u8,
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(|(client, key, kind, arg, timeout, applied_anyway)| Spec {
            client,
            key,
            kind,
            arg,
            timeout,
            applied_anyway,
        })
}

/// A tiny deterministic generator for interval placement.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Runs the specs against a HashMap register in order (the linearization), and records
/// each op with an interval around its linearization point. Returns the history and the
/// ids of the reads that completed.
fn generate(specs: &[Spec], seed: u64) -> (History, Vec<(usize, String)>) {
    let mut store: HashMap<String, String> = HashMap::new();
    let mut written: Vec<String> = Vec::new();
    let mut rng = Rng(seed | 1);
    // Linearization point of op i is 1000 * (i + 1). A client's op is invoked after its
    // previous op returned and returns before its next op is invoked, each a random way
    // between the neighbouring linearization points, so intervals of different clients
    // overlap at random.
    let n = specs.len();
    let points: Vec<u64> = (0..n).map(|i| 1000 * (i as u64 + 1)).collect();
    let mut last_return: HashMap<u64, u64> = HashMap::new();
    let mut next_point_of_client = vec![u64::MAX; n];
    let mut later: HashMap<u64, u64> = HashMap::new();
    for i in (0..n).rev() {
        if let Some(&p) = later.get(&specs[i].client) {
            next_point_of_client[i] = p;
        }
        later.insert(specs[i].client, points[i]);
    }
    // A client that timed out gets a fresh id, as Jepsen does: its op may still be running.
    let mut retired: HashMap<u64, u64> = HashMap::new();
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    let mut records = Vec::new();
    let mut reads = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let key = format!("k{}", s.key);
        let fresh = format!("v{i}");
        let pick = |written: &Vec<String>, arg: u8| -> String {
            if written.is_empty() {
                "v-none".to_owned()
            } else {
                written[(arg as usize * 7 + i) % written.len()].clone()
            }
        };
        let current = store.get(&key).cloned();
        // Condition values: half the time the current value, else some earlier value.
        let expected = match (s.arg % 2, &current) {
            (0, Some(c)) => c.clone(),
            _ => pick(&written, s.arg),
        };
        let (op, outcome, new_value): (Op, Outcome, Option<Option<String>>) = match s.kind {
            0 | 1 => (Op::get(&key), Outcome::Value(current.clone()), None),
            2 => (
                Op::set(&key, &fresh),
                Outcome::Ok,
                Some(Some(fresh.clone())),
            ),
            3 => {
                if current.as_deref() == Some(expected.as_str()) {
                    (
                        Op::cas(&key, &expected, &fresh),
                        Outcome::Ok,
                        Some(Some(fresh.clone())),
                    )
                } else {
                    (Op::cas(&key, &expected, &fresh), Outcome::Failed, None)
                }
            }
            4 => match current {
                Some(_) => (Op::delete(&key), Outcome::Ok, Some(None)),
                None => (Op::delete(&key), Outcome::Failed, None),
            },
            5 => match current {
                None => (
                    Op::create(&key, &fresh),
                    Outcome::Ok,
                    Some(Some(fresh.clone())),
                ),
                Some(_) => (Op::create(&key, &fresh), Outcome::Failed, None),
            },
            _ => {
                if current.as_deref() == Some(expected.as_str()) {
                    (Op::cad(&key, &expected), Outcome::Ok, Some(None))
                } else {
                    (Op::cad(&key, &expected), Outcome::Failed, None)
                }
            }
        };
        let takes_effect = !s.timeout || s.applied_anyway;
        if takes_effect && let Some(v) = new_value {
            match v {
                Some(v) => {
                    written.push(v.clone());
                    store.insert(key.clone(), v);
                }
                None => {
                    store.remove(&key);
                }
            }
        }
        let client = *retired.get(&s.client).unwrap_or(&s.client);
        let p = points[i];
        let lo = last_return.get(&s.client).copied().unwrap_or(0);
        let invoke = lo + 1 + rng.below(p - lo - 1);
        let hi = next_point_of_client[i].min(p + 3000);
        let ret = p + 1 + rng.below(hi - p - 1);
        last_return.insert(s.client, ret);
        let unknown = s.timeout && !matches!(op, Op::Get { .. });
        if unknown {
            retired.insert(s.client, 1000 + i as u64);
        }
        events.push((invoke, false, i));
        if !unknown {
            events.push((ret, true, i));
        }
        if let (Outcome::Value(_), false) = (&outcome, unknown) {
            reads.push(i);
        }
        records.push((client, op, if unknown { Outcome::Unknown } else { outcome }));
    }
    events.sort();
    let history = History::new();
    let mut ids = vec![None; n];
    for (t, is_ret, i) in events {
        let (client, op, outcome) = &records[i];
        if is_ret {
            history.ret_at(ids[i].unwrap(), outcome.clone(), t).unwrap();
        } else {
            ids[i] = Some(history.invoke_at(*client, op.clone(), t).unwrap());
        }
    }
    let reads = reads
        .into_iter()
        .map(|i| (ids[i].unwrap().index(), records[i].1.key().to_owned()))
        .collect();
    (history, reads)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn register_histories_are_linearizable(specs in prop::collection::vec(spec(), 1..40), seed in any::<u64>()) {
        let (history, _) = generate(&specs, seed);
        let verdict = check(&history, Budget::steps(2_000_000));
        prop_assert!(verdict.is_linearizable(), "{}", verdict);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        specs in prop::collection::vec(spec(), 1..40),
        seed in any::<u64>(),
        which in any::<prop::sample::Index>(),
    ) {
        // A final read by a client of its own guarantees at least one read to corrupt.
        let mut specs = specs;
        specs.push(Spec { client: 9, key: 0, kind: 0, arg: 0, timeout: false, applied_anyway: false });
        let (history, reads) = generate(&specs, seed);
        let (victim, _) = reads[which.index(reads.len())];
        let mut records = history.ops();
        let ret = records[victim].returned.as_mut().unwrap();
        ret.1 = Outcome::Value(Some("never-written".to_owned()));
        let report = lincheck::check_records(&records, Budget::steps(2_000_000));
        prop_assert!(report.verdict.is_violation(), "{}", report.verdict);
    }
}
