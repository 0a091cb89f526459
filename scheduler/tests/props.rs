//! Property tests over random clusters: no decision violates a constraint or a capacity,
//! decisions are deterministic and stable, and incremental steps equal a full decide.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scheduler::glob::Glob;
use scheduler::{
    Capacity, ClusterState, Decision, Desired, Machine, Placement, Resources, Scheduler,
    Strategy as Placing, Unit, UnitSpec, decide,
};

use crate::util::Model;

const NAMES: [&str; 8] = [
    "a.service",
    "b.service",
    "c.service",
    "web@1.service",
    "web@2.service",
    "web@3.service",
    "db.service",
    "x@1.service",
];
const PATTERNS: [&str; 6] = [
    "a.service",
    "web@*.service",
    "*.service",
    "b*",
    "x@?.service",
    "db.service",
];

fn machine_strategy() -> impl Strategy<Value = Machine> {
    (
        0..8u8,
        prop::option::of(0..3u8),
        prop::option::of(0..2u8),
        prop::option::of(1..6u32),
        prop::option::of(1..4u64),
    )
        .prop_map(|(id, region, disk, max, mem)| {
            let mut m = Machine::new(format!("m{id}-{:08x}", u32::from(id) * 7919));
            if let Some(r) = region {
                m.metadata.insert("region".into(), format!("r{r}"));
            }
            if let Some(d) = disk {
                m.metadata
                    .insert("disk".into(), ["ssd", "hdd"][d as usize].into());
            }
            m.capacity = Capacity {
                memory_bytes: mem.map(|g| g << 30),
                cpu_percent: None,
                cpu_weight: None,
                max_units: max,
            };
            m
        })
}

fn unit_strategy() -> impl Strategy<Value = UnitSpec> {
    (
        0..NAMES.len(),
        0..10u8,
        prop::option::of(0..8u8),
        prop::collection::vec(0..NAMES.len(), 0..2),
        prop::collection::vec((0..2u8, 0..3u8), 0..3),
        prop::collection::vec(0..PATTERNS.len(), 0..2),
        prop::collection::vec(0..PATTERNS.len(), 0..2),
        (0..3u8, 0..4u8, 0..6u8),
    )
        .prop_map(
            |(name, kind, mid, peers, meta, conf, repl, (mem, strat, desired))| {
                let mut u = UnitSpec::new(NAMES[name]);
                match kind {
                    0 => u.global = true,
                    1 => {
                        u.machine_id = mid
                            .map(|id| format!("m{id}-{:08x}", u32::from(id) * 7919)[..8].to_owned())
                    }
                    2 => u.machine_of = peers.iter().map(|&p| NAMES[p].to_owned()).collect(),
                    _ => {}
                }
                u.machine_metadata = meta
                    .into_iter()
                    .map(|(k, v)| {
                        if k == 0 {
                            ("region".into(), format!("r{v}"))
                        } else {
                            ("disk".into(), ["ssd", "hdd", "nvme"][v as usize].into())
                        }
                    })
                    .collect();
                u.conflicts = conf.into_iter().map(|p| PATTERNS[p].to_owned()).collect();
                if kind > 5 {
                    u.replaces = repl.into_iter().map(|p| PATTERNS[p].to_owned()).collect();
                }
                u.demand = Resources {
                    memory_bytes: u64::from(mem) << 29,
                    ..Resources::default()
                };
                u.strategy = match strat {
                    1 => Some(Placing::BinPack),
                    2 => Some(Placing::Spread {
                        key: "region".into(),
                    }),
                    _ => None,
                };
                u.desired = if desired == 0 {
                    Desired::Inactive
                } else {
                    Desired::Launched
                };
                u
            },
        )
}

fn cluster_strategy() -> impl Strategy<Value = ClusterState> {
    (
        prop::collection::vec(machine_strategy(), 0..6),
        prop::collection::vec((unit_strategy(), prop::option::of(0..8u8)), 0..12),
        0..3u8,
    )
        .prop_map(|(ms, us, strat)| {
            let mut machines = BTreeMap::new();
            for m in ms {
                machines.entry(m.id.clone()).or_insert(m);
            }
            let ids: Vec<String> = machines.keys().cloned().collect();
            let mut units = BTreeMap::new();
            for (spec, at) in us {
                let machine = at.and_then(|i| ids.get(i as usize).cloned());
                units
                    .entry(spec.name.clone())
                    .or_insert(Unit { spec, machine });
            }
            ClusterState {
                machines: machines.into_values().collect(),
                units: units.into_values().collect(),
                strategy: match strat {
                    0 => Placing::LeastLoaded,
                    1 => Placing::BinPack,
                    _ => Placing::Spread {
                        key: "region".into(),
                    },
                },
            }
        })
}

fn meta_ok(spec: &UnitSpec, m: &Machine) -> bool {
    let mut req: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in &spec.machine_metadata {
        req.entry(k).or_default().push(v);
    }
    req.iter()
        .all(|(k, vs)| m.metadata.get(*k).is_some_and(|v| vs.contains(&v.as_str())))
}

