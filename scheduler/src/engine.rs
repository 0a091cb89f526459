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
use crate::idx::{
    ClassIdx, GroupIdx, Idx, IdxVec, KeyIdx, MachineIdx, PatternIdx, PatternListIdx, ReqIdx,
    UnitIdx, ValueIdx,
};
use crate::order::LoadOrder;

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
    /// (key, value) pairs, sorted by key.
    meta: Vec<(KeyIdx, ValueIdx)>,
    capacity: Capacity,
    used: Resources,
    load: u32,
    /// Non-global units placed here.
    units: Vec<UnitIdx>,
    /// Global units running here, in name order.
    globals: Vec<UnitIdx>,
    /// Metadata classes this machine belongs to, with its position in each.
    classes: Vec<(ClassIdx, u32)>,
}

impl MachineRec {
    fn meta_value(&self, key: KeyIdx) -> Option<ValueIdx> {
        self.meta
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| self.meta[i].1)
    }
}

/// A metadata requirement: for each key (sorted), the allowed values (sorted).
type MetaReq = Box<[(KeyIdx, Box<[ValueIdx]>)]>;

#[derive(Debug, Clone)]
struct MetaClass {
    req: MetaReq,
    order: LoadOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Strat {
    LeastLoaded,
    BinPack,
    Spread(KeyIdx),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Req {
    machine_id: Option<Box<str>>,
    machine_of: Box<[UnitIdx]>,
    class: ClassIdx,
    conflicts: Box<[PatternIdx]>,
    replaces: Box<[PatternIdx]>,
    global: bool,
    demand: Resources,
    strategy: Option<Strat>,
}

#[derive(Debug, Clone)]
struct UnitRec {
    name: Box<str>,
    /// Requirement record; [`ReqIdx::PLAIN`] for a name only referenced by `MachineOf=`.
    req: ReqIdx,
    /// Placement of a non-global unit.
    machine: Option<MachineIdx>,
    /// The placement a snapshot claimed, until the first pass checks it.
    claim: Option<MachineIdx>,
    /// The patterns matching this unit's name.
    matches: PatternListIdx,
    /// Spread group, interned on first use.
    group: Option<GroupIdx>,
    desired: Desired,
    exists: bool,
    /// In the failed list (active, non-global, unplaced).
    failed: bool,
}

#[derive(Debug, Clone, Default)]
struct PatRec {
    glob: Option<Glob>,
    /// Machines hosting units that declare this pattern in `Conflicts=`, with counts.
    conf_decl: FxMap<MachineIdx, u32>,
    /// The same for `Replaces=`.
    rep_decl: FxMap<MachineIdx, u32>,
    /// Machines hosting units whose name the pattern matches, with counts.
    matched_on: FxMap<MachineIdx, u32>,
}

/// Why one machine cannot take a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
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

/// Units waiting to be placed, popped in name order: a sorted batch plus a heap for
/// units that join during the pass (displaced units, followers of a placed peer).
#[derive(Debug, Clone, Default)]
struct Pending {
    sorted: Vec<UnitIdx>,
    pos: usize,
    heap: BinaryHeap<Reverse<(Box<str>, UnitIdx)>>,
}

/// Records what a step changed, to report it as [`Change`]s.
#[derive(Debug, Clone, Default)]
struct Journal {
    /// Each unit's placement before the step.
    units: FxMap<UnitIdx, Option<MachineIdx>>,
    /// Each machine's global units before the step.
    machines: FxMap<MachineIdx, Vec<UnitIdx>>,
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
    machines: IdxVec<MachineIdx, MachineRec>,
    machine_by_id: FxMap<Box<str>, MachineIdx>,
    machine_by_short: FxMap<Box<str>, Vec<MachineIdx>>,
    machines_by_rank: BTreeMap<u64, MachineIdx>,
    present: usize,
    keys: Interner<KeyIdx>,
    vals: Interner<ValueIdx>,
    /// Present machines having each (key, value).
    kv_index: FxMap<(KeyIdx, ValueIdx), Vec<MachineIdx>>,
    /// For each key, the values present machines have, with machine counts.
    key_values: FxMap<KeyIdx, BTreeMap<ValueIdx, u32>>,
    classes: IdxVec<ClassIdx, MetaClass>,
    class_by_req: FxMap<MetaReq, ClassIdx>,
    units: IdxVec<UnitIdx, UnitRec>,
    unit_by_name: FxMap<Box<str>, UnitIdx>,
    reqs: IdxVec<ReqIdx, Req>,
    req_by_key: FxMap<Req, ReqIdx>,
    pats: IdxVec<PatternIdx, PatRec>,
    pat_by_text: FxMap<Box<str>, PatternIdx>,
    pat_by_prefix: FxMap<Box<str>, Vec<PatternIdx>>,
    /// Bit `n` set when some pattern has a literal prefix of `n` bytes (n < 128).
    prefix_lens: u128,
    long_prefixes: bool,
    lists: IdxVec<PatternListIdx, Box<[PatternIdx]>>,
    list_by: FxMap<Box<[PatternIdx]>, PatternListIdx>,
    /// For each unit, the units naming it in `MachineOf=`.
    followers: FxMap<UnitIdx, Vec<UnitIdx>>,
    /// Existing global units, sorted by name.
    globals: Vec<UnitIdx>,
    groups: Interner<GroupIdx>,
    /// Units of each spread group placed on machines with each (key, value).
    spread_counts: FxMap<(GroupIdx, KeyIdx, ValueIdx), u32>,
    pending: Pending,
    failed: Vec<UnitIdx>,
    freed: bool,
    journal: Option<Journal>,
}

/// Strings numbered in order of first appearance.
#[derive(Debug, Clone)]
struct Interner<I> {
    ids: FxMap<Box<str>, I>,
    names: IdxVec<I, Box<str>>,
}

impl<I> Default for Interner<I> {
    fn default() -> Interner<I> {
        Interner {
            ids: FxMap::default(),
            names: IdxVec::default(),
        }
    }
}

impl<I: Idx> Interner<I> {
    fn intern(&mut self, s: &str) -> I {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.push(s.into());
        self.ids.insert(s.into(), i);
        i
    }
    fn name(&self, i: I) -> &str {
        &self.names[i]
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
            machines: IdxVec::new(),
            machine_by_id: FxMap::default(),
            machine_by_short: FxMap::default(),
            machines_by_rank: BTreeMap::new(),
            present: 0,
            keys: Interner::default(),
            vals: Interner::default(),
            kv_index: FxMap::default(),
            key_values: FxMap::default(),
            classes: IdxVec::new(),
            class_by_req: FxMap::default(),
            units: IdxVec::new(),
            unit_by_name: FxMap::default(),
            reqs: IdxVec::new(),
            req_by_key: FxMap::default(),
            pats: IdxVec::new(),
            pat_by_text: FxMap::default(),
            pat_by_prefix: FxMap::default(),
            prefix_lens: 0,
            long_prefixes: false,
            lists: IdxVec::new(),
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
        let any = s.classes.push(MetaClass {
            req: Box::new([]),
            order: LoadOrder::default(),
        });
        s.class_by_req.insert(Box::new([]), any);
        let plain = Req {
            machine_id: None,
            machine_of: Box::new([]),
            class: any,
            conflicts: Box::new([]),
            replaces: Box::new([]),
            global: false,
            demand: Resources::default(),
            strategy: None,
        };
        let plain_idx = s.reqs.push(plain.clone());
        s.req_by_key.insert(plain, plain_idx);
        let empty = s.lists.push(Box::new([]));
        s.list_by.insert(Box::new([]), empty);
        debug_assert_eq!(
            (any, plain_idx, empty),
            (ClassIdx::ANY, ReqIdx::PLAIN, PatternListIdx::EMPTY)
        );
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
            let claim = u
                .machine
                .as_ref()
                .and_then(|id| s.machine_by_id.get(id.as_str()).copied());
            let id = s.insert_unit(&u.spec, claim)?;
            if u.spec.global {
                s.globals.push(id);
            }
        }
        s.globals
            .sort_by(|&a, &b| s.units[a].name.cmp(&s.units[b].name));
        let mut claims: IdxVec<MachineIdx, Vec<UnitIdx>> =
            IdxVec::from_vec(vec![Vec::new(); s.machines.len()]);
        for (i, u) in s.units.iter_enumerated() {
            if let Some(m) = u.claim {
                claims[m].push(i);
            }
        }
        for m in claims.indices() {
            let list = std::mem::take(&mut claims[m]);
            s.revalidate_machine(m, list);
        }
        let mut todo: Vec<UnitIdx> = s
            .units
            .indices()
            .filter(|&u| s.wants_placement(u))
            .collect();
        s.sort_by_name(&mut todo);
        for &u in &todo {
            s.units[u].failed = true;
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
        let m = self.units[u].machine?;
        Some(&*self.machines[m].id)
    }

    /// Where a unit runs, or `None` for an unknown unit.
    pub fn placement(&self, unit: &str) -> Option<Placement> {
        let &u = self.unit_by_name.get(unit)?;
        let rec = &self.units[u];
        if !rec.exists {
            return None;
        }
        if self.reqs[rec.req].global {
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
            None => Placement::Unplaced,
            Some(m) => Placement::Machine(self.machines[m].id.to_string()),
        })
    }

    /// Units placed on a machine (global ones included), in name order.
    pub fn units_on(&self, machine: &str) -> Option<Vec<&str>> {
        let &m = self.machine_by_id.get(machine)?;
        let mr = &self.machines[m];
        if !mr.present {
            return None;
        }
        let mut v: Vec<&str> = mr
            .units
            .iter()
            .chain(&mr.globals)
            .map(|&u| &*self.units[u].name)
            .collect();
        v.sort_unstable();
        Some(v)
    }

    /// Why a unit that should run is not placed; `None` when it is placed, inactive or
    /// unknown (a global unit gets a reason only when it runs nowhere).
    pub fn reason(&self, unit: &str) -> Option<Reason> {
        let &u = self.unit_by_name.get(unit)?;
        let rec = &self.units[u];
        if !rec.exists || rec.desired == Desired::Inactive {
            return None;
        }
        let req = &self.reqs[rec.req];
        if req.global {
            if self
                .machines
                .iter()
                .any(|m| m.present && m.globals.contains(&u))
            {
                return None;
            }
        } else if rec.machine.is_some() {
            return None;
        }
        Some(self.explain(u))
    }

    /// The placements of every unit and the reasons for every unplaced one.
    pub fn decision(&self) -> Decision {
        let mut d = Decision::default();
        let mut global_on: FxMap<UnitIdx, Vec<String>> = FxMap::default();
        for m in self.machines.iter().filter(|m| m.present) {
            for &g in &m.globals {
                global_on.entry(g).or_default().push(m.id.to_string());
            }
        }
        for (i, u) in self.units.iter_enumerated() {
            if !u.exists {
                continue;
            }
            let p = if self.reqs[u.req].global {
                let mut ms = global_on.remove(&i).unwrap_or_default();
                ms.sort();
                if ms.is_empty() && u.desired != Desired::Inactive {
                    d.unplaced.insert(u.name.to_string(), self.explain(i));
                }
                Placement::Global(ms)
            } else if let Some(m) = u.machine {
                Placement::Machine(self.machines[m].id.to_string())
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

    // ---------------------------------------------------------------- bookkeeping

    fn present_machine(&self, id: &str) -> Result<MachineIdx> {
        match self.machine_by_id.get(id) {
            Some(&m) if self.machines[m].present => Ok(m),
            _ => Err(Error::UnknownMachine { id: id.to_owned() }),
        }
    }

    fn existing_unit(&self, name: &str) -> Result<UnitIdx> {
        match self.unit_by_name.get(name) {
            Some(&u) if self.units[u].exists => Ok(u),
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
        let name_of = |m: Option<MachineIdx>| m.map(|m| self.machines[m].id.to_string());
        let mut out = Vec::new();
        for (u, before) in j.units {
            let after = self.units[u].machine;
            if after != before {
                out.push(Change {
                    unit: self.units[u].name.to_string(),
                    from: name_of(before),
                    to: name_of(after),
                    global: false,
                });
            }
        }
        for (m, before) in j.machines {
            let after = &self.machines[m].globals;
            let id = &self.machines[m].id;
            for &g in &before {
                if !after.contains(&g) {
                    out.push(Change {
                        unit: self.units[g].name.to_string(),
                        from: Some(id.to_string()),
                        to: None,
                        global: true,
                    });
                }
            }
            for &g in after {
                if !before.contains(&g) {
                    out.push(Change {
                        unit: self.units[g].name.to_string(),
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

    fn note_unit(&mut self, u: UnitIdx) {
        if let Some(j) = &mut self.journal {
            let m = self.units[u].machine;
            j.units.entry(u).or_insert(m);
        }
    }

    fn note_globals(&mut self, m: MachineIdx) {
        if let Some(j) = &mut self.journal
            && !j.machines.contains_key(&m)
        {
            j.machines.insert(m, self.machines[m].globals.clone());
        }
    }

    fn strat(&mut self, s: &Strategy) -> Strat {
        match s {
            Strategy::LeastLoaded => Strat::LeastLoaded,
            Strategy::BinPack => Strat::BinPack,
            Strategy::Spread { key } => Strat::Spread(self.keys.intern(key)),
        }
    }

    fn sort_by_name(&self, v: &mut [UnitIdx]) {
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

    fn wants_placement(&self, u: UnitIdx) -> bool {
        let r = &self.units[u];
        r.exists
            && r.desired != Desired::Inactive
            && r.machine.is_none()
            && !self.reqs[r.req].global
    }

    fn is_global(&self, u: UnitIdx) -> bool {
        self.reqs[self.units[u].req].global
    }

    fn intern_list(&mut self, mut v: Vec<PatternIdx>) -> PatternListIdx {
        v.sort_unstable();
        v.dedup();
        if let Some(&i) = self.list_by.get(v.as_slice()) {
            return i;
        }
        let b: Box<[PatternIdx]> = v.into();
        let i = self.lists.push(b.clone());
        self.list_by.insert(b, i);
        i
    }

    // ---------------------------------------------------------------- machines

    fn intern_meta(&mut self, meta: &BTreeMap<String, String>) -> Vec<(KeyIdx, ValueIdx)> {
        let mut v: Vec<(KeyIdx, ValueIdx)> = meta
            .iter()
            .map(|(k, val)| (self.keys.intern(k), self.vals.intern(val)))
            .collect();
        v.sort_unstable();
        v
    }

    fn insert_machine(&mut self, machine: &Machine) -> Result<MachineIdx> {
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
    fn index_machine(&mut self, m: MachineIdx) {
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

    fn unindex_machine(&mut self, m: MachineIdx) {
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
    fn drop_machine(&mut self, m: MachineIdx) -> Vec<UnitIdx> {
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

    fn set_load(&mut self, m: MachineIdx, load: u32) {
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

    // ---------------------------------------------------------------- classes

    /// The class of machines satisfying a metadata requirement, created on first use.
    fn class_for(&mut self, pairs: &[(KeyIdx, ValueIdx)]) -> ClassIdx {
        if pairs.is_empty() {
            return ClassIdx::ANY;
        }
        let mut req: BTreeMap<KeyIdx, Vec<ValueIdx>> = BTreeMap::new();
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

    fn class_for_req(&mut self, req: MetaReq) -> ClassIdx {
        if let Some(&c) = self.class_by_req.get(&req) {
            return c;
        }
        // Candidates: machines having one of the allowed values of the rarest key.
        let mut best: Option<Vec<MachineIdx>> = None;
        for (k, vals) in req.iter() {
            let mut cand: Vec<MachineIdx> = Vec::new();
            for v in vals.iter() {
                if let Some(list) = self.kv_index.get(&(*k, *v)) {
                    cand.extend_from_slice(list);
                }
            }
            if best.as_ref().is_none_or(|b| cand.len() < b.len()) {
                best = Some(cand);
            }
        }
        let mut members: Vec<MachineIdx> = best
            .unwrap_or_default()
            .into_iter()
            .filter(|&m| {
                let rec = &self.machines[m];
                rec.present && class_matches(&req, &rec.meta).is_ok()
            })
            .collect();
        members.sort_unstable_by_key(|&m| self.machines[m].rank);
        members.dedup();
        let mut order = LoadOrder::with_members(members.clone());
        for (p, &m) in members.iter().enumerate() {
            order.insert(p, self.machines[m].load);
        }
        let c = self.classes.push(MetaClass {
            req: req.clone(),
            order,
        });
        for (p, &m) in members.iter().enumerate() {
            self.machines[m].classes.push((c, p as u32));
        }
        self.class_by_req.insert(req, c);
        c
    }

    /// The class `c` narrowed to machines whose `key` is `val`, or `None` when `c` does
    /// not allow that value.
    fn narrowed_class(&mut self, c: ClassIdx, key: KeyIdx, val: ValueIdx) -> Option<ClassIdx> {
        let mut req: Vec<(KeyIdx, Box<[ValueIdx]>)> = self.classes[c].req.to_vec();
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

    fn describe_meta(&self, c: ClassIdx, key: KeyIdx) -> String {
        let req = &self.classes[c].req;
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
    fn intern_pattern(&mut self, text: &str, existing_units: bool) -> PatternIdx {
        if let Some(&p) = self.pat_by_text.get(text) {
            return p;
        }
        let glob = Glob::new(text);
        let p = self.pats.push(PatRec {
            glob: Some(glob.clone()),
            ..PatRec::default()
        });
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
        self.pat_by_text.insert(text.into(), p);
        if existing_units && glob.is_valid() {
            for u in self.units.indices() {
                let name = &self.units[u].name;
                if !name.starts_with(&*prefix) || !glob.matches(name) {
                    continue;
                }
                let mut list = self.lists[self.units[u].matches].to_vec();
                list.push(p);
                self.units[u].matches = self.intern_list(list);
                // Count where it already runs.
                let rec = &self.units[u];
                let mut hosts = Vec::new();
                if let Some(m) = rec.machine {
                    hosts.push(m);
                } else if self.reqs[rec.req].global {
                    hosts.extend(
                        self.machines
                            .iter_enumerated()
                            .filter(|(_, m)| m.present && m.globals.contains(&u))
                            .map(|(i, _)| i),
                    );
                }
                for h in hosts {
                    *self.pats[p].matched_on.entry(h).or_default() += 1;
                }
            }
        }
        p
    }

    /// The patterns matching a name, found through their literal prefixes.
    fn patterns_matching(&self, name: &str) -> Vec<PatternIdx> {
        let mut out = Vec::new();
        let mut check = |prefix: &str| {
            if let Some(ps) = self.pat_by_prefix.get(prefix) {
                for &p in ps {
                    if self.pats[p].glob.as_ref().is_some_and(|g| g.matches(name)) {
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
    fn insert_unit(&mut self, spec: &UnitSpec, claim: Option<MachineIdx>) -> Result<UnitIdx> {
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
    fn retire_unit(&mut self, u: UnitIdx, remove: bool) -> Vec<UnitIdx> {
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

    // ---------------------------------------------------------------- attach / detach

    fn strategy_of(&self, req: &Req) -> Strat {
        req.strategy.unwrap_or(self.default_strategy)
    }

    fn group_of(&mut self, u: UnitIdx) -> GroupIdx {
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

    /// Counts a unit onto a machine in every index (load, resources, patterns).
    fn account(&mut self, u: UnitIdx, m: MachineIdx, add: bool) {
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
        let bump = |map: &mut FxMap<MachineIdx, u32>| {
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

    fn attach(&mut self, u: UnitIdx, m: MachineIdx) {
        self.note_unit(u);
        self.units[u].machine = Some(m);
        self.machines[m].units.push(u);
        self.account(u, m, true);
    }

    fn detach(&mut self, u: UnitIdx) {
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

    fn attach_global(&mut self, g: UnitIdx, m: MachineIdx) {
        self.note_globals(m);
        let names = &self.units;
        let globals = &mut self.machines[m].globals;
        let pos = globals.partition_point(|&x| names[x].name < names[g].name);
        globals.insert(pos, g);
        self.account(g, m, true);
    }

    fn detach_global(&mut self, g: UnitIdx, m: MachineIdx) {
        self.note_globals(m);
        self.machines[m].globals.retain(|&x| x != g);
        self.account(g, m, false);
    }

    /// Unplaces the followers of `peer` that sit on `m`, and theirs, recursively.
    fn cascade_followers(&mut self, peer: UnitIdx, m: MachineIdx, displaced: &mut Vec<UnitIdx>) {
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

    // ---------------------------------------------------------------- checks

    fn peer_on(&self, p: UnitIdx, m: MachineIdx) -> bool {
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
    fn check(&self, u: UnitIdx, m: MachineIdx, peers: bool) -> Result<(), Fail> {
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

    fn replaces(&self, a: UnitIdx, b: UnitIdx) -> bool {
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

    // ---------------------------------------------------------------- choosing

    /// The machine for unit `u`, or `None`.
    fn choose(&mut self, u: UnitIdx) -> Option<MachineIdx> {
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

    // ---------------------------------------------------------------- passes

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
    fn revalidate_machine(&mut self, m: MachineIdx, mut units: Vec<UnitIdx>) -> Vec<UnitIdx> {
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
    fn displace_replaced(&mut self, u: UnitIdx, m: MachineIdx, displaced: &mut Vec<UnitIdx>) {
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
    fn resettle_globals(&mut self) -> Vec<UnitIdx> {
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

    /// Places `extra` and every waiting unit, in name order.
    fn run_pending(&mut self, extra: Vec<UnitIdx>) {
        let mut batch = extra;
        for u in std::mem::take(&mut self.failed) {
            self.units[u].failed = false;
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
                self.units[u].failed = false;
            }
            again.retain(|&u| self.wants_placement(u));
            self.sort_by_name(&mut again);
            self.pending = Pending {
                sorted: again,
                pos: 0,
                heap: BinaryHeap::new(),
            };
        }
        self.failed.retain(|&u| self.units[u].failed);
        let mut failed = std::mem::take(&mut self.failed);
        self.sort_by_name(&mut failed);
        failed.dedup();
        self.failed = failed;
        self.pending = Pending::default();
    }

    fn pop_pending(&mut self) -> Option<UnitIdx> {
        let p = &mut self.pending;
        let from_sorted = p.sorted.get(p.pos).copied();
        let take_heap = match (from_sorted, p.heap.peek()) {
            (Some(s), Some(Reverse((name, _)))) => *name < self.units[s].name,
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

    fn push_pending(&mut self, u: UnitIdx) {
        let name = self.units[u].name.clone();
        self.pending.heap.push(Reverse((name, u)));
    }

    fn place_one(&mut self, u: UnitIdx) {
        if !self.wants_placement(u) {
            return;
        }
        match self.choose(u) {
            Some(m) => {
                if self.units[u].failed {
                    self.units[u].failed = false;
                }
                self.attach(u, m);
                let mut displaced = Vec::new();
                self.displace_replaced(u, m, &mut displaced);
                for x in displaced {
                    self.push_pending(x);
                }
                if let Some(fs) = self.followers.get(&u) {
                    let waiting: Vec<UnitIdx> = fs
                        .iter()
                        .copied()
                        .filter(|&f| self.units[f].failed)
                        .collect();
                    for f in waiting {
                        self.units[f].failed = false;
                        self.push_pending(f);
                    }
                }
            }
            None => {
                if !self.units[u].failed {
                    self.units[u].failed = true;
                    self.failed.push(u);
                }
            }
        }
    }

    // ---------------------------------------------------------------- reasons

    fn explain(&self, u: UnitIdx) -> Reason {
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

    fn pat_text(&self, p: PatternIdx) -> &str {
        self.pats[p].glob.as_ref().map_or("", |g| g.as_str())
    }
}

/// Checks machine metadata against a requirement; on failure, the first key not satisfied.
fn class_matches(
    req: &[(KeyIdx, Box<[ValueIdx]>)],
    meta: &[(KeyIdx, ValueIdx)],
) -> Result<(), KeyIdx> {
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
        let mut ids: Vec<_> = s.units.indices().collect();
        s.sort_by_name(&mut ids);
        let got: Vec<&str> = ids.iter().map(|&u| &*s.units[u].name).collect();
        assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
