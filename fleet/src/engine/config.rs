//! The engine's settings (fleet's `engine_reconcile_interval`, `disable_engine`, and the
//! lease TTL fleet derives from the interval).

use std::time::Duration;

use scheduler::Strategy;

/// The engine version this crate implements, written to `engine/version` and into the
/// lease (fleet 1.0's is 1). An engine never takes the lease from a higher version.
pub const ENGINE_VERSION: u32 = 1;

/// How an engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This machine's ID: the lease names it.
    pub machine_id: String,
    /// The engine version (normally [`ENGINE_VERSION`]).
    pub version: u32,
    /// How often the leader reconciles without any event, and how often every engine
    /// looks at the lease (fleet's `engine_reconcile_interval`, 2 s).
    pub reconcile_interval: Duration,
    /// How long the lease lasts without renewal (fleet: 5 × the interval). The store
    /// counts whole seconds, so it is rounded up to one. The leader renews it every
    /// interval, or every third of it if that is shorter. For a dead leader's units to
    /// move within one agent TTL, keep it at most the agent TTL.
    pub lease_ttl: Duration,
    /// How long, after the engine (re)gains contact with the store, a unit stays on a
    /// machine whose presence is missing but which the engine has not seen present since
    /// then (normally the agent TTL; see the module docs on "no churn").
    pub presence_grace: Duration,
    /// How long the engine waits for a burst of events to end before one pass (a pass
    /// runs at most five times this after the first event of a burst).
    pub coalesce: Duration,
    /// Never take part in leader election (fleet's `disable_engine`).
    pub disabled: bool,
    /// The placement strategy for units that do not name one (fleet's: least loaded).
    pub strategy: Strategy,
}

impl EngineConfig {
    /// fleet's defaults for machine `machine_id`: a 2 s interval, a 10 s lease, a 30 s
    /// presence grace (fleet's default agent TTL).
    pub fn new(machine_id: impl Into<String>) -> EngineConfig {
        EngineConfig {
            machine_id: machine_id.into(),
            version: ENGINE_VERSION,
            reconcile_interval: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            presence_grace: Duration::from_secs(30),
            coalesce: Duration::from_millis(20),
            disabled: false,
            strategy: Strategy::LeastLoaded,
        }
    }

    /// Sets the interval and, as fleet does, a lease of five intervals (builder style).
    pub fn with_reconcile_interval(mut self, interval: Duration) -> EngineConfig {
        self.reconcile_interval = interval;
        self.lease_ttl = interval * 5;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`EngineError::Config`] naming the setting that cannot work.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |detail: &str| Err(EngineError::Config(detail.to_owned()));
        if self.machine_id.is_empty() {
            return bad("machine ID is empty");
        }
        if self.machine_id.contains('/') {
            return bad("machine ID contains '/'");
        }
        if self.reconcile_interval.is_zero() {
            return bad("reconcile interval is zero");
        }
        if self.lease_ttl.is_zero() {
            return bad("lease TTL is zero");
        }
        Ok(())
    }

    /// The lease TTL in the store's whole seconds.
    pub(crate) fn lease_ttl_secs(&self) -> u64 {
        self.lease_ttl.as_secs() + u64::from(self.lease_ttl.subsec_nanos() > 0)
    }

    /// How often the engine ticks: renews (or looks at) the lease and reconciles.
    pub(crate) fn tick(&self) -> Duration {
        self.reconcile_interval
            .min(Duration::from_secs(self.lease_ttl_secs()) / 3)
    }
}

/// Why an engine cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A setting that cannot work.
    #[error("engine configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fleets() {
        let c = EngineConfig::new("m1");
        assert_eq!(c.reconcile_interval, Duration::from_secs(2));
        assert_eq!(c.lease_ttl_secs(), 10);
        assert_eq!(c.tick(), Duration::from_secs(2));
        assert!(c.validate().is_ok());
        let fast = c.with_reconcile_interval(Duration::from_millis(100));
        assert_eq!(fast.lease_ttl_secs(), 1, "whole seconds, rounded up");
        assert_eq!(fast.tick(), Duration::from_millis(100));
        let mut slow = EngineConfig::new("m1");
        slow.lease_ttl = Duration::from_secs(3);
        assert_eq!(
            slow.tick(),
            Duration::from_secs(1),
            "three renewals per TTL"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = EngineConfig::new("");
        assert!(c.validate().unwrap_err().to_string().contains("machine ID"));
        c.machine_id = "m1".into();
        c.reconcile_interval = Duration::ZERO;
        assert!(c.validate().unwrap_err().to_string().contains("interval"));
    }
}
