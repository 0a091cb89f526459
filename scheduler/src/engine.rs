//! The placement engine: interned cluster state, indexes, and the placement passes.
//!
//! Everything is kept in integer-indexed tables. Unit names, metadata keys and values,
//! glob patterns and whole requirement sets are interned, so the million units of a
//! large cluster share a few thousand requirement records. Indexes:
//!
//! * metadata classes: each distinct `MachineMetadata=` requirement is a class with the
//!   set of machines that satisfy it, ordered by (load, machine ID), so the least-loaded
//!   candidate is the first element and bin-packing reads from the other end;
//! * patterns: per glob, the machines hosting units that declare it (in `Conflicts=` or
//!   `Replaces=`) and the machines hosting units whose names it matches, so a conflict
//!   check is a few hash lookups, never a scan of a machine's units;
//! * the units each pattern matches are found through the pattern's literal prefix;
//! * `MachineOf=` followers per peer, so a moved peer drags exactly its followers.
//!
//! Placement order is by unit name. A step (full or incremental) first re-checks
//! existing placements machine by machine (globals first, then the machine's other
//! units in name order, then `MachineOf=` peers), then places every unplaced unit in
//! name order, so a full recomputation of a snapshot and the incremental steps that led
//! to it agree.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::cluster::{Capacity, ClusterState, Desired, Machine, Resources, Strategy, UnitSpec};
use crate::decision::{Change, Constraint, Decision, FailureCount, Placement, Reason};
use crate::error::{Error, Result};
use crate::glob::Glob;
use crate::hash::FxMap;
use crate::order::LoadOrder;

const NONE: u32 = u32::MAX;
/// Gap between consecutive machine ranks, so a joining machine usually fits between two.
const RANK_GAP: u64 = 1 << 32;
/// Extra passes over units that failed while later displacements freed room.
const MAX_RETRY_ROUNDS: usize = 4;

#[derive(Debug, Clone)]
struct MachineRec {
    id: Box<str>,
    /// Orders machines by ID without comparing strings.
    rank: u64,
    present: bool,
    /// (key, value) ids, sorted by key.
    meta: Vec<(u32, u32)>,
    capacity: Capacity,
    used: Resources,
    load: u32,
    /// Non-global units placed here.
    units: Vec<u32>,
    /// Global units running here, in name order.
    globals: Vec<u32>,
    /// Metadata classes this machine belongs to, with its position in each.
    classes: Vec<(u32, u32)>,
}

impl MachineRec {
    fn meta_value(&self, key: u32) -> Option<u32> {
        self.meta
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| self.meta[i].1)
    }
}

/// A metadata requirement: for each key (sorted), the allowed values (sorted).
type MetaReq = Box<[(u32, Box<[u32]>)]>;

