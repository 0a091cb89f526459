//! What a check concludes: the budget it ran under, its verdict, and explanations.

use std::fmt;
use std::time::Duration;

use crate::history::OpRecord;

/// Bounds on the search, so that a check always ends: when a key's search runs out, that
/// key's verdict is "unknown" (never "linearizable").
///
/// Build one with [`Budget::default`], [`Budget::steps`], [`Budget::time`] or
/// [`Budget::unlimited`] and adjust it with the `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Model transitions the search may try for each key (`None`: no limit). Deterministic,
    /// so prefer it in tests. It also bounds memory: the search keeps up to one visited
    /// configuration (30-50 bytes) per step.
    pub steps_per_key: Option<u64>,
    /// Wall-clock limit for the whole check (`None`: no limit).
    pub time: Option<Duration>,
    /// Whether to shrink each violation to a small core of operations. Shrinking runs more
    /// searches on the violating key, within the same per-key step allowance again.
    pub shrink: bool,
    /// Whether to go on checking the other keys once one key is found not linearizable
    /// (off by default: one violation decides the verdict, as in Porcupine).
    pub all_keys: bool,
}

impl Default for Budget {
    /// 5 million steps per key, 60 seconds in all, shrinking on, stop at the first
    /// violating key.
    fn default() -> Self {
        Budget {
            steps_per_key: Some(5_000_000),
            time: Some(Duration::from_secs(60)),
            shrink: true,
            all_keys: false,
        }
    }
}

impl Budget {
    /// At most `n` steps per key, no time limit, shrinking on.
    pub fn steps(n: u64) -> Budget {
        Budget {
            steps_per_key: Some(n),
            time: None,
            shrink: true,
            all_keys: false,
        }
    }

    /// At most `d` of wall-clock time in all, no step limit, shrinking on.
    pub fn time(d: Duration) -> Budget {
        Budget {
            steps_per_key: None,
            time: Some(d),
            shrink: true,
            all_keys: false,
        }
    }

    /// No limit at all: the check may take exponential time.
    pub fn unlimited() -> Budget {
        Budget {
            steps_per_key: None,
            time: None,
            shrink: true,
            all_keys: false,
        }
    }

    /// The same budget with shrinking turned on or off.
    pub fn with_shrink(self, shrink: bool) -> Budget {
        Budget { shrink, ..self }
    }

    /// The same budget, checking every key even after a violation (or not).
    pub fn with_all_keys(self, all_keys: bool) -> Budget {
        Budget { all_keys, ..self }
    }

    /// The same budget with another per-key step limit.
    pub fn with_steps_per_key(self, steps: Option<u64>) -> Budget {
        Budget {
            steps_per_key: steps,
            ..self
        }
    }

    /// The same budget with another time limit.
    pub fn with_time(self, time: Option<Duration>) -> Budget {
        Budget { time, ..self }
    }
}

/// The answer for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// At least one key's history is not linearizable; one explanation per such key.
    /// (Other keys may be linearizable or undecided.)
    NotLinearizable(Vec<Violation>),
    /// No violation was found, but the budget ran out on these keys before they were decided.
    Unknown {
        /// The undecided keys.
        keys: Vec<String>,
    },
}

impl Verdict {
    /// Whether the history was proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// Whether the history was proven not linearizable.
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::NotLinearizable(_))
    }

    /// Whether the budget ran out before a decision.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Verdict::Unknown { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(vs) => {
                writeln!(f, "NOT linearizable ({} key(s))", vs.len())?;
                for v in vs {
                    write!(f, "{v}")?;
                }
                Ok(())
            }
            Verdict::Unknown { keys } => {
                write!(f, "unknown: budget exhausted on {} key(s): ", keys.len())?;
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}")?;
                }
                Ok(())
            }
        }
    }
}

/// One step of a linearization: an operation and the key's value after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linearized {
    /// The operation placed.
    pub op: OpRecord,
    /// The key's value after it (`None`: absent).
    pub state_after: Option<String>,
}

/// A candidate that could not be placed after the longest linearizable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The operation tried.
    pub op: OpRecord,
    /// Why it failed there: its outcome is impossible in the state reached, or it is possible
    /// but every continuation from it fails.
    pub reason: String,
}

/// Why one key's history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// A small set of this key's operations whose outcomes cannot all hold: the history made
    /// of these, with every other operation of the key relaxed to an unknown outcome (reads
    /// dropped, writes free to take effect any time after their invocation, or never), is
    /// still not linearizable. Without shrinking, every operation of the key.
    pub core: Vec<OpRecord>,
    /// Whether shrinking finished, so that no single operation of `core` can be relaxed
    /// without making the rest linearizable. `false` if it was skipped or ran out of budget.
    pub core_is_minimal: bool,
    /// The longest linearizable prefix found by the search over the full key history.
    pub prefix: Vec<Linearized>,
    /// The operation that cannot be placed after `prefix`: the earliest-returning operation
    /// not in it, which must come next or before anything invoked after it returned.
    pub blocked: Option<OpRecord>,
    /// The operations that could have come next after `prefix`, and why none works.
    pub attempts: Vec<Attempt>,
}

