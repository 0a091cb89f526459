//! Dry runs: a step is applied, its changes recorded, and then undone.

use super::Scheduler;
use super::idx::{MachineIdx, ReqIdx, UnitIdx};
use super::units::UnitRec;
use crate::cluster::{Desired, Machine, UnitSpec};
use crate::decision::Change;
use crate::error::Result;

impl Scheduler {
    /// Dry run: what would change if machine `id` left. The scheduler ends unchanged: the
    /// step is applied and then undone, which costs about as much as the step itself.
    ///
    /// # Errors
    /// As [`Scheduler::remove_machine`].
    pub fn preview_remove_machine(&mut self, id: &str) -> Result<Vec<Change>> {
        let m = self.present_machine(id)?;
        let failed = self.failed.clone();
        let changes = self.remove_machine(id)?;
        let attach = self.undo_detach(&changes);
        self.machines[m].present = true;
        self.present += 1;
        self.index_machine(m);
        self.undo_attach(attach, failed);
        Ok(changes)
    }

    /// Dry run: what would change if this unit were added. The scheduler ends unchanged.
    ///
    /// # Errors
    /// As [`Scheduler::add_unit`].
    pub fn preview_add_unit(&mut self, spec: UnitSpec) -> Result<Vec<Change>> {
        let name = spec.name.clone();
        // A name referenced by MachineOf= (or removed earlier) already has a record.
        let prior = self
            .unit_by_name
            .get(name.as_str())
            .map(|&u| self.units[u].clone());
        let failed = self.failed.clone();
        let changes = self.add_unit(spec)?;
        let attach = self.undo_detach(&changes);
        if let Some(&u) = self.unit_by_name.get(name.as_str()) {
            self.forget_unit(u, prior);
        }
        self.undo_attach(attach, failed);
        Ok(changes)
    }

    /// Dry run: what would change if machine `machine` joined. The scheduler ends unchanged.
    ///
    /// # Errors
    /// As [`Scheduler::add_machine`].
    pub fn preview_add_machine(&mut self, machine: Machine) -> Result<Vec<Change>> {
        let id = machine.id.clone();
        let failed = self.failed.clone();
        let changes = self.add_machine(machine)?;
        let attach = self.undo_detach(&changes);
        if let Some(&m) = self.machine_by_id.get(id.as_str()) {
            self.unindex_machine(m);
            self.machines[m].present = false;
            self.present -= 1;
        }
        self.undo_attach(attach, failed);
        Ok(changes)
    }

    /// Dry run: what would change if unit `name` were removed. The scheduler ends unchanged.
    ///
    /// # Errors
    /// As [`Scheduler::remove_unit`].
    pub fn preview_remove_unit(&mut self, name: &str) -> Result<Vec<Change>> {
        let u = self.existing_unit(name)?;
        let failed = self.failed.clone();
        let changes = self.remove_unit(name)?;
        let attach = self.undo_detach(&changes);
        self.units[u].exists = true;
        let req = self.units[u].req;
        if self.reqs[req].global {
            let pos = self
                .globals
                .partition_point(|&g| self.units[g].name < self.units[u].name);
            self.globals.insert(pos, u);
        } else {
            for p in self.reqs[req].machine_of.clone() {
                let f = self.followers.entry(p).or_default();
                if !f.contains(&u) {
                    f.push(u);
                }
            }
        }
        self.undo_attach(attach, failed);
        Ok(changes)
    }

    /// First half of undoing a step: takes every unit off the machine the step put it on.
    /// Returns what to put back once machines are restored.
    fn undo_detach(&mut self, changes: &[Change]) -> Vec<(UnitIdx, MachineIdx, bool)> {
        let mut attach = Vec::new();
        for c in changes {
            let Some(&u) = self.unit_by_name.get(c.unit.as_str()) else {
                continue;
            };
            let machine = |id: &Option<String>| {
                id.as_deref()
                    .and_then(|id| self.machine_by_id.get(id).copied())
            };
            let (from, to) = (machine(&c.from), machine(&c.to));
            if c.global {
                if let Some(m) = to {
                    self.detach_global(u, m);
                }
                if let Some(m) = from {
                    attach.push((u, m, true));
                }
            } else {
                self.detach(u);
                if let Some(m) = from {
                    attach.push((u, m, false));
                }
            }
        }
        attach
    }

    /// Second half of undoing a step: puts units back and restores the waiting list.
    fn undo_attach(&mut self, attach: Vec<(UnitIdx, MachineIdx, bool)>, failed: Vec<UnitIdx>) {
        for (u, m, global) in attach {
            if global {
                self.attach_global(u, m);
            } else {
                self.attach(u, m);
            }
        }
        for &u in &self.failed {
            self.units[u].failed = false;
        }
        for &u in &failed {
            self.units[u].failed = true;
        }
        self.failed = failed;
    }

    /// Makes a unit added by a dry run disappear again (its name stays interned).
    fn forget_unit(&mut self, u: UnitIdx, prior: Option<UnitRec>) {
        let req = self.units[u].req;
        self.globals.retain(|&g| g != u);
        for p in self.reqs[req].machine_of.clone() {
            if let Some(f) = self.followers.get_mut(&p) {
                f.retain(|&x| x != u);
            }
        }
        let rec = &mut self.units[u];
        // Patterns interned meanwhile may match the name: keep the current list.
        let matches = rec.matches;
        *rec = prior.unwrap_or_else(|| UnitRec {
            name: rec.name.clone(),
            req: ReqIdx::PLAIN,
            machine: None,
            claim: None,
            matches,
            group: None,
            desired: Desired::Inactive,
            exists: false,
            failed: false,
        });
        rec.matches = matches;
    }
}
