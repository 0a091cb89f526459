//! One reconcile pass as a pure function (fleet.md §6.4, §7): a registry snapshot in, the
//! schedule writes out.
//!
//! The scheduler places every unit from the snapshot, starting from each unit's current
//! target when that machine is present, so placements that still hold are kept. The plan
//! is the difference between the targets and those placements: first every
//! [`TaskKind::Unschedule`], then every [`TaskKind::Schedule`], each in unit name order,
//! so a unit leaves a machine before another one that conflicts with it arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use scheduler::{ClusterState, Decision, Placement, Strategy};

use crate::registry::{JobState, Snapshot};

/// What a task writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Delete `job/<unit>/target` (it must still name the machine).
    Unschedule,
    /// Create `job/<unit>/target` (the unit must be unscheduled).
    Schedule,
}

/// Why a task is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskReason {
    /// The desired state is `inactive`.
    Inactive,
    /// The target machine's presence is gone.
    MachineGone,
    /// The unit is global: the engine never schedules global units.
    Global,
    /// The unit cannot stay on its machine: a constraint fails there now, or a unit there
    /// replaces it.
    Displaced,
    /// An unscheduled unit gets a machine.
    Placed,
    /// A unit unscheduled in the same pass gets its new machine.
    Moved,
}

impl fmt::Display for TaskReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskReason::Inactive => "target state inactive",
            TaskReason::MachineGone => "target machine went away",
            TaskReason::Global => "global units are not scheduled",
            TaskReason::Displaced => "constraints no longer hold on the target machine",
            TaskReason::Placed => "unit had no machine",
            TaskReason::Moved => "unit left its previous machine",
        })
    }
}

/// One schedule write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Task {
    /// Schedule or unschedule.
    pub kind: TaskKind,
    /// The unit.
    pub unit: String,
    /// The machine it is scheduled on or unscheduled from.
    pub machine: String,
    /// Why.
    pub reason: TaskReason,
}

/// The outcome of planning one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The writes: unschedules, then schedules, each in unit name order.
    pub tasks: Vec<Task>,
    /// The scheduler's answer (placements, and why unplaced units are unplaced). Units on
    /// held machines are not in it.
    pub decision: Decision,
    /// Units left on a machine whose presence is missing but which is held (see the
    /// module docs of [`crate::engine`]), with that machine.
    pub held: BTreeMap<String, String>,
}

