//! The scheduler's output: placements, reasons for units it could not place, and the
//! changes an incremental step made.

use std::collections::BTreeMap;
use std::fmt;

/// Where one unit runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Not placed: inactive, or no machine can run it (see [`Decision::unplaced`]).
    Unplaced,
    /// A non-global unit on one machine.
    Machine(String),
    /// A global unit on these machines (sorted by ID; possibly none).
    Global(Vec<String>),
}

impl Placement {
    /// The machine of a placed non-global unit.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Placement::Machine(m) => Some(m),
            _ => None,
        }
    }
}

/// The constraint a machine failed for a unit, in the order fleet checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Constraint {
    /// `MachineID=` names another machine.
    MachineId,
    /// The machine's metadata does not satisfy `MachineMetadata=`.
    MachineMetadata,
    /// A `MachineOf=` peer is not on the machine.
    MachineOf,
    /// A unit on the machine conflicts with this one (either side's `Conflicts=`).
    Conflicts,
    /// A unit on the machine has a `Replaces=` matching this one, so this one must go elsewhere.
    ReplacedBy,
    /// Not enough memory left.
    Memory,
    /// Not enough CPU left.
    Cpu,
    /// Not enough CPU weight left.
    CpuWeight,
    /// The machine already runs its maximum number of units.
    MaxUnits,
}

/// How many machines failed one constraint, with what detail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FailureCount {
    /// The constraint.
    pub constraint: Constraint,
    /// What about it: the metadata requirement, the conflicting pattern, the missing peer,
    /// the demand that did not fit.
    pub detail: String,
    /// How many machines failed it (each machine counts once, for its first failure).
    pub machines: usize,
}

/// Why a unit is not placed: every present machine, counted by the first constraint it
/// failed. Its `Display` is the sentence a person reads:
/// `0 of 10000 machines fit: 9980 failed MachineMetadata region=eu, 20 had a Conflicts match on web@*.service`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reason {
    /// Machines present.
    pub machines: usize,
    /// Machines that would take the unit now (non-zero only when a later pass will place it).
    pub fit: usize,
    /// Failures by constraint and detail, most common first.
    pub failures: Vec<FailureCount>,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.machines == 0 {
            return f.write_str("no machines available");
        }
        if self.fit > 0 {
            return write!(
                f,
                "{} of {} machines fit now; the unit will be placed on the next pass",
                self.fit, self.machines
            );
        }
        write!(f, "0 of {} machines fit:", self.machines)?;
        for (i, c) in self.failures.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let n = c.machines;
            let d = &c.detail;
            match c.constraint {
                Constraint::MachineId => write!(f, "{sep}{n} did not match MachineID {d}")?,
                Constraint::MachineMetadata => write!(f, "{sep}{n} failed MachineMetadata {d}")?,
                Constraint::MachineOf => write!(f, "{sep}{n} lacked MachineOf peer {d}")?,
                Constraint::Conflicts => write!(f, "{sep}{n} had a Conflicts match on {d}")?,
                Constraint::ReplacedBy => write!(f, "{sep}{n} run a unit that replaces it ({d})")?,
                Constraint::Memory => write!(f, "{sep}{n} lacked memory ({d})")?,
                Constraint::Cpu => write!(f, "{sep}{n} lacked CPU ({d})")?,
                Constraint::CpuWeight => write!(f, "{sep}{n} lacked CPU weight ({d})")?,
                Constraint::MaxUnits => write!(f, "{sep}{n} were full ({d})")?,
            }
        }
        Ok(())
    }
}

/// One change an incremental step (or its dry run) made.
///
/// For a non-global unit, `from` and `to` are its machine before and after (either may be
/// `None`: placed, or left unplaced). For a global unit each machine it starts or stops on
/// is one change with the other side `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Change {
    /// The unit.
    pub unit: String,
    /// Its machine before the step.
    pub from: Option<String>,
    /// Its machine after the step.
    pub to: Option<String>,
    /// Whether the unit is global.
    pub global: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = if self.global { " (global)" } else { "" };
        match (&self.from, &self.to) {
            (None, Some(t)) => write!(f, "{}{g}: start on {t}", self.unit),
            (Some(s), None) => write!(f, "{}{g}: stop on {s}", self.unit),
            (Some(s), Some(t)) => write!(f, "{}{g}: move {s} -> {t}", self.unit),
            (None, None) => write!(f, "{}{g}: unchanged", self.unit),
        }
    }
}

/// The scheduler's answer for a whole snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Every unit's placement, by name.
    pub placements: BTreeMap<String, Placement>,
    /// Why each unplaced unit (desired loaded or launched, but on no machine) is unplaced.
    pub unplaced: BTreeMap<String, Reason>,
}
