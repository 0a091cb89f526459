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
//!
//! The files: [`Scheduler`] and its construction here; the tables' records and their
//! upkeep in `machines`, `classes`, `units` and `patterns`; putting a unit on a machine
//! and taking it off in `attach`; the constraint checks in `checks`; picking a machine in
//! `choose`; re-checking machines in `passes` and placing waiting units in `pending`;
//! the public queries, steps and dry runs in `queries`, `steps` and `preview`; what a
//! step changed in `journal`; why a unit is unplaced in `reasons`.
//!
//! The hash maps are rustc-hash's [`FxHashMap`]: their keys are the scheduler's own
//! indexes and unit names, so SipHash's protection against hash flooding buys nothing
//! here, while its cost shows in the million-unit placement. No result depends on a
//! map's iteration order.

mod attach;
mod checks;
mod choose;
mod classes;
mod idx;
mod interner;
mod journal;
mod machines;
mod order;
mod passes;
mod patterns;
mod pending;
mod preview;
mod queries;
mod reasons;
mod steps;
mod units;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::cluster::{ClusterState, Machine, Resources, Strategy};
use crate::decision::Decision;
use crate::error::Result;

use self::choose::Strat;
use self::classes::{MetaClass, MetaReq};
use self::idx::{
    ClassIdx, GroupIdx, IdxVec, KeyIdx, MachineIdx, PatternIdx, PatternListIdx, ReqIdx, UnitIdx,
    ValueIdx,
};
use self::interner::Interner;
use self::journal::Journal;
use self::machines::MachineRec;
use self::order::LoadOrder;
use self::patterns::PatRec;
use self::pending::Pending;
use self::units::{Req, UnitRec};

/// An incremental scheduler: holds the cluster, keeps every unit placed, and answers
/// each change with the placements it changed.
///
/// Build one from a snapshot with [`Scheduler::from_cluster`] (or empty with
/// [`Scheduler::new`]), then feed it machine and unit events. The result after any
/// sequence of events equals [`decide`] on the final snapshot with the
/// previous placements as input.
#[derive(Debug, Clone)]
pub struct Scheduler {
    default_strategy: Strat,
    machines: IdxVec<MachineIdx, MachineRec>,
    machine_by_id: FxHashMap<Box<str>, MachineIdx>,
    machine_by_short: FxHashMap<Box<str>, Vec<MachineIdx>>,
    machines_by_rank: BTreeMap<u64, MachineIdx>,
    present: usize,
    keys: Interner<KeyIdx>,
    vals: Interner<ValueIdx>,
    /// Present machines having each (key, value).
    kv_index: FxHashMap<(KeyIdx, ValueIdx), Vec<MachineIdx>>,
    /// For each key, the values present machines have, with machine counts.
    key_values: FxHashMap<KeyIdx, BTreeMap<ValueIdx, u32>>,
    classes: IdxVec<ClassIdx, MetaClass>,
    class_by_req: FxHashMap<MetaReq, ClassIdx>,
    units: IdxVec<UnitIdx, UnitRec>,
    unit_by_name: FxHashMap<Box<str>, UnitIdx>,
    reqs: IdxVec<ReqIdx, Req>,
    req_by_key: FxHashMap<Req, ReqIdx>,
    pats: IdxVec<PatternIdx, PatRec>,
    pat_by_text: FxHashMap<Box<str>, PatternIdx>,
    pat_by_prefix: FxHashMap<Box<str>, Vec<PatternIdx>>,
    /// Bit `n` set when some pattern has a literal prefix of `n` bytes (n < 128).
    prefix_lens: u128,
    long_prefixes: bool,
    lists: IdxVec<PatternListIdx, Box<[PatternIdx]>>,
    list_by: FxHashMap<Box<[PatternIdx]>, PatternListIdx>,
    /// For each unit, the units naming it in `MachineOf=`.
    followers: FxHashMap<UnitIdx, Vec<UnitIdx>>,
    /// Existing global units, sorted by name.
    globals: Vec<UnitIdx>,
    groups: Interner<GroupIdx>,
    /// Units of each spread group placed on machines with each (key, value).
    spread_counts: FxHashMap<(GroupIdx, KeyIdx, ValueIdx), u32>,
    pending: Pending,
    failed: Vec<UnitIdx>,
    freed: bool,
    journal: Option<Journal>,
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
            machine_by_id: FxHashMap::default(),
            machine_by_short: FxHashMap::default(),
            machines_by_rank: BTreeMap::new(),
            present: 0,
            keys: Interner::default(),
            vals: Interner::default(),
            kv_index: FxHashMap::default(),
            key_values: FxHashMap::default(),
            classes: IdxVec::new(),
            class_by_req: FxHashMap::default(),
            units: IdxVec::new(),
            unit_by_name: FxHashMap::default(),
            reqs: IdxVec::new(),
            req_by_key: FxHashMap::default(),
            pats: IdxVec::new(),
            pat_by_text: FxHashMap::default(),
            pat_by_prefix: FxHashMap::default(),
            prefix_lens: 0,
            long_prefixes: false,
            lists: IdxVec::new(),
            list_by: FxHashMap::default(),
            followers: FxHashMap::default(),
            globals: Vec::new(),
            groups: Interner::default(),
            spread_counts: FxHashMap::default(),
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
}

/// Places a snapshot from scratch (keeping current placements that still hold) and
/// returns every unit's placement with reasons for the unplaced.
///
/// # Errors
/// Duplicate or empty machine IDs or unit names.
pub fn decide(cluster: &ClusterState) -> Result<Decision> {
    Ok(Scheduler::from_cluster(cluster)?.decision())
}
