//! Re-checking machines: a machine's global units, then its other units in name order,
//! then its `MachineOf=` peers; and the units a placement displaces.

use super::Scheduler;
use super::classes::class_matches;
use super::idx::{ClassIdx, MachineIdx, UnitIdx};
use crate::cluster::{Desired, Resources};

impl Scheduler {
    /// The global units machine `m` runs: in name order, each whose metadata matches, that
    /// conflicts with no earlier one kept there, and that fits beside them.
    fn global_set_for(&self, m: MachineIdx) -> Vec<UnitIdx> {
        let mr = &self.machines[m];
        let mut used = Resources::default();
        let mut out: Vec<UnitIdx> = Vec::new();
        for &g in &self.globals {
            let rec = &self.units[g];
            if !rec.exists || rec.desired == Desired::Inactive {
                continue;
            }
            let req = &self.reqs[rec.req];
            if req.class != ClassIdx::ANY
                && class_matches(&self.classes[req.class].req, &mr.meta).is_err()
            {
                continue;
            }
            if out.iter().any(|&o| self.conflict_between(g, o)) {
                continue;
            }
            let d = req.demand;
            let cap = &mr.capacity;
            if cap
                .memory_bytes
                .is_some_and(|c| used.memory_bytes + d.memory_bytes > c)
                || cap
                    .cpu_percent
                    .is_some_and(|c| used.cpu_percent + d.cpu_percent > c)
                || cap
                    .cpu_weight
                    .is_some_and(|c| used.cpu_weight + d.cpu_weight > c)
                || cap.max_units.is_some_and(|c| out.len() as u32 >= c)
            {
                continue;
            }
            used.memory_bytes += d.memory_bytes;
            used.cpu_percent += d.cpu_percent;
            used.cpu_weight += d.cpu_weight;
            out.push(g);
        }
        out
    }

    fn conflict_between(&self, a: UnitIdx, b: UnitIdx) -> bool {
        if a == b {
            return false;
        }
        let (ra, rb) = (&self.units[a], &self.units[b]);
        let (qa, qb) = (&self.reqs[ra.req], &self.reqs[rb.req]);
        let (ma, mb) = (&self.lists[ra.matches], &self.lists[rb.matches]);
        qa.conflicts.iter().any(|p| mb.contains(p)) || qb.conflicts.iter().any(|p| ma.contains(p))
    }

    /// Re-checks machine `m` from scratch: its global units, then `units` (the non-global
    /// units placed or claimed there) in name order, then `MachineOf=` peers. Returns the
    /// units that lost their place.
    pub(super) fn revalidate_machine(
        &mut self,
        m: MachineIdx,
        mut units: Vec<UnitIdx>,
    ) -> Vec<UnitIdx> {
        let mut displaced = Vec::new();
        for &u in &units {
            self.detach(u);
            self.units[u].claim = None;
        }
        self.note_globals(m);
        for g in std::mem::take(&mut self.machines[m].globals) {
            self.account(g, m, false);
        }
        if !self.machines[m].present {
            units.retain(|&u| self.wants_placement(u));
            return units;
        }
        for g in self.global_set_for(m) {
            self.attach_global(g, m);
        }
        self.sort_by_name(&mut units);
        units.dedup();
        for u in units {
            if !self.wants_placement(u) {
                continue;
            }
            if self.check(u, m, false).is_ok() {
                self.attach(u, m);
                self.displace_replaced(u, m, &mut displaced);
            } else {
                displaced.push(u);
            }
        }
        self.settle_peers(m, &mut displaced);
        displaced
    }

    /// Unplaces units on `m` whose `MachineOf=` peers are not all there, until none is left.
    fn settle_peers(&mut self, m: MachineIdx, displaced: &mut Vec<UnitIdx>) {
        loop {
            let bad: Vec<UnitIdx> = self.machines[m]
                .units
                .iter()
                .copied()
                .filter(|&u| {
                    let req = &self.reqs[self.units[u].req];
                    req.machine_of.iter().any(|&p| !self.peer_on(p, m))
                })
                .collect();
            if bad.is_empty() {
                return;
            }
            for u in bad {
                if self.units[u].machine == Some(m) {
                    self.detach(u);
                    displaced.push(u);
                    self.cascade_followers(u, m, displaced);
                }
            }
        }
    }

    /// After `u` lands on `m`: moves away the units there that `u` replaces.
    pub(super) fn displace_replaced(
        &mut self,
        u: UnitIdx,
        m: MachineIdx,
        displaced: &mut Vec<UnitIdx>,
    ) {
        if self.reqs[self.units[u].req].replaces.is_empty() {
            return;
        }
        let victims: Vec<UnitIdx> = self.machines[m]
            .units
            .iter()
            .copied()
            .filter(|&x| x != u && self.replaces(u, x) && !self.replaces(x, u))
            .collect();
        for x in victims {
            self.detach(x);
            self.freed = true;
            displaced.push(x);
            self.cascade_followers(x, m, displaced);
        }
    }

    /// Re-derives every machine's global units after the set of global units changed.
    pub(super) fn resettle_globals(&mut self) -> Vec<UnitIdx> {
        let mut displaced = Vec::new();
        for m in self.machines.indices() {
            if !self.machines[m].present {
                continue;
            }
            let want = self.global_set_for(m);
            let have = self.machines[m].globals.clone();
            if want == have {
                continue;
            }
            let removed: Vec<UnitIdx> =
                have.iter().copied().filter(|g| !want.contains(g)).collect();
            let added: Vec<UnitIdx> = want.iter().copied().filter(|g| !have.contains(g)).collect();
            if added.is_empty() {
                // Only stops: room is freed, nothing else can break except followers.
                for g in removed {
                    self.detach_global(g, m);
                    self.cascade_followers(g, m, &mut displaced);
                }
                continue;
            }
            if removed.is_empty() && self.fits_beside(&added, m) {
                for g in added {
                    self.attach_global(g, m);
                }
                continue;
            }
            let list = self.machines[m].units.clone();
            displaced.extend(self.revalidate_machine(m, list));
        }
        displaced
    }

    /// Whether new global units fit on `m` beside everything there (no conflict, room),
    /// in which case re-checking the machine from scratch would change nothing else.
    fn fits_beside(&mut self, added: &[UnitIdx], m: MachineIdx) -> bool {
        let mut attached = Vec::new();
        let mut ok = true;
        for &g in added {
            if self.check(g, m, false).is_ok() {
                self.account(g, m, true);
                attached.push(g);
            } else {
                ok = false;
                break;
            }
        }
        for g in attached {
            self.account(g, m, false);
        }
        ok
    }
}
