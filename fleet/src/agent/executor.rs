//! Converging the machine through the [`UnitDriver`]: fleet's task table (fleet.md §3.4)
//! applied on every change of the desired state or of the presence.
//!
//! The executor is the only part of the agent that calls the driver, and it never waits on
//! the store, so it stops units on time when the presence fences even while the store
//! hangs. While fenced it converges towards the desired state with every `launched` unit
//! demoted to `loaded` (units stay loaded, so they start again at once when the presence
//! is back). Before the first registration it does nothing: another live machine may hold
//! the same ID, and units left by an earlier run stay as they are until the agent knows.
//! When the presence comes back from fencing it stays demoted until the follower has read
//! the registry anew ([`Rereads`] says why): a unit moved away meanwhile is never started
//! here again.
//!
//! A failed task is logged with its unit and retried on a later pass, after a backoff that
//! doubles with each failure; the unit's other tasks of that pass are skipped, other units
//! go on. Loads and unloads of one pass go to the driver as one batch (systemd: one
//! daemon-reload); when a batch fails, its units are retried one by one to find which.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::counters::AgentCounters;
use super::desired::{DesiredState, DesiredUnit};
use super::follower::Rereads;
use super::presence::Presence;
use super::tasks::{LocalUnit, Task, TaskKind, tasks};
use super::{Agent, stopped};
use crate::registry::JobState;
use crate::store::KvStore;
use systemd_driver::UnitDriver;

/// What the agent runs, by unit name.
pub(super) type Local = BTreeMap<String, LocalUnit>;

/// A unit whose last task failed.
#[derive(Debug)]
pub(super) struct Failure {
    attempts: u32,
    /// No new attempt before this, unless the unit's desired state changes.
    until: Instant,
    /// The unit's desired state when it failed.
    desired: Option<DesiredUnit>,
}

