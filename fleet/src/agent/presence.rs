//! The machine's presence in the registry (fleet.md §6.6) and self-fencing.
//!
//! The agent registers `machines/<id>/object` create-only with TTL `agent_ttl` (so a second
//! live machine with the same ID is refused, and keeps being refused, with a log line
//! naming the ID), then refreshes it every half TTL, registering again when it expired
//! meanwhile.
//!
//! Self-fencing: once no refresh has succeeded for `agent_ttl - margin` since the *send*
//! time of the last one that did, the presence may be about to expire and the engine to
//! move this machine's units elsewhere. The agent then stops its units (they stay loaded)
//! and keeps trying; when a refresh succeeds again it starts those still scheduled here
//! (once the registry is read anew: the executor waits for that). So a unit never runs
//! here after the presence that entitles it to could have expired.
//! [`AgentConfig::fence_margin`](super::AgentConfig::fence_margin) explains the margin.

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};

use super::backoff::Backoff;
use super::counters::AgentCounters;
use super::{Agent, stopped};
use crate::registry::{MachineRecord, RegistryError};
use crate::store::{KvStore, StoreError};
use systemd_driver::UnitDriver;

/// Where the agent stands with its presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Not registered yet (at start-up, or while another live machine holds the ID): the
    /// agent leaves its units alone.
    Unregistered,
    /// Registered and refreshed in time: the agent runs what is scheduled here.
    Alive,
    /// No refresh succeeded in time: the agent has stopped its units and keeps trying.
    Fenced,
}

impl<S: KvStore, D: UnitDriver> Agent<S, D> {
    /// Registers and refreshes the presence until `stop`; returns whether it ever
    /// registered (only then is the presence this agent's to remove).
    pub(super) async fn heart(&self, mut stop: watch::Receiver<bool>) -> bool {
        let cfg = &self.config;
        let record = cfg.record();
        let mut registered = false;
        let mut backoff = Backoff::new(cfg.retry_backoff, cfg.refresh_interval());
        // When the agent must fence if no refresh succeeds before.
        let mut fence_at: Option<Instant> = None;
        let mut next = Instant::now();
        loop {
            let alive = *self.presence.borrow() == Presence::Alive;
            let deadline = fence_at.filter(|_| alive);
            let wake = deadline.map_or(next, |f| f.min(next));
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return registered,
                () = sleep_until(wake) => {}
            }
            if deadline.is_some_and(|f| Instant::now() >= f) {
                self.fence();
                continue;
            }
            if Instant::now() < next {
                continue;
            }
            let sent = Instant::now();
            // A refresh still pending at the fencing deadline counts as failed.
            let limit = deadline.map_or(sent + cfg.store_timeout(), |f| {
                f.min(sent + cfg.store_timeout())
            });
            let result = tokio::select! {
                biased;
                () = stopped(&mut stop) => return registered,
                r = timeout_at(limit, self.beat(&record, registered)) => r,
            };
            match result {
                Ok(Ok(())) => {
                    AgentCounters::inc(&self.counters.presence_beats);
                    registered = true;
                    backoff.reset();
                    fence_at = Some(sent + cfg.agent_ttl - cfg.fence_margin());
                    next = sent + cfg.refresh_interval();
                    let id = &cfg.machine_id;
                    self.presence.send_if_modified(|p| match *p {
                        Presence::Alive => false,
                        Presence::Unregistered => {
                            tracing::info!(machine = %id, "machine registered");
                            *p = Presence::Alive;
                            true
                        }
                        Presence::Fenced => {
                            tracing::info!(
                                machine = %id,
                                "presence re-established: running this machine's units again"
                            );
                            *p = Presence::Alive;
                            true
                        }
                    });
                }
                Ok(Err(e)) => {
                    AgentCounters::inc(&self.counters.presence_failures);
                    let delay = backoff.next_delay();
                    next = Instant::now() + delay;
                    if matches!(&e, RegistryError::Store(s) if s.is_exists()) {
                        tracing::error!(
                            machine = %cfg.machine_id,
                            "machine ID {} is already registered by another live machine \
                             (duplicate machine ID?); retrying in {delay:?}",
                            cfg.machine_id
                        );
                    } else {
                        tracing::warn!(
                            machine = %cfg.machine_id,
                            error = %e,
                            "presence refresh failed; retrying in {delay:?}"
                        );
                    }
                }
                Err(_) => {
                    AgentCounters::inc(&self.counters.presence_failures);
                    let delay = backoff.next_delay();
                    next = Instant::now() + delay;
                    tracing::warn!(
                        machine = %cfg.machine_id,
                        "presence refresh got no answer in time; retrying in {delay:?}"
                    );
                }
            }
        }
    }

    /// One registration (create-only) or refresh (update, then create when it expired).
    async fn beat(&self, record: &MachineRecord, registered: bool) -> Result<(), RegistryError> {
        let ttl = self.config.ttl_secs();
        if registered {
            match self.registry.refresh_machine(record, ttl).await {
                Err(RegistryError::Store(StoreError::Kv(e))) if e.code() == 100 => {
                    tracing::warn!(
                        machine = %record.id,
                        "presence had expired; registering again"
                    );
                }
                r => return r,
            }
        }
        self.registry.register_machine(record, ttl).await?;
        if let Some(c) = &self.config.capacity {
            // Best effort: without it the machine counts as unlimited, which fleet did too.
            if let Err(e) = self.registry.set_capacity(&record.id, c).await {
                tracing::warn!(machine = %record.id, "publishing the machine's capacity failed: {e}");
            }
        }
        Ok(())
    }

    fn fence(&self) {
        AgentCounters::inc(&self.counters.fencing_events);
        tracing::warn!(
            machine = %self.config.machine_id,
            "no presence refresh succeeded for agent_ttl minus the fence margin; the presence \
             may expire and the units be moved: stopping every unit here until it is refreshed"
        );
        self.presence.send_replace(Presence::Fenced);
    }
}
