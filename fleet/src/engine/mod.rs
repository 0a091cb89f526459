//! fleet's engine: one leader, chosen through a lease in the store, decides where every
//! unit runs and writes it as the unit's `target` (fleet.md §6.3, §6.4, §7).
//!
//! [`Engine::run`] runs on every fleetd (unless [`EngineConfig::disabled`]). Each engine
//! follows the registry through one watch and ticks every
//! [`EngineConfig::reconcile_interval`]:
//!
//! * **Leadership** (`leadership.rs`, fleet.md §6.3). A follower reads the
//!   lease on every tick and as soon as the watch shows it deleted or expired (fleet
//!   waited for its next tick after the whole lease ran out); it acquires a free lease,
//!   re-adopts its own after a store hiccup, and steals one of a lower engine version
//!   (waiting out its remaining time before acting), after checking and upgrading
//!   `engine/version`. The leader renews the lease (compare-and-swap on its index) every
//!   tick, at most a third of the TTL apart. A failed renewal ends leadership at once.
//!   On shutdown the leader deletes the lease, so another engine takes over at once.
//! * **Fencing.** Every schedule write goes through [`Registry::schedule`] or
//!   [`Registry::unschedule`] with the lease's [`Fence`](crate::registry::Fence): on a
//!   store with transactions the write and a comparison of the lease are one
//!   transaction, so an engine that was paused past its lease can never write. The
//!   engine also stops writing on its own once its lease may have run out by its own
//!   clock (a tenth of the TTL early), and renews within a long pass.
//! * **Reconciling** ([`plan()`](fn@plan), fleet.md §6.4, §7). The leader reconciles when it
//!   becomes the leader, on every tick, and on watch events (`trigger.rs`: unit
//!   objects, desired states, destroyed units, targets deleted by someone else, machines
//!   arriving, leaving or changing metadata), a burst of events coalesced into one pass
//!   ([`EngineConfig::coalesce`]). A presence expiring is such an event, so a dead
//!   machine's units move as soon as the store expires its presence. A pass reads a
//!   [`Registry::snapshot`], plans with the `scheduler` crate (placements that still hold
//!   are kept; units in name order) and writes every unschedule, then every schedule.
//!   When the watch fails (history cleared, store gone) the engine reads again and
//!   watches from there.
//!
//! # No churn
//!
//! * A pass that cannot read its snapshot writes nothing; a write that fails because the
//!   store is unreachable ends the pass (the next trigger retries); nothing is ever
//!   unscheduled because of a read error.
//! * A store hiccup does not change the leader: the engine stops writing when a renewal
//!   fails, and re-adopts its own lease (same machine, same version) when the store is
//!   back, if it did not expire meanwhile.
//! * A new leader keeps the schedule: the scheduler starts from the current targets and
//!   keeps every placement that still holds.
//! * Presence that vanished during a store outage is not taken for dead machines. The
//!   store's leader expires keys with its own clock, so after an outage longer than the
//!   time left on some presence keys they all expire the moment the store is back, before
//!   their agents can refresh them (fleet issue #746). So the engine keeps a *contact
//!   epoch* (`grace.rs`): it starts at the first successful store operation after a
//!   failure or after start-up, and for [`EngineConfig::presence_grace`] (one agent TTL)
//!   the units of a missing machine that the engine has not seen present in this epoch
//!   keep their target (nothing new goes there). A machine seen present in the epoch
//!   that then disappears died while the engine was talking to the store: its units move
//!   at once. Every engine notices such an outage: it reads the lease every tick (at most
//!   a third of the lease TTL), while a presence key can only expire from an outage of
//!   at least its refresh period (half the agent TTL), provided the lease TTL is at most
//!   the agent TTL.
//!
//! # How fast units move
//!
//! A machine's units are rescheduled one coalescing delay plus one pass after the store
//! expires its presence (about 50 ms in the tests). When that machine also held the
//! lease, a follower takes the lease on its expiry event and reconciles at once, so the
//! units move after the longer of the two TTLs (plus the store's expiry sweep).
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fleet::engine::{Engine, EngineConfig};
//! use fleet::registry::Registry;
//! use fleet::store::etcd::EtcdStore;
//!
//! let registry = Arc::new(Registry::new(EtcdStore::new(&["http://127.0.0.1:2379".into()])?));
//! let engine = Engine::new(registry, EngineConfig::new("a1b2c3"))?;
//! let handle = engine.handle();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let task = tokio::spawn(engine.run(async { let _ = stopped.await; }));
//! // ... later: why is a unit not placed?
//! if let Some(why) = handle.reason("web@1.service") {
//!     println!("web@1.service: {why}");
//! }
//! let _ = stop.send(());
//! task.await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod grace;
mod handle;
mod leadership;
mod metrics;
mod plan;
mod trigger;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use kv_core::Event;

