//! The [`StateMachine`] seam: what raft-store replicates.

use std::io::{Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A deterministic state machine replicated by a [`Node`](crate::Node).
///
/// Every member applies the same commands in the same order; the machine must reach the same
/// state on each, so `apply` may not read clocks, randomness or anything outside its inputs
/// (time, if needed, travels inside the command).
pub trait StateMachine: Send + Sync + 'static {
    /// A command, as proposed by a client and stored in the raft log (JSON-encoded).
    type Command: Serialize + DeserializeOwned + Send + 'static;
    /// The result of applying a command, returned to the proposer and streamed to watchers.
    type Output: Send + Sync + 'static;

    /// Applies the committed command at raft log index `index`.
    ///
    /// Failures that depend only on the command and the state (a failed compare-and-swap, a
    /// missing key) are outputs, not panics: they happen identically on every member.
    fn apply(&mut self, index: u64, command: Self::Command) -> Self::Output;

    /// Writes the whole state to `w`, in a format [`StateMachine::restore`] reads back.
    ///
    /// # Errors
    ///
    /// I/O errors from `w`.
    fn snapshot(&self, w: &mut dyn Write) -> std::io::Result<()>;

    /// Replaces the whole state with the one read from `r`.
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the bytes; the state must then be left unchanged.
    fn restore(&mut self, r: &mut dyn Read) -> Result<(), String>;

    /// Outputs with the machine's own event index at or after `from`, oldest first, for
    /// watches that start in the past. `None` if `from` is older than the history kept.
    /// The default keeps no history.
    fn history(&self, from: u64) -> Option<Vec<Self::Output>> {
        let _ = from;
        None
    }
}
