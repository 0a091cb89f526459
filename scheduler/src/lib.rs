//! Fleet-compatible unit placement: a pure, deterministic function of a cluster snapshot.
//!
//! [`ClusterState`] holds the [`Machine`]s (ID, metadata, [`Capacity`]) and the [`Unit`]s
//! (a [`UnitSpec`] with fleet's `[X-Fleet]` requirements and a [`Resources`] demand, plus
//! the current placement). [`decide`] returns a [`Decision`]: where every unit runs and,
//! for each unit that cannot run, a [`Reason`] counting the machines by the constraint
//! they failed. [`Scheduler`] is the incremental form: feed it machine and unit events
//! and it answers each with the [`Change`]s it made; its `preview_*` methods are dry runs.
//! There is no I/O and no clock: the same input always gives the same output.
//!
//! # Semantics
//!
//! The constraints are fleet's (`engine/scheduler.go`, `agent/state.go`), checked in
//! fleet's order: `MachineID=` (the full or the 8-character short ID), `MachineMetadata=`
//! (the same key ORs, different keys AND, exact match), `MachineOf=` (every peer on the
//! machine; chains are followed), `Conflicts=` (Go `path.Match` globs, symmetric, never
//! against the unit itself), `Replaces=` (the replaced unit moves to another machine).
//! `Global=` units run on every machine whose metadata matches; among global units that
//! conflict, the first by name wins, and global units take precedence over the other units
//! of a machine. Load is the number of units on a machine, global ones included.
//!
//! Fleet's placement is the default [`Strategy::LeastLoaded`]: the feasible machine with
//! the fewest units, ties broken by machine ID. Units are placed in name order (fleet
//! used hash-map order), so results are reproducible. Beyond fleet, a unit never lands
//! where its demand (`MemoryMax=`/`MemoryHigh=`, `CPUQuota=`, `CPUWeight=`) exceeds the
//! machine's remaining capacity, and [`Strategy::BinPack`] or [`Strategy::Spread`] can be
//! chosen per unit or for the cluster.
//!
//! Existing placements are kept while they hold: a step first re-checks the machines it
//! touches, then places whatever is unplaced, in name order. So machine loss moves only
//! that machine's units, a joining machine takes only global units and units that were
//! waiting, and the result of any sequence of steps equals a full [`decide`] on the final
//! snapshot given the previous placements.
//!
//! # Example: a custom orchestrator
//!
//! ```
//! use scheduler::{Machine, Scheduler, Strategy, UnitSpec};
//!
//! let mut s = Scheduler::new(Strategy::LeastLoaded);
//! for (id, zone) in [("m1", "a"), ("m2", "b"), ("m3", "b")] {
//!     s.add_machine(Machine::new(id).with_metadata("zone", zone))?;
//! }
//! for i in 1..=3 {
//!     let mut web = UnitSpec::new(format!("web@{i}.service"));
//!     web.conflicts = vec!["web@*.service".into()]; // one per machine
//!     s.add_unit(web)?;
//! }
//! let mut db = UnitSpec::new("db.service");
//! db.machine_metadata = vec![("zone".into(), "a".into())];
//! s.add_unit(db)?;
//! assert_eq!(s.machine_of("db.service"), Some("m1"));
//!
//! // Dry run, then the real thing: only m2's unit moves, and it has nowhere to go.
//! let preview = s.preview_remove_machine("m2")?;
//! assert_eq!(s.remove_machine("m2")?, preview);
//! let why = s.reason("web@2.service").unwrap().to_string();
//! assert_eq!(why, "0 of 2 machines fit: 2 had a Conflicts match on web@*.service");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cluster;
mod convert;
mod decision;
mod engine;
mod error;
pub mod glob;
pub mod synth;

pub use cluster::{Capacity, ClusterState, Desired, Machine, Resources, Strategy, Unit, UnitSpec};
pub use decision::{Change, Constraint, Decision, FailureCount, Placement, Reason};
pub use engine::{Scheduler, decide};
pub use error::{Error, Result};
