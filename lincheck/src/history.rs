//! Recording a concurrent history: operations, their outcomes, and the order of events.

use std::fmt;
use std::sync::Mutex;

use crate::error::HistoryError;

/// Identifies the client (thread, task, connection) that issued an operation.
///
/// The checker does not need client ids to decide linearizability (only the invoke and
/// return order matters); they are kept so that explanations can name who did what.
/// As in Jepsen, a client whose operation timed out should take a new id for its next
/// operation, since the timed-out one may still be in flight.
pub type ClientId = u64;

/// Handle for one recorded operation, returned by [`History::invoke`] and passed to
/// [`History::ret`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) usize);

impl OpId {
    /// The operation's position in the history, in invocation order (0-based).
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op#{}", self.0)
    }
}

/// One operation on a key/value register, as the client invoked it.
///
/// Every operation names exactly one key; the checker partitions the history by key and
/// checks each key's register on its own (P-compositionality), so multi-key operations
/// are out of scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// Read the key's value; completes with [`Outcome::Value`].
    Get {
        /// The key read.
        key: String,
    },
    /// Unconditionally set the key (etcd `PUT` without conditions); completes with
    /// [`Outcome::Ok`].
    Set {
        /// The key written.
        key: String,
        /// The value written.
        value: String,
    },
    /// Compare-and-swap: set `new` if the key exists and holds `expected`. Completes with
    /// [`Outcome::Ok`] when it swapped, [`Outcome::Failed`] when the key was absent or held
    /// another value (etcd errors 100 and 101).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: String,
        /// The value stored on success.
        new: String,
    },
    /// Delete the key. Completes with [`Outcome::Ok`] when the key existed and was deleted,
    /// [`Outcome::Failed`] when it did not exist (etcd error 100).
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-delete: delete the key if it holds `expected`. [`Outcome::Ok`] when it
    /// deleted, [`Outcome::Failed`] when the key was absent or held another value.
    Cad {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: String,
    },
    /// Create the key if absent (etcd `prevExist=false`). [`Outcome::Ok`] when created,
    /// [`Outcome::Failed`] when the key already existed (etcd error 105).
    Create {
        /// The key.
        key: String,
        /// The value stored on success.
        value: String,
    },
    /// Append to the key's value (an absent key counts as the empty string); completes with
    /// [`Outcome::Ok`]. Used by Porcupine's key/value histories.
    Append {
        /// The key.
        key: String,
        /// The suffix appended.
        suffix: String,
    },
}

impl Op {
    /// A read of `key`.
    pub fn get(key: impl Into<String>) -> Op {
        Op::Get { key: key.into() }
    }

    /// An unconditional write of `value` to `key`.
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Op {
        Op::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    /// A compare-and-swap of `key` from `expected` to `new`.
    pub fn cas(key: impl Into<String>, expected: impl Into<String>, new: impl Into<String>) -> Op {
        Op::Cas {
            key: key.into(),
            expected: expected.into(),
            new: new.into(),
        }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    /// A compare-and-delete of `key` if it holds `expected`.
    pub fn cad(key: impl Into<String>, expected: impl Into<String>) -> Op {
        Op::Cad {
            key: key.into(),
            expected: expected.into(),
        }
    }

    /// A create-if-absent of `key` with `value`.
    pub fn create(key: impl Into<String>, value: impl Into<String>) -> Op {
        Op::Create {
            key: key.into(),
            value: value.into(),
        }
    }

    /// An append of `suffix` to `key`.
    pub fn append(key: impl Into<String>, suffix: impl Into<String>) -> Op {
        Op::Append {
            key: key.into(),
            suffix: suffix.into(),
        }
    }

    /// The key this operation touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Get { key }
            | Op::Set { key, .. }
            | Op::Cas { key, .. }
            | Op::Delete { key }
            | Op::Cad { key, .. }
            | Op::Create { key, .. }
            | Op::Append { key, .. } => key,
        }
    }

