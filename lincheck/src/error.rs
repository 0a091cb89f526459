//! Errors from recording and parsing histories.

use crate::history::OpId;

/// A history was recorded inconsistently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The id was not issued by this history.
    #[error("{0} was not issued by this history")]
    UnknownOp(OpId),
    /// The operation was already completed.
    #[error("{0} already returned")]
    AlreadyReturned(OpId),
    /// The outcome cannot be the result of this kind of operation.
    #[error("{id}: {op} cannot complete with outcome {outcome}")]
    OutcomeMismatch {
        /// The operation.
        id: OpId,
        /// The operation, rendered.
        op: String,
        /// The outcome, rendered.
        outcome: String,
    },
    /// An explicit return time precedes the invocation time.
    #[error("{id} returned at {returned}, before it was invoked at {invoked}")]
    ReturnBeforeInvoke {
        /// The operation.
        id: OpId,
        /// Its invocation time.
        invoked: u64,
        /// The offending return time.
        returned: u64,
    },
    /// Logical-order and explicit-timestamp recording were mixed in one history.
    #[error("a history is recorded either in logical order or with explicit timestamps, not both")]
    MixedClocks,
}

/// A history file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number of the offending line.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line,
            message: message.into(),
        }
    }
}