pub use config::{ENGINE_VERSION, EngineConfig, EngineError};
pub use handle::{EngineHandle, PassReport};
pub use metrics::{EngineMetrics, MetricsSnapshot};
pub use plan::{Plan, Task, TaskKind, TaskReason, plan};

use crate::registry::{Lease, LeaseRecord, Registry, RegistryError};
use crate::store::{KvStore, StoreError, Watch};
use grace::PresenceGrace;
use handle::Shared;
use leadership::{LeaseAction, ensure_version, lease_action};
use trigger::{Trigger, trigger};

/// fleet's engine over a registry: see the module docs.
#[derive(Debug)]
pub struct Engine<S> {
    registry: Arc<Registry<S>>,
    config: EngineConfig,
    shared: Arc<Shared>,
}

impl<S: KvStore> Engine<S> {
    /// An engine for this machine over `registry` (shared with the agent and the API).
    ///
    /// # Errors
    /// [`EngineError::Config`] when the configuration cannot work.
    pub fn new(registry: Arc<Registry<S>>, config: EngineConfig) -> Result<Engine<S>, EngineError> {
        config.validate()?;
        Ok(Engine {
            registry,
            config,
            shared: Arc::new(Shared::default()),
        })
    }

    /// A handle to read the engine's state while it runs.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until `shutdown` completes, then releases the lease if it holds it. Store
    /// failures are logged and retried; they never end the engine.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        if self.config.disabled {
            tracing::info!(machine = %self.config.machine_id, "engine disabled");
            shutdown.await;
            return;
        }
        let record = LeaseRecord {
            machine_id: self.config.machine_id.clone(),
            version: self.config.version,
        };
        let mut runner = Runner {
            grace: PresenceGrace::new(self.config.presence_grace),
            registry: self.registry,
            config: self.config,
            shared: self.shared,
            record,
            held: None,
            watch: None,
            own_deletes: HashSet::new(),
            pass_due: None,
            burst_start: None,
            lease_now: false,
            rewatch_now: false,
        };
        runner.run(shutdown).await;
    }
}

/// The lease while this engine holds it.
#[derive(Debug)]
struct Held {
    lease: Lease,
    /// By this engine's clock, the lease may have expired in the store after this: no
    /// write leaves after it.
    deadline: Instant,
    /// No pass before this (after a steal: the old holder's remaining time).
    act_after: Instant,
}

/// The engine's running state; one task owns it, so nothing here is locked.
struct Runner<S> {
    registry: Arc<Registry<S>>,
    config: EngineConfig,
    shared: Arc<Shared>,
    record: LeaseRecord,
    held: Option<Held>,
    grace: PresenceGrace,
    watch: Option<Watch>,
    /// `(unit, machine)` of unschedules this engine wrote whose delete events have not
    /// come back yet: those events are not a reason to reconcile.
    own_deletes: HashSet<(String, String)>,
    /// When the pending pass runs.
    pass_due: Option<Instant>,
    /// The first event of the burst being coalesced.
    burst_start: Option<Instant>,
    /// Look at the lease now (the watch showed it change).
    lease_now: bool,
    /// Re-read and re-watch now (the watch's history was cleared).
    rewatch_now: bool,
}

/// The next watch event, or never when there is no watch.
async fn next_event(watch: &mut Option<Watch>) -> Option<Result<Event, StoreError>> {
    match watch {
        Some(w) => w.events.recv().await,
        None => std::future::pending().await,
    }
}

