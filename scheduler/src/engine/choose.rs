//! Choosing a machine for a unit: `MachineID=`, `MachineOf=`, then the strategy
//! (least loaded, bin-pack, spread over a metadata key).

use super::Scheduler;
use super::idx::{ClassIdx, GroupIdx, KeyIdx, MachineIdx, UnitIdx, ValueIdx};
use super::units::Req;
use crate::cluster::Strategy;

/// A [`Strategy`] with its spread key interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Strat {
    LeastLoaded,
    BinPack,
    Spread(KeyIdx),
}

impl Scheduler {
    pub(super) fn strat(&mut self, s: &Strategy) -> Strat {
        match s {
            Strategy::LeastLoaded => Strat::LeastLoaded,
            Strategy::BinPack => Strat::BinPack,
            Strategy::Spread { key } => Strat::Spread(self.keys.intern(key)),
        }
    }

    pub(super) fn strategy_of(&self, req: &Req) -> Strat {
        req.strategy.unwrap_or(self.default_strategy)
    }

    pub(super) fn group_of(&mut self, u: UnitIdx) -> GroupIdx {
        if let Some(g) = self.units[u].group {
            return g;
        }
        let name = &self.units[u].name;
        let base = match name.split_once('@') {
            Some((prefix, _)) => prefix,
            None => name.rsplit_once('.').map_or(&**name, |(b, _)| b),
        };
        let base = base.to_owned();
        let g = self.groups.intern(&base);
        self.units[u].group = Some(g);
        g
    }

    /// The machine for unit `u`, or `None`.
    pub(super) fn choose(&mut self, u: UnitIdx) -> Option<MachineIdx> {
        let r = self.units[u].req;
        let (class, strategy) = (self.reqs[r].class, self.strategy_of(&self.reqs[r]));
        if let Some(id) = &self.reqs[r].machine_id {
            let mut cands: Vec<MachineIdx> = Vec::new();
            if let Some(&m) = self.machine_by_id.get(&**id) {
                cands.push(m);
            }
            if let Some(ms) = self.machine_by_short.get(&**id) {
                cands.extend(ms);
            }
            cands.retain(|&m| self.machines[m].present);
            cands.sort_unstable_by_key(|&m| (self.machines[m].load, self.machines[m].rank));
            cands.dedup();
            return cands.into_iter().find(|&m| self.check(u, m, true).is_ok());
        }
        if let Some(&p) = self.reqs[r]
            .machine_of
            .iter()
            .find(|&&p| !self.is_global(p))
        {
            return self.units[p]
                .machine
                .filter(|&m| self.check(u, m, true).is_ok());
        }
        match strategy {
            Strat::LeastLoaded => self.first_fit(u, class),
            Strat::BinPack => {
                let order = &self.classes[class].order;
                order
                    .descending()
                    .map(|(_, m)| m)
                    .find(|&m| self.check(u, m, true).is_ok())
            }
            Strat::Spread(key) => {
                let vals: Vec<ValueIdx> = self
                    .key_values
                    .get(&key)
                    .map(|v| v.keys().copied().collect())
                    .unwrap_or_default();
                let zones: Vec<(ValueIdx, ClassIdx)> = vals
                    .into_iter()
                    .filter_map(|v| self.narrowed_class(class, key, v).map(|c| (v, c)))
                    .collect();
                let g = self.group_of(u);
                let mut best: Option<(u32, u32, u64, MachineIdx)> = None;
                for (v, c) in zones {
                    let count = self.spread_counts.get(&(g, key, v)).copied().unwrap_or(0);
                    if best.is_some_and(|b| b.0 < count) {
                        continue;
                    }
                    if let Some(m) = self.first_fit(u, c) {
                        let mr = &self.machines[m];
                        let cand = (count, mr.load, mr.rank, m);
                        if best.is_none_or(|b| cand < b) {
                            best = Some(cand);
                        }
                    }
                }
                best.map(|b| b.3).or_else(|| self.first_fit(u, class))
            }
        }
    }

    fn first_fit(&self, u: UnitIdx, class: ClassIdx) -> Option<MachineIdx> {
        self.classes[class]
            .order
            .ascending()
            .map(|(_, m)| m)
            .find(|&m| self.check(u, m, true).is_ok())
    }
}
