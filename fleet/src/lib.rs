//! fleet as a library: the registry, engine, agent and API of a fleet cluster.
//!
//! fleet schedules systemd units across machines. Its only shared state is a key space
//! in an etcd v2 store under `/_coreos.com/fleet/`: clients write units and their desired
//! state, the engine writes where each unit runs, and every machine's agent converges its
//! machine and reports back. This crate keeps fleet 1.0's key layout and value formats
//! byte for byte, so fleet's own tools and this crate read each other's registry.
//!
//! * [`store`]: the [`store::KvStore`] seam, in kv-core's vocabulary: the embedded store
//!   (a kv-server backend in process) and any etcd v2 endpoint over HTTP.
//! * [`registry`]: fleet's keys and values, and [`registry::Registry`], its operations
//!   (units, schedules fenced by the engine's lease, machines, published states).
//! * [`engine`]: one leader through a lease, fenced schedule writes, reconciling through
//!   the `scheduler` crate on watch events and a tick.
//! * [`agent`]: a machine's presence, self-fencing, fleet's task table through a
//!   `systemd_driver::UnitDriver`, published unit states.
//! * [`api`] and [`client`]: fleet's `/fleet/v1` HTTP API and its gRPC form, `fleet.v1`;
//!   [`ctl`]: fleetctl's commands; [`config`], [`daemon`]: fleetd; [`dev`]: `fleetd dev`.
//!
//! A one-machine cluster in one program: an in-memory store, an engine, and an agent with a
//! fake unit driver; a unit is submitted and gets scheduled and launched.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fleet::agent::{Agent, AgentConfig};
//! use fleet::engine::{Engine, EngineConfig};
//! use fleet::registry::{JobState, Registry, UnitContents};
//! use fleet::store::embedded::EmbeddedStore;
//! use kv_server::backend::memory::{MemoryBackend, MemoryConfig};
//!
//! // The store: kv-server's in-memory backend (fleetd runs its replicated one).
//! let backend = Arc::new(MemoryBackend::ephemeral(MemoryConfig {
//!     id: 1,
//!     cluster_id: 1,
//!     name: "doc".into(),
//!     peer_urls: vec!["http://127.0.0.1:2380".into()],
//!     client_urls: vec![],
//!     data_dir: Default::default(),
//! }));
//! let registry = Arc::new(Registry::new(EmbeddedStore::new(backend, "memory")));
//!
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let shutdown = || {
//!     let mut s = stopped.clone();
//!     async move { let _ = s.wait_for(|s| *s).await; }
//! };
//! let machine = "0123456789abcdef0123456789abcdef";
//! let engine = Engine::new(registry.clone(), EngineConfig::new(machine))?;
//! let engine = tokio::spawn(engine.run(shutdown()));
//! let driver = Arc::new(systemd_driver::FakeDriver::new());
//! let agent = Agent::new(AgentConfig::new(machine), registry.clone(), driver)?;
//! let agent = tokio::spawn(agent.run(shutdown()));
//!
//! let contents = UnitContents::from_text("[Service]\nExecStart=/bin/sleep 100\n")?;
//! registry.put_unit("sleep.service", contents, JobState::Launched).await?;
//! // The engine schedules it on the only machine, whose agent starts it.
//! let unit = loop {
//!     let u = registry.unit("sleep.service").await?.expect("submitted");
//!     if u.launched_on.as_deref() == Some(machine) {
//!         break u;
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! };
//! assert_eq!(unit.target.as_deref(), Some(machine));
//! assert_eq!(unit.contents.hash().short(), "1c6fb6f");
//!
//! // Shutting down, the agent stops its units and leaves; the engine gives its lease up.
//! stop.send(true)?;
//! agent.await??;
//! engine.await?;
//! assert!(registry.machines().await?.0.is_empty());
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod api;
pub mod client;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dev;
pub mod engine;
pub mod registry;
pub mod store;
