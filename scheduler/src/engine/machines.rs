//! The machine table: records, machine-ID ranks, and the metadata indexes a machine
//! joins and leaves.

use std::collections::BTreeMap;

use super::Scheduler;
use super::classes::class_matches;
use super::idx::{ClassIdx, KeyIdx, MachineIdx, UnitIdx, ValueIdx};
use crate::cluster::{Capacity, Machine, Resources};
use crate::error::{Error, Result};

/// Gap between consecutive machine ranks, so a joining machine usually fits between two.
const RANK_GAP: u64 = 1 << 32;

/// A machine; one that leaves keeps its record (marked absent) for its return.
#[derive(Debug, Clone)]
pub(super) struct MachineRec {
    pub(super) id: Box<str>,
    /// Orders machines by ID without comparing strings.
    pub(super) rank: u64,
    pub(super) present: bool,
    /// (key, value) pairs, sorted by key.
    pub(super) meta: Vec<(KeyIdx, ValueIdx)>,
    pub(super) capacity: Capacity,
    pub(super) used: Resources,
    pub(super) load: u32,
    /// Non-global units placed here.
    pub(super) units: Vec<UnitIdx>,
    /// Global units running here, in name order.
    pub(super) globals: Vec<UnitIdx>,
    /// Metadata classes this machine belongs to, with its position in each.
    pub(super) classes: Vec<(ClassIdx, u32)>,
}

impl MachineRec {
    pub(super) fn meta_value(&self, key: KeyIdx) -> Option<ValueIdx> {
        self.meta
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| self.meta[i].1)
    }
}

impl Scheduler {
    pub(super) fn present_machine(&self, id: &str) -> Result<MachineIdx> {
        match self.machine_by_id.get(id) {
            Some(&m) if self.machines[m].present => Ok(m),
            _ => Err(Error::UnknownMachine { id: id.to_owned() }),
        }
    }

    pub(super) fn intern_meta(
        &mut self,
        meta: &BTreeMap<String, String>,
    ) -> Vec<(KeyIdx, ValueIdx)> {
        let mut v: Vec<(KeyIdx, ValueIdx)> = meta
            .iter()
            .map(|(k, val)| (self.keys.intern(k), self.vals.intern(val)))
            .collect();
        v.sort_unstable();
        v
    }

    pub(super) fn insert_machine(&mut self, machine: &Machine) -> Result<MachineIdx> {
        if machine.id.is_empty() {
            return Err(Error::Empty { what: "machine ID" });
        }
        let meta = self.intern_meta(&machine.metadata);
        let m = match self.machine_by_id.get(machine.id.as_str()) {
            Some(&m) if self.machines[m].present => {
                return Err(Error::DuplicateMachine {
                    id: machine.id.clone(),
                });
            }
            Some(&m) => m,
            None => {
                let rank = self.new_rank(&machine.id);
                let m = self.machines.push(MachineRec {
                    id: machine.id.as_str().into(),
                    rank,
                    present: false,
                    meta: Vec::new(),
                    capacity: Capacity::default(),
                    used: Resources::default(),
                    load: 0,
                    units: Vec::new(),
                    globals: Vec::new(),
                    classes: Vec::new(),
                });
                self.machines_by_rank.insert(rank, m);
                self.machine_by_id.insert(machine.id.as_str().into(), m);
                if machine.id.len() > 8
                    && let Some(short) = machine.id.get(..8)
                {
                    self.machine_by_short
                        .entry(short.into())
                        .or_default()
                        .push(m);
                }
                m
            }
        };
        let rec = &mut self.machines[m];
        rec.present = true;
        rec.meta = meta;
        rec.capacity = machine.capacity;
        self.present += 1;
        self.index_machine(m);
        Ok(m)
    }

    /// A rank between the neighbours of `id` in ID order; renumbers all ranks when the
    /// gap is used up.
    fn new_rank(&mut self, id: &str) -> u64 {
        // Bulk loads come in ID order, so the common case is appending.
        let last = self
            .machines_by_rank
            .last_key_value()
            .map(|(&r, &m)| (r, m));
        match last {
            None => return RANK_GAP,
            Some((r, m)) if *self.machines[m].id < *id => return r + RANK_GAP,
            _ => {}
        }
        let mut prev = 0u64;
        let mut next = u64::MAX;
        for (&r, &m) in &self.machines_by_rank {
            if *self.machines[m].id < *id {
                prev = r;
            } else {
                next = r;
                break;
            }
        }
        if next - prev > 1 {
            return prev + (next - prev) / 2;
        }
        self.renumber_ranks(id)
    }