    /// Whether `outcome` is one this kind of operation can complete with.
    pub fn accepts(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Unknown | Outcome::NotApplied => true,
            Outcome::Value(_) => matches!(self, Op::Get { .. }),
            Outcome::Ok => !matches!(self, Op::Get { .. }),
            Outcome::Failed => matches!(
                self,
                Op::Cas { .. } | Op::Delete { .. } | Op::Cad { .. } | Op::Create { .. }
            ),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get { key } => write!(f, "get({key:?})"),
            Op::Set { key, value } => write!(f, "set({key:?}, {value:?})"),
            Op::Cas { key, expected, new } => write!(f, "cas({key:?}, {expected:?} -> {new:?})"),
            Op::Delete { key } => write!(f, "delete({key:?})"),
            Op::Cad { key, expected } => write!(f, "cad({key:?}, {expected:?})"),
            Op::Create { key, value } => write!(f, "create({key:?}, {value:?})"),
            Op::Append { key, suffix } => write!(f, "append({key:?}, {suffix:?})"),
        }
    }
}

/// How an operation completed, as the client observed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A read returned this value (`None`: the key did not exist).
    Value(Option<String>),
    /// A mutation took effect.
    Ok,
    /// A conditional mutation was rejected because its condition did not hold (CAS or CAD
    /// compare failed, create on an existing key, delete of a missing key). This is a
    /// definite answer and constrains the register's state at the linearization point.
    Failed,
    /// The operation certainly did not take effect and observed nothing, e.g. it was
    /// refused before reaching the state machine. The checker ignores it.
    NotApplied,
    /// The client does not know whether the operation took effect (timeout, lost
    /// connection, crash): it may take effect at any point after its invocation, or never.
    /// An operation that is invoked and never returned is treated the same way.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(Some(v)) => write!(f, "{v:?}"),
            Outcome::Value(None) => f.write_str("<absent>"),
            Outcome::Ok => f.write_str("ok"),
            Outcome::Failed => f.write_str("failed"),
            Outcome::NotApplied => f.write_str("not-applied"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

/// One operation of a history with its invocation and (if any) completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// The operation's id.
    pub id: OpId,
    /// Who issued it.
    pub client: ClientId,
    /// What was invoked.
    pub op: Op,
    /// When it was invoked: a logical event number, or the caller's timestamp.
    pub invoked_at: u64,
    /// When it completed and how; `None` if it never returned (an unknown outcome).
    pub returned: Option<(u64, Outcome)>,
}

impl OpRecord {
    /// The outcome the checker uses: [`Outcome::Unknown`] if the operation never returned.
    pub fn outcome(&self) -> &Outcome {
        self.returned.as_ref().map_or(&Outcome::Unknown, |(_, o)| o)
    }
}

