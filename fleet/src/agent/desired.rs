//! What one machine should run: fleet's desired agent state (fleet.md §6.5, §7.5).
//!
//! A machine runs every non-global unit the engine scheduled on it (`target` = its ID; the
//! engine checked the unit's constraints, the agent trusts it) and every global unit whose
//! `MachineMetadata=` its metadata satisfies. Units whose desired state is `inactive` are
//! not run. Units are taken in name order and one that conflicts (`Conflicts=`, Go globs,
//! in either direction) with a unit already accepted is dropped, so of two conflicting
//! global units only the alphabetically first runs on a machine.

use std::collections::BTreeMap;
use std::sync::Arc;

use unit_parser::xfleet::{XFleet, glob_match};

use crate::registry::{JobState, Unit, UnitContents};

/// One unit this machine should run, and how far (`loaded` or `launched`).
#[derive(Debug, Clone)]
pub struct DesiredUnit {
    /// The contents to load.
    pub contents: Arc<UnitContents>,
    /// `loaded` or `launched` (never `inactive`: such units are not desired at all).
    pub state: JobState,
}

impl PartialEq for DesiredUnit {
    /// Same contents (by hash) and same state.
    fn eq(&self, other: &Self) -> bool {
        self.contents.hash() == other.contents.hash() && self.state == other.state
    }
}

impl Eq for DesiredUnit {}

/// What a machine should run, by unit name.
pub type DesiredState = BTreeMap<String, DesiredUnit>;

/// Whether a unit concerns `machine_id` at all: global, or scheduled there. Only such units
/// can be part of its desired state, so an agent follows only these.
pub fn concerns(unit: &Unit, machine_id: &str) -> bool {
    unit.is_global() || unit.target.as_deref() == Some(machine_id)
}

/// Whether `metadata` satisfies `MachineMetadata=` pairs: for every required key the
/// machine has that key with one of the values required for it (same key OR, different
/// keys AND; fleet.md §4.4). No requirement is always satisfied.
pub fn metadata_matches(
    required: &[(String, String)],
    metadata: &BTreeMap<String, String>,
) -> bool {
    required.iter().all(|(key, _)| {
        metadata
            .get(key)
            .is_some_and(|have| required.iter().any(|(k, v)| k == key && v == have))
    })
}

