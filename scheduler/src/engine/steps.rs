//! The incremental steps: one machine or unit event each, answered with the changes.

use std::collections::BTreeMap;

use super::Scheduler;
use crate::cluster::{Desired, Machine, UnitSpec};
use crate::decision::Change;
use crate::error::{Error, Result};

impl Scheduler {
    /// A machine joins (or returns). Global units start on it and units waiting for
    /// room are placed; nothing already running moves.
    ///
    /// # Errors
    /// The machine is already present, or its ID is empty.
    pub fn add_machine(&mut self, machine: Machine) -> Result<Vec<Change>> {
        self.begin();
        let m = self.insert_machine(&machine)?;
        self.revalidate_machine(m, Vec::new());
        self.run_pending(Vec::new());
        Ok(self.end())
    }

    /// A machine leaves: its units, and only those, are placed elsewhere.
    ///
    /// # Errors
    /// No such machine.
    pub fn remove_machine(&mut self, id: &str) -> Result<Vec<Change>> {
        let m = self.present_machine(id)?;
        self.begin();
        let displaced = self.drop_machine(m);
        self.run_pending(displaced);
        Ok(self.end())
    }

    /// A machine's metadata changes: its units are re-checked (those that no longer
    /// match move), global units start or stop on it, waiting units are retried.
    ///
    /// # Errors
    /// No such machine.
    pub fn set_metadata(
        &mut self,
        id: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Vec<Change>> {
        let m = self.present_machine(id)?;
        self.begin();
        // Out of the load orders, then everything off while the old metadata still
        // applies (spread counts are per value).
        self.unindex_machine(m);
        let list = self.machines[m].units.clone();
        for &u in &list {
            self.detach(u);
        }
        self.note_globals(m);
        for g in std::mem::take(&mut self.machines[m].globals) {
            self.account(g, m, false);
        }
        self.machines[m].meta = self.intern_meta(&metadata);
        self.index_machine(m);
        let displaced = self.revalidate_machine(m, list);
        self.run_pending(displaced);
        Ok(self.end())
    }

    /// A unit is added and placed (a global unit starts everywhere it may).
    ///
    /// # Errors
    /// A unit with that name exists already, or the name is empty.
    pub fn add_unit(&mut self, spec: UnitSpec) -> Result<Vec<Change>> {
        self.add_unit_at(spec, None)
    }

    /// A unit is added with a current placement (as read back from a registry): it stays
    /// there if its constraints hold, and is placed anew otherwise.
    ///
    /// # Errors
    /// As [`Scheduler::add_unit`].
    pub fn add_unit_at(&mut self, spec: UnitSpec, machine: Option<&str>) -> Result<Vec<Change>> {
        if let Some(&u) = self.unit_by_name.get(spec.name.as_str())
            && self.units[u].exists
        {
            return Err(Error::DuplicateUnit { name: spec.name });
        }
        self.begin();
        let claim = machine
            .and_then(|id| self.machine_by_id.get(id).copied())
            .filter(|&m| self.machines[m].present);
        for p in spec.conflicts.iter().chain(&spec.replaces) {
            self.intern_pattern(p, true);
        }
        let u = self.insert_unit(&spec, claim)?;
        let mut displaced = Vec::new();
        if spec.global {
            let pos = self
                .globals
                .partition_point(|&g| self.units[g].name < self.units[u].name);
            self.globals.insert(pos, u);
            displaced = self.resettle_globals();
        } else if let Some(claim) = claim {
            let mut list = self.machines[claim].units.clone();
            list.push(u);
            displaced = self.revalidate_machine(claim, list);
        } else if self.wants_placement(u) {
            displaced.push(u);
        }
        self.run_pending(displaced);
        Ok(self.end())
    }

    /// A unit is removed: it stops, and units that needed it (`MachineOf=`) follow or
    /// wait; units it kept away (`Conflicts=`) may now be placed.
    ///
    /// # Errors
    /// No such unit.
    pub fn remove_unit(&mut self, name: &str) -> Result<Vec<Change>> {
        let u = self.existing_unit(name)?;
        self.begin();
        let displaced = self.retire_unit(u, true);
        self.run_pending(displaced);
        Ok(self.end())
    }

    /// A unit's desired state changes; an inactive unit gives up its machine.
    ///
    /// # Errors
    /// No such unit.
    pub fn set_desired(&mut self, name: &str, desired: Desired) -> Result<Vec<Change>> {
        let u = self.existing_unit(name)?;
        self.begin();
        let was_active = self.units[u].desired != Desired::Inactive;
        self.units[u].desired = desired;
        let now_active = desired != Desired::Inactive;
        let mut displaced = Vec::new();
        if was_active != now_active {
            let global = self.reqs[self.units[u].req].global;
            if global {
                displaced = self.resettle_globals();
            } else if now_active {
                displaced.push(u);
            } else {
                displaced = self.retire_unit(u, false);
            }
        }
        self.run_pending(displaced);
        Ok(self.end())
    }

    /// Replaces a unit's requirements (new unit file contents); it stays where it is if
    /// the new requirements hold there.
    ///
    /// # Errors
    /// No such unit.
    pub fn update_unit(&mut self, spec: UnitSpec) -> Result<Vec<Change>> {
        let u = self.existing_unit(&spec.name)?;
        let at = self.units[u]
            .machine
            .map(|m| self.machines[m].id.to_string());
        let mut changes = self.remove_unit(&spec.name)?;
        changes.extend(self.add_unit_at(spec, at.as_deref())?);
        Ok(merge_changes(changes))
    }
}

/// Net change per (unit, global, machine of a global change): (first from, last to).
type NetChanges = BTreeMap<(String, bool, Option<String>), (Option<String>, Option<String>)>;

/// Folds a sequence of changes into net changes per (unit, global machine).
fn merge_changes(changes: Vec<Change>) -> Vec<Change> {
    let mut net: NetChanges = BTreeMap::new();
    for c in changes {
        // Global changes are per machine; key them by the machine they concern.
        let key = if c.global {
            (c.unit.clone(), true, c.from.clone().or(c.to.clone()))
        } else {
            (c.unit.clone(), false, None)
        };
        let e = net.entry(key).or_insert((c.from.clone(), None));
        e.1 = c.to;
    }
    let mut out: Vec<Change> = net
        .into_iter()
        .filter(|(_, (from, to))| from != to)
        .map(|((unit, global, _), (from, to))| Change {
            unit,
            from,
            to,
            global,
        })
        .collect();
    out.sort();
    out
}
