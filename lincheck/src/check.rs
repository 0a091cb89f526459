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
//! linearized". They sit in a second list and are tried after the definite candidates.
//!
//! Keys are searched in round-robin slices, so an easy violation on one key is found even
//! when another key's search is long. Memory grows with the steps taken (one memo entry of
//! about 30-50 bytes per successful step), so the per-key step budget also bounds memory.

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
///
/// The records are taken as they are: an outcome that does not fit its operation, or a
/// return before the invocation, simply cannot be linearized. Build a [`History`] with
/// [`History::from_records`] first to have such records rejected with an error.
pub fn check_records(records: &[OpRecord], budget: Budget) -> Report {
    let start = Instant::now();
    let deadline = budget.time.map(|d| start + d);
    let mut by_key: BTreeMap<&str, Vec<&OpRecord>> = BTreeMap::new();
    for r in records {
        by_key.entry(r.op.key()).or_default().push(r);
    }
    struct Task<'a> {
        key: &'a str,
        kh: KeyHistory<'a>,
        search: Option<Searcher>,
        result: KeyResult,
        steps: u64,
        best: Vec<(usize, State)>,
    }
    let mut tasks: Vec<Task<'_>> = by_key
        .into_iter()
        .map(|(key, recs)| {
            let kh = KeyHistory::new(recs);
            let search = Some(Searcher::new(&kh, &[], &[]));
            Task {
                key,
                kh,
                search,
                result: KeyResult::Unknown,
                steps: 0,
                best: Vec::new(),
            }
        })
        .collect();
    // Round-robin time slices, so that an easy violation on one key is found even when
    // another key's search is long; with `all_keys` off that ends the check early, as
    // Porcupine's parallel search does.
    let mut stop = false;
    while !stop {
        let mut pending = false;
        for t in tasks.iter_mut() {
            let Some(search) = t.search.as_mut() else {
                continue;
            };
            let cap = budget.steps_per_key.unwrap_or(u64::MAX);
            let slice = SLICE.min(cap.saturating_sub(search.steps));
            let progress = search.run(&mut t.kh, slice, deadline);
            t.steps = search.steps;
            match progress {
                Progress::Paused if slice > 0 && !past(deadline) => {
                    pending = true;
                    continue;
                }
                Progress::Paused => t.result = KeyResult::Unknown,
                Progress::Done(true) => t.result = KeyResult::Linearizable,
                Progress::Done(false) => {
                    t.result = KeyResult::NotLinearizable;
                    t.best = std::mem::take(&mut search.best);
                    stop |= !budget.all_keys;
                }
            }
            t.search = None;
            if stop {
                break;
            }
        }
        stop |= !pending;
    }
    let mut keys = Vec::new();
    let mut violations = Vec::new();
    let mut unknown = Vec::new();
    for mut t in tasks {
        if t.search.is_some() {
            t.result = KeyResult::Skipped;
        }
        match t.result {
            KeyResult::Unknown => unknown.push(t.key.to_owned()),
            KeyResult::NotLinearizable => {
                let limits = Limits {
                    steps: budget.steps_per_key,
                    deadline,
                };
                violations.push(t.kh.explain(t.key, &t.best, budget.shrink, limits, t.steps));
            }
            _ => {}
        }
        keys.push(KeyReport {
            key: t.key.to_owned(),
            ops: t.kh.ops.len(),
            result: t.result,
            steps: t.steps,
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

/// Steps a key's search runs before the next key gets its turn.
const SLICE: u64 = 20_000;

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
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

/// Visited configurations: the set of linearized ops as a 128-bit Zobrist hash (the xor of
/// a random pair of words per op, updated in O(1) on each move) and the state. A collision
/// would wrongly prune a configuration; at 2^-128 per pair it is far less likely than a
/// hardware fault, and it keeps each step free of allocation.
type Memo = HashSet<(u64, u64, State), BuildHasherDefault<WordHasher>>;

/// The Zobrist words of op `i`: splitmix64 of `2i` and `2i + 1`, fixed so runs repeat.
fn zobrist(i: usize) -> (u64, u64) {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let i = i as u64;
    (splitmix(2 * i), splitmix(2 * i + 1))
}

/// One operation of a key, ready for the search.
#[derive(Debug, Clone)]
struct KOp<'a> {
    rec: &'a OpRecord,
    step: Step,
    seen: Seen,
    call: u64,
    ret: Option<u64>,
}

impl KOp<'_> {
    /// Whether the op, given its outcome, changed nothing: a read or a failed condition.
    fn is_observer(&self) -> bool {
        matches!(self.seen, Seen::Value(_) | Seen::Failed)
    }
}

enum Search {
    Linearizable,
    Violation,
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
    time: u64,
    is_call: bool,
}

struct KeyHistory<'a> {
    ops: Vec<KOp<'a>>,
    interner: Interner,
    zobrist: Vec<(u64, u64)>,
}