    /// Spreads all ranks out again, leaving room for `id`, and rebuilds the load orders.
    fn renumber_ranks(&mut self, id: &str) -> u64 {
        let mut order: Vec<MachineIdx> = self.machines_by_rank.values().copied().collect();
        order.sort_by(|&a, &b| self.machines[a].id.cmp(&self.machines[b].id));
        self.machines_by_rank.clear();
        let mut new_rank = None;
        let mut r = RANK_GAP;
        for m in order {
            if new_rank.is_none() && *id < *self.machines[m].id {
                new_rank = Some(r);
                r += RANK_GAP;
            }
            self.machines[m].rank = r;
            self.machines_by_rank.insert(r, m);
            r += RANK_GAP;
        }
        // Positions in the load orders follow ID order, which renumbering keeps.
        new_rank.unwrap_or(r)
    }

    /// Adds a present machine to the metadata indexes and to every class it satisfies.
    pub(super) fn index_machine(&mut self, m: MachineIdx) {
        let meta = self.machines[m].meta.clone();
        for &(k, v) in &meta {
            self.kv_index.entry((k, v)).or_default().push(m);
            *self.key_values.entry(k).or_default().entry(v).or_default() += 1;
        }
        let mut classes = Vec::new();
        for c in self.classes.indices() {
            if class_matches(&self.classes[c].req, &meta).is_ok() {
                let pos = self.join_class(c, m);
                classes.push((c, pos));
            }
        }
        self.machines[m].classes = classes;
    }

    /// Makes machine `m` present in class `c`'s order; returns its position. The caller
    /// records the position in the machine's class list.
    fn join_class(&mut self, c: ClassIdx, m: MachineIdx) -> u32 {
        let machines = &mut self.machines;
        let order = &mut self.classes[c].order;
        let rank = machines[m].rank;
        let pos = order
            .members()
            .partition_point(|&x| machines[x].rank < rank);
        let load = machines[m].load;
        if order.members().get(pos) == Some(&m) {
            order.insert(pos, load);
        } else if pos == order.members().len() {
            let pos = order.push_member(m);
            order.insert(pos, load);
        } else {
            // A machine joining between two others renumbers the class.
            order.add_member(pos, m);
            for (p, &x) in order.members().to_vec().iter().enumerate() {
                let rec = &mut machines[x];
                if let Some(e) = rec.classes.iter_mut().find(|e| e.0 == c) {
                    e.1 = p as u32;
                    order.insert(p, rec.load);
                }
            }
            order.insert(pos, load);
        }
        pos as u32
    }

    pub(super) fn unindex_machine(&mut self, m: MachineIdx) {
        let rec = &self.machines[m];
        for &(c, pos) in &rec.classes {
            self.classes[c].order.remove(pos as usize, rec.load);
        }
        for &(k, v) in &rec.meta {
            if let Some(list) = self.kv_index.get_mut(&(k, v)) {
                list.retain(|&x| x != m);
            }
            if let Some(vals) = self.key_values.get_mut(&k)
                && let Some(n) = vals.get_mut(&v)
            {
                *n -= 1;
                if *n == 0 {
                    vals.remove(&v);
                }
            }
        }
        self.machines[m].classes.clear();
    }

    /// Takes a machine out of the cluster; returns its displaced units.
    pub(super) fn drop_machine(&mut self, m: MachineIdx) -> Vec<UnitIdx> {
        // Out of the load orders first, so emptying the machine does not reorder them.
        self.unindex_machine(m);
        let mut displaced = Vec::new();
        let units = self.machines[m].units.clone();
        for u in units {
            self.detach(u);
            displaced.push(u);
        }
        self.note_globals(m);
        let globals = std::mem::take(&mut self.machines[m].globals);
        for g in globals {
            self.detach_global(g, m);
        }
        self.machines[m].present = false;
        self.present -= 1;
        displaced
    }

    pub(super) fn set_load(&mut self, m: MachineIdx, load: u32) {
        let rec = &self.machines[m];
        let old = rec.load;
        if old == load {
            return;
        }
        for &(c, pos) in &rec.classes {
            self.classes[c].order.relevel(pos as usize, old, load);
        }
        self.machines[m].load = load;
    }
}