impl<S: KvStore> Runner<S> {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            machine = %self.config.machine_id,
            version = self.config.version,
            "engine started",
        );
        tokio::pin!(shutdown);
        let tick = self.config.tick();
        let mut next_tick = Instant::now();
        loop {
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + tick;
                // A tick does what the flags ask, and more.
                self.lease_now = false;
                self.rewatch_now = false;
                if self.watch.is_none() {
                    self.start_watch().await;
                }
                self.leadership().await;
                if self.held.is_some() && self.pass_due.is_none() {
                    self.pass_due = Some(Instant::now());
                }
            } else {
                if self.rewatch_now {
                    self.rewatch_now = false;
                    self.start_watch().await;
                }
                if self.lease_now {
                    self.lease_now = false;
                    self.leadership().await;
                }
            }
            if self.pass_due.is_some_and(|t| t <= Instant::now()) {
                self.pass_due = None;
                self.burst_start = None;
                self.pass().await;
            }
            let wake = self.pass_due.map_or(next_tick, |p| p.min(next_tick));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ev = next_event(&mut self.watch) => self.on_watch(ev),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        self.release().await;
    }

    // ---- store contact ----

    fn contact(&mut self) {
        if !self.grace.in_contact() {
            tracing::info!(
                grace = ?self.config.presence_grace,
                "store reachable; units of machines not seen since are kept for the grace period"
            );
        }
        self.grace.contact(Instant::now());
    }

    fn store_error(&mut self, e: &StoreError) {
        if !e.is_transient() {
            return;
        }
        if self.grace.in_contact() {
            tracing::warn!(error = %e, "store unreachable");
        }
        self.grace.lost();
        // The watch's long poll may be dead too; it is set up again once the store answers.
        self.watch = None;
    }

    fn registry_error(&mut self, e: &RegistryError) {
        if let RegistryError::Store(s) = e {
            self.store_error(s);
        }
    }

    // ---- watch ----

    /// Reads the machines (an index to watch from, and presence seen) and watches from
    /// there; then reconciles, since events may have been missed.
    async fn start_watch(&mut self) {
        self.watch = None;
        let (machines, index) = match self.registry.machines().await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read machines to watch from");
                self.registry_error(&e);
                return;
            }
        };
        self.contact();
        for m in &machines {
            self.grace.saw(&m.id);
        }
        match self.registry.watch(index + 1).await {
            Ok(w) => {
                self.watch = Some(w);
                self.own_deletes.clear();
                self.request_pass();
            }
            Err(e) => self.registry_error(&e),
        }
    }

    fn on_watch(&mut self, ev: Option<Result<Event, StoreError>>) {
        let e = match ev {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "watch ended");
                if e.is_index_cleared() {
                    self.rewatch_now = true;
                }
                self.store_error(&e);
                self.watch = None;
                return;
            }
            None => {
                self.watch = None;
                return;
            }
        };
        self.contact();
        match trigger(self.registry.keys(), &e) {
            Trigger::Ignore => {}
            Trigger::Reconcile => self.request_pass(),
            Trigger::TargetDeleted { unit, machine } => {
                if !self
                    .own_deletes
                    .remove(&(unit.to_owned(), machine.to_owned()))
                {
                    self.request_pass();
                }
            }
            Trigger::Presence { id, changed } => {
                self.grace.saw(id);
                if changed {
                    self.request_pass();
                }
            }
            Trigger::Lease {
                modified_index,
                gone,
            } => {
                // The leader checks any change but its own renewal; a follower acts when
                // the lease is gone (the leader's renewals are no news to it).
                self.lease_now |= match &self.held {
                    Some(h) => h.lease.modified_index != modified_index,
                    None => gone,
                };
            }
        }
    }

    /// Schedules a pass after a short quiet period, within five of them of the burst's
    /// first event.
    fn request_pass(&mut self) {
        if self.held.is_none() {
            return;
        }
        let now = Instant::now();
        let start = *self.burst_start.get_or_insert(now);
        let due = (now + self.config.coalesce).min(start + self.config.coalesce * 5);
        self.pass_due = Some(self.pass_due.map_or(due, |d| d.max(due)));
    }

    // ---- leadership ----

    async fn leadership(&mut self) {
        if self.held.is_some() {
            self.renew().await;
            return;
        }
        let current = match self.registry.lease().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the engine lease");
                self.registry_error(&e);
                return;
            }
        };
        self.contact();
        self.shared
            .set_leader(current.as_ref().map(|l| l.record.machine_id.as_str()));
        let action = lease_action(current.as_ref().map(|l| &l.record), &self.record);
        if action == LeaseAction::Follow {
            return;
        }
        match ensure_version(&self.registry, self.config.version).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("engine/version is not ours; not taking the lease");
                return;
            }
            Err(e) => {
                self.store_error(&e);
                return;
            }
        }
        let ttl = self.config.lease_ttl_secs();
        let sent = Instant::now();
        let (result, wait) = match (action, &current) {
            (LeaseAction::Acquire, _) => (self.registry.acquire_lease(&self.record, ttl).await, 0),
            (LeaseAction::Readopt, Some(cur)) => (self.registry.renew_lease(cur, ttl).await, 0),
            (LeaseAction::Steal, Some(cur)) => {
                let remaining = u64::try_from(cur.ttl.unwrap_or(0)).unwrap_or(0);
                tracing::info!(
                    holder = %cur.record.machine_id,
                    version = cur.record.version,
                    wait_secs = remaining,
                    "taking the lease from an older engine version"
                );
                let r = self
                    .registry
                    .steal_lease(cur, &self.record, ttl + remaining)
                    .await;
                (r, remaining)
            }
            _ => return,
        };
        match result {
            Ok(Some(lease)) => {
                self.contact();
                let granted = Duration::from_secs(ttl + wait);
                self.held = Some(Held {
                    lease,
                    deadline: sent + granted - granted / 10,
                    act_after: sent + Duration::from_secs(wait),
                });
                let m = &self.shared.metrics;
                EngineMetrics::bump(&m.leader_acquired);
                m.is_leader.store(true, Ordering::Relaxed);
                self.shared.set_leader(Some(&self.config.machine_id));
                tracing::info!(
                    machine = %self.config.machine_id,
                    how = ?action,
                    "became the engine leader",
                );
                self.burst_start = None;
                self.pass_due = Some(sent + Duration::from_secs(wait));
            }
            Ok(None) => {
                self.contact();
                tracing::debug!("another engine took the lease first");
            }
            Err(e) => self.registry_error(&e),
        }
    }

    /// Renews the held lease; `false` (and leadership ends) when that fails.
    async fn renew(&mut self) -> bool {
        let Some(h) = &self.held else {
            return false;
        };
        let ttl = self.config.lease_ttl_secs();
        let sent = Instant::now();
        match self.registry.renew_lease(&h.lease, ttl).await {
            Ok(Some(lease)) => {
                self.contact();
                let granted = Duration::from_secs(ttl);
                if let Some(h) = &mut self.held {
                    h.lease = lease;
                    h.deadline = sent + granted - granted / 10;
                }
                true
            }
            Ok(None) => {
                self.contact();
                self.lose("the lease expired or was taken");
                false
            }
            Err(e) => {
                self.registry_error(&e);
                self.lose(&format!("cannot renew the lease: {e}"));
                false
            }
        }
    }

    fn lose(&mut self, why: &str) {
        if self.held.take().is_none() {
            return;
        }
        let m = &self.shared.metrics;
        EngineMetrics::bump(&m.leader_lost);
        m.is_leader.store(false, Ordering::Relaxed);
        self.shared.set_leader(None);
        self.shared.set_last_pass(None);
        self.pass_due = None;
        self.burst_start = None;
        tracing::warn!(
            machine = %self.config.machine_id,
            reason = why,
            "no longer the engine leader",
        );
    }

    /// Gives the lease up on shutdown.
    async fn release(&mut self) {
        let Some(h) = &self.held else {
            return;
        };
        match self.registry.release_lease(&h.lease).await {
            Ok(()) => tracing::info!("released the engine lease"),
            Err(e) => tracing::warn!(error = %e, "cannot release the engine lease; it expires"),
        }
        self.lose("shutting down");
    }

    // ---- reconciling ----

    async fn pass(&mut self) {
        let Some(h) = &self.held else {
            return;
        };
        if Instant::now() < h.act_after {
            self.pass_due = Some(h.act_after);
            return;
        }
        let m = self.shared.clone();
        let metrics = &m.metrics;
        EngineMetrics::bump(&metrics.reconcile_passes);
        let started = Instant::now();
        let snapshot = match self.registry.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                EngineMetrics::bump(&metrics.reconcile_failures);
                tracing::warn!(error = %e, "cannot read the registry; this pass writes nothing");
                self.registry_error(&e);
                return;
            }
        };
        self.contact();
        for machine in &snapshot.machines {
            self.grace.saw(&machine.id);
        }
        let held = self.grace.held(&snapshot, Instant::now());
        let plan = match plan::plan(&snapshot, &held, &self.config.strategy) {
            Ok(p) => p,
            Err(e) => {
                EngineMetrics::bump(&metrics.reconcile_failures);
                tracing::error!(error = %e, "cannot plan; this pass writes nothing");
                return;
            }
        };
        for (unit, machine) in &plan.held {
            tracing::debug!(
                unit = %unit,
                machine = %machine,
                "machine missing since the store came back; keeping the unit there for now",
            );
        }
        // Say why a unit cannot be placed when that is news (not on every pass).
        let before = self.shared.last_pass();
        for (unit, reason) in &plan.decision.unplaced {
            let known = before
                .as_ref()
                .and_then(|b| b.plan.decision.unplaced.get(unit))
                == Some(reason);
            if !known {
                tracing::info!(unit = %unit, reason = %reason, "unit cannot be placed");
            }
        }
        let tasks = plan.tasks.clone();
        self.shared.set_last_pass(Some(PassReport {
            index: snapshot.index,
            at: SystemTime::now(),
            plan,
        }));
        let targets: HashMap<&str, &str> = snapshot
            .units
            .iter()
            .filter_map(|u| Some((u.name.as_str(), u.target.as_deref()?)))
            .collect();
        if !self.write(&tasks, &targets).await {
            EngineMetrics::bump(&metrics.reconcile_failures);
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        metrics.last_pass_micros.store(micros, Ordering::Relaxed);
    }

    /// Writes a plan's tasks under the lease; `false` when the pass had to stop.
    async fn write(&mut self, tasks: &[Task], targets: &HashMap<&str, &str>) -> bool {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let mut refused: HashSet<&str> = HashSet::new();
        for t in tasks {
            if refused.contains(t.unit.as_str()) {
                continue;
            }
            // Renew within a long pass; stop when the lease may be gone by our clock.
            let ttl = Duration::from_secs(self.config.lease_ttl_secs());
            let fresh = self
                .held
                .as_ref()
                .is_some_and(|h| Instant::now() + ttl / 2 < h.deadline);
            if !fresh && !self.renew().await {
                return false;
            }
            let Some(h) = &self.held else {
                return false;
            };
            let fence = h.lease.fence(self.registry.keys());
            let result = match t.kind {
                TaskKind::Unschedule => {
                    let key = (t.unit.clone(), t.machine.clone());
                    self.own_deletes.insert(key.clone());
                    let r = self.registry.unschedule(&t.unit, &t.machine, &fence).await;
                    if r.is_err() {
                        self.own_deletes.remove(&key);
                    }
                    r
                }
                TaskKind::Schedule => self.registry.schedule(&t.unit, &t.machine, &fence).await,
            };
            match result {
                Ok(()) => {
                    let (counter, from, to) = match t.kind {
                        TaskKind::Unschedule => {
                            (&metrics.unschedules, Some(t.machine.as_str()), None)
                        }
                        TaskKind::Schedule => (
                            &metrics.schedules,
                            targets.get(t.unit.as_str()).copied(),
                            Some(t.machine.as_str()),
                        ),
                    };
                    EngineMetrics::bump(counter);
                    tracing::info!(
                        unit = %t.unit,
                        from = from.unwrap_or("-"),
                        to = to.unwrap_or("-"),
                        reason = %t.reason,
                        "{}",
                        if t.kind == TaskKind::Schedule { "scheduled" } else { "unscheduled" }
                    );
                }
                Err(RegistryError::Fenced(why)) => {
                    EngineMetrics::bump(&metrics.fenced_refusals);
                    tracing::warn!(
                        unit = %t.unit,
                        reason = %why,
                        "schedule write refused: the lease is not ours",
                    );
                    self.lose(&why);
                    return false;
                }
                Err(RegistryError::Store(e)) if e.is_transient() => {
                    tracing::warn!(
                        unit = %t.unit,
                        error = %e,
                        "store unreachable; the pass stops here",
                    );
                    self.store_error(&e);
                    return false;
                }
                Err(e) => {
                    // The schedule changed meanwhile (a unit destroyed, a target written by
                    // someone else); the event that says so brings the next pass.
                    EngineMetrics::bump(&metrics.task_failures);
                    tracing::warn!(
                        unit = %t.unit,
                        machine = %t.machine,
                        error = %e,
                        "schedule write refused; retrying next pass",
                    );
                    refused.insert(t.unit.as_str());
                }
            }
        }
        true
    }
}
