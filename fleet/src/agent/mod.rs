//! fleet's agent: one per machine, it runs what the engine scheduled there (fleet.md §3,
//! §6.5, §6.6, §7.5).
//!
//! [`Agent`] drives a machine through a [`UnitDriver`] (systemd when it is PID 1, the native
//! supervisor otherwise) and talks to the cluster only through the [`Registry`]. Its parts
//! run concurrently inside [`Agent::run`]:
//!
//! * presence (`presence.rs`, [`Presence`]): `machines/<id>/object` with TTL, refreshed
//!   every half TTL; when refreshes fail for long enough that the presence may expire, the
//!   agent *fences* itself: it stops its units before the engine can move them, so no unit
//!   ever runs on two machines, and starts them again once its presence is back and it has
//!   read the registry anew, so not the units moved away meanwhile (the margin is explained
//!   at [`AgentConfig::fence_margin`]);
//! * the follower (`follower.rs`): one full read, then the store's watch, re-reading only
//!   the units an event concerns; it computes the machine's desired state ([`desired`]:
//!   units scheduled here, plus matching global units without conflicts);
//! * the executor (`executor.rs`): fleet's task table ([`tasks`]) through the driver,
//!   retried with backoff on failure; the only part calling the driver, and it never waits
//!   on the store, so fencing stops units on time even while the store hangs;
//! * the publisher (`publisher.rs`): unit states and launch heartbeats, so fleetctl sees
//!   `loaded`/`launched` and systemd's own states.
//!
//! A change of the store's or the engine's leader restarts no unit: the agent only acts
//! on what the registry says, and a store that is briefly away only delays it (fencing
//! waits for `agent_ttl` minus a margin). On shutdown the agent does what fleet's
//! `Server.Purge` does: stops and unloads its units, deletes their states and heartbeats,
//! and removes its presence.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fleet::agent::{Agent, AgentConfig};
//! use fleet::registry::Registry;
//! use fleet::store::etcd::EtcdStore;
//! use systemd_driver::{ProcessDriver, ProcessDriverConfig};
//!
//! let registry = Arc::new(Registry::new(EtcdStore::new(&["http://127.0.0.1:2379".into()])?));
//! let driver = Arc::new(ProcessDriver::open(ProcessDriverConfig::new("/var/lib/fleet")).await?);
//! let mut config = AgentConfig::new("2f6c5e8a0d8b4c5e9b3f1a7d6e4c2b10");
//! config.metadata.insert("region".into(), "eu".into());
//! let agent = Agent::new(config, registry, driver)?;
//! agent.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(())
//! # }
//! ```

mod backoff;
pub mod config;
mod counters;
pub mod desired;
mod executor;
mod follower;
mod presence;
mod publisher;
pub mod tasks;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use systemd_driver::UnitDriver;
use tokio::sync::watch;

pub use config::{AgentConfig, AgentError, DEFAULT_AGENT_TTL};
pub use counters::AgentCounters;
pub use desired::{DesiredState, DesiredUnit};
pub use presence::Presence;
pub use tasks::{LocalUnit, Task, TaskKind};

use crate::registry::{JobState, Registry};
use crate::store::KvStore;

/// One machine's agent. See the module docs.
#[derive(Debug)]
pub struct Agent<S, D> {
    config: AgentConfig,
    registry: Arc<Registry<S>>,
    driver: Arc<D>,
    counters: Arc<AgentCounters>,
    /// The presence as the heart sees it; the executor follows it (fencing), and so may
    /// others (an API answering 503 until the machine is registered).
    presence: watch::Sender<Presence>,
}

impl<S: KvStore, D: UnitDriver> Agent<S, D> {
    /// An agent for the machine `config` describes, over a registry shared with the rest
    /// of the daemon.
    ///
    /// # Errors
    /// [`AgentError::Config`] when `config` does not [validate](AgentConfig::validate).
    pub fn new(
        config: AgentConfig,
        registry: Arc<Registry<S>>,
        driver: Arc<D>,
    ) -> Result<Agent<S, D>, AgentError> {
        config.validate()?;
        Ok(Agent {
            config,
            registry,
            driver,
            counters: Arc::new(AgentCounters::default()),
            presence: watch::Sender::new(Presence::Unregistered),
        })
    }

    /// The agent's counters (shared; they keep counting while it runs).
    pub fn counters(&self) -> Arc<AgentCounters> {
        self.counters.clone()
    }

    /// Follows the agent's presence: unregistered, alive, fenced.
    pub fn presence(&self) -> watch::Receiver<Presence> {
        self.presence.subscribe()
    }

    /// The agent's settings.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Runs the agent until `shutdown` completes, then purges: stops and unloads every unit
    /// it runs, deletes their states and heartbeats, and removes its presence (if it ever
    /// registered: otherwise the record with its ID is another machine's). Store failures
    /// are logged and retried, never returned.
    ///
    /// # Errors
    /// [`AgentError::Driver`] when the driver cannot list its units or report their
    /// changes at start-up.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        // Subscribe before listing, so no change falls between the two.
        let changes = self.driver.subscribe().await?;
        let listed = self.driver.list().await?;
        // Units loaded before this agent started (an earlier run): their contents are
        // unknown, so the first pass loads them again (fleet's current state `inactive`).
        let local: executor::Local = listed
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    LocalUnit {
                        hash: None,
                        state: JobState::Inactive,
                    },
                )
            })
            .collect();
        let systemd: BTreeMap<_, _> = listed.into_iter().map(|s| (s.name, s.state)).collect();
        tracing::info!(
            machine = %self.config.machine_id,
            units = local.len(),
            "agent starting"
        );

        let (stop_tx, stop_rx) = watch::channel(false);
        let (desired_tx, desired_rx) = watch::channel(None);
        let (local_tx, local_rx) = watch::channel(local.clone());
        let rereads = follower::Rereads::new();
        let stopper = async {
            shutdown.await;
            stop_tx.send_replace(true);
        };
        // Every part subscribes to the presence before any part runs, so none misses the
        // first registration.
        let parts = async {
            tokio::join!(
                self.heart(stop_rx.clone()),
                self.follow(stop_rx.clone(), &desired_tx, &rereads),
                self.execute(
                    stop_rx.clone(),
                    desired_rx,
                    self.presence.subscribe(),
                    &local_tx,
                    local,
                    &rereads
                ),
                self.publish(stop_rx.clone(), changes, systemd, local_rx),
            )
        };
        let ((), (registered, (), local, published)) = tokio::join!(stopper, parts);

        tracing::info!(
            machine = %self.config.machine_id,
            units = local.len(),
            "agent shutting down: unloading units, removing states and presence"
        );
        self.unload_everything(&local).await;
        self.unpublish_everything(&published).await;
        if registered
            && let Err(e) = self
                .bounded(self.registry.remove_machine(&self.config.machine_id))
                .await
        {
            tracing::warn!(error = %e, "removing the presence at shutdown failed; it expires with its TTL");
        }
        Ok(())
    }
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
