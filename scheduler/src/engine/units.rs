//! The unit table: requirement records, unit records, and units entering and leaving.

use super::Scheduler;
use super::choose::Strat;
use super::idx::{
    ClassIdx, GroupIdx, KeyIdx, MachineIdx, PatternIdx, PatternListIdx, ReqIdx, UnitIdx, ValueIdx,
};
use crate::cluster::{Desired, Resources, UnitSpec};
use crate::error::{Error, Result};

/// Everything a unit file asks for but the name, interned: units asking the same share
/// one record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Req {
    pub(super) machine_id: Option<Box<str>>,
    pub(super) machine_of: Box<[UnitIdx]>,
    pub(super) class: ClassIdx,
    pub(super) conflicts: Box<[PatternIdx]>,
    pub(super) replaces: Box<[PatternIdx]>,
    pub(super) global: bool,
    pub(super) demand: Resources,
    pub(super) strategy: Option<Strat>,
}

/// A unit, or a name known only from another unit's `MachineOf=`.
#[derive(Debug, Clone)]
pub(super) struct UnitRec {
    pub(super) name: Box<str>,
    /// Requirement record; [`ReqIdx::PLAIN`] for a name only referenced by `MachineOf=`.
    pub(super) req: ReqIdx,
    /// Placement of a non-global unit.
    pub(super) machine: Option<MachineIdx>,
    /// The placement a snapshot claimed, until the first pass checks it.
    pub(super) claim: Option<MachineIdx>,
    /// The patterns matching this unit's name.
    pub(super) matches: PatternListIdx,
    /// Spread group, interned on first use.
    pub(super) group: Option<GroupIdx>,
    pub(super) desired: Desired,
    pub(super) exists: bool,
    /// In the failed list (active, non-global, unplaced).
    pub(super) failed: bool,
}

impl Scheduler {
    pub(super) fn existing_unit(&self, name: &str) -> Result<UnitIdx> {
        match self.unit_by_name.get(name) {
            Some(&u) if self.units[u].exists => Ok(u),
            _ => Err(Error::UnknownUnit {
                name: name.to_owned(),
            }),
        }
    }

