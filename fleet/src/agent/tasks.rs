//! fleet's per-unit task table (fleet.md §3.4): from what a machine should run and what it
//! runs, the driver calls that converge the two.
//!
//! | desired | current | tasks |
//! |---|---|---|
//! | absent (not here, inactive, destroyed) | present | unload |
//! | loaded / launched | absent | load (+ start) |
//! | loaded / launched | present, other or unknown hash | (unload if known,) load (+ start) |
//! | launched | loaded | start |
//! | loaded | launched | stop |
//! | same | same | nothing |
//!
//! "Unknown hash" is a unit the driver listed at start-up that this agent has not loaded
//! yet (fleet's `inactive` current state for unit files found on disk): it is loaded
//! again, and started if launched, which leaves a running unit running. A unit whose hash
//! changed is unloaded first, so the new contents take effect (a running unit restarts).
//! All tasks of a pass run in the order unload < load < stop < start (fleet's
//! `TestTaskSorting`; fleet's extra daemon-reload task is the driver's business).

use std::collections::BTreeMap;
use std::fmt;

use unit_parser::hash::UnitHash;

use super::desired::{DesiredState, DesiredUnit};
use crate::registry::JobState;

/// What the agent did with a unit, as it remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalUnit {
    /// The hash of the contents this agent loaded; `None` for a unit the driver had
    /// loaded before this agent started (its contents are not known).
    pub hash: Option<UnitHash>,
    /// `loaded` or `launched` for units this agent loaded or started; `inactive` for a unit
    /// found loaded at start-up.
    pub state: JobState,
}

/// One driver call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskKind {
    /// `UnitDriver::unload` (stops the unit too).
    Unload,
    /// `UnitDriver::load` with the desired contents.
    Load,
    /// `UnitDriver::stop`.
    Stop,
    /// `UnitDriver::start`.
    Start,
}

impl TaskKind {
    /// fleet's name of the task (`UnloadUnit`, ...), for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Unload => "UnloadUnit",
            TaskKind::Load => "LoadUnit",
            TaskKind::Stop => "StopUnit",
            TaskKind::Start => "StartUnit",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One task for one unit, with fleet's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// What to do.
    pub kind: TaskKind,
    /// The unit.
    pub unit: String,
    /// Why, for logs.
    pub reason: &'static str,
}

/// The tasks that take one unit from `current` to `desired`, in execution order.
pub fn unit_tasks(
    unit: &str,
    desired: Option<&DesiredUnit>,
    current: Option<&LocalUnit>,
) -> Vec<Task> {
    let task = |kind, reason| Task {
        kind,
        unit: unit.to_owned(),
        reason,
    };
    let Some(d) = desired else {
        return match current {
            Some(_) => vec![task(TaskKind::Unload, "unit loaded but not scheduled here")],
            None => Vec::new(),
        };
    };
    let launch = d.state == JobState::Launched;
    let mut out = Vec::new();
    let load_from_scratch = match current {
        None => true,
        Some(c) if c.hash.is_none() || c.state == JobState::Inactive => true,
        Some(c) if c.hash != Some(d.contents.hash()) => {
            out.push(task(TaskKind::Unload, "unit contents changed"));
            true
        }
        Some(_) => false,
    };
    if load_from_scratch {
        out.push(task(TaskKind::Load, "unit scheduled here but not loaded"));
        if launch {
            out.push(task(
                TaskKind::Start,
                "unit scheduled here but not launched",
            ));
        }
        return out;
    }
    match (current.map(|c| c.state), d.state) {
        (Some(JobState::Loaded), JobState::Launched) => out.push(task(
            TaskKind::Start,
            "unit currently loaded but desired launched",
        )),
        (Some(JobState::Launched), JobState::Loaded) => out.push(task(
            TaskKind::Stop,
            "unit currently launched but desired loaded",
        )),
        _ => {}
    }
    out
}

/// Every task of one pass over all units, sorted unload < load < stop < start (unit names
/// in order within a kind).
pub fn tasks(desired: &DesiredState, current: &BTreeMap<String, LocalUnit>) -> Vec<Task> {
    let mut out: Vec<Task> = Vec::new();
    for (name, d) in desired {
        out.extend(unit_tasks(name, Some(d), current.get(name)));
    }
    for (name, c) in current {
        if !desired.contains_key(name) {
            out.extend(unit_tasks(name, None, Some(c)));
        }
    }
    sort_tasks(&mut out);
    out
}

