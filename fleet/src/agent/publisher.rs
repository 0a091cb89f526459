//! Publishing what runs here (fleet.md §3.1, §3.2): unit states and launch heartbeats.
//!
//! For every unit the agent loaded, the driver's state (`loaded/active/running`, ...) goes
//! to `states/<unit>/<machine>` with the hash of the contents loaded, at once when it
//! changes and again every [`republish_interval`](super::AgentConfig::republish_interval),
//! with TTL `agent_ttl`, and is deleted when the unit is unloaded. Units found loaded at
//! start-up are published once the agent has loaded them itself (fleet refuses a state
//! without a hash). For every unit the agent started, the launch heartbeat
//! `job/<unit>/job-state` = this machine is written and renewed the same way, and cleared
//! when the unit is stopped or unloaded: fleet's current state `launched` needs it.
//!
//! Writes that fail are retried after a backoff; the first failure of a round ends it (the
//! store is likely away), and the units left are retried together.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use systemd_driver::{RecvError, Subscription, UnitDriver, UnitState};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use unit_parser::hash::UnitHash;

use super::backoff::Backoff;
use super::counters::AgentCounters;
use super::executor::Local;
use super::{Agent, stopped};
use crate::registry::{JobState, MachineRecord, RegistryError, UnitStateRecord};
use crate::store::{KvStore, StoreError};

/// What the publisher has written and not removed: what a purge deletes.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// Units whose state record this agent wrote, with the record.
    pub(super) states: BTreeMap<String, UnitStateRecord>,
    /// Units whose launch heartbeat this agent wrote.
    pub(super) heartbeats: BTreeSet<String>,
}

impl<S: KvStore, D: UnitDriver> Agent<S, D> {
    /// Publishes until `stop`; returns what stays published.
    pub(super) async fn publish(
        &self,
        mut stop: watch::Receiver<bool>,
        mut changes: Subscription,
        mut systemd: BTreeMap<String, UnitState>,
        mut local_rx: watch::Receiver<Local>,
    ) -> Published {
        let cfg = &self.config;
        let period = cfg.republish_interval();
        let mut local = local_rx.borrow_and_update().clone();
        let mut out = Published::default();
        // Units to write, and whether to write even what was written already (renewal).
        let mut dirty: BTreeMap<String, bool> = BTreeMap::new();
        let mut republish_at = Instant::now() + period;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Backoff::new(cfg.retry_backoff, period);
        let mut listening = true;
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return out,
                Ok(()) = local_rx.changed() => {
                    let new = local_rx.borrow_and_update().clone();
                    let names: BTreeSet<&String> = local.keys().chain(new.keys()).collect();
                    for name in names {
                        if local.get(name) != new.get(name) {
                            dirty.entry(name.clone()).or_insert(false);
                        }
                    }
                    local = new;
                }
                change = changes.recv(), if listening => match change {
                    Ok(c) => {
                        match c.state {
                            Some(s) => systemd.insert(c.name.clone(), s),
                            None => systemd.remove(&c.name),
                        };
                        dirty.entry(c.name).or_insert(false);
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!("missed {n} unit state changes; listing the units again");
                        match self.driver.list().await {
                            Ok(list) => {
                                systemd = list.into_iter().map(|s| (s.name, s.state)).collect();
                                for name in local.keys().chain(out.states.keys()) {
                                    dirty.entry(name.clone()).or_insert(false);
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "listing the units failed"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the unit driver stopped reporting states");
                        listening = false;
                    }
                },
                () = sleep_until(republish_at) => {
                    republish_at = Instant::now() + period;
                    for name in out.states.keys().chain(out.heartbeats.iter()) {
                        dirty.insert(name.clone(), true);
                    }
                }
                () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                }
            }
            if retry_at.is_some() || dirty.is_empty() {
                continue;
            }
            let round = std::mem::take(&mut dirty);
            let mut rest = round.into_iter();
            while let Some((name, force)) = rest.next() {
                if let Err(e) = self.sync(&name, force, &local, &systemd, &mut out).await {
                    AgentCounters::inc(&self.counters.publish_failures);
                    let d = backoff.next_delay();
                    tracing::warn!(unit = %name, error = %e, "publishing the unit's state failed; retrying in {d:?}");
                    retry_at = Some(Instant::now() + d);
                    // Later changes come on top of what is left of the round.
                    for (n, f) in std::iter::once((name, force)).chain(rest) {
                        let e = dirty.entry(n).or_insert(false);
                        *e |= f;
                    }
                    break;
                }
            }
            if retry_at.is_none() {
                backoff.reset();
            }
        }
    }