fn conflicts(a: &UnitSpec, b: &UnitSpec) -> bool {
    a.name != b.name
        && (a.conflicts.iter().any(|p| Glob::new(p).matches(&b.name))
            || b.conflicts.iter().any(|p| Glob::new(p).matches(&a.name)))
}

fn replaces(a: &UnitSpec, b: &UnitSpec) -> bool {
    a.name != b.name && a.replaces.iter().any(|p| Glob::new(p).matches(&b.name))
}

/// Checks every constraint and capacity, independently of the scheduler's indexes.
fn check_valid(c: &ClusterState, d: &Decision) -> Result<(), String> {
    let specs: BTreeMap<&str, &UnitSpec> = c
        .units
        .iter()
        .map(|u| (u.spec.name.as_str(), &u.spec))
        .collect();
    let machines: BTreeMap<&str, &Machine> =
        c.machines.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut on: BTreeMap<&str, Vec<&UnitSpec>> = BTreeMap::new();
    for (name, p) in &d.placements {
        let spec = specs[name.as_str()];
        let ms: Vec<&str> = match p {
            Placement::Machine(m) => vec![m.as_str()],
            Placement::Global(ms) => ms.iter().map(String::as_str).collect(),
            Placement::Unplaced => vec![],
        };
        if spec.desired == Desired::Inactive && !ms.is_empty() {
            return Err(format!("{name} is inactive but placed"));
        }
        for m in ms {
            let mach = machines
                .get(m)
                .ok_or_else(|| format!("{name} on absent machine {m}"))?;
            if !meta_ok(spec, mach) {
                return Err(format!("{name} on {m} fails MachineMetadata"));
            }
            if !spec.global
                && let Some(id) = &spec.machine_id
                && mach.id != *id
                && mach.id.get(..8) != Some(id.as_str())
            {
                return Err(format!("{name} on {m} fails MachineID {id}"));
            }
            on.entry(m).or_default().push(spec);
        }
    }
    for (m, units) in &on {
        let mach = machines[m];
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        for u in units {
            if !u.global {
                for p in &u.machine_of {
                    if !names.contains(&p.as_str()) {
                        return Err(format!("{} on {m} without its peer {p}", u.name));
                    }
                }
                for x in units {
                    if !x.global && !u.global && replaces(x, u) && !replaces(u, x) {
                        return Err(format!(
                            "{} on {m} beside {} which replaces it",
                            u.name, x.name
                        ));
                    }
                }
            }
            for x in units {
                if conflicts(u, x) {
                    return Err(format!("{} and {} conflict on {m}", u.name, x.name));
                }
            }
        }
        let mem: u64 = units.iter().map(|u| u.demand.memory_bytes).sum();
        if mach.capacity.memory_bytes.is_some_and(|c| mem > c) {
            return Err(format!("{m} over memory: {mem}"));
        }
        if mach
            .capacity
            .max_units
            .is_some_and(|c| units.len() as u32 > c)
        {
            return Err(format!("{m} over max units: {}", units.len()));
        }
    }
    for name in d.unplaced.keys() {
        if !matches!(
            d.placements.get(name),
            Some(Placement::Unplaced) | Some(Placement::Global(_))
        ) {
            return Err(format!("{name} has a reason but is placed"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    AddMachine(Machine),
    RemoveMachine(usize),
    SetMeta(usize, Option<u8>),
    AddUnit(UnitSpec),
    RemoveUnit(usize),
    Desired(usize, bool),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        machine_strategy().prop_map(Op::AddMachine),
        any::<usize>().prop_map(Op::RemoveMachine),
        (any::<usize>(), prop::option::of(0..3u8)).prop_map(|(i, r)| Op::SetMeta(i, r)),
        unit_strategy().prop_map(Op::AddUnit),
        unit_strategy().prop_map(Op::AddUnit),
        any::<usize>().prop_map(Op::RemoveUnit),
        (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::Desired(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn dry_runs_change_nothing_and_match_the_step(
        c in cluster_strategy(),
        extra in machine_strategy(),
        spec in unit_strategy(),
        which in 0..4u8,
        pick in any::<usize>(),
        then in op_strategy(),
    ) {
        let mut s = Scheduler::from_cluster(&c).unwrap();
        let mut twin = s.clone();
        let before = s.decision();
        let ids: Vec<String> = c.machines.iter().map(|m| m.id.clone()).collect();
        let names: Vec<String> = c.units.iter().map(|u| u.spec.name.clone()).collect();
        let (preview, real) = match which {
            0 if !ids.is_empty() => {
                let id = &ids[pick % ids.len()];
                (s.preview_remove_machine(id), s.clone().remove_machine(id))
            }
            1 if !names.contains(&spec.name) => (s.preview_add_unit(spec.clone()), s.clone().add_unit(spec)),
            2 if !ids.contains(&extra.id) => (s.preview_add_machine(extra.clone()), s.clone().add_machine(extra)),
            3 if !names.is_empty() => {
                let n = &names[pick % names.len()];
                (s.preview_remove_unit(n), s.clone().remove_unit(n))
            }
            _ => return Ok(()),
        };
        prop_assert_eq!(preview.unwrap(), real.unwrap());
        prop_assert_eq!(s.decision(), before);
        // And the scheduler behaves afterwards exactly as one that never ran the dry run.
        let apply = |x: &mut Scheduler| -> Result<Vec<scheduler::Change>, scheduler::Error> {
            match then.clone() {
                Op::AddMachine(m) => x.add_machine(m),
                Op::RemoveMachine(i) if !ids.is_empty() => x.remove_machine(&ids[i % ids.len()]),
                Op::AddUnit(u) => x.add_unit(u),
                Op::RemoveUnit(i) if !names.is_empty() => x.remove_unit(&names[i % names.len()]),
                _ => Ok(Vec::new()),
            }
        };
        prop_assert_eq!(apply(&mut s), apply(&mut twin));
        prop_assert_eq!(s.decision(), twin.decision());
    }

    #[test]
    fn decisions_respect_constraints_and_are_stable(c in cluster_strategy()) {
        let d = decide(&c).unwrap();
        check_valid(&c, &d).map_err(TestCaseError::fail)?;
        // Determinism, whatever the input order.
        let mut rev = c.clone();
        rev.machines.reverse();
        rev.units.reverse();
        prop_assert_eq!(&decide(&rev).unwrap(), &d);
        // Stability: deciding again from the result keeps it.
        let mut again = c.clone();
        for u in &mut again.units {
            u.machine = d.placements.get(&u.spec.name).and_then(|p| p.machine()).map(str::to_owned);
        }
        prop_assert_eq!(&decide(&again).unwrap(), &d);
    }

    #[test]
    fn incremental_equals_full(c in cluster_strategy(), ops in prop::collection::vec(op_strategy(), 1..12)) {
        let mut s = Scheduler::from_cluster(&c).unwrap();
        let mut model = Model { strategy: c.strategy.clone(), ..Model::default() };
        for m in &c.machines { model.machines.insert(m.id.clone(), m.clone()); }
        for u in &c.units { model.units.insert(u.spec.name.clone(), u.spec.clone()); }
        for op in ops {
            let before = s.decision();
            let mut lost = None;
            match op {
                Op::AddMachine(m) => {
                    if model.machines.contains_key(&m.id) { continue; }
                    model.machines.insert(m.id.clone(), m.clone());
                    s.add_machine(m).unwrap();
                }
                Op::RemoveMachine(i) => {
                    let Some(id) = model.machines.keys().nth(i % model.machines.len().max(1)).cloned() else { continue };
                    model.machines.remove(&id);
                    s.remove_machine(&id).unwrap();
                    lost = Some(id);
                }
                Op::SetMeta(i, r) => {
                    let Some(id) = model.machines.keys().nth(i % model.machines.len().max(1)).cloned() else { continue };
                    let m = model.machines.get_mut(&id).unwrap();
                    match r { Some(r) => { m.metadata.insert("region".into(), format!("r{r}")); } None => { m.metadata.remove("region"); } }
                    s.set_metadata(&id, m.metadata.clone()).unwrap();
                }
                Op::AddUnit(u) => {
                    if model.units.contains_key(&u.name) { continue; }
                    model.units.insert(u.name.clone(), u.clone());
                    s.add_unit(u).unwrap();
                }
                Op::RemoveUnit(i) => {
                    let Some(name) = model.units.keys().nth(i % model.units.len().max(1)).cloned() else { continue };
                    model.units.remove(&name);
                    s.remove_unit(&name).unwrap();
                }
                Op::Desired(i, on) => {
                    let Some(name) = model.units.keys().nth(i % model.units.len().max(1)).cloned() else { continue };
                    let d = if on { Desired::Launched } else { Desired::Inactive };
                    model.units.get_mut(&name).unwrap().desired = d;
                    s.set_desired(&name, d).unwrap();
                }
            }
            let snap = model.snapshot(&s);
            let inc = s.decision();
            check_valid(&snap, &inc).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&decide(&snap).unwrap(), &inc);
            if let Some(lost) = lost {
                // Only the lost machine's units move, or units a Replaces= pushed away.
                for (name, p) in &inc.placements {
                    let was = before.placements.get(name).and_then(|p| p.machine());
                    let now = p.machine();
                    if was.is_some() && was != now && was != Some(lost.as_str()) {
                        let pushed = model.units.values().any(|x| replaces(x, &model.units[name]));
                        // A MachineOf= unit follows its target wherever that went (a
                        // target pushed by Replaces= takes its followers along).
                        let moved = |t: &String| {
                            before.placements.get(t).and_then(|p| p.machine())
                                != inc.placements.get(t).and_then(|p| p.machine())
                        };
                        let follows = model.units[name].machine_of.iter().any(moved);
                        prop_assert!(pushed || follows, "{} moved from {:?} to {:?} when {} left", name, was, now, lost);
                    }
                }
            }
        }
    }
}
