//! The scheduler's input vocabulary: machines, units and the cluster snapshot.

use std::collections::BTreeMap;
use std::fmt;

/// What a unit asks of a machine's resources, from its own systemd settings.
///
/// Zero means "no demand" in that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// `MemoryMax=` (or `MemoryHigh=` when there is no `MemoryMax=`), in bytes.
    pub memory_bytes: u64,
    /// `CPUQuota=` in percent of one CPU (`150%` is 150).
    pub cpu_percent: u64,
    /// `CPUWeight=`, counted against the machine's weight budget.
    pub cpu_weight: u64,
}

/// What a machine can hold, as its agent reports it. `None` means unlimited (unknown) in
/// that dimension, which is how fleet treats every machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capacity {
    /// Memory available to units, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU available to units, in percent of one CPU (4 cores = 400).
    pub cpu_percent: Option<u64>,
    /// Total `CPUWeight=` the machine accepts.
    pub cpu_weight: Option<u64>,
    /// The most units (global ones included) the machine runs (fleet issue #1262).
    pub max_units: Option<u32>,
}

/// How a unit picks among the machines that can run it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Fleet's rule: the machine with the fewest units, ties broken by machine ID.
    #[default]
    LeastLoaded,
    /// The machine with the most units that still fits, ties broken by machine ID:
    /// fills machines one after another (bounded by capacity).
    BinPack,
    /// Spread units of the same service (a template's instances share one) across the
    /// values of a machine metadata key, such as `zone`: the value holding the fewest of
    /// them wins, then the least-loaded machine within it. Machines without the key are
    /// used only when no machine with it fits.
    Spread {
        /// The metadata key to spread over.
        key: String,
    },
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::LeastLoaded => f.write_str("least-loaded"),
            Strategy::BinPack => f.write_str("bin-pack"),
            Strategy::Spread { key } => write!(f, "spread:{key}"),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = crate::Error;

    /// Parses `least-loaded`, `bin-pack` or `spread:<key>`.
    fn from_str(s: &str) -> Result<Strategy, crate::Error> {
        match s {
            "least-loaded" => Ok(Strategy::LeastLoaded),
            "bin-pack" => Ok(Strategy::BinPack),
            _ => match s.strip_prefix("spread:") {
                Some(key) if !key.is_empty() => Ok(Strategy::Spread {
                    key: key.to_owned(),
                }),
                _ => Err(crate::Error::BadStrategy { text: s.to_owned() }),
            },
        }
    }
}

/// A unit's desired state, as fleet stores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Desired {
    /// Not scheduled anywhere.
    Inactive,
    /// Scheduled and loaded but not started; counts like a launched unit for placement.
    Loaded,
    /// Scheduled and started.
    #[default]
    Launched,
}

impl Desired {
    /// fleet's name for the state (`inactive`, `loaded`, `launched`).
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Inactive => "inactive",
            Desired::Loaded => "loaded",
            Desired::Launched => "launched",
        }
    }
}

impl fmt::Display for Desired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Desired {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Desired, crate::Error> {
        match s {
            "inactive" => Ok(Desired::Inactive),
            "loaded" => Ok(Desired::Loaded),
            "launched" => Ok(Desired::Launched),
            _ => Err(crate::Error::BadDesired { text: s.to_owned() }),
        }
    }
}

/// A machine in the cluster snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// The machine ID (fleet uses the 32-hex-digit `/etc/machine-id`).
    pub id: String,
    /// Metadata (`region=us-east`, ...), matched exactly by `MachineMetadata=`.
    pub metadata: BTreeMap<String, String>,
    /// Resource capacity; unlimited where unknown.
    pub capacity: Capacity,
}

impl Machine {
    /// A machine with the given ID, no metadata and unlimited capacity.
    pub fn new(id: impl Into<String>) -> Machine {
        Machine {
            id: id.into(),
            ..Machine::default()
        }
    }

    /// Adds one metadata pair (builder style).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Machine {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the capacity (builder style).
    pub fn with_capacity(mut self, capacity: Capacity) -> Machine {
        self.capacity = capacity;
        self
    }
}

/// A unit's placement requirements: fleet's `[X-Fleet]` options (specifiers already
/// resolved), its resource demand, and an optional strategy of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSpec {
    /// The unit name, such as `web@1.service`.
    pub name: String,
    /// `MachineID=`: the full or 8-character short ID of the only machine allowed.
    pub machine_id: Option<String>,
    /// `MachineOf=`: units that must all be on the chosen machine.
    pub machine_of: Vec<String>,
    /// `MachineMetadata=` pairs in file order: the same key ORs, different keys AND.
    pub machine_metadata: Vec<(String, String)>,
    /// `Conflicts=` glob patterns.
    pub conflicts: Vec<String>,
    /// `Global=`: run on every machine whose metadata matches.
    pub global: bool,
    /// `Replaces=` glob patterns: units matched on the chosen machine move elsewhere.
    pub replaces: Vec<String>,
    /// Resource demand.
    pub demand: Resources,
    /// A strategy for this unit; `None` uses the cluster's.
    pub strategy: Option<Strategy>,
    /// Desired state; inactive units are never placed.
    pub desired: Desired,
}

impl UnitSpec {
    /// A launched unit with no requirements.
    pub fn new(name: impl Into<String>) -> UnitSpec {
        UnitSpec {
            name: name.into(),
            ..UnitSpec::default()
        }
    }
}

/// A unit in a snapshot: its spec and where it runs now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    /// What the unit requires.
    pub spec: UnitSpec,
    /// The machine it is scheduled on now (fleet's `target`), for non-global units.
    pub machine: Option<String>,
}

/// A snapshot of the cluster: what [`decide`](crate::decide) reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Machines currently present.
    pub machines: Vec<Machine>,
    /// Every unit, with its current placement.
    pub units: Vec<Unit>,
    /// The strategy for units that do not name one.
    pub strategy: Strategy,
}