impl<'a> KeyHistory<'a> {
    fn new(recs: Vec<&'a OpRecord>) -> KeyHistory<'a> {
        let mut interner = Interner::default();
        let ops: Vec<KOp<'a>> = recs
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
        let zobrist = (0..ops.len()).map(zobrist).collect();
        KeyHistory {
            ops,
            interner,
            zobrist,
        }
    }

    /// The event lists in time order; at equal times calls come first, so that touching
    /// intervals count as concurrent (the conservative reading of a coarse clock).
    ///
    /// Two lists share the arena: from [`HEAD`], the calls and returns of ops with a
    /// definite outcome; from the returned index, the calls of ops whose outcome is
    /// unknown (or `relax`ed), which the search tries only after the definite candidates:
    /// placing an optional write early is the guess most likely to fail later.
    fn entries(&self, skip: &[bool], relax: &[bool]) -> (Vec<Node>, usize) {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * self.ops.len());
        let mut optional: Vec<(u64, usize)> = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            if skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            match op.ret {
                Some(r) if !relax.get(i).copied().unwrap_or(false) => {
                    events.push((op.call, false, i));
                    events.push((r, true, i));
                }
                _ => optional.push((op.call, i)),
            }
        }
        events.sort_unstable();
        optional.sort_unstable();
        let sentinel = Node {
            prev: NIL,
            next: NIL,
            op: NIL,
            ret: NIL,
            time: 0,
            is_call: false,
        };
        let mut nodes = Vec::with_capacity(events.len() + optional.len() + 2);
        nodes.push(sentinel);
        let mut ret_node = vec![NIL; self.ops.len()];
        for (idx, &(time, is_ret, op)) in events.iter().enumerate() {
            let me = idx + 1;
            nodes.push(Node {
                prev: me - 1,
                next: if idx + 1 < events.len() { me + 1 } else { NIL },
                op,
                ret: NIL,
                time,
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
        let uhead = nodes.len();
        nodes.push(sentinel);
        for (idx, &(time, op)) in optional.iter().enumerate() {
            let me = uhead + idx + 1;
            nodes.push(Node {
                prev: me - 1,
                next: if idx + 1 < optional.len() {
                    me + 1
                } else {
                    NIL
                },
                op,
                ret: NIL,
                time,
                is_call: true,
            });
        }
        nodes[uhead].next = if optional.is_empty() { NIL } else { uhead + 1 };
        (nodes, uhead)
    }

    /// Runs a whole search with some operations left out (`skip`) and some relaxed to an
    /// unknown outcome (`relax`), as shrinking needs.
    fn decide(&mut self, limits: Limits, skip: &[bool], relax: &[bool]) -> (Search, u64) {
        let mut search = Searcher::new(self, skip, relax);
        let progress = search.run(self, limits.steps.unwrap_or(u64::MAX), limits.deadline);
        let outcome = match progress {
            Progress::Done(true) => Search::Linearizable,
            Progress::Done(false) => Search::Violation,
            Progress::Paused => Search::Exhausted,
        };
        (outcome, search.steps)
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
        let (nodes, uhead) = self.entries(&placed, &[]);
        let mut blocked = None;
        let mut candidates = Vec::new();
        let mut e = nodes[HEAD].next;
        while e != NIL {
            let node = nodes[e];
            if node.is_call {
                candidates.push(node.op);
            } else {
                blocked = Some(node);
                break;
            }
            e = node.next;
        }
        let mut e = nodes[uhead].next;
        while e != NIL && blocked.is_some_and(|b| nodes[e].time <= b.time) {
            candidates.push(nodes[e].op);
            e = nodes[e].next;
        }
        let blocked = blocked.map(|b| b.op);
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
            self.shrink(limits, main_steps, blocked.and_then(|b| self.ops[b].ret))
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
    ///
    /// Before that, one bulk cut: the history truncated at the blocked op's return `cut`
    /// (ops invoked later dropped, ops still running then relaxed). Any linearization of
    /// the full history restricted to the ops it places before `cut` would linearize the
    /// truncated one, so if the truncation fails, so does the full history.
    fn shrink(
        &mut self,
        limits: Limits,
        main_steps: u64,
        cut: Option<u64>,
    ) -> (Vec<OpRecord>, bool) {
        let n = self.ops.len();
        let mut skip = vec![false; n];
        let mut relax = vec![false; n];
        let mut allowance = limits.steps.unwrap_or(SHRINK_DEFAULT_STEPS);
        let per_attempt = main_steps.saturating_mul(16).max(SHRINK_MIN_ATTEMPT_STEPS);
        let mut complete = true;
        if let Some(cut) = cut {
            // Ops still running at the cut may or may not be in the linearized prefix:
            // observers among them are dropped, mutations relaxed, as in the passes below.
            let straddles = |o: &KOp<'_>| o.call <= cut && o.ret.is_some_and(|r| r > cut);
            let trunc_skip: Vec<bool> = self
                .ops
                .iter()
                .map(|o| o.call > cut || (straddles(o) && o.is_observer()))
                .collect();
            let trunc_relax: Vec<bool> = self
                .ops
                .iter()
                .map(|o| straddles(o) && !o.is_observer())
                .collect();
            let (outcome, used) = self.decide(
                Limits {
                    steps: Some(per_attempt.min(allowance)),
                    deadline: limits.deadline,
                },
                &trunc_skip,
                &trunc_relax,
            );
            allowance = allowance.saturating_sub(used);
            if matches!(outcome, Search::Violation) {
                skip = trunc_skip;
                relax = trunc_relax;
            }
        }
        // Latest ops first: violations tend to be late (a stale read after many writes),
        // and dropping the tail early makes the later searches shorter.
        for pass_observers in [true, false] {
            for i in (0..n).rev() {
                let op = &self.ops[i];
                let observer = op.is_observer();
                if op.seen == Seen::Unknown || skip[i] || relax[i] || observer != pass_observers {
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
                let (outcome, used) = self.decide(
                    Limits {
                        steps: Some(per_attempt.min(allowance)),
                        deadline: limits.deadline,
                    },
                    &skip,
                    &relax,
                );
                allowance = allowance.saturating_sub(used);
                if !matches!(outcome, Search::Violation) {
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

enum Progress {
    /// Decided: linearizable or not.
    Done(bool),
    /// Out of steps or time for now.
    Paused,
}

/// A resumable depth-first search over one key's history, so that keys can take turns.
struct Searcher {
    nodes: Vec<Node>,
    /// Head of the list of optional (unknown-outcome) calls.
    uhead: usize,
    /// Known-return ops not yet linearized: zero means success.
    remaining: usize,
    hash: (u64, u64),
    memo: Memo,
    /// The choices made so far: (call entry, state before it, `bound` then).
    stack: Vec<(usize, State, Option<u64>)>,
    /// The longest linearization found: (op index, state after).
    best: Vec<(usize, State)>,
    state: State,
    /// Where the walk is: a node of either list.
    entry: usize,
    /// While walking the optional list: the time of the first return entry in the main
    /// list, after which no optional call can come next.
    bound: Option<u64>,
    steps: u64,
}

impl Searcher {
    fn new(kh: &KeyHistory<'_>, skip: &[bool], relax: &[bool]) -> Searcher {
        let (nodes, uhead) = kh.entries(skip, relax);
        let remaining = nodes[..uhead].iter().skip(1).filter(|x| x.is_call).count();
        let entry = nodes[HEAD].next;
        Searcher {
            nodes,
            uhead,
            remaining,
            hash: (0, 0),
            memo: Memo::default(),
            stack: Vec::new(),
            best: Vec::new(),
            state: ABSENT,
            entry,
            bound: None,
            steps: 0,
        }
    }

    /// Runs at most `max_steps` more steps.
    fn run(
        &mut self,
        kh: &mut KeyHistory<'_>,
        max_steps: u64,
        deadline: Option<Instant>,
    ) -> Progress {
        let stop_at = self.steps.saturating_add(max_steps);
        let nodes = &mut self.nodes;
        loop {
            if self.remaining == 0 {
                return Progress::Done(true);
            }
            let entry = self.entry;
            // Candidates are exhausted at a return entry of the main list (that op must
            // come before anything later), then at the end of the optional calls invoked
            // no later than it: backtrack.
            let exhausted = match self.bound {
                None => {
                    // A return entry of an unlinearized op always lies ahead in the main
                    // list, as the walk there starts at its head or just after a call
                    // that preceded its first return.
                    debug_assert!(entry != NIL, "walked past every return entry");
                    if entry != NIL && !nodes[entry].is_call {
                        self.bound = Some(nodes[entry].time);
                        self.entry = nodes[self.uhead].next;
                        continue;
                    }
                    entry == NIL
                }
                Some(bound) => entry == NIL || nodes[entry].time > bound,
            };
            if exhausted {
                let Some((e, s, bound)) = self.stack.pop() else {
                    return Progress::Done(false);
                };
                self.state = s;
                let z = kh.zobrist[nodes[e].op];
                self.hash = (self.hash.0 ^ z.0, self.hash.1 ^ z.1);
                unlift(nodes, e);
                if nodes[e].ret != NIL {
                    self.remaining += 1;
                }
                self.entry = nodes[e].next;
                self.bound = bound;
                continue;
            }
            if self.steps >= stop_at || (self.steps.is_multiple_of(1024) && past(deadline)) {
                return Progress::Paused;
            }
            self.steps += 1;
            let node = nodes[entry];
            let op = &kh.ops[node.op];
            let seen = if node.ret == NIL {
                Seen::Unknown
            } else {
                op.seen
            };
            if let Some(next) = kh.interner.apply(self.state, op.step, seen) {
                let z = kh.zobrist[node.op];
                let hash = (self.hash.0 ^ z.0, self.hash.1 ^ z.1);
                if self.memo.insert((hash.0, hash.1, next)) {
                    self.stack.push((entry, self.state, self.bound));
                    self.state = next;
                    self.hash = hash;
                    lift(nodes, entry);
                    if node.ret != NIL {
                        self.remaining -= 1;
                    }
                    if self.stack.len() > self.best.len() {
                        let stack = &self.stack;
                        let state = self.state;
                        self.best = stack
                            .iter()
                            .enumerate()
                            .map(|(i, &(e, _, _))| {
                                let after = stack.get(i + 1).map_or(state, |&(_, s, _)| s);
                                (nodes[e].op, after)
                            })
                            .collect();
                    }
                    self.entry = nodes[HEAD].next;
                    self.bound = None;
                    continue;
                }
            }
            self.entry = node.next;
        }
    }
}

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