impl<S: KvStore, D: UnitDriver> Agent<S, D> {
    /// Converges until `stop`; returns what runs then (for the purge).
    pub(super) async fn execute(
        &self,
        mut stop: watch::Receiver<bool>,
        mut desired: watch::Receiver<Option<Arc<DesiredState>>>,
        mut presence: watch::Receiver<Presence>,
        local_tx: &watch::Sender<Local>,
        mut local: Local,
        rereads: &Rereads,
    ) -> Local {
        let mut failures: BTreeMap<String, Failure> = BTreeMap::new();
        let mut answers = rereads.answers();
        let mut fenced = false;
        // The fresh read to wait for before starting anything again.
        let mut reread: Option<u64> = None;
        loop {
            let retry_at = failures.values().map(|f| f.until).min();
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return local,
                Ok(()) = presence.changed() => {}
                Ok(()) = desired.changed() => {}
                Ok(()) = answers.changed() => {}
                () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
            }
            let presence = *presence.borrow_and_update();
            match presence {
                Presence::Fenced => fenced = true,
                Presence::Alive if fenced => {
                    fenced = false;
                    tracing::info!(
                        "presence back: starting nothing until the registry is read again"
                    );
                    reread = Some(rereads.ask());
                }
                Presence::Alive | Presence::Unregistered => {}
            }
            if reread.is_some_and(|n| rereads.is_done(n)) {
                reread = None;
            }
            let Some(want) = desired.borrow_and_update().clone() else {
                continue;
            };
            let effective = match presence {
                Presence::Unregistered => continue,
                Presence::Alive if reread.is_none() => want,
                Presence::Alive | Presence::Fenced => Arc::new(demoted(&want)),
            };
            self.converge(&effective, &mut local, &mut failures).await;
            local_tx.send_if_modified(|l| {
                if *l == local {
                    return false;
                }
                l.clone_from(&local);
                true
            });
        }
    }

    /// One pass of the task table.
    async fn converge(
        &self,
        desired: &DesiredState,
        local: &mut Local,
        failures: &mut BTreeMap<String, Failure>,
    ) {
        let now = Instant::now();
        // Units waiting out a backoff, for the desired state they failed with.
        let held: BTreeSet<String> = failures
            .iter()
            .filter(|(name, f)| f.until > now && f.desired.as_ref() == desired.get(*name))
            .map(|(name, _)| name.clone())
            .collect();
        let all = tasks(desired, local);
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for kind in [
            TaskKind::Unload,
            TaskKind::Load,
            TaskKind::Stop,
            TaskKind::Start,
        ] {
            let batch: Vec<&Task> = all
                .iter()
                .filter(|t| t.kind == kind && !held.contains(&t.unit) && !failed.contains(&t.unit))
                .collect();
            if batch.is_empty() {
                continue;
            }
            let results = self.run_batch(kind, &batch, desired).await;
            for (task, result) in batch.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        AgentCounters::inc(&self.counters.tasks_run);
                        tracing::info!(unit = %task.unit, task = %task.kind, reason = task.reason, "task done");
                        apply(task, desired, local);
                    }
                    Err(e) => {
                        AgentCounters::inc(&self.counters.tasks_failed);
                        let f = failures.entry(task.unit.clone()).or_insert(Failure {
                            attempts: 0,
                            until: now,
                            desired: None,
                        });
                        f.attempts += 1;
                        let delay = self.retry_delay(f.attempts);
                        f.until = Instant::now() + delay;
                        f.desired = desired.get(&task.unit).cloned();
                        tracing::warn!(
                            unit = %task.unit,
                            task = %task.kind,
                            error = %e,
                            attempts = f.attempts,
                            "task failed; retrying in {delay:?}"
                        );
                        failed.insert(task.unit.clone());
                    }
                }
            }
        }
        failures.retain(|name, _| held.contains(name) || failed.contains(name));
    }

    /// The backoff after `attempts` failures in a row.
    fn retry_delay(&self, attempts: u32) -> Duration {
        let cfg = &self.config;
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        cfg.retry_backoff
            .saturating_mul(factor)
            .min(cfg.max_retry_backoff)
    }

    /// Runs tasks of one kind; one result per task, in order.
    async fn run_batch(
        &self,
        kind: TaskKind,
        batch: &[&Task],
        desired: &DesiredState,
    ) -> Vec<Result<(), systemd_driver::Error>> {
        let contents = |unit: &str| {
            desired
                .get(unit)
                .map(|d| d.contents.raw().to_owned())
                .unwrap_or_default()
        };
        if batch.len() > 1 {
            let whole = match kind {
                TaskKind::Load => {
                    let units: Vec<(String, String)> = batch
                        .iter()
                        .map(|t| (t.unit.clone(), contents(&t.unit)))
                        .collect();
                    Some(self.driver.load_all(&units).await)
                }
                TaskKind::Unload => {
                    let names: Vec<String> = batch.iter().map(|t| t.unit.clone()).collect();
                    Some(self.driver.unload_all(&names).await)
                }
                TaskKind::Stop | TaskKind::Start => None,
            };
            match whole {
                Some(Ok(())) => return batch.iter().map(|_| Ok(())).collect(),
                Some(Err(e)) => tracing::debug!(
                    error = %e,
                    "batch {kind} failed; retrying its units one by one"
                ),
                None => {}
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        for t in batch {
            let r = match kind {
                TaskKind::Unload => self.driver.unload(&t.unit).await,
                TaskKind::Load => self.driver.load(&t.unit, &contents(&t.unit)).await,
                TaskKind::Stop => self.driver.stop(&t.unit).await,
                TaskKind::Start => self.driver.start(&t.unit).await,
            };
            out.push(r);
        }
        out
    }

    /// Stops and unloads every unit (graceful shutdown); returns the units it could not
    /// unload.
    pub(super) async fn unload_everything(&self, local: &Local) -> Vec<String> {
        let names: Vec<String> = local.keys().cloned().collect();
        if names.is_empty() || self.driver.unload_all(&names).await.is_ok() {
            return Vec::new();
        }
        let mut left = Vec::new();
        for name in names {
            if let Err(e) = self.driver.unload(&name).await {
                tracing::warn!(unit = %name, error = %e, "unloading at shutdown failed");
                left.push(name);
            }
        }
        left
    }
}

/// The desired state while fenced: everything loaded, nothing launched.
fn demoted(desired: &DesiredState) -> DesiredState {
    desired
        .iter()
        .map(|(name, d)| {
            let state = d.state.min(JobState::Loaded);
            (
                name.clone(),
                DesiredUnit {
                    contents: d.contents.clone(),
                    state,
                },
            )
        })
        .collect()
}

/// Records a task's success in `local`.
fn apply(task: &Task, desired: &DesiredState, local: &mut Local) {
    match task.kind {
        TaskKind::Unload => {
            local.remove(&task.unit);
        }
        TaskKind::Load => {
            let hash = desired.get(&task.unit).map(|d| d.contents.hash());
            local.insert(
                task.unit.clone(),
                LocalUnit {
                    hash,
                    state: JobState::Loaded,
                },
            );
        }
        TaskKind::Stop | TaskKind::Start => {
            if let Some(l) = local.get_mut(&task.unit) {
                l.state = if task.kind == TaskKind::Start {
                    JobState::Launched
                } else {
                    JobState::Loaded
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::UnitContents;

    #[test]
    fn fencing_demotes_launched_to_loaded() {
        let c = Arc::new(UnitContents::from_text("[Service]\nExecStart=/bin/true\n").unwrap());
        let d: DesiredState = [
            ("a.service", JobState::Launched),
            ("b.service", JobState::Loaded),
        ]
        .into_iter()
        .map(|(n, state)| {
            (
                n.to_string(),
                DesiredUnit {
                    contents: c.clone(),
                    state,
                },
            )
        })
        .collect();
        let got: Vec<JobState> = demoted(&d).values().map(|u| u.state).collect();
        assert_eq!(got, [JobState::Loaded, JobState::Loaded]);
    }
}
