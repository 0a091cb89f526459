//! [`EngineHandle`]: what the rest of fleetd (the API, metrics) reads from a running
//! engine.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use scheduler::Reason;

use super::metrics::{EngineMetrics, MetricsSnapshot};
use super::plan::Plan;

/// The last pass this engine ran as leader.
#[derive(Debug, Clone)]
pub struct PassReport {
    /// The store index of the snapshot it planned from.
    pub index: u64,
    /// When it ran.
    pub at: SystemTime,
    /// What it decided (the writes it attempted, placements, reasons, held units).
    pub plan: Plan,
}

/// State shared between the engine's task and its handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) metrics: EngineMetrics,
    pub(crate) last_pass: RwLock<Option<Arc<PassReport>>>,
    /// The machine holding the lease, as last read.
    pub(crate) leader: RwLock<Option<String>>,
}

impl Shared {
    pub(crate) fn set_last_pass(&self, report: Option<PassReport>) {
        *self.last_pass.write().expect("last pass lock") = report.map(Arc::new);
    }

    pub(crate) fn last_pass(&self) -> Option<Arc<PassReport>> {
        self.last_pass.read().expect("last pass lock").clone()
    }

    pub(crate) fn set_leader(&self, machine: Option<&str>) {
        let mut l = self.leader.write().expect("leader lock");
        if l.as_deref() != machine {
            *l = machine.map(str::to_owned);
        }
    }
}

/// A cheap, clonable view of a running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    pub(crate) shared: Arc<Shared>,
}

impl EngineHandle {
    /// Whether this engine leads now.
    pub fn is_leader(&self) -> bool {
        self.shared
            .metrics
            .is_leader
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The machine that holds the engine lease, as this engine last read it (`None` when
    /// nobody did, or the engine has not looked yet).
    pub fn leader(&self) -> Option<String> {
        self.shared.leader.read().expect("leader lock").clone()
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The counters themselves (for an exporter that reads them on every scrape).
    pub fn metrics_ref(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    /// The last pass this engine ran while leading; `None` on a follower.
    pub fn last_pass(&self) -> Option<Arc<PassReport>> {
        self.shared
            .last_pass
            .read()
            .expect("last pass lock")
            .clone()
    }

    /// Why a unit that should run was left unplaced by the last pass (`None` when it was
    /// placed, is inactive, is unknown, or this engine does not lead).
    pub fn reason(&self, unit: &str) -> Option<Reason> {
        self.last_pass()?.plan.decision.unplaced.get(unit).cloned()
    }
}