/// Sorts tasks by kind (unload < load < stop < start), then unit name.
pub fn sort_tasks(tasks: &mut [Task]) {
    tasks.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.unit.cmp(&b.unit)));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::UnitContents;

    fn contents(text: &str) -> Arc<UnitContents> {
        Arc::new(UnitContents::from_text(text).unwrap())
    }

    /// fleet's `TestCalculateTasksForJob`. A desired state of `inactive` is "not desired"
    /// here (the desired state never holds inactive units).
    #[test]
    fn calculate_tasks_for_job() {
        use TaskKind::{Load, Start, Stop, Unload};
        use scheduler::Desired::{Inactive, Launched, Loaded};
        let a = contents("[Service]\nExecStart=/bin/a\n");
        let b = contents("[Service]\nExecStart=/bin/b\n");
        let ha = Some(a.hash());
        let hb = Some(b.hash());
        type Case = (
            Option<JobState>,
            Option<(Option<UnitHash>, JobState)>,
            &'static [TaskKind],
        );
        let cases: &[Case] = &[
            // Nothing desired, nothing present.
            (None, None, &[]),
            // Desired state equals current state.
            (Some(Loaded), Some((ha, Loaded)), &[]),
            (Some(Launched), Some((ha, Launched)), &[]),
            // Load units desired loaded; load and start units desired launched.
            (Some(Loaded), None, &[Load]),
            (Some(Launched), None, &[Load, Start]),
            // Unload units no longer scheduled here, whatever their state.
            (None, Some((ha, Loaded)), &[Unload]),
            (None, Some((ha, Launched)), &[Unload]),
            (None, Some((None, Inactive)), &[Unload]),
            // Unload units desired inactive (the desired state drops them).
            (Some(Inactive), Some((ha, Loaded)), &[Unload]),
            // Reload units whose contents changed.
            (Some(Loaded), Some((hb, Loaded)), &[Unload, Load]),
            (Some(Launched), Some((hb, Launched)), &[Unload, Load, Start]),
            (Some(Launched), Some((hb, Loaded)), &[Unload, Load, Start]),
            // Stop launched units desired loaded; start loaded units desired launched.
            (Some(Loaded), Some((ha, Launched)), &[Stop]),
            (Some(Launched), Some((ha, Loaded)), &[Start]),
            // Units found at start-up (contents unknown): load again, start if launched.
            (Some(Loaded), Some((None, Inactive)), &[Load]),
            (Some(Launched), Some((None, Inactive)), &[Load, Start]),
        ];
        for (i, (desired, current, want)) in cases.iter().enumerate() {
            let d = desired.filter(|s| *s != Inactive).map(|state| DesiredUnit {
                contents: a.clone(),
                state,
            });
            let c = current.map(|(hash, state)| LocalUnit { hash, state });
            let got: Vec<TaskKind> = unit_tasks("foo.service", d.as_ref(), c.as_ref())
                .into_iter()
                .map(|t| t.kind)
                .collect();
            assert_eq!(
                &got, want,
                "case {i}: desired {desired:?}, current {current:?}"
            );
        }
    }

    /// fleet's `TestTaskSorting`.
    #[test]
    fn task_sorting() {
        let t = |kind, unit: &str| Task {
            kind,
            unit: unit.into(),
            reason: "",
        };
        let mut got = vec![
            t(TaskKind::Start, "a"),
            t(TaskKind::Load, "b"),
            t(TaskKind::Stop, "c"),
            t(TaskKind::Unload, "d"),
            t(TaskKind::Load, "a"),
            t(TaskKind::Unload, "b"),
        ];
        sort_tasks(&mut got);
        let got: Vec<(TaskKind, &str)> = got.iter().map(|t| (t.kind, t.unit.as_str())).collect();
        assert_eq!(
            got,
            [
                (TaskKind::Unload, "b"),
                (TaskKind::Unload, "d"),
                (TaskKind::Load, "a"),
                (TaskKind::Load, "b"),
                (TaskKind::Stop, "c"),
                (TaskKind::Start, "a"),
            ]
        );
    }

    #[test]
    fn a_pass_covers_desired_and_current_units() {
        let a = contents("[Service]\nExecStart=/bin/a\n");
        let desired: DesiredState = [
            (
                "new.service".to_string(),
                DesiredUnit {
                    contents: a.clone(),
                    state: JobState::Launched,
                },
            ),
            (
                "kept.service".to_string(),
                DesiredUnit {
                    contents: a.clone(),
                    state: JobState::Loaded,
                },
            ),
        ]
        .into();
        let current: BTreeMap<String, LocalUnit> = [
            (
                "kept.service".to_string(),
                LocalUnit {
                    hash: Some(a.hash()),
                    state: JobState::Launched,
                },
            ),
            (
                "old.service".to_string(),
                LocalUnit {
                    hash: Some(a.hash()),
                    state: JobState::Loaded,
                },
            ),
        ]
        .into();
        let got: Vec<String> = tasks(&desired, &current)
            .iter()
            .map(|t| format!("{} {}", t.kind, t.unit))
            .collect();
        assert_eq!(
            got,
            [
                "UnloadUnit old.service",
                "LoadUnit new.service",
                "StopUnit kept.service",
                "StartUnit new.service"
            ]
        );
    }
}
