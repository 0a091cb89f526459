//! Why a unit is not placed: every present machine checked, failures counted by
//! constraint.

use std::collections::BTreeMap;

use super::Scheduler;
use super::checks::Fail;
use super::idx::{MachineIdx, UnitIdx};
use crate::cluster::Desired;
use crate::decision::{Constraint, FailureCount, Reason};

impl Scheduler {
    pub(super) fn explain(&self, u: UnitIdx) -> Reason {
        let mut counts: BTreeMap<(Constraint, String), usize> = BTreeMap::new();
        let mut machines = 0;
        let mut fit = 0;
        let req = &self.reqs[self.units[u].req];
        for (m, mr) in self.machines.iter_enumerated() {
            if !mr.present {
                continue;
            }
            machines += 1;
            match self.check(u, m, true) {
                Ok(()) => fit += 1,
                Err(f) => {
                    let key = match f {
                        Fail::MachineId => (
                            Constraint::MachineId,
                            req.machine_id.as_deref().unwrap_or("").to_owned(),
                        ),
                        Fail::Metadata(first) => {
                            // The first failing key by name, whatever the interning order.
                            let meta = &mr.meta;
                            let k = self.classes[req.class]
                                .req
                                .iter()
                                .filter(|(k, vals)| {
                                    meta.iter()
                                        .find(|(mk, _)| mk == k)
                                        .is_none_or(|(_, v)| !vals.contains(v))
                                })
                                .map(|(k, _)| *k)
                                .min_by_key(|&k| self.keys.name(k))
                                .unwrap_or(first);
                            (
                                Constraint::MachineMetadata,
                                self.describe_meta(req.class, k),
                            )
                        }
                        Fail::MachineOf(p) => {
                            let rec = &self.units[p];
                            let mut d = rec.name.to_string();
                            if !rec.exists {
                                d.push_str(" (no such unit)");
                            } else if rec.desired == Desired::Inactive {
                                d.push_str(" (inactive)");
                            } else if !self.is_global(p) && rec.machine.is_none() {
                                d.push_str(" (not scheduled)");
                            }
                            (Constraint::MachineOf, d)
                        }
                        Fail::ConflictOwn(_) | Fail::ConflictOther(_) => {
                            (Constraint::Conflicts, self.conflict_detail(u, m).to_owned())
                        }
                        Fail::Replaced(_) => {
                            let by = self.machines[m]
                                .units
                                .iter()
                                .copied()
                                .filter(|&x| x != u && self.replaces(x, u) && !self.replaces(u, x))
                                .map(|x| &*self.units[x].name)
                                .min()
                                .unwrap_or("?");
                            (Constraint::ReplacedBy, by.to_owned())
                        }
                        Fail::Memory => (
                            Constraint::Memory,
                            format!("needs {}", human_bytes(req.demand.memory_bytes)),
                        ),
                        Fail::Cpu => (
                            Constraint::Cpu,
                            format!("needs {}%", req.demand.cpu_percent),
                        ),
                        Fail::Weight => (
                            Constraint::CpuWeight,
                            format!("needs {}", req.demand.cpu_weight),
                        ),
                        Fail::MaxUnits => (Constraint::MaxUnits, "at their max units".to_owned()),
                    };
                    *counts.entry(key).or_default() += 1;
                }
            }
        }
        let mut failures: Vec<FailureCount> = counts
            .into_iter()
            .map(|((constraint, detail), machines)| FailureCount {
                constraint,
                detail,
                machines,
            })
            .collect();
        failures.sort_by(|a, b| {
            b.machines
                .cmp(&a.machines)
                .then(a.constraint.cmp(&b.constraint))
                .then(a.detail.cmp(&b.detail))
        });
        Reason {
            machines,
            fit,
            failures,
        }
    }

    /// The smallest (by text) pattern that makes `u` conflict on `m`.
    fn conflict_detail(&self, u: UnitIdx, m: MachineIdx) -> &str {
        let rec = &self.units[u];
        let own = self.reqs[rec.req]
            .conflicts
            .iter()
            .filter(|&&p| self.pats[p].matched_on.contains_key(&m));
        let other = self.lists[rec.matches]
            .iter()
            .filter(|&&p| self.pats[p].conf_decl.contains_key(&m));
        own.chain(other)
            .map(|&p| self.pat_text(p))
            .min()
            .unwrap_or("?")
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if b >= size && b.is_multiple_of(size) {
            return format!("{} {name}", b / size);
        }
    }
    format!("{b} bytes")
}
