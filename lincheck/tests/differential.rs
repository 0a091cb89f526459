//! Differential test: on small random histories (linearizable or not), the checker agrees
//! with a brute-force search over every order of every allowed subset of operations.

use lincheck::{Budget, History, Op, OpId, OpRecord, Outcome, Verdict, check};
use proptest::prelude::*;

/// Applies `op` with outcome `out` to `state` in an independent, naive model. `None` when
/// the outcome is impossible there.
fn step(state: &Option<String>, op: &Op, out: &Outcome) -> Option<Option<String>> {
    let applied = !matches!(out, Outcome::Failed);
    let (cond, next): (bool, Option<String>) = match op {
        Op::Get { .. } => {
            return match out {
                Outcome::Value(v) if v == state => Some(state.clone()),
                _ => None,
            };
        }
        Op::Set { value, .. } => (true, Some(value.clone())),
        Op::Cas { expected, new, .. } => (state.as_ref() == Some(expected), Some(new.clone())),
        Op::Delete { .. } => (state.is_some(), None),
        Op::Cad { expected, .. } => (state.as_ref() == Some(expected), None),
        Op::Create { value, .. } => (state.is_none(), Some(value.clone())),
        Op::Append { suffix, .. } => (
            true,
            Some(format!("{}{}", state.as_deref().unwrap_or(""), suffix)),
        ),
        _ => unreachable!("no other ops are generated"),
    };
    match (applied, cond) {
        (true, true) => Some(next),
        (false, false) => Some(state.clone()),
        _ => None,
    }
}

/// Whether some order of the ops, including every op with a definite outcome and any
/// subset of the unknown ones, respects real time and the model.
fn brute_force(ops: &[OpRecord]) -> bool {
    let ops: Vec<&OpRecord> = ops
        .iter()
        .filter(|o| match o.outcome() {
            Outcome::NotApplied => false,
            Outcome::Unknown => !matches!(o.op, Op::Get { .. }),
            _ => true,
        })
        .collect();
    let unknown: Vec<usize> = (0..ops.len())
        .filter(|&i| matches!(ops[i].outcome(), Outcome::Unknown))
        .collect();
    for mask in 0..(1u32 << unknown.len()) {
        let chosen: Vec<usize> = (0..ops.len())
            .filter(|i| match unknown.iter().position(|u| u == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        if permute(&ops, &chosen, &mut Vec::new(), &None) {
            return true;
        }
    }
    false
}

fn ends(o: &OpRecord) -> u64 {
    match (&o.returned, o.outcome()) {
        (Some((t, _)), out) if !matches!(out, Outcome::Unknown) => *t,
        _ => u64::MAX,
    }
}

fn permute(
    ops: &[&OpRecord],
    left: &[usize],
    done: &mut Vec<usize>,
    state: &Option<String>,
) -> bool {
    if left.is_empty() {
        return true;
    }
    for (k, &i) in left.iter().enumerate() {
        // i may go next only if no remaining op returned strictly before i was invoked.
        if left
            .iter()
            .any(|&j| j != i && ends(ops[j]) < ops[i].invoked_at)
        {
            continue;
        }
        let out = match ops[i].outcome() {
            Outcome::Unknown => Outcome::Ok,
            o => o.clone(),
        };
        if let Some(next) = step(state, &ops[i].op, &out) {
            let rest: Vec<usize> = left
                .iter()
                .enumerate()
                .filter(|&(m, _)| m != k)
                .map(|(_, &j)| j)
                .collect();
            done.push(i);
            if permute(ops, &rest, done, &next) {
                return true;
            }
            done.pop();
        }
    }
    false
}

/// The history with every op outside `keep` relaxed: reads and failed conditional ops
/// dropped, mutations made unknown.
fn relax_all_but(ops: &[OpRecord], keep: &[OpId]) -> Vec<OpRecord> {
    ops.iter()
        .cloned()
        .map(|mut o| {
            if !keep.contains(&o.id) {
                let observer =
                    matches!(o.op, Op::Get { .. }) || matches!(o.outcome(), Outcome::Failed);
                let out = if observer {
                    Outcome::NotApplied
                } else {
                    Outcome::Unknown
                };
                o.returned = o.returned.map(|(t, _)| (t, out));
            }
            o
        })
        .collect()
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a".to_owned(), "b".to_owned()])
}

fn op_and_outcome() -> impl Strategy<Value = (Op, Outcome)> {
    let read = prop::option::of(value()).prop_map(|v| (Op::get("k"), Outcome::Value(v)));
    let known = prop::sample::select(vec![Outcome::Ok, Outcome::Failed, Outcome::Unknown]);
    let write = (0..6u8, value(), value(), known).prop_map(|(kind, x, y, out)| {
        let op = match kind {
            0 => Op::set("k", x),
            1 => Op::cas("k", x, y),
            2 => Op::delete("k"),
            3 => Op::cad("k", x),
            4 => Op::create("k", x),
            _ => Op::append("k", x),
        };
        let out = if out == Outcome::Failed && !op.accepts(&Outcome::Failed) {
            Outcome::Ok
        } else {
            out
        };
        (op, out)
    });
    prop_oneof![read, write]
}

fn history() -> impl Strategy<Value = History> {
    prop::collection::vec((op_and_outcome(), 0..12u64, 0..6u64), 1..7).prop_map(|ops| {
        let h = History::new();
        // Invocations in time order, so ids follow invocation order as in real recording.
        let mut ops = ops;
        ops.sort_by_key(|(_, start, _)| *start);
        for (client, ((op, out), start, len)) in ops.into_iter().enumerate() {
            let id = h.invoke_at(client as u64, op, start).unwrap();
            h.ret_at(id, out, start + len).unwrap();
        }
        h
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn agrees_with_brute_force(h in history()) {
        let expected = brute_force(&h.ops());
        let verdict = check(&h, Budget::steps(100_000));
        prop_assert!(!verdict.is_unknown());
        prop_assert_eq!(verdict.is_linearizable(), expected, "{}\n{:#?}", verdict, h.ops());
        if let Verdict::NotLinearizable(vs) = &verdict {
            // The core must itself be a proof: with every other op relaxed, the brute force
            // finds no linearization either; and when it is called minimal, relaxing any one
            // more op gives a linearizable history.
            let core: Vec<OpId> = vs[0].core.iter().map(|o| o.id).collect();
            let relaxed = relax_all_but(&h.ops(), &core);
            prop_assert!(!brute_force(&relaxed), "core is no proof: {}", verdict);
            if vs[0].core_is_minimal {
                for drop in &core {
                    let fewer: Vec<OpId> = core.iter().copied().filter(|c| c != drop).collect();
                    prop_assert!(
                        brute_force(&relax_all_but(&h.ops(), &fewer)),
                        "core called minimal but {} is not needed: {}", drop, verdict
                    );
                }
            }
        }
    }
}
