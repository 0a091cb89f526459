//! The agent's settings and errors.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::registry::MachineRecord;

/// fleet's default `agent_ttl`.
pub const DEFAULT_AGENT_TTL: Duration = Duration::from_secs(30);

/// Settings of an [`Agent`](super::Agent). A plain struct: fill it, then
/// [`validate`](AgentConfig::validate) (done by `Agent::new` too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The machine ID (`/etc/machine-id`): the machine's name in the registry.
    pub machine_id: String,
    /// The IP others reach the machine at; empty when unknown.
    pub public_ip: String,
    /// Configured metadata (fleet's `metadata` option); dynamic metadata set through the
    /// API is overlaid on it.
    pub metadata: BTreeMap<String, String>,
    /// fleet's capability flags published in the presence record (`DISABLE_ENGINE`,
    /// `GRPC`); none are published when empty.
    pub capabilities: BTreeMap<String, bool>,
    /// The version published in the presence record (fleetctl compares it with its own).
    pub version: String,
    /// What the machine offers the scheduler, published beside the presence record at
    /// every registration; `None` publishes nothing (unlimited).
    pub capacity: Option<crate::registry::CapacityRecord>,
    /// fleet's `agent_ttl`: the lifetime of the presence record, of published unit states
    /// and of launch heartbeats. Given to the store in whole seconds, rounded up.
    pub agent_ttl: Duration,
    /// How long before its presence could expire the agent stops its units when it cannot
    /// refresh the presence; `None` for [`AgentConfig::DEFAULT_FENCE_MARGIN_DIVISOR`]
    /// (`agent_ttl / 5`). See [`AgentConfig::fence_margin`].
    pub fence_margin: Option<Duration>,
    /// How often the agent re-reads the whole registry even though its watch is healthy: a
    /// safety net only (every change reaches it by watch), so minutes.
    pub resync_interval: Duration,
    /// The first delay before retrying a failed store operation or driver task; doubles on
    /// each failure up to [`max_retry_backoff`](Self::max_retry_backoff).
    pub retry_backoff: Duration,
    /// The longest delay between retries.
    pub max_retry_backoff: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            machine_id: String::new(),
            public_ip: String::new(),
            metadata: BTreeMap::new(),
            capabilities: BTreeMap::new(),
            version: String::new(),
            capacity: None,
            agent_ttl: DEFAULT_AGENT_TTL,
            fence_margin: None,
            resync_interval: Duration::from_secs(300),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(60),
        }
    }
}

/// Why an agent cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is not usable.
    #[error("agent configuration: {0}")]
    Config(String),
    /// The unit driver failed at start-up (listing or subscribing to its units).
    #[error("unit driver: {0}")]
    Driver(#[from] systemd_driver::Error),
}

impl AgentConfig {
    /// The default fence margin is `agent_ttl` divided by this.
    pub const DEFAULT_FENCE_MARGIN_DIVISOR: u32 = 5;

    /// Defaults for machine `machine_id`.
    pub fn new(machine_id: impl Into<String>) -> AgentConfig {
        AgentConfig {
            machine_id: machine_id.into(),
            ..AgentConfig::default()
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`AgentError::Config`] for an empty machine ID or one with a `/`, an `agent_ttl`
    /// under one second, or a fence margin that is not under half the TTL (a healthy agent
    /// refreshes its presence every half TTL, and must never fence itself between two
    /// refreshes).
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: String| Err(AgentError::Config(m));
        if self.machine_id.is_empty() || self.machine_id.contains('/') {
            return bad(format!("invalid machine ID {:?}", self.machine_id));
        }
        if self.agent_ttl < Duration::from_secs(1) {
            return bad(format!(
                "agent_ttl {:?} is under one second",
                self.agent_ttl
            ));
        }
        if self.fence_margin() >= self.agent_ttl / 2 {
            return bad(format!(
                "fence margin {:?} must be under half of agent_ttl {:?}",
                self.fence_margin(),
                self.agent_ttl
            ));
        }
        if self.retry_backoff.is_zero() || self.resync_interval.is_zero() {
            return bad("retry_backoff and resync_interval must be positive".into());
        }
        Ok(())
    }

    /// The TTL given to the store, in whole seconds, rounded up (so the store never
    /// expires a key before the agent's own accounting says it may).
    pub fn ttl_secs(&self) -> u64 {
        self.agent_ttl.as_secs() + u64::from(self.agent_ttl.subsec_nanos() > 0)
    }

