//! Whether a unit may run on a machine, and which constraint fails if not.

use super::Scheduler;
use super::classes::class_matches;
use super::idx::{ClassIdx, KeyIdx, MachineIdx, PatternIdx, UnitIdx};
use crate::cluster::Desired;

/// Why one machine cannot take a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    MachineId,
    Metadata(KeyIdx),
    MachineOf(UnitIdx),
    ConflictOwn(PatternIdx),
    ConflictOther(PatternIdx),
    Replaced(PatternIdx),
    Memory,
    Cpu,
    Weight,
    MaxUnits,
}

impl Scheduler {
    pub(super) fn peer_on(&self, p: UnitIdx, m: MachineIdx) -> bool {
        let rec = &self.units[p];
        if !rec.exists || rec.desired == Desired::Inactive {
            return false;
        }
        if self.reqs[rec.req].global {
            self.machines[m].globals.contains(&p)
        } else {
            rec.machine == Some(m)
        }
    }

    /// Whether unit `u` (not on `m`) may go to machine `m`, given everything placed now.
    pub(super) fn check(&self, u: UnitIdx, m: MachineIdx, peers: bool) -> Result<(), Fail> {
        let rec = &self.units[u];
        let req = &self.reqs[rec.req];
        let mr = &self.machines[m];
        if !req.global
            && let Some(id) = &req.machine_id
            && *mr.id != **id
            && mr.id.get(..8) != Some(&**id)
        {
            return Err(Fail::MachineId);
        }
        if req.class != ClassIdx::ANY {
            class_matches(&self.classes[req.class].req, &mr.meta).map_err(Fail::Metadata)?;
        }
        if peers && !req.global {
            for &p in req.machine_of.iter() {
                if !self.peer_on(p, m) {
                    return Err(Fail::MachineOf(p));
                }
            }
        }
        for &p in req.conflicts.iter() {
            if self.pats[p].matched_on.contains_key(&m) {
                return Err(Fail::ConflictOwn(p));
            }
        }
        let matches = &self.lists[rec.matches];
        for &p in matches.iter() {
            if self.pats[p].conf_decl.contains_key(&m) {
                return Err(Fail::ConflictOther(p));
            }
        }
        if !req.global {
            for &p in matches.iter() {
                if self.pats[p].rep_decl.contains_key(&m) && self.replaced_on(u, m).is_some() {
                    return Err(Fail::Replaced(p));
                }
            }
        }
        let cap = &mr.capacity;
        let d = &req.demand;
        if cap
            .memory_bytes
            .is_some_and(|c| mr.used.memory_bytes + d.memory_bytes > c)
        {
            return Err(Fail::Memory);
        }
        if cap
            .cpu_percent
            .is_some_and(|c| mr.used.cpu_percent + d.cpu_percent > c)
        {
            return Err(Fail::Cpu);
        }
        if cap
            .cpu_weight
            .is_some_and(|c| mr.used.cpu_weight + d.cpu_weight > c)
        {
            return Err(Fail::Weight);
        }
        if cap.max_units.is_some_and(|c| mr.load >= c) {
            return Err(Fail::MaxUnits);
        }
        Ok(())
    }

    pub(super) fn replaces(&self, a: UnitIdx, b: UnitIdx) -> bool {
        let ra = &self.reqs[self.units[a].req];
        let mb = &self.lists[self.units[b].matches];
        ra.replaces.iter().any(|p| mb.contains(p))
    }

    /// A non-global unit on `m` that replaces `u` (one way; mutual replaces cancel out).
    fn replaced_on(&self, u: UnitIdx, m: MachineIdx) -> Option<UnitIdx> {
        self.machines[m]
            .units
            .iter()
            .copied()
            .find(|&x| x != u && self.replaces(x, u) && !self.replaces(u, x))
    }
}
