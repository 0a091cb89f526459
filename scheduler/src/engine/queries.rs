//! The public read-only queries: where units run, and why not.

use rustc_hash::FxHashMap;

use super::Scheduler;
use super::idx::UnitIdx;
use crate::cluster::Desired;
use crate::decision::{Decision, Placement, Reason};

impl Scheduler {
    /// Number of machines present.
    pub fn machine_count(&self) -> usize {
        self.present
    }

    /// Number of units (any desired state).
    pub fn unit_count(&self) -> usize {
        self.units.iter().filter(|u| u.exists).count()
    }

    /// The machine a non-global unit is placed on.
    pub fn machine_of(&self, unit: &str) -> Option<&str> {
        let &u = self.unit_by_name.get(unit)?;
        let m = self.units[u].machine?;
        Some(&*self.machines[m].id)
    }

    /// Where a unit runs, or `None` for an unknown unit.
    pub fn placement(&self, unit: &str) -> Option<Placement> {
        let &u = self.unit_by_name.get(unit)?;
        let rec = &self.units[u];
        if !rec.exists {
            return None;
        }
        if self.reqs[rec.req].global {
            let mut ms: Vec<String> = self
                .machines
                .iter()
                .filter(|m| m.present && m.globals.contains(&u))
                .map(|m| m.id.to_string())
                .collect();
            ms.sort();
            return Some(Placement::Global(ms));
        }
        Some(match rec.machine {
            None => Placement::Unplaced,
            Some(m) => Placement::Machine(self.machines[m].id.to_string()),
        })
    }

    /// Units placed on a machine (global ones included), in name order.
    pub fn units_on(&self, machine: &str) -> Option<Vec<&str>> {
        let &m = self.machine_by_id.get(machine)?;
        let mr = &self.machines[m];
        if !mr.present {
            return None;
        }
        let mut v: Vec<&str> = mr
            .units
            .iter()
            .chain(&mr.globals)
            .map(|&u| &*self.units[u].name)
            .collect();
        v.sort_unstable();
        Some(v)
    }

    /// Why a unit that should run is not placed; `None` when it is placed, inactive or
    /// unknown (a global unit gets a reason only when it runs nowhere).
    pub fn reason(&self, unit: &str) -> Option<Reason> {
        let &u = self.unit_by_name.get(unit)?;
        let rec = &self.units[u];
        if !rec.exists || rec.desired == Desired::Inactive {
            return None;
        }
        let req = &self.reqs[rec.req];
        if req.global {
            if self
                .machines
                .iter()
                .any(|m| m.present && m.globals.contains(&u))
            {
                return None;
            }
        } else if rec.machine.is_some() {
            return None;
        }
        Some(self.explain(u))
    }

    /// The placements of every unit and the reasons for every unplaced one.
    pub fn decision(&self) -> Decision {
        let mut d = Decision::default();
        let mut global_on: FxHashMap<UnitIdx, Vec<String>> = FxHashMap::default();
        for m in self.machines.iter().filter(|m| m.present) {
            for &g in &m.globals {
                global_on.entry(g).or_default().push(m.id.to_string());
            }
        }
        for (i, u) in self.units.iter_enumerated() {
            if !u.exists {
                continue;
            }
            let p = if self.reqs[u.req].global {
                let mut ms = global_on.remove(&i).unwrap_or_default();
                ms.sort();
                if ms.is_empty() && u.desired != Desired::Inactive {
                    d.unplaced.insert(u.name.to_string(), self.explain(i));
                }
                Placement::Global(ms)
            } else if let Some(m) = u.machine {
                Placement::Machine(self.machines[m].id.to_string())
            } else {
                if u.desired != Desired::Inactive {
                    d.unplaced.insert(u.name.to_string(), self.explain(i));
                }
                Placement::Unplaced
            };
            d.placements.insert(u.name.to_string(), p);
        }
        d
    }
}