/// Plans one pass over `snapshot`.
///
/// `held` names machines that are missing from the snapshot but whose units stay put for
/// now: those units (unless their desired state is `inactive`) are left out of the
/// scheduler's input and get no task. Machines with an empty or repeated ID are ignored.
///
/// # Errors
/// The scheduler's, for an empty unit name (which a registry never yields).
pub fn plan(
    snapshot: &Snapshot,
    held: &BTreeSet<String>,
    strategy: &Strategy,
) -> Result<Plan, scheduler::Error> {
    let mut present = BTreeSet::new();
    let mut machines = Vec::with_capacity(snapshot.machines.len());
    for m in &snapshot.machines {
        if m.id.is_empty() || !present.insert(m.id.as_str()) {
            tracing::warn!(
                machine = %m.id,
                "ignoring a presence record with an empty or repeated ID",
            );
            continue;
        }
        machines.push(scheduler::Machine {
            id: m.id.clone(),
            metadata: m.metadata.clone(),
            capacity: m.capacity,
        });
    }

    let mut order: Vec<&crate::registry::Unit> = snapshot.units.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));

    let mut kept = BTreeMap::new();
    let mut units = Vec::with_capacity(order.len());
    for u in &order {
        let global = u.is_global();
        if let Some(t) = &u.target
            && !global
            && u.desired != JobState::Inactive
            && !present.contains(t.as_str())
            && held.contains(t)
        {
            kept.insert(u.name.clone(), t.clone());
            continue;
        }
        let machine = u
            .target
            .as_ref()
            .filter(|t| !global && present.contains(t.as_str()))
            .cloned();
        // A template is never run: it is only the source of its instances. fleet 1.0
        // scheduled one whose desired state was set through the registry, and the agent
        // that got it stopped reconciling for good; here it stays inactive (and a target it
        // has is removed).
        let desired = if is_template(&u.name) {
            JobState::Inactive
        } else {
            u.desired
        };
        units.push(scheduler::Unit {
            spec: u.contents.spec(&u.name, desired),
            machine,
        });
    }
    let decision = scheduler::decide(&ClusterState {
        machines,
        units,
        strategy: strategy.clone(),
    })?;

    let mut unschedule = Vec::new();
    let mut schedule = Vec::new();
    for u in &order {
        if kept.contains_key(&u.name) {
            continue;
        }
        let global = u.is_global();
        let placed = match decision.placements.get(&u.name) {
            Some(Placement::Machine(m)) if !global => Some(m.as_str()),
            _ => None,
        };
        if let Some(t) = &u.target {
            let reason = if global {
                Some(TaskReason::Global)
            } else if u.desired == JobState::Inactive {
                Some(TaskReason::Inactive)
            } else if !present.contains(t.as_str()) {
                Some(TaskReason::MachineGone)
            } else if placed != Some(t.as_str()) {
                Some(TaskReason::Displaced)
            } else {
                None
            };
            if let Some(reason) = reason {
                unschedule.push(Task {
                    kind: TaskKind::Unschedule,
                    unit: u.name.clone(),
                    machine: t.clone(),
                    reason,
                });
            }
        }
        if let Some(m) = placed
            && u.target.as_deref() != Some(m)
        {
            schedule.push(Task {
                kind: TaskKind::Schedule,
                unit: u.name.clone(),
                machine: m.to_owned(),
                reason: if u.target.is_some() {
                    TaskReason::Moved
                } else {
                    TaskReason::Placed
                },
            });
        }
    }
    unschedule.extend(schedule);
    Ok(Plan {
        tasks: unschedule,
        decision,
        held: kept,
    })
}