#[derive(Debug, Clone)]
struct MetaClass {
    req: MetaReq,
    order: LoadOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Strat {
    LeastLoaded,
    BinPack,
    Spread(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Req {
    machine_id: Option<Box<str>>,
    machine_of: Box<[u32]>,
    class: u32,
    conflicts: Box<[u32]>,
    replaces: Box<[u32]>,
    global: bool,
    demand: Resources,
    strategy: Option<Strat>,
}

#[derive(Debug, Clone)]
struct UnitRec {
    name: Box<str>,
    /// Requirement record; `NONE` for a name only referenced by `MachineOf=`.
    req: u32,
    /// Placement of a non-global unit.
    machine: u32,
    /// The placement a snapshot claimed, until the first pass checks it.
    claim: u32,
    /// Interned list of the patterns matching this unit's name.
    matches: u32,
    /// Spread group, interned on first use.
    group: u32,
    desired: Desired,
    exists: bool,
    /// In the failed list (active, non-global, unplaced).
    failed: bool,
}

#[derive(Debug, Clone, Default)]
struct PatRec {
    glob: Option<Glob>,
    /// Machines hosting units that declare this pattern in `Conflicts=`, with counts.
    conf_decl: FxMap<u32, u32>,
    /// The same for `Replaces=`.
    rep_decl: FxMap<u32, u32>,
    /// Machines hosting units whose name the pattern matches, with counts.
    matched_on: FxMap<u32, u32>,
}

/// Why one machine cannot take a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    MachineId,
    Metadata(u32),
    MachineOf(u32),
    ConflictOwn(u32),
    ConflictOther(u32),
    Replaced(u32),
    Memory,
    Cpu,
    Weight,
    MaxUnits,
}

/// Units waiting to be placed, popped in name order: a sorted batch plus a heap for
/// units that join during the pass (displaced units, followers of a placed peer).
#[derive(Debug, Clone, Default)]
struct Pending {
    sorted: Vec<u32>,
    pos: usize,
    heap: BinaryHeap<Reverse<(Box<str>, u32)>>,
}

/// Records what a step changed, to report it as [`Change`]s.
#[derive(Debug, Clone, Default)]
struct Journal {
    units: FxMap<u32, u32>,
    machines: FxMap<u32, Vec<u32>>,
}

/// An incremental scheduler: holds the cluster, keeps every unit placed, and answers
/// each change with the placements it changed.
///
/// Build one from a snapshot with [`Scheduler::from_cluster`] (or empty with
/// [`Scheduler::new`]), then feed it machine and unit events. The result after any
/// sequence of events equals [`decide`](crate::decide) on the final snapshot with the
/// previous placements as input.
#[derive(Debug, Clone)]
pub struct Scheduler {
    default_strategy: Strat,
    machines: Vec<MachineRec>,
    machine_by_id: FxMap<Box<str>, u32>,
    machine_by_short: FxMap<Box<str>, Vec<u32>>,
    machines_by_rank: BTreeMap<u64, u32>,
    present: usize,
    keys: Interner,
    vals: Interner,
    /// Present machines having each (key, value).
    kv_index: FxMap<(u32, u32), Vec<u32>>,
    /// For each key, the values present machines have, with machine counts.
    key_values: FxMap<u32, BTreeMap<u32, u32>>,
    classes: Vec<MetaClass>,
    class_by_req: FxMap<MetaReq, u32>,
    units: Vec<UnitRec>,
    unit_by_name: FxMap<Box<str>, u32>,
    reqs: Vec<Req>,
    req_by_key: FxMap<Req, u32>,
    pats: Vec<PatRec>,
    pat_by_text: FxMap<Box<str>, u32>,
    pat_by_prefix: FxMap<Box<str>, Vec<u32>>,
    /// Bit `n` set when some pattern has a literal prefix of `n` bytes (n < 128).
    prefix_lens: u128,
    long_prefixes: bool,
    lists: Vec<Box<[u32]>>,
    list_by: FxMap<Box<[u32]>, u32>,
    followers: FxMap<u32, Vec<u32>>,
    /// Existing global units, sorted by name.
    globals: Vec<u32>,
    groups: Interner,
    spread_counts: FxMap<(u32, u32, u32), u32>,
    pending: Pending,
    failed: Vec<u32>,
    freed: bool,
    journal: Option<Journal>,
}

#[derive(Debug, Clone, Default)]
struct Interner {
    ids: FxMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }
    fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

impl Default for Scheduler {
    fn default() -> Scheduler {
        Scheduler::new(Strategy::LeastLoaded)
    }
}

impl Scheduler {
    /// An empty cluster whose units use `strategy` unless they name their own.
    pub fn new(strategy: Strategy) -> Scheduler {
        let mut s = Scheduler {
            default_strategy: Strat::LeastLoaded,
            machines: Vec::new(),
            machine_by_id: FxMap::default(),
            machine_by_short: FxMap::default(),
            machines_by_rank: BTreeMap::new(),
            present: 0,
            keys: Interner::default(),
            vals: Interner::default(),
            kv_index: FxMap::default(),
            key_values: FxMap::default(),
            classes: vec![MetaClass {
                req: Box::new([]),
                order: LoadOrder::default(),
            }],
            class_by_req: FxMap::default(),
            units: Vec::new(),
            unit_by_name: FxMap::default(),
            reqs: Vec::new(),
            req_by_key: FxMap::default(),
            pats: Vec::new(),
            pat_by_text: FxMap::default(),
            pat_by_prefix: FxMap::default(),
            prefix_lens: 0,
            long_prefixes: false,
            lists: vec![Box::new([])],
            list_by: FxMap::default(),
            followers: FxMap::default(),
            globals: Vec::new(),
            groups: Interner::default(),
            spread_counts: FxMap::default(),
            pending: Pending::default(),
            failed: Vec::new(),
            freed: false,
            journal: None,
        };
        s.class_by_req.insert(Box::new([]), 0);
        s.lists.shrink_to_fit();
        s.list_by.insert(Box::new([]), 0);
        s.default_strategy = s.strat(&strategy);
        s
    }

    /// Places a whole snapshot: existing placements that still hold are kept, everything
    /// else is placed in name order.
    ///
    /// # Errors
    /// Duplicate or empty machine IDs or unit names.
    pub fn from_cluster(cluster: &ClusterState) -> Result<Scheduler> {
        let mut s = Scheduler::new(cluster.strategy.clone());
        s.units.reserve(cluster.units.len());
        s.unit_by_name.reserve(cluster.units.len());
        s.machines.reserve(cluster.machines.len());
        let mut machines: Vec<&Machine> = cluster.machines.iter().collect();
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        for m in machines {
            s.insert_machine(m)?;
        }
        // Patterns first, so each unit's matching patterns are found by prefix lookups
        // instead of a scan of all units per new pattern.
        for u in &cluster.units {
            for p in u.spec.conflicts.iter().chain(&u.spec.replaces) {
                s.intern_pattern(p, false);
            }
        }
        for u in &cluster.units {
            let claim = match &u.machine {
                Some(id) => s.machine_by_id.get(id.as_str()).copied().unwrap_or(NONE),
                None => NONE,
            };
            let id = s.insert_unit(&u.spec, claim)?;
            if u.spec.global {
                s.globals.push(id);
            }
        }
        s.globals
            .sort_by(|&a, &b| s.units[a as usize].name.cmp(&s.units[b as usize].name));
        let mut claims: Vec<Vec<u32>> = vec![Vec::new(); s.machines.len()];
        for (i, u) in s.units.iter().enumerate() {
            if u.claim != NONE {
                claims[u.claim as usize].push(i as u32);
            }
        }
        for (m, list) in claims.into_iter().enumerate() {
            s.revalidate_machine(m as u32, list);
        }
        let mut todo: Vec<u32> = (0..s.units.len() as u32)
            .filter(|&u| s.wants_placement(u))
            .collect();
        s.sort_by_name(&mut todo);
        for &u in &todo {
            s.units[u as usize].failed = true;
        }
        s.failed = todo;
        s.run_pending(Vec::new());
        Ok(s)
    }

    // ---------------------------------------------------------------- public queries

    /// Number of machines present.
    pub fn machine_count(&self) -> usize {
        self.present
    }

    /// Number of units (any desired state).
    pub fn unit_count(&self) -> usize {
        self.units.iter().filter(|u| u.exists).count()
    }

    /// The machine a non-global unit is placed on.
    pub fn machine_of(&self, unit: &str) -> Option<&str> {
        let &u = self.unit_by_name.get(unit)?;
        let m = self.units[u as usize].machine;
        (m != NONE).then(|| &*self.machines[m as usize].id)
    }

    /// Where a unit runs, or `None` for an unknown unit.
    pub fn placement(&self, unit: &str) -> Option<Placement> {
        let &u = self.unit_by_name.get(unit)?;
        let rec = &self.units[u as usize];
        if !rec.exists {
            return None;
        }
        if self.reqs[rec.req as usize].global {
            let mut ms: Vec<String> = self
                .machines
                .iter()
                .filter(|m| m.present && m.globals.contains(&u))
                .map(|m| m.id.to_string())
                .collect();
            ms.sort();
            return Some(Placement::Global(ms));
        }
        Some(match rec.machine {
            NONE => Placement::Unplaced,
            m => Placement::Machine(self.machines[m as usize].id.to_string()),
        })
    }

    /// Units placed on a machine (global ones included), in name order.
    pub fn units_on(&self, machine: &str) -> Option<Vec<&str>> {
        let &m = self.machine_by_id.get(machine)?;
        let mr = &self.machines[m as usize];
        if !mr.present {
            return None;
        }
        let mut v: Vec<&str> = mr
            .units
            .iter()
            .chain(&mr.globals)
            .map(|&u| &*self.units[u as usize].name)
            .collect();
        v.sort_unstable();
        Some(v)
    }

    /// Why a unit that should run is not placed; `None` when it is placed, inactive or
    /// unknown (a global unit gets a reason only when it runs nowhere).
    pub fn reason(&self, unit: &str) -> Option<Reason> {
        let &u = self.unit_by_name.get(unit)?;
        let rec = &self.units[u as usize];
        if !rec.exists || rec.desired == Desired::Inactive {
            return None;
        }
        let req = &self.reqs[rec.req as usize];
        if req.global {
            if self
                .machines
                .iter()
                .any(|m| m.present && m.globals.contains(&u))
            {
                return None;
            }
        } else if rec.machine != NONE {
            return None;
        }
        Some(self.explain(u))
    }

    /// The placements of every unit and the reasons for every unplaced one.
    pub fn decision(&self) -> Decision {
        let mut d = Decision::default();
        let mut global_on: FxMap<u32, Vec<String>> = FxMap::default();
        for m in self.machines.iter().filter(|m| m.present) {
            for &g in &m.globals {
                global_on.entry(g).or_default().push(m.id.to_string());
            }
        }
        for (i, u) in self.units.iter().enumerate() {
            if !u.exists {
                continue;
            }
            let i = i as u32;
            let p = if self.reqs[u.req as usize].global {
                let mut ms = global_on.remove(&i).unwrap_or_default();
                ms.sort();
                if ms.is_empty() && u.desired != Desired::Inactive {
                    d.unplaced.insert(u.name.to_string(), self.explain(i));
                }
                Placement::Global(ms)
            } else if u.machine != NONE {
                Placement::Machine(self.machines[u.machine as usize].id.to_string())
            } else {
                if u.desired != Desired::Inactive {
                    d.unplaced.insert(u.name.to_string(), self.explain(i));
                }
                Placement::Unplaced
            };
            d.placements.insert(u.name.to_string(), p);
        }
        d
    }

    // ---------------------------------------------------------------- incremental steps

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
        let list = self.machines[m as usize].units.clone();
        for &u in &list {
            self.detach(u);
        }
        self.note_globals(m);
        for g in std::mem::take(&mut self.machines[m as usize].globals) {
            self.account(g, m, false);
        }
        self.machines[m as usize].meta = self.intern_meta(&metadata);
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
            && self.units[u as usize].exists
        {
            return Err(Error::DuplicateUnit { name: spec.name });
        }
        self.begin();
        let claim = machine
            .and_then(|id| self.machine_by_id.get(id).copied())
            .unwrap_or(NONE);
        let claim = if claim != NONE && self.machines[claim as usize].present {
            claim
        } else {
            NONE
        };
        for p in spec.conflicts.iter().chain(&spec.replaces) {
            self.intern_pattern(p, true);
        }
        let u = self.insert_unit(&spec, claim)?;
        let mut displaced = Vec::new();
        if spec.global {
            let pos = self
                .globals
                .partition_point(|&g| self.units[g as usize].name < self.units[u as usize].name);
            self.globals.insert(pos, u);
            displaced = self.resettle_globals();
        } else if claim != NONE {
            let mut list = self.machines[claim as usize].units.clone();
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
        let was_active = self.units[u as usize].desired != Desired::Inactive;
        self.units[u as usize].desired = desired;
        let now_active = desired != Desired::Inactive;
        let mut displaced = Vec::new();
        if was_active != now_active {
            let global = self.reqs[self.units[u as usize].req as usize].global;
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
        let at = self.units[u as usize].machine;
        let at = (at != NONE).then(|| self.machines[at as usize].id.to_string());
        let mut changes = self.remove_unit(&spec.name)?;
        changes.extend(self.add_unit_at(spec, at.as_deref())?);
        Ok(merge_changes(changes))
    }

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
        self.machines[m as usize].present = true;
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
            .map(|&u| self.units[u as usize].clone());
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
            self.machines[m as usize].present = false;
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
        self.units[u as usize].exists = true;
        let req = self.units[u as usize].req as usize;
        if self.reqs[req].global {
            let pos = self
                .globals
                .partition_point(|&g| self.units[g as usize].name < self.units[u as usize].name);
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
    fn undo_detach(&mut self, changes: &[Change]) -> Vec<(u32, u32, bool)> {
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
    fn undo_attach(&mut self, attach: Vec<(u32, u32, bool)>, failed: Vec<u32>) {
        for (u, m, global) in attach {
            if global {
                self.attach_global(u, m);
            } else {
                self.attach(u, m);
            }
        }
        for &u in &self.failed {
            self.units[u as usize].failed = false;
        }
        for &u in &failed {
            self.units[u as usize].failed = true;
        }
        self.failed = failed;
    }

    /// Makes a unit added by a dry run disappear again (its name stays interned).
    fn forget_unit(&mut self, u: u32, prior: Option<UnitRec>) {
        let req = self.units[u as usize].req as usize;
        self.globals.retain(|&g| g != u);
        for p in self.reqs[req].machine_of.clone() {
            if let Some(f) = self.followers.get_mut(&p) {
                f.retain(|&x| x != u);
            }
        }
        let rec = &mut self.units[u as usize];
        // Patterns interned meanwhile may match the name: keep the current list.
        let matches = rec.matches;
        *rec = prior.unwrap_or_else(|| UnitRec {
            name: rec.name.clone(),
            req: NONE,
            machine: NONE,
            claim: NONE,
            matches,
            group: NONE,
            desired: Desired::Inactive,
            exists: false,
            failed: false,
        });
        rec.matches = matches;
    }

    // ---------------------------------------------------------------- bookkeeping

    fn present_machine(&self, id: &str) -> Result<u32> {
        match self.machine_by_id.get(id) {
            Some(&m) if self.machines[m as usize].present => Ok(m),
            _ => Err(Error::UnknownMachine { id: id.to_owned() }),
        }
    }

    fn existing_unit(&self, name: &str) -> Result<u32> {
        match self.unit_by_name.get(name) {
            Some(&u) if self.units[u as usize].exists => Ok(u),
            _ => Err(Error::UnknownUnit {
                name: name.to_owned(),
            }),
        }
    }

    fn begin(&mut self) {
        self.journal = Some(Journal::default());
    }

    fn end(&mut self) -> Vec<Change> {
        let Some(j) = self.journal.take() else {
            return Vec::new();
        };
        let name_of = |m: u32| (m != NONE).then(|| self.machines[m as usize].id.to_string());
        let mut out = Vec::new();
        for (u, before) in j.units {
            let after = self.units[u as usize].machine;
            if after != before {
                out.push(Change {
                    unit: self.units[u as usize].name.to_string(),
                    from: name_of(before),
                    to: name_of(after),
                    global: false,
                });
            }
        }
        for (m, before) in j.machines {
            let after = &self.machines[m as usize].globals;
            let id = &self.machines[m as usize].id;
            for &g in &before {
                if !after.contains(&g) {
                    out.push(Change {
                        unit: self.units[g as usize].name.to_string(),
                        from: Some(id.to_string()),
                        to: None,
                        global: true,
                    });
                }
            }
            for &g in after {
                if !before.contains(&g) {
                    out.push(Change {
                        unit: self.units[g as usize].name.to_string(),
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

    fn note_unit(&mut self, u: u32) {
        if let Some(j) = &mut self.journal {
            let m = self.units[u as usize].machine;
            j.units.entry(u).or_insert(m);
        }
    }

    fn note_globals(&mut self, m: u32) {
        if let Some(j) = &mut self.journal
            && !j.machines.contains_key(&m)
        {
            j.machines
                .insert(m, self.machines[m as usize].globals.clone());
        }
    }

    fn strat(&mut self, s: &Strategy) -> Strat {
        match s {
            Strategy::LeastLoaded => Strat::LeastLoaded,
            Strategy::BinPack => Strat::BinPack,
            Strategy::Spread { key } => Strat::Spread(self.keys.intern(key)),
        }
    }

    fn sort_by_name(&self, v: &mut [u32]) {
        let name = |u: u32| &*self.units[u as usize].name;
        if v.len() < 64 {
            v.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
            return;
        }
        // Compare the first eight bytes as one integer (big-endian, so the order is the
        // byte order), and whole names only on a tie: a million names sort much faster.
        let prefix = |u: u32| {
            let mut b = [0u8; 8];
            let n = name(u).as_bytes();
            let k = n.len().min(8);
            b[..k].copy_from_slice(&n[..k]);
            u64::from_be_bytes(b)
        };
        let mut keyed: Vec<(u64, u32)> = v.iter().map(|&u| (prefix(u), u)).collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| name(a.1).cmp(name(b.1))));
        for (slot, (_, u)) in v.iter_mut().zip(keyed) {
            *slot = u;
        }
    }

    fn wants_placement(&self, u: u32) -> bool {
        let r = &self.units[u as usize];
        r.exists
            && r.desired != Desired::Inactive
            && r.machine == NONE
            && !self.reqs[r.req as usize].global
    }

    fn is_global(&self, u: u32) -> bool {
        let r = &self.units[u as usize];
        r.req != NONE && self.reqs[r.req as usize].global
    }

    fn intern_list(&mut self, mut v: Vec<u32>) -> u32 {
        v.sort_unstable();
        v.dedup();
        if let Some(&i) = self.list_by.get(v.as_slice()) {
            return i;
        }
        let i = self.lists.len() as u32;
        let b: Box<[u32]> = v.into();
        self.lists.push(b.clone());
        self.list_by.insert(b, i);
        i
    }

    // ---------------------------------------------------------------- machines

    fn intern_meta(&mut self, meta: &BTreeMap<String, String>) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = meta
            .iter()
            .map(|(k, val)| (self.keys.intern(k), self.vals.intern(val)))
            .collect();
        v.sort_unstable();
        v
    }

    fn insert_machine(&mut self, machine: &Machine) -> Result<u32> {
        if machine.id.is_empty() {
            return Err(Error::Empty { what: "machine ID" });
        }
        let meta = self.intern_meta(&machine.metadata);
        let m = match self.machine_by_id.get(machine.id.as_str()) {
            Some(&m) if self.machines[m as usize].present => {
                return Err(Error::DuplicateMachine {
                    id: machine.id.clone(),
                });
            }
            Some(&m) => m,
            None => {
                let m = self.machines.len() as u32;
                let rank = self.new_rank(&machine.id);
                self.machines.push(MachineRec {
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
        let rec = &mut self.machines[m as usize];
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
            Some((r, m)) if *self.machines[m as usize].id < *id => return r + RANK_GAP,
            _ => {}
        }
        let mut prev = 0u64;
        let mut next = u64::MAX;
        for (&r, &m) in &self.machines_by_rank {
            if *self.machines[m as usize].id < *id {
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
        let mut order: Vec<u32> = self.machines_by_rank.values().copied().collect();
        order.sort_by(|&a, &b| {
            self.machines[a as usize]
                .id
                .cmp(&self.machines[b as usize].id)
        });
        self.machines_by_rank.clear();
        let mut new_rank = None;
        let mut r = RANK_GAP;
        for m in order {
            if new_rank.is_none() && *id < *self.machines[m as usize].id {
                new_rank = Some(r);
                r += RANK_GAP;
            }
            self.machines[m as usize].rank = r;
            self.machines_by_rank.insert(r, m);
            r += RANK_GAP;
        }
        // Positions in the load orders follow ID order, which renumbering keeps.
        new_rank.unwrap_or(r)
    }

    /// Adds a present machine to the metadata indexes and to every class it satisfies.
    fn index_machine(&mut self, m: u32) {
        let meta = self.machines[m as usize].meta.clone();
        for &(k, v) in &meta {
            self.kv_index.entry((k, v)).or_default().push(m);
            *self.key_values.entry(k).or_default().entry(v).or_default() += 1;
        }
        let mut classes = Vec::new();
        for c in 0..self.classes.len() {
            if class_matches(&self.classes[c].req, &meta).is_ok() {
                let pos = self.join_class(c as u32, m);
                classes.push((c as u32, pos));
            }
        }
        self.machines[m as usize].classes = classes;
    }

    /// Makes machine `m` present in class `c`'s order; returns its position. The caller
    /// records the position in the machine's class list.
    fn join_class(&mut self, c: u32, m: u32) -> u32 {
        let machines = &mut self.machines;
        let order = &mut self.classes[c as usize].order;
        let rank = machines[m as usize].rank;
        let pos = order
            .members()
            .partition_point(|&x| machines[x as usize].rank < rank);
        let load = machines[m as usize].load;
        if order.members().get(pos) == Some(&m) {
            order.insert(pos, load);
        } else if pos == order.members().len() {
            let pos = order.push_member(m);
            order.insert(pos, load);
        } else {
            // A machine joining between two others renumbers the class.
            order.add_member(pos, m);
            for (p, &x) in order.members().to_vec().iter().enumerate() {
                let rec = &mut machines[x as usize];
                if let Some(e) = rec.classes.iter_mut().find(|e| e.0 == c) {
                    e.1 = p as u32;
                    order.insert(p, rec.load);
                }
            }
            order.insert(pos, load);
        }
        pos as u32
    }

    fn unindex_machine(&mut self, m: u32) {
        let rec = &self.machines[m as usize];
        for &(c, pos) in &rec.classes {
            self.classes[c as usize]
                .order
                .remove(pos as usize, rec.load);
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
        self.machines[m as usize].classes.clear();
    }

    /// Takes a machine out of the cluster; returns its displaced units.
    fn drop_machine(&mut self, m: u32) -> Vec<u32> {
        // Out of the load orders first, so emptying the machine does not reorder them.
        self.unindex_machine(m);
        let mut displaced = Vec::new();
        let units = self.machines[m as usize].units.clone();
        for u in units {
            self.detach(u);
            displaced.push(u);
        }
        self.note_globals(m);
        let globals = std::mem::take(&mut self.machines[m as usize].globals);
        for g in globals {
            self.detach_global(g, m);
        }
        self.machines[m as usize].present = false;
        self.present -= 1;
        displaced
    }

    fn set_load(&mut self, m: u32, load: u32) {
        let rec = &self.machines[m as usize];
        let old = rec.load;
        if old == load {
            return;
        }
        for &(c, pos) in &rec.classes {
            self.classes[c as usize]
                .order
                .relevel(pos as usize, old, load);
        }
        self.machines[m as usize].load = load;
    }

    // ---------------------------------------------------------------- classes

    /// The class of machines satisfying a metadata requirement, created on first use.
    fn class_for(&mut self, pairs: &[(u32, u32)]) -> u32 {
        if pairs.is_empty() {
            return 0;
        }
        let mut req: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &(k, v) in pairs {
            req.entry(k).or_default().push(v);
        }
        let req: MetaReq = req
            .into_iter()
            .map(|(k, mut vs)| {
                vs.sort_unstable();
                vs.dedup();
                (k, vs.into_boxed_slice())
            })
            .collect();
        self.class_for_req(req)
    }

    fn class_for_req(&mut self, req: MetaReq) -> u32 {
        if let Some(&c) = self.class_by_req.get(&req) {
            return c;
        }
        let c = self.classes.len() as u32;
        // Candidates: machines having one of the allowed values of the rarest key.
        let mut best: Option<Vec<u32>> = None;
        for (k, vals) in req.iter() {
            let mut cand: Vec<u32> = Vec::new();
            for v in vals.iter() {
                if let Some(list) = self.kv_index.get(&(*k, *v)) {
                    cand.extend_from_slice(list);
                }
            }
            if best.as_ref().is_none_or(|b| cand.len() < b.len()) {
                best = Some(cand);
            }
        }
        let mut members: Vec<u32> = best
            .unwrap_or_default()
            .into_iter()
            .filter(|&m| {
                let rec = &self.machines[m as usize];
                rec.present && class_matches(&req, &rec.meta).is_ok()
            })
            .collect();
        members.sort_unstable_by_key(|&m| self.machines[m as usize].rank);
        members.dedup();
        let mut order = LoadOrder::with_members(members.clone());
        for (p, &m) in members.iter().enumerate() {
            order.insert(p, self.machines[m as usize].load);
            self.machines[m as usize].classes.push((c, p as u32));
        }
        self.classes.push(MetaClass {
            req: req.clone(),
            order,
        });
        self.class_by_req.insert(req, c);
        c
    }

    /// The class `c` narrowed to machines whose `key` is `val`, or `None` when `c` does
    /// not allow that value.
    fn narrowed_class(&mut self, c: u32, key: u32, val: u32) -> Option<u32> {
        let mut req: Vec<(u32, Box<[u32]>)> = self.classes[c as usize].req.to_vec();
        match req.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => {
                if !req[i].1.contains(&val) {
                    return None;
                }
                req[i].1 = Box::new([val]);
            }
            Err(i) => req.insert(i, (key, Box::new([val]))),
        }
        Some(self.class_for_req(req.into_boxed_slice()))
    }

    fn describe_meta(&self, c: u32, key: u32) -> String {
        let req = &self.classes[c as usize].req;
        let vals = req
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| &**v)
            .unwrap_or(&[]);
        let mut vals: Vec<&str> = vals.iter().map(|&v| self.vals.name(v)).collect();
        vals.sort_unstable();
        format!("{}={}", self.keys.name(key), vals.join("|"))
    }

    // ---------------------------------------------------------------- units and patterns

    /// Interns a glob; when `existing_units` is set, finds the units it already matches.
    fn intern_pattern(&mut self, text: &str, existing_units: bool) -> u32 {
        if let Some(&p) = self.pat_by_text.get(text) {
            return p;
        }
        let p = self.pats.len() as u32;
        let glob = Glob::new(text);
        let prefix: Box<str> = glob.literal_prefix().into();
        if prefix.len() < 128 {
            self.prefix_lens |= 1 << prefix.len();
        } else {
            self.long_prefixes = true;
        }
        self.pat_by_prefix
            .entry(prefix.clone())
            .or_default()
            .push(p);
        self.pats.push(PatRec {
            glob: Some(glob.clone()),
            ..PatRec::default()
        });
        self.pat_by_text.insert(text.into(), p);
        if existing_units && glob.is_valid() {
            for u in 0..self.units.len() as u32 {
                let name = &self.units[u as usize].name;
                if !name.starts_with(&*prefix) || !glob.matches(name) {
                    continue;
                }
                let mut list = self.lists[self.units[u as usize].matches as usize].to_vec();
                list.push(p);
                self.units[u as usize].matches = self.intern_list(list);
                // Count where it already runs.
                let rec = &self.units[u as usize];
                let mut hosts = Vec::new();
                if rec.machine != NONE {
                    hosts.push(rec.machine);
                } else if rec.req != NONE && self.reqs[rec.req as usize].global {
                    hosts.extend(
                        self.machines
                            .iter()
                            .enumerate()
                            .filter(|(_, m)| m.present && m.globals.contains(&u))
                            .map(|(i, _)| i as u32),
                    );
                }
                for h in hosts {
                    *self.pats[p as usize].matched_on.entry(h).or_default() += 1;
                }
            }
        }
        p
    }

    /// The patterns matching a name, found through their literal prefixes.
    fn patterns_matching(&self, name: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut check = |prefix: &str| {
            if let Some(ps) = self.pat_by_prefix.get(prefix) {
                for &p in ps {
                    if self.pats[p as usize]
                        .glob
                        .as_ref()
                        .is_some_and(|g| g.matches(name))
                    {
                        out.push(p);
                    }
                }
            }
        };
        let mut lens = self.prefix_lens;
        while lens != 0 {
            let n = lens.trailing_zeros() as usize;
            lens &= lens - 1;
            if n <= name.len() && name.is_char_boundary(n) {
                check(&name[..n]);
            }
        }
        if self.long_prefixes {
            for n in 128..=name.len() {
                if name.is_char_boundary(n) {
                    check(&name[..n]);
                }
            }
        }
        out
    }

    fn unit_slot(&mut self, name: &str) -> u32 {
        if let Some(&u) = self.unit_by_name.get(name) {
            return u;
        }
        let u = self.units.len() as u32;
        let matches = self.patterns_matching(name);
        let matches = self.intern_list(matches);
        self.units.push(UnitRec {
            name: name.into(),
            req: NONE,
            machine: NONE,
            claim: NONE,
            matches,
            group: NONE,
            desired: Desired::Inactive,
            exists: false,
            failed: false,
        });
        self.unit_by_name.insert(name.into(), u);
        u
    }

    /// Records a unit (not yet placed). Globals are added to `self.globals` by the caller.
    fn insert_unit(&mut self, spec: &UnitSpec, claim: u32) -> Result<u32> {
        if spec.name.is_empty() {
            return Err(Error::Empty { what: "unit name" });
        }
        let u = self.unit_slot(&spec.name);
        if self.units[u as usize].exists {
            return Err(Error::DuplicateUnit {
                name: spec.name.clone(),
            });
        }
        let machine_of: Vec<u32> = spec.machine_of.iter().map(|p| self.unit_slot(p)).collect();
        let pairs: Vec<(u32, u32)> = spec
            .machine_metadata
            .iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .map(|(k, v)| (self.keys.intern(k), self.vals.intern(v)))
            .collect();
        let class = self.class_for(&pairs);
        let mut conflicts: Vec<u32> = spec
            .conflicts
            .iter()
            .map(|p| self.intern_pattern(p, true))
            .collect();
        conflicts.sort_unstable();
        conflicts.dedup();
        let mut replaces: Vec<u32> = spec
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
                let r = self.reqs.len() as u32;
                self.reqs.push(req.clone());
                self.req_by_key.insert(req, r);
                r
            }
        };
        let rec = &mut self.units[u as usize];
        rec.req = r;
        rec.exists = true;
        rec.desired = spec.desired;
        rec.claim = if spec.global { NONE } else { claim };
        rec.machine = NONE;
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
    fn retire_unit(&mut self, u: u32, remove: bool) -> Vec<u32> {
        let global = self.is_global(u);
        let mut displaced = Vec::new();
        if remove {
            self.units[u as usize].exists = false;
            self.units[u as usize].failed = false;
            let r = self.units[u as usize].req as usize;
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
            self.units[u as usize].failed = false;
            if self.units[u as usize].machine != NONE {
                let m = self.units[u as usize].machine;
                self.detach(u);
                self.cascade_followers(u, m, &mut displaced);
            }
        }
        displaced
    }

    // ---------------------------------------------------------------- attach / detach

    fn strategy_of(&self, req: &Req) -> Strat {
        req.strategy.unwrap_or(self.default_strategy)
    }

    fn group_of(&mut self, u: u32) -> u32 {
        let g = self.units[u as usize].group;
        if g != NONE {
            return g;
        }
        let name = &self.units[u as usize].name;
        let base = match name.split_once('@') {
            Some((prefix, _)) => prefix,
            None => name.rsplit_once('.').map_or(&**name, |(b, _)| b),
        };
        let base = base.to_owned();
        let g = self.groups.intern(&base);
        self.units[u as usize].group = g;
        g
    }

    /// Counts a unit onto a machine in every index (load, resources, patterns).
    fn account(&mut self, u: u32, m: u32, add: bool) {
        let req = &self.reqs[self.units[u as usize].req as usize];
        let demand = req.demand;
        let rec = &mut self.machines[m as usize];
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
        let bump = |map: &mut FxMap<u32, u32>| {
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
            bump(&mut self.pats[p as usize].conf_decl);
        }
        for &p in req.replaces.iter() {
            bump(&mut self.pats[p as usize].rep_decl);
        }
        for &p in self.lists[self.units[u as usize].matches as usize].iter() {
            bump(&mut self.pats[p as usize].matched_on);
        }
        let strat = self.strategy_of(req);
        let global = req.global;
        self.set_load(m, load);
        if let (Strat::Spread(key), false) = (strat, global)
            && let Some(val) = self.machines[m as usize].meta_value(key)
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

    fn attach(&mut self, u: u32, m: u32) {
        self.note_unit(u);
        self.units[u as usize].machine = m;
        self.machines[m as usize].units.push(u);
        self.account(u, m, true);
    }

    fn detach(&mut self, u: u32) {
        let m = self.units[u as usize].machine;
        if m == NONE {
            return;
        }
        self.note_unit(u);
        self.account(u, m, false);
        let units = &mut self.machines[m as usize].units;
        if let Some(i) = units.iter().position(|&x| x == u) {
            units.swap_remove(i);
        }
        self.units[u as usize].machine = NONE;
    }

    fn attach_global(&mut self, g: u32, m: u32) {
        self.note_globals(m);
        let names = &self.units;
        let globals = &mut self.machines[m as usize].globals;
        let pos = globals.partition_point(|&x| names[x as usize].name < names[g as usize].name);
        globals.insert(pos, g);
        self.account(g, m, true);
    }

    fn detach_global(&mut self, g: u32, m: u32) {
        self.note_globals(m);
        self.machines[m as usize].globals.retain(|&x| x != g);
        self.account(g, m, false);
    }

    /// Unplaces the followers of `peer` that sit on `m`, and theirs, recursively.
    fn cascade_followers(&mut self, peer: u32, m: u32, displaced: &mut Vec<u32>) {
        let mut stack = vec![peer];
        while let Some(p) = stack.pop() {
            let Some(fs) = self.followers.get(&p) else {
                continue;
            };
            for f in fs.clone() {
                if self.units[f as usize].machine == m {
                    self.detach(f);
                    self.freed = true;
                    displaced.push(f);
                    stack.push(f);
                }
            }
        }
    }

    // ---------------------------------------------------------------- checks

    fn peer_on(&self, p: u32, m: u32) -> bool {
        let rec = &self.units[p as usize];
        if !rec.exists || rec.desired == Desired::Inactive {
            return false;
        }
        if self.reqs[rec.req as usize].global {
            self.machines[m as usize].globals.contains(&p)
        } else {
            rec.machine == m
        }
    }

    /// Whether unit `u` (not on `m`) may go to machine `m`, given everything placed now.
    fn check(&self, u: u32, m: u32, peers: bool) -> Result<(), Fail> {
        let rec = &self.units[u as usize];
        let req = &self.reqs[rec.req as usize];
        let mr = &self.machines[m as usize];
        if !req.global
            && let Some(id) = &req.machine_id
            && *mr.id != **id
            && mr.id.get(..8) != Some(&**id)
        {
            return Err(Fail::MachineId);
        }
        if req.class != 0 {
            class_matches(&self.classes[req.class as usize].req, &mr.meta)
                .map_err(Fail::Metadata)?;
        }
        if peers && !req.global {
            for &p in req.machine_of.iter() {
                if !self.peer_on(p, m) {
                    return Err(Fail::MachineOf(p));
                }
            }
        }
        for &p in req.conflicts.iter() {
            if self.pats[p as usize].matched_on.contains_key(&m) {
                return Err(Fail::ConflictOwn(p));
            }
        }
        let matches = &self.lists[rec.matches as usize];
        for &p in matches.iter() {
            if self.pats[p as usize].conf_decl.contains_key(&m) {
                return Err(Fail::ConflictOther(p));
            }
        }
        if !req.global {
            for &p in matches.iter() {
                if self.pats[p as usize].rep_decl.contains_key(&m)
                    && self.replaced_on(u, m).is_some()
                {
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

    fn replaces(&self, a: u32, b: u32) -> bool {
        let ra = &self.reqs[self.units[a as usize].req as usize];
        let mb = &self.lists[self.units[b as usize].matches as usize];
        ra.replaces.iter().any(|p| mb.contains(p))
    }

    /// A non-global unit on `m` that replaces `u` (one way; mutual replaces cancel out).
    fn replaced_on(&self, u: u32, m: u32) -> Option<u32> {
        self.machines[m as usize]
            .units
            .iter()
            .copied()
            .find(|&x| x != u && self.replaces(x, u) && !self.replaces(u, x))
    }

    // ---------------------------------------------------------------- choosing

    /// The machine for unit `u`, or `None`.
    fn choose(&mut self, u: u32) -> Option<u32> {
        let r = self.units[u as usize].req as usize;
        let (class, strategy) = (self.reqs[r].class, self.strategy_of(&self.reqs[r]));
        if let Some(id) = &self.reqs[r].machine_id {
            let mut cands: Vec<u32> = Vec::new();
            if let Some(&m) = self.machine_by_id.get(&**id) {
                cands.push(m);
            }
            if let Some(ms) = self.machine_by_short.get(&**id) {
                cands.extend(ms);
            }
            cands.retain(|&m| self.machines[m as usize].present);
            cands.sort_unstable_by_key(|&m| {
                (
                    self.machines[m as usize].load,
                    self.machines[m as usize].rank,
                )
            });
            cands.dedup();
            return cands.into_iter().find(|&m| self.check(u, m, true).is_ok());
        }
        if let Some(&p) = self.reqs[r]
            .machine_of
            .iter()
            .find(|&&p| !self.is_global(p))
        {
            let m = self.units[p as usize].machine;
            return (m != NONE && self.check(u, m, true).is_ok()).then_some(m);
        }
        match strategy {
            Strat::LeastLoaded => self.first_fit(u, class),
            Strat::BinPack => {
                let order = &self.classes[class as usize].order;
                order
                    .descending()
                    .map(|(_, m)| m)
                    .find(|&m| self.check(u, m, true).is_ok())
            }
            Strat::Spread(key) => {
                let vals: Vec<u32> = self
                    .key_values
                    .get(&key)
                    .map(|v| v.keys().copied().collect())
                    .unwrap_or_default();
                let zones: Vec<(u32, u32)> = vals
                    .into_iter()
                    .filter_map(|v| self.narrowed_class(class, key, v).map(|c| (v, c)))
                    .collect();
                let g = self.group_of(u);
                let mut best: Option<(u32, u32, u64, u32)> = None;
                for (v, c) in zones {
                    let count = self.spread_counts.get(&(g, key, v)).copied().unwrap_or(0);
                    if best.is_some_and(|b| b.0 < count) {
                        continue;
                    }
                    if let Some(m) = self.first_fit(u, c) {
                        let mr = &self.machines[m as usize];
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

    fn first_fit(&self, u: u32, class: u32) -> Option<u32> {
        self.classes[class as usize]
            .order
            .ascending()
            .map(|(_, m)| m)
            .find(|&m| self.check(u, m, true).is_ok())
    }

    // ---------------------------------------------------------------- passes

    /// The global units machine `m` runs: in name order, each whose metadata matches, that
    /// conflicts with no earlier one kept there, and that fits beside them.
    fn global_set_for(&self, m: u32) -> Vec<u32> {
        let mr = &self.machines[m as usize];
        let mut used = Resources::default();
        let mut out: Vec<u32> = Vec::new();
        for &g in &self.globals {
            let rec = &self.units[g as usize];
            if !rec.exists || rec.desired == Desired::Inactive {
                continue;
            }
            let req = &self.reqs[rec.req as usize];
            if req.class != 0
                && class_matches(&self.classes[req.class as usize].req, &mr.meta).is_err()
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

    fn conflict_between(&self, a: u32, b: u32) -> bool {
        if a == b {
            return false;
        }
        let (ra, rb) = (&self.units[a as usize], &self.units[b as usize]);
        let (qa, qb) = (&self.reqs[ra.req as usize], &self.reqs[rb.req as usize]);
        let (ma, mb) = (
            &self.lists[ra.matches as usize],
            &self.lists[rb.matches as usize],
        );
        qa.conflicts.iter().any(|p| mb.contains(p)) || qb.conflicts.iter().any(|p| ma.contains(p))
    }

    /// Re-checks machine `m` from scratch: its global units, then `units` (the non-global
    /// units placed or claimed there) in name order, then `MachineOf=` peers. Returns the
    /// units that lost their place.
    fn revalidate_machine(&mut self, m: u32, mut units: Vec<u32>) -> Vec<u32> {
        let mut displaced = Vec::new();
        for &u in &units {
            self.detach(u);
            self.units[u as usize].claim = NONE;
        }
        self.note_globals(m);
        for g in std::mem::take(&mut self.machines[m as usize].globals) {
            self.account(g, m, false);
        }
        if !self.machines[m as usize].present {
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
    fn settle_peers(&mut self, m: u32, displaced: &mut Vec<u32>) {
        loop {
            let bad: Vec<u32> = self.machines[m as usize]
                .units
                .iter()
                .copied()
                .filter(|&u| {
                    let req = &self.reqs[self.units[u as usize].req as usize];
                    req.machine_of.iter().any(|&p| !self.peer_on(p, m))
                })
                .collect();
            if bad.is_empty() {
                return;
            }
            for u in bad {
                if self.units[u as usize].machine == m {
                    self.detach(u);
                    displaced.push(u);
                    self.cascade_followers(u, m, displaced);
                }
            }
        }
    }

    /// After `u` lands on `m`: moves away the units there that `u` replaces.
    fn displace_replaced(&mut self, u: u32, m: u32, displaced: &mut Vec<u32>) {
        if self.reqs[self.units[u as usize].req as usize]
            .replaces
            .is_empty()
        {
            return;
        }
        let victims: Vec<u32> = self.machines[m as usize]
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
    fn resettle_globals(&mut self) -> Vec<u32> {
        let mut displaced = Vec::new();
        for m in 0..self.machines.len() as u32 {
            if !self.machines[m as usize].present {
                continue;
            }
            let want = self.global_set_for(m);
            let have = self.machines[m as usize].globals.clone();
            if want == have {
                continue;
            }
            let removed: Vec<u32> = have.iter().copied().filter(|g| !want.contains(g)).collect();
            let added: Vec<u32> = want.iter().copied().filter(|g| !have.contains(g)).collect();
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
            let list = self.machines[m as usize].units.clone();
            displaced.extend(self.revalidate_machine(m, list));
        }
        displaced
    }

    /// Whether new global units fit on `m` beside everything there (no conflict, room),
    /// in which case re-checking the machine from scratch would change nothing else.
    fn fits_beside(&mut self, added: &[u32], m: u32) -> bool {
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

    /// Places `extra` and every waiting unit, in name order.
    fn run_pending(&mut self, extra: Vec<u32>) {
        let mut batch = extra;
        for u in std::mem::take(&mut self.failed) {
            self.units[u as usize].failed = false;
            batch.push(u);
        }
        batch.retain(|&u| self.wants_placement(u));
        self.sort_by_name(&mut batch);
        batch.dedup();
        self.freed = false;
        let mut rounds = 0;
        self.pending = Pending {
            sorted: batch,
            pos: 0,
            heap: BinaryHeap::new(),
        };
        loop {
            while let Some(u) = self.pop_pending() {
                self.place_one(u);
            }
            if !self.freed || self.failed.is_empty() || rounds >= MAX_RETRY_ROUNDS {
                break;
            }
            rounds += 1;
            self.freed = false;
            let mut again = std::mem::take(&mut self.failed);
            for &u in &again {
                self.units[u as usize].failed = false;
            }
            again.retain(|&u| self.wants_placement(u));
            self.sort_by_name(&mut again);
            self.pending = Pending {
                sorted: again,
                pos: 0,
                heap: BinaryHeap::new(),
            };
        }
        self.failed.retain(|&u| self.units[u as usize].failed);
        let mut failed = std::mem::take(&mut self.failed);
        self.sort_by_name(&mut failed);
        failed.dedup();
        self.failed = failed;
        self.pending = Pending::default();
    }

    fn pop_pending(&mut self) -> Option<u32> {
        let p = &mut self.pending;
        let from_sorted = p.sorted.get(p.pos).copied();
        let take_heap = match (from_sorted, p.heap.peek()) {
            (Some(s), Some(Reverse((name, _)))) => *name < self.units[s as usize].name,
            (None, Some(_)) => true,
            _ => false,
        };
        if take_heap {
            p.heap.pop().map(|Reverse((_, u))| u)
        } else {
            p.pos += 1;
            from_sorted
        }
    }

    fn push_pending(&mut self, u: u32) {
        let name = self.units[u as usize].name.clone();
        self.pending.heap.push(Reverse((name, u)));
    }

    fn place_one(&mut self, u: u32) {
        if !self.wants_placement(u) {
            return;
        }
        match self.choose(u) {
            Some(m) => {
                if self.units[u as usize].failed {
                    self.units[u as usize].failed = false;
                }
                self.attach(u, m);
                let mut displaced = Vec::new();
                self.displace_replaced(u, m, &mut displaced);
                for x in displaced {
                    self.push_pending(x);
                }
                if let Some(fs) = self.followers.get(&u) {
                    let waiting: Vec<u32> = fs
                        .iter()
                        .copied()
                        .filter(|&f| self.units[f as usize].failed)
                        .collect();
                    for f in waiting {
                        self.units[f as usize].failed = false;
                        self.push_pending(f);
                    }
                }
            }
            None => {
                if !self.units[u as usize].failed {
                    self.units[u as usize].failed = true;
                    self.failed.push(u);
                }
            }
        }
    }

    // ---------------------------------------------------------------- reasons

    fn explain(&self, u: u32) -> Reason {
        let mut counts: BTreeMap<(Constraint, String), usize> = BTreeMap::new();
        let mut machines = 0;
        let mut fit = 0;
        let req = &self.reqs[self.units[u as usize].req as usize];
        for (m, mr) in self.machines.iter().enumerate() {
            if !mr.present {
                continue;
            }
            machines += 1;
            match self.check(u, m as u32, true) {
                Ok(()) => fit += 1,
                Err(f) => {
                    let key = match f {
                        Fail::MachineId => (
                            Constraint::MachineId,
                            req.machine_id.as_deref().unwrap_or("").to_owned(),
                        ),
                        Fail::Metadata(_) => {
                            // The first failing key by name, whatever the interning order.
                            let meta = &mr.meta;
                            let k = self.classes[req.class as usize]
                                .req
                                .iter()
                                .filter(|(k, vals)| {
                                    meta.iter()
                                        .find(|(mk, _)| mk == k)
                                        .is_none_or(|(_, v)| !vals.contains(v))
                                })
                                .map(|(k, _)| *k)
                                .min_by_key(|&k| self.keys.name(k))
                                .unwrap_or(0);
                            (
                                Constraint::MachineMetadata,
                                self.describe_meta(req.class, k),
                            )
                        }
                        Fail::MachineOf(p) => {
                            let rec = &self.units[p as usize];
                            let mut d = rec.name.to_string();
                            if !rec.exists {
                                d.push_str(" (no such unit)");
                            } else if rec.desired == Desired::Inactive {
                                d.push_str(" (inactive)");
                            } else if !self.is_global(p) && rec.machine == NONE {
                                d.push_str(" (not scheduled)");
                            }
                            (Constraint::MachineOf, d)
                        }
                        Fail::ConflictOwn(_) | Fail::ConflictOther(_) => (
                            Constraint::Conflicts,
                            self.conflict_detail(u, m as u32).to_owned(),
                        ),
                        Fail::Replaced(_) => {
                            let by = self.machines[m]
                                .units
                                .iter()
                                .copied()
                                .filter(|&x| x != u && self.replaces(x, u) && !self.replaces(u, x))
                                .map(|x| &*self.units[x as usize].name)
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
    fn conflict_detail(&self, u: u32, m: u32) -> &str {
        let rec = &self.units[u as usize];
        let own = self.reqs[rec.req as usize]
            .conflicts
            .iter()
            .filter(|&&p| self.pats[p as usize].matched_on.contains_key(&m));
        let other = self.lists[rec.matches as usize]
            .iter()
            .filter(|&&p| self.pats[p as usize].conf_decl.contains_key(&m));
        own.chain(other)
            .map(|&p| self.pat_text(p))
            .min()
            .unwrap_or("?")
    }

    fn pat_text(&self, p: u32) -> &str {
        self.pats[p as usize]
            .glob
            .as_ref()
            .map_or("", |g| g.as_str())
    }
}

/// Checks machine metadata against a requirement; on failure, the first key not satisfied.
fn class_matches(req: &[(u32, Box<[u32]>)], meta: &[(u32, u32)]) -> Result<(), u32> {
    for (k, vals) in req {
        match meta.binary_search_by_key(k, |&(mk, _)| mk) {
            Ok(i) if vals.contains(&meta[i].1) => {}
            _ => return Err(*k),
        }
    }
    Ok(())
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

/// Places a snapshot from scratch (keeping current placements that still hold) and
/// returns every unit's placement with reasons for the unplaced.
///
/// # Errors
/// Duplicate or empty machine IDs or unit names.
pub fn decide(cluster: &ClusterState) -> Result<Decision> {
    Ok(Scheduler::from_cluster(cluster)?.decision())
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
        let mut ids: Vec<u32> = (0..s.units.len() as u32).collect();
        s.sort_by_name(&mut ids);
        let got: Vec<&str> = ids.iter().map(|&u| &*s.units[u as usize].name).collect();
        assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
