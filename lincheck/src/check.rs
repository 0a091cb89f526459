//! The search: per-key Wing & Gong / Lowe linearizability checking with memoization, as in
//! Porcupine.
//!
//! For one key, the invocation and return events are laid out in time order in a doubly
//! linked list. The search walks the list from the front: a call entry may be linearized
//! next if the model accepts its outcome in the current state; it is then "lifted" out of
//! the list (with its return entry) and the walk restarts. Reaching a return entry means
//! that operation must already have been linearized, so the search backtracks to the most
//! recent choice and tries the next candidate. A set of visited (linearized-set, state)
//! pairs cuts off configurations already shown to fail.
//!
//! Unknown-outcome operations have no return entry: they may be linearized anywhere after
//! their invocation or not at all, so success is "every operation with a known return is
//! linearized".

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use crate::history::{History, OpRecord};
use crate::model::{ABSENT, Interner, Seen, State, Step};
use crate::verdict::{
    Attempt, Budget, KeyReport, KeyResult, Linearized, Report, Verdict, Violation,
};

/// Checks `history` for linearizability against the key/value register model, within
/// `budget`. Same as [`check_report`] without the per-key details.
pub fn check(history: &History, budget: Budget) -> Verdict {
    check_report(history, budget).verdict
}

/// Checks `history` and reports per key. Keys are checked independently
/// (P-compositionality), so one undecided key does not hide another key's violation.
pub fn check_report(history: &History, budget: Budget) -> Report {
    check_records(&history.ops(), budget)
}

/// Checks recorded operations (as from [`History::ops`]).
pub fn check_records(records: &[OpRecord], budget: Budget) -> Report {
    let start = Instant::now();
    let deadline = budget.time.map(|d| start + d);
    let mut by_key: BTreeMap<&str, Vec<&OpRecord>> = BTreeMap::new();
    for r in records {
        by_key.entry(r.op.key()).or_default().push(r);
    }
    let mut keys = Vec::new();
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    for (key, recs) in by_key {
        let mut kh = KeyHistory::new(recs);
        let limits = Limits {
            steps: budget.steps_per_key,
            deadline,
        };
        let (outcome, steps) = kh.search(limits);
        let result = match outcome {
            Search::Linearizable => KeyResult::Linearizable,
            Search::Exhausted => {
                unknown.push(key.to_owned());
                KeyResult::Unknown
            }
            Search::Violation(best) => {
                violations.push(kh.explain(key, &best, budget.shrink, limits, steps));
                KeyResult::NotLinearizable
            }
        };
        keys.push(KeyReport {
            key: key.to_owned(),
            ops: kh.ops.len(),
            result,
            steps,
        });
    }
    let verdict = if !violations.is_empty() {
        Verdict::NotLinearizable(violations)
    } else if !unknown.is_empty() {
        Verdict::Unknown { keys: unknown }
    } else {
        Verdict::Linearizable
    };
    Report {
        verdict,
        keys,
        elapsed: start.elapsed(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    steps: Option<u64>,
    deadline: Option<Instant>,
}

/// FxHash-style hashing: the memo set is hashed once per search step, and its keys are
/// machine words, so SipHash's DoS resistance buys nothing here.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, w: u32) {
        self.write_u64(u64::from(w));
    }
    fn write_usize(&mut self, w: usize) {
        self.write_u64(w as u64);
    }
}

type Memo = HashSet<(Box<[u64]>, State), BuildHasherDefault<WordHasher>>;

/// One operation of a key, ready for the search.
#[derive(Debug, Clone)]
struct KOp<'a> {
    rec: &'a OpRecord,
    step: Step,
    seen: Seen,
    call: u64,
    ret: Option<u64>,
}

enum Search {
    Linearizable,
    /// The longest linearization found: (op index, state after).
    Violation(Vec<(usize, State)>),
    Exhausted,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

#[derive(Debug, Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    /// For a call entry: its return entry, or NIL for an unknown outcome. NIL for returns.
    ret: usize,
    is_call: bool,
}

struct KeyHistory<'a> {
    ops: Vec<KOp<'a>>,
    interner: Interner,
}

impl<'a> KeyHistory<'a> {
    fn new(recs: Vec<&'a OpRecord>) -> KeyHistory<'a> {
        let mut interner = Interner::default();
        let ops = recs
            .into_iter()
            .filter_map(|rec| {
                let (step, seen) = interner.reduce(&rec.op, rec.outcome())?;
                let ret = match (&rec.returned, seen) {
                    (_, Seen::Unknown) | (None, _) => None,
                    (Some((t, _)), _) => Some(*t),
                };
                Some(KOp {
                    rec,
                    step,
                    seen,
                    call: rec.invoked_at,
                    ret,
                })
            })
            .collect();
        KeyHistory { ops, interner }
    }

    /// The event list in time order; at equal times calls come first, so that touching
    /// intervals count as concurrent (the conservative reading of a coarse clock).
    fn entries(&self, skip: &[bool]) -> Vec<Node> {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * self.ops.len());
        for (i, op) in self.ops.iter().enumerate() {
            if skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            events.push((op.call, false, i));
            if let Some(r) = op.ret {
                events.push((r, true, i));
            }
        }
        events.sort_unstable();
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(Node {
            prev: NIL,
            next: NIL,
            op: NIL,
            ret: NIL,
            is_call: false,
        });
        let mut ret_node = vec![NIL; self.ops.len()];
        for (idx, &(_, is_ret, op)) in events.iter().enumerate() {
            let me = idx + 1;
            nodes.push(Node {
                prev: me - 1,
                next: if idx + 1 < events.len() { me + 1 } else { NIL },
                op,
                ret: NIL,
                is_call: !is_ret,
            });
            if is_ret {
                ret_node[op] = me;
            }
        }
        nodes[HEAD].next = if events.is_empty() { NIL } else { 1 };
        for n in nodes.iter_mut().skip(1) {
            if n.is_call {
                n.ret = ret_node[n.op];
            }
        }
        nodes
    }