/// Whether `name` is a template (`foo@.service`).
fn is_template(name: &str) -> bool {
    unit_parser::name::UnitName::parse(name).is_ok_and(|n| n.is_template())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::{Machine, MachineRecord, Unit, UnitContents};

    fn unit(name: &str, text: &str, desired: JobState, target: Option<&str>) -> Unit {
        Unit {
            name: name.into(),
            contents: Arc::new(UnitContents::from_text(text).unwrap()),
            desired,
            target: target.map(str::to_owned),
            launched_on: None,
        }
    }

    fn machine(id: &str, meta: &[(&str, &str)]) -> Machine {
        Machine {
            id: id.into(),
            public_ip: String::new(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            version: String::new(),
            capacity: Default::default(),
            record: MachineRecord {
                id: id.into(),
                ..MachineRecord::default()
            },
        }
    }

    fn task(kind: TaskKind, unit: &str, machine: &str, reason: TaskReason) -> Task {
        Task {
            kind,
            unit: unit.into(),
            machine: machine.into(),
            reason,
        }
    }

    const PLAIN: &str = "[Service]\nExecStart=/bin/true\n";

    fn tasks(units: Vec<Unit>, machines: Vec<Machine>) -> Vec<Task> {
        let snap = Snapshot {
            units,
            machines,
            index: 1,
        };
        plan(&snap, &BTreeSet::new(), &Strategy::LeastLoaded)
            .unwrap()
            .tasks
    }

    /// A named case: units and machines in, tasks out.
    type Case = (&'static str, Vec<Unit>, Vec<Machine>, Vec<Task>);

    /// A machine's published capacity counts: a unit asking for more memory than a
    /// machine offers goes to one that has it, although the first is less loaded.
    #[test]
    fn capacity_is_respected() {
        let mut small = machine("AAA", &[]);
        small.capacity.memory_bytes = Some(1 << 30);
        let big = machine("BBB", &[]);
        let hungry = "[Service]\nExecStart=/bin/true\nMemoryMax=2G\n";
        let t = tasks(
            vec![unit(
                "big.service",
                hungry,
                scheduler::Desired::Launched,
                None,
            )],
            vec![small, big],
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            (t[0].kind, t[0].machine.as_str()),
            (TaskKind::Schedule, "BBB")
        );
    }

    /// A template is never scheduled, whatever its desired state, and loses a target.
    #[test]
    fn templates_are_never_scheduled() {
        let t = tasks(
            vec![
                unit("web@.service", PLAIN, scheduler::Desired::Launched, None),
                unit(
                    "db@.service",
                    PLAIN,
                    scheduler::Desired::Launched,
                    Some("AAA"),
                ),
            ],
            vec![machine("AAA", &[])],
        );
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(
            (t[0].kind, t[0].unit.as_str()),
            (TaskKind::Unschedule, "db@.service")
        );
    }

    /// fleet's `TestCalculateClusterTasks`, case by case.
    #[test]
    fn calculate_cluster_tasks() {
        use TaskKind::*;
        use TaskReason as R;
        use scheduler::Desired::*;
        let cases: Vec<Case> = vec![
            ("no units, no machines", vec![], vec![], vec![]),
            (
                "scheduled to a present machine",
                vec![unit("foo.service", PLAIN, Launched, Some("XXX"))],
                vec![machine("XXX", &[])],
                vec![],
            ),
            (
                "scheduled to a vanished machine",
                vec![unit("foo.service", PLAIN, Launched, Some("ZZZ"))],
                vec![machine("XXX", &[])],
                vec![
                    task(Unschedule, "foo.service", "ZZZ", R::MachineGone),
                    task(Schedule, "foo.service", "XXX", R::Moved),
                ],
            ),
            (
                "desired inactive while scheduled",
                vec![unit("foo.service", PLAIN, Inactive, Some("XXX"))],
                vec![machine("XXX", &[])],
                vec![task(Unschedule, "foo.service", "XXX", R::Inactive)],
            ),
            (
                "unscheduled, launched, one machine",
                vec![unit("foo.service", PLAIN, Launched, None)],
                vec![machine("XXX", &[])],
                vec![task(Schedule, "foo.service", "XXX", R::Placed)],
            ),
            (
                "unscheduled and loaded also gets a machine",
                vec![unit("foo.service", PLAIN, Loaded, None)],
                vec![machine("XXX", &[])],
                vec![task(Schedule, "foo.service", "XXX", R::Placed)],
            ),
            (
                "unscheduled and inactive stays so",
                vec![unit("foo.service", PLAIN, Inactive, None)],
                vec![machine("XXX", &[])],
                vec![],
            ),
            (
                "no machines: nothing to place it on",
                vec![unit("foo.service", PLAIN, Launched, None)],
                vec![],
                vec![],
            ),
            (
                "a global unit never gets a target, and loses a stale one",
                vec![
                    unit(
                        "g.service",
                        "[X-Fleet]\nGlobal=true\n",
                        Launched,
                        Some("XXX"),
                    ),
                    unit("h.service", "[X-Fleet]\nGlobal=true\n", Launched, None),
                ],
                vec![machine("XXX", &[])],
                vec![task(Unschedule, "g.service", "XXX", R::Global)],
            ),
            (
                "metadata that no longer matches moves the unit",
                vec![unit(
                    "db.service",
                    "[X-Fleet]\nMachineMetadata=role=db\n",
                    Launched,
                    Some("XXX"),
                )],
                vec![machine("XXX", &[]), machine("YYY", &[("role", "db")])],
                vec![
                    task(Unschedule, "db.service", "XXX", R::Displaced),
                    task(Schedule, "db.service", "YYY", R::Moved),
                ],
            ),
        ];
        for (name, units, machines, want) in cases {
            assert_eq!(tasks(units, machines), want, "{name}");
        }
    }

    #[test]
    fn unschedules_come_before_schedules_in_name_order() {
        use scheduler::Desired::*;
        let got = tasks(
            vec![
                unit("b.service", PLAIN, Launched, None),
                unit("a.service", PLAIN, Launched, Some("gone")),
                unit("c.service", PLAIN, Inactive, Some("XXX")),
            ],
            vec![machine("XXX", &[])],
        );
        let order: Vec<_> = got.iter().map(|t| (t.kind, t.unit.as_str())).collect();
        assert_eq!(
            order,
            [
                (TaskKind::Unschedule, "a.service"),
                (TaskKind::Unschedule, "c.service"),
                (TaskKind::Schedule, "a.service"),
                (TaskKind::Schedule, "b.service"),
            ]
        );
    }

    #[test]
    fn conflicts_spread_and_existing_placements_stay() {
        use scheduler::Desired::*;
        let web = "[X-Fleet]\nConflicts=web@*.service\n";
        let got = tasks(
            vec![
                unit("web@1.service", web, Launched, Some("m3")),
                unit("web@2.service", web, Launched, None),
                unit("web@3.service", web, Launched, None),
            ],
            vec![machine("m1", &[]), machine("m2", &[]), machine("m3", &[])],
        );
        let placed: Vec<_> = got
            .iter()
            .map(|t| (t.unit.as_str(), t.machine.as_str()))
            .collect();
        assert_eq!(
            placed,
            [("web@2.service", "m1"), ("web@3.service", "m2")],
            "web@1 stays on m3"
        );
    }

    #[test]
    fn held_machines_keep_their_units_and_say_so() {
        use scheduler::Desired::*;
        let web = "[X-Fleet]\nConflicts=web@*.service\n";
        let snap = Snapshot {
            units: vec![
                unit("web@1.service", web, Launched, Some("m1")),
                unit("web@2.service", web, Launched, Some("m2")),
                unit("off.service", PLAIN, Inactive, Some("m1")),
            ],
            machines: vec![machine("m2", &[]), machine("m3", &[])],
            index: 1,
        };
        let held = BTreeSet::from(["m1".to_string()]);
        let p = plan(&snap, &held, &Strategy::LeastLoaded).unwrap();
        assert_eq!(
            p.tasks,
            [task(
                TaskKind::Unschedule,
                "off.service",
                "m1",
                TaskReason::Inactive
            )],
            "an inactive unit is unscheduled even from a held machine"
        );
        assert_eq!(
            p.held,
            BTreeMap::from([("web@1.service".into(), "m1".into())])
        );
        assert!(!p.decision.placements.contains_key("web@1.service"));

        // Without the hold the unit moves to the only free machine.
        let p = plan(&snap, &BTreeSet::new(), &Strategy::LeastLoaded).unwrap();
        assert_eq!(
            p.tasks[1..],
            [
                task(
                    TaskKind::Unschedule,
                    "web@1.service",
                    "m1",
                    TaskReason::MachineGone
                ),
                task(TaskKind::Schedule, "web@1.service", "m3", TaskReason::Moved),
            ]
        );
    }

    #[test]
    fn unplaced_units_have_a_reason() {
        let snap = Snapshot {
            units: vec![unit(
                "db.service",
                "[X-Fleet]\nMachineMetadata=role=db\n",
                JobState::Launched,
                None,
            )],
            machines: vec![machine("m1", &[("role", "web")])],
            index: 1,
        };
        let p = plan(&snap, &BTreeSet::new(), &Strategy::LeastLoaded).unwrap();
        assert!(p.tasks.is_empty());
        assert_eq!(
            p.decision.unplaced["db.service"].to_string(),
            "0 of 1 machines fit: 1 failed MachineMetadata role=db"
        );
    }
}
