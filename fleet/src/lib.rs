//! fleet as a library: the registry of a fleet cluster over an etcd-v2-shaped store.
//!
//! fleet schedules systemd units across machines. Its only shared state is a key space
//! in an etcd v2 store under `/_coreos.com/fleet/`: clients write units and their desired
//! state, the engine writes where each unit runs, and every machine's agent converges its
//! machine and reports back. This crate keeps fleet 1.0's key layout and value formats
//! byte for byte, so fleet's own tools and this crate read each other's registry.
//!
//! * [`store`]: the [`store::KvStore`] seam, in kv-core's vocabulary, and its etcd v2 HTTP
//!   implementation.
//! * [`registry`]: fleet's keys and values, and [`registry::Registry`], its operations
//!   (units, schedules fenced by the engine's lease, machines, published states).
//! * [`engine`]: the engine: one leader through a lease, fenced schedule writes, and
//!   reconciling through the `scheduler` crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use fleet::registry::{JobState, Registry, UnitContents};
//! use fleet::store::etcd::EtcdStore;
//!
//! let registry = Registry::new(EtcdStore::new(&["http://127.0.0.1:2379".into()])?);
//! let contents = UnitContents::from_text("[Service]\nExecStart=/bin/sleep 1000\n")?;
//! registry.put_unit("sleep.service", contents, JobState::Launched).await?;
//! let (units, _index) = registry.units().await?;
//! assert_eq!(units[0].contents.hash().short(), "1c6fb6f");
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