impl fmt::Display for OpRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} client {} {} ", self.id, self.client, self.op)?;
        match &self.returned {
            Some((t, o)) => write!(f, "-> {o} [{}..{}]", self.invoked_at, t),
            None => write!(f, "-> unknown [{}..]", self.invoked_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    Unset,
    Logical,
    Explicit,
}

#[derive(Debug)]
struct Inner {
    ops: Vec<OpRecord>,
    next_event: u64,
    clock: Clock,
}

/// A concurrent history of key/value operations, recorded from any number of threads.
///
/// Record with [`invoke`](History::invoke) just before an operation is sent and
/// [`ret`](History::ret) just after its reply arrives. The history is `Sync`: share it with
/// an `Arc`. Recording takes one short mutex hold per event; the order in which events
/// enter the history is their real-time order, which is sound because an `invoke` that
/// starts after a `ret` finished is necessarily recorded after it.
///
/// Alternatively, record with caller-supplied timestamps ([`invoke_at`](History::invoke_at)
/// and [`ret_at`](History::ret_at)), e.g. from one monotonic clock or a simulation's
/// virtual time. Events with equal timestamps count as concurrent. The two styles cannot be
/// mixed in one history.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Inner>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl Clone for History {
    fn clone(&self) -> Self {
        let inner = self.lock();
        History {
            inner: Mutex::new(Inner {
                ops: inner.ops.clone(),
                next_event: inner.next_event,
                clock: inner.clock,
            }),
        }
    }
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History {
            inner: Mutex::new(Inner {
                ops: Vec::new(),
                next_event: 0,
                clock: Clock::Unset,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` half-updated (every update
        // is a single push or assignment), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `client` invoked `op` now (in logical event order).
    ///
    /// # Panics
    ///
    /// Panics if this history was recorded with explicit timestamps
    /// ([`invoke_at`](History::invoke_at)); use [`try_invoke`](History::try_invoke) to get
    /// an error instead.
    pub fn invoke(&self, client: ClientId, op: Op) -> OpId {
        match self.try_invoke(client, op) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        }
    }

    /// Records that `client` invoked `op` now (in logical event order).
    ///
    /// # Errors
    ///
    /// [`HistoryError::MixedClocks`] if the history was recorded with explicit timestamps.
    pub fn try_invoke(&self, client: ClientId, op: Op) -> Result<OpId, HistoryError> {
        let mut inner = self.lock();
        inner.use_clock(Clock::Logical)?;
        let t = inner.tick();
        Ok(inner.push(client, op, t))
    }

    /// Records that `client` invoked `op` at time `at` (any monotonic unit).
    ///
    /// # Errors
    ///
    /// [`HistoryError::MixedClocks`] if the history was recorded in logical order.
    pub fn invoke_at(&self, client: ClientId, op: Op, at: u64) -> Result<OpId, HistoryError> {
        let mut inner = self.lock();
        inner.use_clock(Clock::Explicit)?;
        Ok(inner.push(client, op, at))
    }

    /// Records that operation `id` completed now with `outcome`.
    ///
    /// # Errors
    ///
    /// [`HistoryError::UnknownOp`] for an id this history did not issue,
    /// [`HistoryError::AlreadyReturned`] if `id` was already completed,
    /// [`HistoryError::OutcomeMismatch`] if the outcome does not fit the operation (e.g. a
    /// value for a write), [`HistoryError::MixedClocks`] for a timestamped history.
    pub fn ret(&self, id: OpId, outcome: Outcome) -> Result<(), HistoryError> {
        let mut inner = self.lock();
        inner.use_clock(Clock::Logical)?;
        inner.validate_ret(id, &outcome, None)?;
        let t = inner.tick();
        inner.ops[id.0].returned = Some((t, outcome));
        Ok(())
    }

    /// Records that operation `id` completed at time `at` with `outcome`.
    ///
    /// # Errors
    ///
    /// As [`ret`](History::ret), plus [`HistoryError::ReturnBeforeInvoke`] if `at` is
    /// earlier than the invocation time.
    pub fn ret_at(&self, id: OpId, outcome: Outcome, at: u64) -> Result<(), HistoryError> {
        let mut inner = self.lock();
        inner.use_clock(Clock::Explicit)?;
        inner.validate_ret(id, &outcome, Some(at))?;
        inner.ops[id.0].returned = Some((at, outcome));
        Ok(())
    }

    /// A history made of records obtained elsewhere (e.g. [`History::ops`] of another
    /// history, or a harness's own log), treated as timestamped. Ids are reassigned in
    /// order.
    ///
    /// # Errors
    ///
    /// The first record whose outcome does not fit its operation, or that returns before
    /// it was invoked.
    pub fn from_records(records: Vec<OpRecord>) -> Result<History, HistoryError> {
        let h = History::new();
        for rec in records {
            let id = h.invoke_at(rec.client, rec.op, rec.invoked_at)?;
            if let Some((t, outcome)) = rec.returned {
                h.ret_at(id, outcome, t)?;
            }
        }
        Ok(h)
    }

    /// The history in the plain-text form of [`crate::text`].
    pub fn to_text(&self) -> String {
        crate::text::to_text(&self.ops())
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// Whether no operation was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every operation recorded so far, in invocation-recording order.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.lock().ops.clone()
    }
}

impl Inner {
    fn use_clock(&mut self, want: Clock) -> Result<(), HistoryError> {
        match self.clock {
            Clock::Unset => {
                self.clock = want;
                Ok(())
            }
            c if c == want => Ok(()),
            _ => Err(HistoryError::MixedClocks),
        }
    }

    fn tick(&mut self) -> u64 {
        let t = self.next_event;
        self.next_event += 1;
        t
    }

    fn push(&mut self, client: ClientId, op: Op, at: u64) -> OpId {
        let id = OpId(self.ops.len());
        self.ops.push(OpRecord {
            id,
            client,
            op,
            invoked_at: at,
            returned: None,
        });
        id
    }

    fn validate_ret(
        &self,
        id: OpId,
        outcome: &Outcome,
        at: Option<u64>,
    ) -> Result<(), HistoryError> {
        let rec = self.ops.get(id.0).ok_or(HistoryError::UnknownOp(id))?;
        if rec.returned.is_some() {
            return Err(HistoryError::AlreadyReturned(id));
        }
        if !rec.op.accepts(outcome) {
            return Err(HistoryError::OutcomeMismatch {
                id,
                op: rec.op.to_string(),
                outcome: outcome.to_string(),
            });
        }
        if let Some(at) = at
            && at < rec.invoked_at
        {
            return Err(HistoryError::ReturnBeforeInvoke {
                id,
                invoked: rec.invoked_at,
                returned: at,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_order_follows_recording() {
        let h = History::new();
        let a = h.invoke(1, Op::set("k", "1"));
        let b = h.invoke(2, Op::get("k"));
        h.ret(a, Outcome::Ok).unwrap();
        h.ret(b, Outcome::Value(Some("1".into()))).unwrap();
        let ops = h.ops();
        assert_eq!(ops[0].invoked_at, 0);
        assert_eq!(ops[1].invoked_at, 1);
        assert_eq!(ops[0].returned.as_ref().unwrap().0, 2);
        assert_eq!(ops[1].returned.as_ref().unwrap().0, 3);
    }

    #[test]
    fn bad_returns_are_errors() {
        let h = History::new();
        let a = h.invoke(1, Op::set("k", "1"));
        assert!(matches!(
            h.ret(a, Outcome::Value(None)),
            Err(HistoryError::OutcomeMismatch { .. })
        ));
        assert!(matches!(
            h.ret(a, Outcome::Failed),
            Err(HistoryError::OutcomeMismatch { .. })
        ));
        h.ret(a, Outcome::Ok).unwrap();
        assert_eq!(h.ret(a, Outcome::Ok), Err(HistoryError::AlreadyReturned(a)));
        assert_eq!(
            h.ret(OpId(7), Outcome::Ok),
            Err(HistoryError::UnknownOp(OpId(7)))
        );
        assert_eq!(
            h.invoke_at(1, Op::get("k"), 5),
            Err(HistoryError::MixedClocks)
        );
    }

    #[test]
    fn explicit_times_are_checked() {
        let h = History::new();
        let a = h.invoke_at(1, Op::get("k"), 10).unwrap();
        assert!(matches!(
            h.ret_at(a, Outcome::Value(None), 9),
            Err(HistoryError::ReturnBeforeInvoke { .. })
        ));
        h.ret_at(a, Outcome::Value(None), 10).unwrap();
        assert_eq!(
            h.try_invoke(1, Op::get("k")),
            Err(HistoryError::MixedClocks)
        );
    }

    #[test]
    fn types_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<History>();
        send_sync::<OpRecord>();
        send_sync::<crate::Verdict>();
    }

    #[test]
    fn history_is_shareable_across_threads() {
        let h = std::sync::Arc::new(History::new());
        let threads: Vec<_> = (0..4)
            .map(|c| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let id = h.invoke(c, Op::set("k", format!("{c}-{i}")));
                        h.ret(id, Outcome::Ok).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.len(), 200);
    }
}