    fn search(&mut self, limits: Limits) -> (Search, u64) {
        let n = self.ops.len();
        self.search_with(limits, &vec![false; n], &vec![false; n])
    }

    /// Runs the search with some operations left out (`skip`) and some relaxed to an
    /// unknown outcome (`relax`), as shrinking needs.
    fn search_with(&mut self, limits: Limits, skip: &[bool], relax: &[bool]) -> (Search, u64) {
        let n = self.ops.len();
        let mut nodes = self.entries(skip);
        if relax.iter().any(|&r| r) {
            for i in 1..nodes.len() {
                let node = nodes[i];
                if node.is_call && node.ret != NIL && relax[node.op] {
                    // Unlink the return entry for good: the op becomes optional.
                    let r = nodes[node.ret];
                    if r.prev != NIL {
                        nodes[r.prev].next = r.next;
                    }
                    if r.next != NIL {
                        nodes[r.next].prev = r.prev;
                    }
                    nodes[i].ret = NIL;
                }
            }
        }
        let mut remaining = nodes
            .iter()
            .skip(1)
            .filter(|x| x.is_call && x.ret != NIL)
            .count();
        let words = n.div_ceil(64).max(1);
        let mut linearized = vec![0u64; words];
        let mut memo = Memo::default();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut best: Vec<(usize, State)> = Vec::new();
        let mut state = ABSENT;
        let mut steps = 0u64;
        let mut entry = nodes[HEAD].next;
        loop {
            if remaining == 0 {
                return (Search::Linearizable, steps);
            }
            // A return entry of an unlinearized op always lies ahead (see module docs).
            debug_assert!(entry != NIL);
            if entry == NIL {
                return (Search::Exhausted, steps);
            }
            let node = nodes[entry];
            if node.is_call {
                steps += 1;
                if limits.steps.is_some_and(|max| steps > max)
                    || (steps.is_multiple_of(1024)
                        && limits.deadline.is_some_and(|d| Instant::now() >= d))
                {
                    return (Search::Exhausted, steps);
                }
                let op = &self.ops[node.op];
                let (step, seen) = if relax.get(node.op).copied().unwrap_or(false) {
                    (op.step, Seen::Unknown)
                } else {
                    (op.step, op.seen)
                };
                if let Some(next) = self.interner.apply(state, step, seen) {
                    let (w, b) = (node.op / 64, node.op % 64);
                    linearized[w] |= 1 << b;
                    if memo.insert((linearized.clone().into_boxed_slice(), next)) {
                        stack.push((entry, state));
                        state = next;
                        lift(&mut nodes, entry);
                        if node.ret != NIL {
                            remaining -= 1;
                        }
                        if stack.len() > best.len() {
                            best = stack
                                .iter()
                                .enumerate()
                                .map(|(i, &(e, _))| {
                                    let after = stack.get(i + 1).map_or(state, |&(_, s)| s);
                                    (nodes[e].op, after)
                                })
                                .collect();
                        }
                        entry = nodes[HEAD].next;
                        continue;
                    }
                    linearized[w] &= !(1 << b);
                }
                entry = node.next;
            } else {
                let Some((e, s)) = stack.pop() else {
                    return (Search::Violation(best), steps);
                };
                state = s;
                let op = nodes[e].op;
                linearized[op / 64] &= !(1 << (op % 64));
                unlift(&mut nodes, e);
                if nodes[e].ret != NIL {
                    remaining += 1;
                }
                entry = nodes[e].next;
            }
        }
    }

