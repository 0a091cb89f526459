//! What the agent did, counted: for metrics and for tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// The agent's counters, shared with whoever reads them ([`Agent::counters`]).
///
/// [`Agent::counters`]: super::Agent::counters
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Driver tasks (load, start, stop, unload) that succeeded.
    pub tasks_run: AtomicU64,
    /// Driver tasks that failed (each is retried on a later pass).
    pub tasks_failed: AtomicU64,
    /// Unit states written to the registry (first publications and renewals).
    pub states_published: AtomicU64,
    /// Registry writes of unit states and launch heartbeats that failed.
    pub publish_failures: AtomicU64,
    /// Presence registrations and refreshes that succeeded.
    pub presence_beats: AtomicU64,
    /// Presence registrations and refreshes that failed.
    pub presence_failures: AtomicU64,
    /// Times the agent fenced itself (stopped its units because its presence may have
    /// expired).
    pub fencing_events: AtomicU64,
    /// Full reads of the registry's units (start-up, watch loss, periodic resync).
    pub full_reads: AtomicU64,
    /// Reads of a single unit after a watch event concerning this machine.
    pub unit_reads: AtomicU64,
}

impl AgentCounters {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(super) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