/// The desired state of machine `machine_id` with (effective) `metadata`, from the units
/// that concern it (others are skipped; see [`concerns`]). `units` may come in any order;
/// they are considered in name order.
pub fn desired_state<'u>(
    units: impl IntoIterator<Item = &'u Unit>,
    machine_id: &str,
    metadata: &BTreeMap<String, String>,
) -> DesiredState {
    let mut units: Vec<&Unit> = units
        .into_iter()
        .filter(|u| u.desired != JobState::Inactive && concerns(u, machine_id))
        .collect();
    units.sort_by(|a, b| a.name.cmp(&b.name));
    let mut accepted: Vec<(&str, Vec<String>)> = Vec::new();
    let mut out = DesiredState::new();
    for u in units {
        let x = XFleet::parse(u.contents.file(), Some(&u.name)).xfleet;
        if u.is_global() && !metadata_matches(&x.machine_metadata, metadata) {
            continue;
        }
        let conflict = accepted.iter().find(|(name, theirs)| {
            x.conflicts.iter().any(|p| glob_match(p, name))
                || theirs.iter().any(|p| glob_match(p, &u.name))
        });
        if let Some((other, _)) = conflict {
            tracing::debug!(unit = %u.name, conflicts_with = %other, "unit not run here: conflict");
            continue;
        }
        accepted.push((&u.name, x.conflicts));
        out.insert(
            u.name.clone(),
            DesiredUnit {
                contents: u.contents.clone(),
                state: u.desired,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, text: &str, desired: JobState, target: Option<&str>) -> Unit {
        Unit {
            name: name.into(),
            contents: Arc::new(UnitContents::from_text(text).unwrap()),
            desired,
            target: target.map(Into::into),
            launched_on: None,
        }
    }

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(d: &DesiredState) -> Vec<(&str, JobState)> {
        d.iter().map(|(n, u)| (n.as_str(), u.state)).collect()
    }

    const PLAIN: &str = "[Service]\nExecStart=/bin/true\n";
    const GLOBAL: &str = "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n";
    const GLOBAL_DOG: &str =
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineMetadata=dog=woof\n";

    /// fleet's `TestDesiredAgentState`, plus the conflict rule of §6.5.
    #[test]
    fn desired_agent_state() {
        let none = meta(&[]);
        let dog = meta(&[("dog", "woof")]);
        // Nothing → nothing.
        assert!(desired_state(&[], "XXX", &none).is_empty());
        // Targeted here → included; elsewhere or unscheduled → excluded.
        let units = [
            unit("a.service", PLAIN, JobState::Launched, Some("XXX")),
            unit("b.service", PLAIN, JobState::Loaded, Some("XXX")),
            unit("c.service", PLAIN, JobState::Launched, Some("YYY")),
            unit("d.service", PLAIN, JobState::Launched, None),
            unit("e.service", PLAIN, JobState::Inactive, Some("XXX")),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [
                ("a.service", JobState::Launched),
                ("b.service", JobState::Loaded)
            ]
        );
        // Global without metadata → everywhere; with `dog=woof` → only where it matches;
        // an inactive global unit → nowhere.
        let units = [
            unit("g1.service", GLOBAL, JobState::Launched, None),
            unit("g2.service", GLOBAL_DOG, JobState::Launched, None),
            unit("g3.service", GLOBAL, JobState::Inactive, None),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [("g1.service", JobState::Launched)]
        );
        assert_eq!(
            names(&desired_state(&units, "XXX", &dog)),
            [
                ("g1.service", JobState::Launched),
                ("g2.service", JobState::Launched)
            ]
        );
        assert!(names(&desired_state(&units, "XXX", &meta(&[("dog", "meow")]))).len() == 1);
        // Mixed: a targeted unit and a global one.
        let units = [
            unit("g2.service", GLOBAL_DOG, JobState::Launched, None),
            unit("a.service", PLAIN, JobState::Loaded, Some("XXX")),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &dog)),
            [
                ("a.service", JobState::Loaded),
                ("g2.service", JobState::Launched)
            ]
        );
    }

    /// fleet's functional `TestScheduleGlobalConflicts`: of two conflicting global units
    /// only the alphabetically first runs, whichever side declares the conflict.
    #[test]
    fn conflicting_globals_only_the_first_runs() {
        let none = meta(&[]);
        let declares =
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nConflicts=conflict-global.*\n";
        // Both declare it.
        let units = [
            unit(
                "conflict-global.1.service",
                declares,
                JobState::Launched,
                None,
            ),
            unit(
                "conflict-global.0.service",
                declares,
                JobState::Launched,
                None,
            ),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [("conflict-global.0.service", JobState::Launched)]
        );
        // Only the later one declares it.
        let units = [
            unit(
                "b.service",
                declares.replace("conflict-global.*", "a.service").as_str(),
                JobState::Launched,
                None,
            ),
            unit("a.service", GLOBAL, JobState::Launched, None),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [("a.service", JobState::Launched)]
        );
        // Only the earlier one declares it.
        let units = [
            unit("b.service", GLOBAL, JobState::Launched, None),
            unit(
                "a.service",
                declares.replace("conflict-global.*", "b*").as_str(),
                JobState::Launched,
                None,
            ),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [("a.service", JobState::Launched)]
        );
        // A dropped unit blocks nothing: c conflicts only with b, which lost to a.
        let units = [
            unit(
                "a.service",
                declares.replace("conflict-global.*", "b.service").as_str(),
                JobState::Launched,
                None,
            ),
            unit("b.service", GLOBAL, JobState::Launched, None),
            unit(
                "c.service",
                declares.replace("conflict-global.*", "b.service").as_str(),
                JobState::Launched,
                None,
            ),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [
                ("a.service", JobState::Launched),
                ("c.service", JobState::Launched)
            ]
        );
        // A unit's specifiers are resolved with its own name: web@N with
        // Conflicts=%p@*.service runs once per machine.
        let web =
            "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nConflicts=%p@*.service\n";
        let units = [
            unit("web@2.service", web, JobState::Launched, None),
            unit("web@1.service", web, JobState::Launched, None),
        ];
        assert_eq!(
            names(&desired_state(&units, "XXX", &none)),
            [("web@1.service", JobState::Launched)]
        );
    }

    /// fleet's `TestHasMetadata` / `TestJobRequiredMetadata` shapes.
    #[test]
    fn metadata_matching() {
        let req = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(metadata_matches(&[], &meta(&[])));
        assert!(metadata_matches(
            &req(&[("groups", "ping"), ("groups", "pong")]),
            &meta(&[("groups", "ping")])
        ));
        assert!(!metadata_matches(
            &req(&[("groups", "pong")]),
            &meta(&[("groups", "ping")])
        ));
        assert!(!metadata_matches(&req(&[("groups", "pong")]), &meta(&[])));
        let two = req(&[
            ("region", "us-east-1"),
            ("diskType", "SSD"),
            ("region", "us-west-1"),
        ]);
        assert!(metadata_matches(
            &two,
            &meta(&[("region", "us-west-1"), ("diskType", "SSD")])
        ));
        assert!(!metadata_matches(&two, &meta(&[("region", "us-west-1")])));
    }
}
