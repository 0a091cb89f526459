//! The sequential specification: one key's register, with values interned to small ids so
//! that the search hashes and compares states as integers.

use std::collections::HashMap;

use crate::history::{Op, Outcome};

/// An interned register state: [`ABSENT`] or `1 + index` into [`Interner::values`].
pub(crate) type State = u32;

/// The state of a key that does not exist.
pub(crate) const ABSENT: State = 0;

/// One operation of a key, reduced to interned ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Get,
    Set(State),
    Cas {
        expected: State,
        new: State,
    },
    Delete,
    Cad {
        expected: State,
    },
    Create(State),
    /// The suffix is interned like a state; only its text is used.
    Append(State),
}

/// What the client saw, reduced to interned ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    Value(State),
    Ok,
    Failed,
    Unknown,
}

/// Interns one key's values. Appends create new states during the search, hence the
/// transition cache.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    values: Vec<String>,
    ids: HashMap<String, State>,
    appends: HashMap<(State, State), State>,
}

impl Interner {
    pub(crate) fn intern(&mut self, v: &str) -> State {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        self.values.push(v.to_owned());
        let id = State::try_from(self.values.len()).unwrap_or(State::MAX);
        self.ids.insert(v.to_owned(), id);
        id
    }

    /// The value of a state, `None` for an absent key.
    pub(crate) fn value(&self, s: State) -> Option<&str> {
        if s == ABSENT {
            None
        } else {
            self.values.get(s as usize - 1).map(String::as_str)
        }
    }

    /// Reduces an operation and its outcome to ids. `None` when the operation cannot
    /// affect the check (not applied, or a read of unknown result) and can be dropped.
    pub(crate) fn reduce(&mut self, op: &Op, outcome: &Outcome) -> Option<(Step, Seen)> {
        let seen = match outcome {
            Outcome::NotApplied => return None,
            Outcome::Unknown if matches!(op, Op::Get { .. }) => return None,
            Outcome::Value(v) => Seen::Value(v.as_deref().map_or(ABSENT, |v| self.intern(v))),
            Outcome::Ok => Seen::Ok,
            Outcome::Failed => Seen::Failed,
            Outcome::Unknown => Seen::Unknown,
        };
        let step = match op {
            Op::Get { .. } => Step::Get,
            Op::Set { value, .. } => Step::Set(self.intern(value)),
            Op::Cas { expected, new, .. } => Step::Cas {
                expected: self.intern(expected),
                new: self.intern(new),
            },
            Op::Delete { .. } => Step::Delete,
            Op::Cad { expected, .. } => Step::Cad {
                expected: self.intern(expected),
            },
            Op::Create { value, .. } => Step::Create(self.intern(value)),
            Op::Append { suffix, .. } => Step::Append(self.intern(suffix)),
        };
        Some((step, seen))
    }

    /// Applies `step` with outcome `seen` to `state`: the next state if the outcome is
    /// possible in `state`, `None` if not. An unknown-outcome operation whose condition does
    /// not hold would be a no-op, which is the same as never linearizing it, so it is
    /// refused here to prune the search.
    pub(crate) fn apply(&mut self, state: State, step: Step, seen: Seen) -> Option<State> {
        let took = |cond: bool, next: State| {
            match seen {
                Seen::Ok | Seen::Unknown => cond.then_some(next),
                Seen::Failed => (!cond).then_some(state),
                // A value outcome is only ever paired with a get, handled below.
                Seen::Value(_) => None,
            }
        };
        match step {
            Step::Get => match seen {
                Seen::Value(v) => (v == state).then_some(state),
                _ => None,
            },
            Step::Set(v) => took(true, v),
            Step::Cas { expected, new } => took(state == expected, new),
            Step::Delete => took(state != ABSENT, ABSENT),
            Step::Cad { expected } => took(state == expected, ABSENT),
            Step::Create(v) => took(state == ABSENT, v),
            Step::Append(suffix) => {
                if seen == Seen::Failed {
                    return None;
                }
                if let Some(&next) = self.appends.get(&(state, suffix)) {
                    return Some(next);
                }
                let mut text = self.value(state).unwrap_or("").to_owned();
                text.push_str(self.value(suffix).unwrap_or(""));
                let next = self.intern(&text);
                self.appends.insert((state, suffix), next);
                Some(next)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(i: &mut Interner, state: State, op: Op, out: Outcome) -> Option<State> {
        let (step, seen) = i.reduce(&op, &out).unwrap();
        i.apply(state, step, seen)
    }

    #[test]
    fn register_semantics() {
        let mut i = Interner::default();
        let one = i.intern("1");
        let two = i.intern("2");
        assert_eq!(
            run(&mut i, ABSENT, Op::get("k"), Outcome::Value(None)),
            Some(ABSENT)
        );
        assert_eq!(run(&mut i, one, Op::get("k"), Outcome::Value(None)), None);
        assert_eq!(
            run(&mut i, ABSENT, Op::set("k", "1"), Outcome::Ok),
            Some(one)
        );
        assert_eq!(
            run(&mut i, one, Op::cas("k", "1", "2"), Outcome::Ok),
            Some(two)
        );
        assert_eq!(run(&mut i, two, Op::cas("k", "1", "2"), Outcome::Ok), None);
        assert_eq!(
            run(&mut i, two, Op::cas("k", "1", "2"), Outcome::Failed),
            Some(two)
        );
        assert_eq!(
            run(&mut i, ABSENT, Op::cas("k", "1", "2"), Outcome::Failed),
            Some(ABSENT)
        );
        assert_eq!(
            run(&mut i, ABSENT, Op::cas("k", "1", "2"), Outcome::Unknown),
            None
        );
        assert_eq!(run(&mut i, one, Op::delete("k"), Outcome::Ok), Some(ABSENT));
        assert_eq!(run(&mut i, ABSENT, Op::delete("k"), Outcome::Ok), None);
        assert_eq!(
            run(&mut i, ABSENT, Op::delete("k"), Outcome::Failed),
            Some(ABSENT)
        );
        assert_eq!(
            run(&mut i, one, Op::cad("k", "1"), Outcome::Ok),
            Some(ABSENT)
        );
        assert_eq!(
            run(&mut i, two, Op::cad("k", "1"), Outcome::Failed),
            Some(two)
        );
        assert_eq!(
            run(&mut i, ABSENT, Op::create("k", "1"), Outcome::Ok),
            Some(one)
        );
        assert_eq!(run(&mut i, one, Op::create("k", "2"), Outcome::Ok), None);
        assert_eq!(
            run(&mut i, one, Op::create("k", "2"), Outcome::Failed),
            Some(one)
        );
        let ab = run(&mut i, ABSENT, Op::append("k", "a"), Outcome::Ok).unwrap();
        let ab = run(&mut i, ab, Op::append("k", "b"), Outcome::Ok).unwrap();
        assert_eq!(i.value(ab), Some("ab"));
        assert!(i.reduce(&Op::get("k"), &Outcome::Unknown).is_none());
        assert!(i.reduce(&Op::set("k", "1"), &Outcome::NotApplied).is_none());
    }
}