    fn explain(
        &mut self,
        key: &str,
        best: &[(usize, State)],
        shrink: bool,
        limits: Limits,
        main_steps: u64,
    ) -> Violation {
        let n = self.ops.len();
        let prefix: Vec<Linearized> = best
            .iter()
            .map(|&(op, s)| Linearized {
                op: self.ops[op].rec.clone(),
                state_after: self.interner.value(s).map(str::to_owned),
            })
            .collect();
        let state = best.last().map_or(ABSENT, |&(_, s)| s);
        let mut placed = vec![false; n];
        for &(op, _) in best {
            placed[op] = true;
        }
        // After the prefix, the candidates are the unplaced ops invoked before the first
        // return of an unplaced op; that returning op is the one that cannot be placed.
        let nodes = self.entries(&placed);
        let mut blocked = None;
        let mut candidates = Vec::new();
        let mut e = nodes[HEAD].next;
        while e != NIL {
            let node = nodes[e];
            if node.is_call {
                candidates.push(node.op);
            } else {
                blocked = Some(node.op);
                break;
            }
            e = node.next;
        }
        let attempts = candidates
            .into_iter()
            .map(|op| {
                let k = &self.ops[op];
                let (step, seen, rec) = (k.step, k.seen, k.rec);
                let reason = match self.interner.apply(state, step, seen) {
                    None => format!("impossible when the value is {}", self.describe(state)),
                    Some(next) => format!(
                        "possible (value becomes {}), but no linearization continues from there",
                        self.describe(next)
                    ),
                };
                Attempt {
                    op: rec.clone(),
                    reason,
                }
            })
            .collect();
        let (core, core_is_minimal) = if shrink {
            self.shrink(limits, main_steps)
        } else {
            (self.ops.iter().map(|k| k.rec.clone()).collect(), false)
        };
        Violation {
            key: key.to_owned(),
            core,
            core_is_minimal,
            prefix,
            blocked: blocked.map(|op| self.ops[op].rec.clone()),
            attempts,
        }
    }

    fn describe(&self, s: State) -> String {
        self.interner
            .value(s)
            .map_or("<absent>".to_owned(), |v| format!("{v:?}"))
    }

    /// Greedy one-at-a-time shrinking. Dropping an observer (a read, a failed conditional
    /// op) only removes constraints, and relaxing a mutation to an unknown outcome only
    /// allows more linearizations, so whatever is still non-linearizable after either
    /// change proves the original history non-linearizable too. The core is what remains
    /// unrelaxed.
    ///
    /// Observers go first: dropping them keeps later searches small, while every relaxed
    /// mutation multiplies the places it may go. Each attempt gets a small step cap; an
    /// attempt that hits it keeps its op, and the core is then not known to be minimal.
    fn shrink(&mut self, limits: Limits, main_steps: u64) -> (Vec<OpRecord>, bool) {
        let n = self.ops.len();
        let mut skip = vec![false; n];
        let mut relax = vec![false; n];
        let mut allowance = limits.steps.unwrap_or(SHRINK_DEFAULT_STEPS);
        let per_attempt = main_steps.saturating_mul(16).max(SHRINK_MIN_ATTEMPT_STEPS);
        let mut complete = true;
        // Latest ops first: violations tend to be late (a stale read after many writes),
        // and dropping the tail early makes the later searches shorter.
        for pass_observers in [true, false] {
            for i in (0..n).rev() {
                let op = &self.ops[i];
                let observer = matches!(op.seen, Seen::Value(_) | Seen::Failed);
                if op.seen == Seen::Unknown || observer != pass_observers {
                    continue;
                }
                if allowance == 0 {
                    complete = false;
                    break;
                }
                if observer {
                    skip[i] = true;
                } else {
                    relax[i] = true;
                }
                let (outcome, used) = self.search_with(
                    Limits {
                        steps: Some(per_attempt.min(allowance)),
                        deadline: limits.deadline,
                    },
                    &skip,
                    &relax,
                );
                allowance = allowance.saturating_sub(used);
                if !matches!(outcome, Search::Violation(_)) {
                    skip[i] = false;
                    relax[i] = false;
                    if matches!(outcome, Search::Exhausted) {
                        complete = false;
                        if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                    }
                }
            }
        }
        let core = (0..n)
            .filter(|&i| !skip[i] && !relax[i] && self.ops[i].seen != Seen::Unknown)
            .map(|i| self.ops[i].rec.clone())
            .collect();
        (core, complete)
    }
}

/// Shrinking's total step allowance when the budget sets no per-key limit.
const SHRINK_DEFAULT_STEPS: u64 = 1_000_000;
/// The least step cap of one shrinking attempt.
const SHRINK_MIN_ATTEMPT_STEPS: u64 = 100_000;

/// Takes a call entry (and its return entry) out of the list.
fn lift(nodes: &mut [Node], e: usize) {
    let n = nodes[e];
    nodes[n.prev].next = n.next;
    if n.next != NIL {
        nodes[n.next].prev = n.prev;
    }
    if n.ret != NIL {
        let r = nodes[n.ret];
        nodes[r.prev].next = r.next;
        if r.next != NIL {
            nodes[r.next].prev = r.prev;
        }
    }
}

/// Puts back what [`lift`] took out; lifts are undone in reverse order.
fn unlift(nodes: &mut [Node], e: usize) {
    let n = nodes[e];
    if n.ret != NIL {
        let r = nodes[n.ret];
        nodes[r.prev].next = n.ret;
        if r.next != NIL {
            nodes[r.next].prev = n.ret;
        }
    }
    nodes[n.prev].next = e;
    if n.next != NIL {
        nodes[n.next].prev = e;
    }
}