    /// The self-fencing margin: the agent stops its units once `agent_ttl - margin` has
    /// passed since it *sent* its last successful presence refresh.
    ///
    /// The store received that refresh no earlier than it was sent, and expires the
    /// presence `agent_ttl` after receiving it, so the presence cannot expire before
    /// `send time + agent_ttl`. Stopping `margin` earlier leaves room for:
    /// * clocks: the store measures the TTL with its own clock (after a store leader change,
    ///   another member's), which may run ahead of the agent's;
    /// * the stop itself: the driver returns once a stop is queued, and a service takes a
    ///   moment to exit after its stop signal;
    /// * this agent's own lateness (a busy runtime firing its timer late).
    ///
    /// Once the presence has expired the engine still needs a reconcile pass, and another
    /// agent a start, before the unit runs elsewhere; that adds slack the margin does not
    /// count on. The default is a fifth of the TTL (6 s of fleet's 30 s): with a refresh
    /// every half TTL, a refresh must have failed for another `TTL/2 - margin` (9 s by
    /// default, with retries) before the agent fences.
    pub fn fence_margin(&self) -> Duration {
        self.fence_margin
            .unwrap_or(self.agent_ttl / Self::DEFAULT_FENCE_MARGIN_DIVISOR)
    }

    /// How often the presence is refreshed: half the TTL (fleet's).
    pub fn refresh_interval(&self) -> Duration {
        self.agent_ttl / 2
    }

    /// How often published unit states and launch heartbeats are renewed: four fifths of
    /// the TTL when it is over ten seconds, else half (fleet's).
    pub fn republish_interval(&self) -> Duration {
        if self.agent_ttl > Duration::from_secs(10) {
            self.agent_ttl * 4 / 5
        } else {
            self.agent_ttl / 2
        }
    }

    /// How long one store operation of the agent may take before it counts as failed: a
    /// third of the TTL (fleet's allowance for a presence refresh).
    pub fn store_timeout(&self) -> Duration {
        self.agent_ttl / 3
    }

    /// The presence record the agent registers.
    pub fn record(&self) -> MachineRecord {
        MachineRecord {
            id: self.machine_id.clone(),
            public_ip: self.public_ip.clone(),
            metadata: (!self.metadata.is_empty()).then(|| self.metadata.clone()),
            capabilities: (!self.capabilities.is_empty()).then(|| self.capabilities.clone()),
            version: self.version.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_fleets() {
        let c = AgentConfig::new("m1");
        c.validate().unwrap();
        assert_eq!(c.ttl_secs(), 30);
        assert_eq!(c.refresh_interval(), Duration::from_secs(15));
        assert_eq!(c.republish_interval(), Duration::from_secs(24));
        assert_eq!(c.store_timeout(), Duration::from_secs(10));
        assert_eq!(c.fence_margin(), Duration::from_secs(6));
    }

    #[test]
    fn short_ttls_round_up_and_republish_at_half() {
        let c = AgentConfig {
            agent_ttl: Duration::from_millis(2500),
            ..AgentConfig::new("m1")
        };
        c.validate().unwrap();
        assert_eq!(c.ttl_secs(), 3);
        assert_eq!(c.republish_interval(), Duration::from_millis(1250));
        assert_eq!(c.fence_margin(), Duration::from_millis(500));
    }

    #[test]
    fn the_margin_must_leave_a_refresh_interval() {
        let mut c = AgentConfig::new("m1");
        c.fence_margin = Some(Duration::from_secs(15));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("fence margin"), "{err}");
        c.fence_margin = Some(Duration::from_secs(14));
        c.validate().unwrap();
        assert!(AgentConfig::new("").validate().is_err());
        assert!(AgentConfig::new("a/b").validate().is_err());
        let short = AgentConfig {
            agent_ttl: Duration::from_millis(999),
            ..AgentConfig::new("m1")
        };
        assert!(short.validate().is_err());
    }

    #[test]
    fn record_is_fleets_machine_state() {
        let mut c = AgentConfig::new("m1");
        assert_eq!(c.record().metadata, None);
        c.metadata.insert("zone".into(), "a".into());
        c.capabilities.insert("GRPC".into(), false);
        let r = c.record();
        assert_eq!(r.metadata.unwrap()["zone"], "a");
        assert!(!r.capabilities.unwrap()["GRPC"]);
    }
}
