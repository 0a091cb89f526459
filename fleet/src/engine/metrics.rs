//! The engine's counters, for the daemon to export (fleet's `engine_*` Prometheus
//! metrics, fleet.md §6.8, and a few of our own).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters kept by one engine; read them with [`EngineMetrics::snapshot`]. All counters
/// only grow.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Reconcile passes started (fleet's `engine_reconcile_count_total`).
    pub reconcile_passes: AtomicU64,
    /// Passes that stopped early: the snapshot could not be read, a write failed on a
    /// store error, or the lease was lost (fleet's `engine_reconcile_failure_count_total`).
    pub reconcile_failures: AtomicU64,
    /// Schedules written (`target` created).
    pub schedules: AtomicU64,
    /// Unschedules written (`target` deleted).
    pub unschedules: AtomicU64,
    /// Single writes the store refused because the schedule changed meanwhile (the next
    /// pass retries them; fleet's `engine_task_failure_count_total`).
    pub task_failures: AtomicU64,
    /// Writes refused because the lease was no longer this engine's.
    pub fenced_refusals: AtomicU64,
    /// Times this engine became the leader.
    pub leader_acquired: AtomicU64,
    /// Times this engine stopped being the leader (lost, released, or sat out).
    pub leader_lost: AtomicU64,
    /// Whether this engine leads now.
    pub is_leader: AtomicBool,
    /// How long the last pass took, in microseconds (fleet's
    /// `engine_reconcile_duration_second`).
    pub last_pass_micros: AtomicU64,
}

/// The counters at one moment, as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`EngineMetrics::reconcile_passes`].
    pub reconcile_passes: u64,
    /// See [`EngineMetrics::reconcile_failures`].
    pub reconcile_failures: u64,
    /// See [`EngineMetrics::schedules`].
    pub schedules: u64,
    /// See [`EngineMetrics::unschedules`].
    pub unschedules: u64,
    /// See [`EngineMetrics::task_failures`].
    pub task_failures: u64,
    /// See [`EngineMetrics::fenced_refusals`].
    pub fenced_refusals: u64,
    /// See [`EngineMetrics::leader_acquired`].
    pub leader_acquired: u64,
    /// See [`EngineMetrics::leader_lost`].
    pub leader_lost: u64,
    /// See [`EngineMetrics::is_leader`].
    pub is_leader: bool,
    /// See [`EngineMetrics::last_pass_micros`].
    pub last_pass_micros: u64,
}

impl EngineMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            reconcile_passes: r(&self.reconcile_passes),
            reconcile_failures: r(&self.reconcile_failures),
            schedules: r(&self.schedules),
            unschedules: r(&self.unschedules),
            task_failures: r(&self.task_failures),
            fenced_refusals: r(&self.fenced_refusals),
            leader_acquired: r(&self.leader_acquired),
            leader_lost: r(&self.leader_lost),
            is_leader: self.is_leader.load(Ordering::Relaxed),
            last_pass_micros: r(&self.last_pass_micros),
        }
    }

    /// Adds one to a counter.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