/// How many prefix steps [`Violation`]'s `Display` shows (the last ones).
const PREFIX_SHOWN: usize = 10;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable", self.key)?;
        writeln!(
            f,
            "  {} operation(s) whose outcomes cannot all hold{} (other ops of the key relaxed to unknown outcome):",
            self.core.len(),
            if self.core_is_minimal {
                ", minimal"
            } else {
                ""
            }
        )?;
        if self.core.len() <= TIMELINE_MAX_OPS {
            for line in timeline(&self.core).lines() {
                writeln!(f, "    {line}")?;
            }
        } else {
            for op in &self.core {
                writeln!(f, "    {op}")?;
            }
        }
        let skip = self.prefix.len().saturating_sub(PREFIX_SHOWN);
        writeln!(
            f,
            "  longest linearizable prefix: {} op(s){}",
            self.prefix.len(),
            if skip > 0 {
                format!(", last {PREFIX_SHOWN}:")
            } else {
                ":".to_owned()
            }
        )?;
        for l in &self.prefix[skip..] {
            writeln!(
                f,
                "    {}   => {}",
                l.op,
                l.state_after
                    .as_deref()
                    .map_or("<absent>".to_owned(), |s| format!("{s:?}"))
            )?;
        }
        if let Some(b) = &self.blocked {
            writeln!(f, "  then this op cannot be placed: {b}")?;
        }
        for a in &self.attempts {
            writeln!(f, "    tried {}: {}", a.op, a.reason)?;
        }
        Ok(())
    }
}

/// Up to how many core operations [`Violation`]'s `Display` draws as a timeline.
const TIMELINE_MAX_OPS: usize = 40;

/// Draws operations as a text timeline, one row per operation in invocation order: a bar
/// from invocation to return (`>` running on for an operation that never returned), then
/// the operation and its outcome. Times are compressed to their order, so the picture shows
/// which operations overlap, not how long they took.
///
/// ```text
/// |[---]        | op#0 client 1 set("k", "a") -> ok [0..1]
/// |      [---]  | op#1 client 2 get("k") -> <absent> [2..3]
/// ```
pub fn timeline(ops: &[OpRecord]) -> String {
    let mut times: Vec<u64> = ops
        .iter()
        .flat_map(|o| std::iter::once(o.invoked_at).chain(o.returned.as_ref().map(|r| r.0)))
        .collect();
    times.sort_unstable();
    times.dedup();
    // Each distinct time gets a few columns, so that ops touching at one instant still show
    // as separate marks.
    const STEP: usize = 3;
    let width = times.len() * STEP + 2;
    let col = |t: u64| times.binary_search(&t).unwrap_or(0) * STEP + 1;
    let mut sorted: Vec<&OpRecord> = ops.iter().collect();
    sorted.sort_by_key(|o| (o.invoked_at, o.id));
    let mut out = String::new();
    for o in sorted {
        let mut row = vec![' '; width];
        let start = col(o.invoked_at);
        let end = match (&o.returned, o.outcome()) {
            (Some((t, _)), out) if *out != crate::Outcome::Unknown => Some(col(*t)),
            _ => None,
        };
        row[start] = '[';
        match end {
            Some(end) => {
                for c in row.iter_mut().take(end).skip(start + 1) {
                    *c = '-';
                }
                row[end.max(start + 1)] = ']';
            }
            None => {
                for c in row.iter_mut().take(width - 1).skip(start + 1) {
                    *c = '-';
                }
                row[width - 1] = '>';
            }
        }
        out.push('|');
        out.extend(row);
        out.push_str("| ");
        out.push_str(&o.to_string());
        out.push('\n');
    }
    out
}

/// The result for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyResult {
    /// The key's history is linearizable.
    Linearizable,
    /// The key's history is not linearizable.
    NotLinearizable,
    /// The budget ran out first.
    Unknown,
    /// Not checked to the end, because another key was found not linearizable first (see
    /// [`Budget::all_keys`]).
    Skipped,
}

/// Per-key statistics of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations of this key that took part in the search (not-applied operations and
    /// unknown-outcome reads are dropped first).
    pub ops: usize,
    /// The verdict for this key.
    pub result: KeyResult,
    /// Model transitions tried by the main search (shrinking not included).
    pub steps: u64,
}

/// A verdict with per-key details, from [`check_report`](crate::check_report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The overall verdict.
    pub verdict: Verdict,
    /// One entry per key, in key order.
    pub keys: Vec<KeyReport>,
    /// Wall-clock time the check took.
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{History, Op, Outcome};

    #[test]
    fn timeline_shows_overlap_and_open_ops() {
        let h = History::new();
        let a = h.invoke_at(1, Op::set("k", "a"), 0).unwrap();
        let b = h.invoke_at(2, Op::get("k"), 5).unwrap();
        let _c = h.invoke_at(3, Op::set("k", "c"), 6).unwrap();
        h.ret_at(a, Outcome::Ok, 10).unwrap();
        h.ret_at(b, Outcome::Value(None), 10).unwrap();
        let t = timeline(&h.ops());
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 3);
        // Times 0, 5, 6, 10 -> columns 1, 4, 7, 10; width 14.
        assert!(rows[0].starts_with("| [--------]   | op#0"), "{t}");
        assert!(rows[1].starts_with("|    [-----]   | op#1"), "{t}");
        assert!(rows[2].starts_with("|       [----->| op#2"), "{t}");
    }
}