    pub(super) fn sort_by_name(&self, v: &mut [UnitIdx]) {
        let name = |u: UnitIdx| &*self.units[u].name;
        if v.len() < 64 {
            v.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
            return;
        }
        // Compare the first eight bytes as one integer (big-endian, so the order is the
        // byte order), and whole names only on a tie: a million names sort much faster.
        let prefix = |u: UnitIdx| {
            let mut b = [0u8; 8];
            let n = name(u).as_bytes();
            let k = n.len().min(8);
            b[..k].copy_from_slice(&n[..k]);
            u64::from_be_bytes(b)
        };
        let mut keyed: Vec<(u64, UnitIdx)> = v.iter().map(|&u| (prefix(u), u)).collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| name(a.1).cmp(name(b.1))));
        for (slot, (_, u)) in v.iter_mut().zip(keyed) {
            *slot = u;
        }
    }

    pub(super) fn wants_placement(&self, u: UnitIdx) -> bool {
        let r = &self.units[u];
        r.exists
            && r.desired != Desired::Inactive
            && r.machine.is_none()
            && !self.reqs[r.req].global
    }

    pub(super) fn is_global(&self, u: UnitIdx) -> bool {
        self.reqs[self.units[u].req].global
    }

    fn unit_slot(&mut self, name: &str) -> UnitIdx {
        if let Some(&u) = self.unit_by_name.get(name) {
            return u;
        }
        let matches = self.patterns_matching(name);
        let matches = self.intern_list(matches);
        let u = self.units.push(UnitRec {
            name: name.into(),
            req: ReqIdx::PLAIN,
            machine: None,
            claim: None,
            matches,
            group: None,
            desired: Desired::Inactive,
            exists: false,
            failed: false,
        });
        self.unit_by_name.insert(name.into(), u);
        u
    }

    /// Records a unit (not yet placed). Globals are added to `self.globals` by the caller.
    pub(super) fn insert_unit(
        &mut self,
        spec: &UnitSpec,
        claim: Option<MachineIdx>,
    ) -> Result<UnitIdx> {
        if spec.name.is_empty() {
            return Err(Error::Empty { what: "unit name" });
        }
        let u = self.unit_slot(&spec.name);
        if self.units[u].exists {
            return Err(Error::DuplicateUnit {
                name: spec.name.clone(),
            });
        }
        let machine_of: Vec<UnitIdx> = spec.machine_of.iter().map(|p| self.unit_slot(p)).collect();
        let pairs: Vec<(KeyIdx, ValueIdx)> = spec
            .machine_metadata
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| (self.keys.intern(k), self.vals.intern(v)))
            .collect();
        let class = self.class_for(&pairs);
        let mut conflicts: Vec<PatternIdx> = spec
            .conflicts
            .iter()
            .map(|p| self.intern_pattern(p, true))
            .collect();
        conflicts.sort_unstable();
        conflicts.dedup();
        let mut replaces: Vec<PatternIdx> = spec
            .replaces
            .iter()
            .map(|p| self.intern_pattern(p, true))
            .collect();
        replaces.sort_unstable();
        replaces.dedup();
        let strategy = spec.strategy.as_ref().map(|s| self.strat(s));
        let req = Req {
            machine_id: spec
                .machine_id
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(Into::into),
            machine_of: machine_of.clone().into(),
            class,
            conflicts: conflicts.into(),
            replaces: replaces.into(),
            global: spec.global,
            demand: spec.demand,
            strategy,
        };
        let r = match self.req_by_key.get(&req) {
            Some(&r) => r,
            None => {
                let r = self.reqs.push(req.clone());
                self.req_by_key.insert(req, r);
                r
            }
        };
        let rec = &mut self.units[u];
        rec.req = r;
        rec.exists = true;
        rec.desired = spec.desired;
        rec.claim = if spec.global { None } else { claim };
        rec.machine = None;
        rec.failed = false;
        if !spec.global {
            for p in machine_of {
                let f = self.followers.entry(p).or_default();
                if !f.contains(&u) {
                    f.push(u);
                }
            }
        }
        Ok(u)
    }

    /// Takes a unit out (removal, or desired inactive when `remove` is false); returns
    /// the units this displaced.
    pub(super) fn retire_unit(&mut self, u: UnitIdx, remove: bool) -> Vec<UnitIdx> {
        let global = self.is_global(u);
        let mut displaced = Vec::new();
        if remove {
            self.units[u].exists = false;
            self.units[u].failed = false;
            let r = self.units[u].req;
            for &p in &self.reqs[r].machine_of.clone() {
                if let Some(f) = self.followers.get_mut(&p) {
                    f.retain(|&x| x != u);
                }
            }
        }
        if global {
            if remove {
                self.globals.retain(|&g| g != u);
            }
            displaced = self.resettle_globals();
        } else {
            self.units[u].failed = false;
            if let Some(m) = self.units[u].machine {
                self.detach(u);
                self.cascade_followers(u, m, &mut displaced);
            }
        }
        displaced
    }
}

#[cfg(test)]
mod tests {
    use super::Scheduler;
    use crate::{Strategy, UnitSpec};

    #[test]
    fn sort_by_name_is_byte_order_for_long_lists() {
        let mut s = Scheduler::new(Strategy::LeastLoaded);
        let mut names = Vec::new();
        for i in 0..300u32 {
            // Shared eight-byte prefixes, short names, and multi-byte characters.
            names.push(format!("service-{}.service", i * 7919 % 1000));
            names.push(format!("s{i}.service"));
            if i % 10 == 0 {
                names.push(format!("é{i}.service"));
                names.push(format!("a.{i}"));
            }
        }
        names.sort();
        names.dedup();
        for n in names.iter().rev() {
            s.add_unit(UnitSpec {
                desired: crate::Desired::Inactive,
                ..UnitSpec::new(n.as_str())
            })
            .unwrap();
        }
        let mut ids: Vec<_> = s.units.indices().collect();
        s.sort_by_name(&mut ids);
        let got: Vec<&str> = ids.iter().map(|&u| &*s.units[u].name).collect();
        assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
