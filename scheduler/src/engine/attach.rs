//! Putting a unit on a machine and taking it off, with every index kept in step.

use rustc_hash::FxHashMap;

use super::Scheduler;
use super::choose::Strat;
use super::idx::{MachineIdx, UnitIdx};

impl Scheduler {
    /// Counts a unit onto a machine in every index (load, resources, patterns).
    pub(super) fn account(&mut self, u: UnitIdx, m: MachineIdx, add: bool) {
        let req = &self.reqs[self.units[u].req];
        let demand = req.demand;
        let rec = &mut self.machines[m];
        let load = if add {
            rec.used.memory_bytes += demand.memory_bytes;
            rec.used.cpu_percent += demand.cpu_percent;
            rec.used.cpu_weight += demand.cpu_weight;
            rec.load + 1
        } else {
            rec.used.memory_bytes -= demand.memory_bytes;
            rec.used.cpu_percent -= demand.cpu_percent;
            rec.used.cpu_weight -= demand.cpu_weight;
            rec.load - 1
        };
        let bump = |map: &mut FxHashMap<MachineIdx, u32>| {
            let n = map.entry(m).or_default();
            if add {
                *n += 1;
            } else {
                *n -= 1;
                if *n == 0 {
                    map.remove(&m);
                }
            }
        };
        for &p in req.conflicts.iter() {
            bump(&mut self.pats[p].conf_decl);
        }
        for &p in req.replaces.iter() {
            bump(&mut self.pats[p].rep_decl);
        }
        for &p in self.lists[self.units[u].matches].iter() {
            bump(&mut self.pats[p].matched_on);
        }
        let strat = self.strategy_of(req);
        let global = req.global;
        self.set_load(m, load);
        if let (Strat::Spread(key), false) = (strat, global)
            && let Some(val) = self.machines[m].meta_value(key)
        {
            let g = self.group_of(u);
            let n = self.spread_counts.entry((g, key, val)).or_default();
            if add {
                *n += 1;
            } else {
                *n -= 1;
            }
        }
    }

    pub(super) fn attach(&mut self, u: UnitIdx, m: MachineIdx) {
        self.note_unit(u);
        self.units[u].machine = Some(m);
        self.machines[m].units.push(u);
        self.account(u, m, true);
    }

    pub(super) fn detach(&mut self, u: UnitIdx) {
        let Some(m) = self.units[u].machine else {
            return;
        };
        self.note_unit(u);
        self.account(u, m, false);
        let units = &mut self.machines[m].units;
        if let Some(i) = units.iter().position(|&x| x == u) {
            units.swap_remove(i);
        }
        self.units[u].machine = None;
    }

    pub(super) fn attach_global(&mut self, g: UnitIdx, m: MachineIdx) {
        self.note_globals(m);
        let names = &self.units;
        let globals = &mut self.machines[m].globals;
        let pos = globals.partition_point(|&x| names[x].name < names[g].name);
        globals.insert(pos, g);
        self.account(g, m, true);
    }

    pub(super) fn detach_global(&mut self, g: UnitIdx, m: MachineIdx) {
        self.note_globals(m);
        self.machines[m].globals.retain(|&x| x != g);
        self.account(g, m, false);
    }

    /// Unplaces the followers of `peer` that sit on `m`, and theirs, recursively.
    pub(super) fn cascade_followers(
        &mut self,
        peer: UnitIdx,
        m: MachineIdx,
        displaced: &mut Vec<UnitIdx>,
    ) {
        let mut stack = vec![peer];
        while let Some(p) = stack.pop() {
            let Some(fs) = self.followers.get(&p) else {
                continue;
            };
            for f in fs.clone() {
                if self.units[f].machine == Some(m) {
                    self.detach(f);
                    self.freed = true;
                    displaced.push(f);
                    stack.push(f);
                }
            }
        }
    }
}