    /// Brings one unit's published state and heartbeat in line with what runs.
    async fn sync(
        &self,
        unit: &str,
        force: bool,
        local: &Local,
        systemd: &BTreeMap<String, UnitState>,
        out: &mut Published,
    ) -> Result<(), RegistryError> {
        let me = &self.config.machine_id;
        let ttl = self.config.ttl_secs();
        let mine = local.get(unit);
        let record = mine
            .and_then(|l| l.hash)
            .zip(systemd.get(unit))
            .map(|(hash, state)| self.state_record(state, hash));
        match record {
            Some(r) => {
                if force || out.states.get(unit) != Some(&r) {
                    self.bounded(self.registry.save_state(unit, me, &r, ttl))
                        .await?;
                    AgentCounters::inc(&self.counters.states_published);
                    out.states.insert(unit.to_owned(), r);
                }
            }
            None => {
                if out.states.contains_key(unit) {
                    self.bounded(self.registry.remove_state(unit, me)).await?;
                    out.states.remove(unit);
                }
            }
        }
        if mine.is_some_and(|l| l.state == JobState::Launched) {
            if force || !out.heartbeats.contains(unit) {
                self.bounded(self.registry.heartbeat(unit, me, ttl)).await?;
                out.heartbeats.insert(unit.to_owned());
            }
        } else if out.heartbeats.contains(unit) {
            self.bounded(self.registry.clear_heartbeat(unit, me))
                .await?;
            out.heartbeats.remove(unit);
        }
        Ok(())
    }

    /// fleet's unit state record: systemd's three states, this machine (ID only), and the
    /// hash of the contents loaded.
    fn state_record(&self, state: &UnitState, hash: UnitHash) -> UnitStateRecord {
        UnitStateRecord {
            load_state: state.load.as_str().to_owned(),
            active_state: state.active.as_str().to_owned(),
            sub_state: state.sub.clone(),
            machine_state: Some(MachineRecord {
                id: self.config.machine_id.clone(),
                ..MachineRecord::default()
            }),
            unit_hash: hash.to_string(),
        }
    }

    /// A registry operation that counts as failed when the store does not answer within
    /// the agent's store timeout.
    pub(super) async fn bounded<T>(
        &self,
        op: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let limit = self.config.store_timeout();
        match timeout(limit, op).await {
            Ok(r) => r,
            Err(_) => Err(RegistryError::Store(StoreError::Unavailable {
                endpoint: self.registry.store().endpoint().to_owned(),
                detail: format!("no answer within {limit:?}"),
            })),
        }
    }

    /// Deletes everything published (graceful shutdown); stops at the first failure (the
    /// store is away, and the records expire with their TTL).
    pub(super) async fn unpublish_everything(&self, published: &Published) {
        let me = &self.config.machine_id;
        for unit in published.states.keys() {
            if let Err(e) = self.bounded(self.registry.remove_state(unit, me)).await {
                tracing::warn!(unit = %unit, error = %e, "deleting the unit's state at shutdown failed");
                return;
            }
        }
        for unit in &published.heartbeats {
            if let Err(e) = self.bounded(self.registry.clear_heartbeat(unit, me)).await {
                tracing::warn!(unit = %unit, error = %e, "clearing the unit's heartbeat at shutdown failed");
                return;
            }
        }
    }
}
