//! What a step changed: placements and global units before the step, turned into
//! [`Change`]s at its end.

use rustc_hash::FxHashMap;

use super::Scheduler;
use super::idx::{MachineIdx, UnitIdx};
use crate::decision::Change;

/// Records what a step changed, to report it as [`Change`]s.
#[derive(Debug, Clone, Default)]
pub(super) struct Journal {
    /// Each unit's placement before the step.
    units: FxHashMap<UnitIdx, Option<MachineIdx>>,
    /// Each machine's global units before the step.
    machines: FxHashMap<MachineIdx, Vec<UnitIdx>>,
}

impl Scheduler {
    pub(super) fn begin(&mut self) {
        self.journal = Some(Journal::default());
    }

    pub(super) fn end(&mut self) -> Vec<Change> {
        let Some(j) = self.journal.take() else {
            return Vec::new();
        };
        let name_of = |m: Option<MachineIdx>| m.map(|m| self.machines[m].id.to_string());
        let mut out = Vec::new();
        for (u, before) in j.units {
            let after = self.units[u].machine;
            if after != before {
                out.push(Change {
                    unit: self.units[u].name.to_string(),
                    from: name_of(before),
                    to: name_of(after),
                    global: false,
                });
            }
        }
        for (m, before) in j.machines {
            let after = &self.machines[m].globals;
            let id = &self.machines[m].id;
            for &g in &before {
                if !after.contains(&g) {
                    out.push(Change {
                        unit: self.units[g].name.to_string(),
                        from: Some(id.to_string()),
                        to: None,
                        global: true,
                    });
                }
            }
            for &g in after {
                if !before.contains(&g) {
                    out.push(Change {
                        unit: self.units[g].name.to_string(),
                        from: None,
                        to: Some(id.to_string()),
                        global: true,
                    });
                }
            }
        }
        out.sort();
        out
    }

    pub(super) fn note_unit(&mut self, u: UnitIdx) {
        if let Some(j) = &mut self.journal {
            let m = self.units[u].machine;
            j.units.entry(u).or_insert(m);
        }
    }

    pub(super) fn note_globals(&mut self, m: MachineIdx) {
        if let Some(j) = &mut self.journal
            && !j.machines.contains_key(&m)
        {
            j.machines.insert(m, self.machines[m].globals.clone());
        }
    }
}
