//! A linearizability checker for key/value histories (Porcupine-style search).
//!
//! Record what concurrent clients did into a [`History`] ([`History::invoke`] before an
//! operation, [`History::ret`] after it), then ask [`check`] whether some total order of
//! the operations, consistent with real time, explains every observed outcome under the
//! sequential model of a key/value register. The answer is a [`Verdict`]: linearizable, not
//! linearizable with a [`Violation`] per offending key (a small core of operations that
//! cannot all hold, the longest linearizable prefix and the operation that cannot be
//! placed after it), or unknown when the [`Budget`] ran out.
//!
//! # Model
//!
//! Each key is a register that starts absent. [`Op`] covers get, set, compare-and-swap,
//! compare-and-delete, delete, create-if-absent and append; [`Outcome`] is what the client
//! saw: a value, ok, a failed condition, "not applied" or unknown (timed out, crashed: the
//! operation may take effect at any time after its invocation, or never).
//!
//! The model compares values, not etcd's `modifiedIndex`. When every write stores a
//! unique value (client id and counter, as Jepsen does), a key's values and modified
//! indexes correspond one to one, so a compare-and-swap on `prevIndex` is recorded as a
//! [`Op::Cas`] on the value that index holds, and a read's index need not be compared.
//!
//! # Algorithm
//!
//! The history is split per key (P-compositionality: a history is linearizable iff each
//! key's sub-history is), then each key is checked with Wing & Gong's search as improved by
//! Lowe and used by Porcupine: a depth-first search over linearization points, memoizing
//! (set of linearized operations, register state) pairs so that no configuration is
//! explored twice. It is worst-case exponential, hence the budget.
//!
//! # Example
//!
//! ```
//! use lincheck::{Budget, History, Op, Outcome, check};
//!
//! let history = History::new();
//! // Client 1 writes "a" while client 2 reads; the read overlaps the write.
//! let w = history.invoke(1, Op::set("k", "a"));
//! let r = history.invoke(2, Op::get("k"));
//! history.ret(r, Outcome::Value(Some("a".into())))?;
//! history.ret(w, Outcome::Ok)?;
//! assert!(check(&history, Budget::default()).is_linearizable());
//!
//! // A later read that misses the completed write is a stale read.
//! let stale = history.invoke(3, Op::get("k"));
//! history.ret(stale, Outcome::Value(None))?;
//! let verdict = check(&history, Budget::default());
//! assert!(verdict.is_violation(), "{verdict}");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod check;
mod error;
mod history;
pub mod jepsen;
mod model;
pub mod text;
mod verdict;

pub use check::{check, check_records, check_report};
pub use error::{HistoryError, ParseError};
pub use history::{ClientId, History, Op, OpId, OpRecord, Outcome};
pub use verdict::{
    Attempt, Budget, KeyReport, KeyResult, Linearized, Report, Verdict, Violation, timeline,
};
