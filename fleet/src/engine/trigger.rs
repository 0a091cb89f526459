//! Which registry events the engine reacts to, and how (fleet.md §6.4).
//!
//! fleet's engine woke up only for `target` and `target-state` changes and otherwise
//! waited for its 2 s tick, so a dead machine's units moved up to a tick after its
//! presence expired. This engine also reacts to new or replaced units, destroyed units,
//! machines arriving, leaving or changing metadata, and to the lease changing hands.
//! Refreshes of a presence record that change nothing, launch heartbeats and published
//! unit states are ignored.

use kv_core::{Action, Event};

use crate::registry::{KeyKind, Keys};

/// What one event asks of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger<'e> {
    /// Nothing.
    Ignore,
    /// Something placement depends on changed: reconcile.
    Reconcile,
    /// A unit's target was deleted from `machine`: reconcile, unless this engine did it.
    TargetDeleted {
        /// The unit.
        unit: &'e str,
        /// The machine it was scheduled on (empty when the event does not say).
        machine: &'e str,
    },
    /// A machine's presence was written; `changed` when it is new or its record differs.
    Presence {
        /// The machine.
        id: &'e str,
        /// Whether the record is new or different.
        changed: bool,
    },
    /// The lease was written or removed.
    Lease {
        /// The lease's modified index after the event.
        modified_index: u64,
        /// Whether it was removed (deleted, expired): a follower tries to take it.
        gone: bool,
    },
}

fn removes(action: Action) -> bool {
    matches!(
        action,
        Action::Delete | Action::CompareAndDelete | Action::Expire
    )
}

/// Routes one watch event.
pub(crate) fn trigger<'e>(keys: &Keys, e: &'e Event) -> Trigger<'e> {
    let gone = removes(e.action);
    match keys.classify(&e.node.key) {
        KeyKind::Job { field, unit } => match field {
            Some("object" | "target-state") => Trigger::Reconcile,
            Some("target") if gone => Trigger::TargetDeleted {
                unit,
                machine: e
                    .prev_node
                    .as_ref()
                    .and_then(|p| p.value.as_deref())
                    .unwrap_or_default(),
            },
            None if gone => Trigger::Reconcile,
            _ => Trigger::Ignore,
        },
        KeyKind::Machine { id, field } => match field {
            Some("object") if gone => Trigger::Reconcile,
            Some("object") => Trigger::Presence {
                id,
                changed: e.prev_node.as_ref().and_then(|p| p.value.as_deref())
                    != e.node.value.as_deref(),
            },
            Some("metadata") => Trigger::Reconcile,
            None if gone => Trigger::Reconcile,
            _ => Trigger::Ignore,
        },
        KeyKind::Lease => Trigger::Lease {
            modified_index: e.node.modified_index,
            gone,
        },
        KeyKind::State { .. } => Trigger::Ignore,
        // A whole subtree removed at once (`job/`, `machines/`, the prefix).
        _ if gone && e.node.dir => Trigger::Reconcile,
        _ => Trigger::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use kv_core::NodeView;

    use super::*;

    fn event(action: Action, key: &str, value: Option<&str>, prev: Option<&str>) -> Event {
        let node = |v: Option<&str>| NodeView {
            key: key.into(),
            value: v.map(str::to_owned),
            modified_index: 7,
            created_index: 3,
            ..NodeView::default()
        };
        Event {
            action,
            node: node(value),
            prev_node: prev.map(|p| node(Some(p))),
            index: 7,
            batch: None,
        }
    }

    /// fleet's `TestFilterEtcdEvents`, extended with what this engine also reacts to.
    #[test]
    fn filter_etcd_events() {
        let k = Keys::default();
        let p = "/_coreos.com/fleet";
        let cases = [
            (
                event(
                    Action::Set,
                    &format!("{p}/job/a.service/target-state"),
                    Some("launched"),
                    None,
                ),
                Trigger::Reconcile,
            ),
            (
                event(
                    Action::Set,
                    &format!("{p}/job/a.service/object"),
                    Some("{}"),
                    None,
                ),
                Trigger::Reconcile,
            ),
            (
                event(
                    Action::Create,
                    &format!("{p}/job/a.service/target"),
                    Some("m1"),
                    None,
                ),
                Trigger::Ignore,
            ),
            (
                event(
                    Action::CompareAndDelete,
                    &format!("{p}/job/a.service/target"),
                    None,
                    Some("m1"),
                ),
                Trigger::TargetDeleted {
                    unit: "a.service",
                    machine: "m1",
                },
            ),
            (
                event(Action::Delete, &format!("{p}/job/a.service"), None, None),
                Trigger::Reconcile,
            ),
            (
                event(
                    Action::Set,
                    &format!("{p}/job/a.service/job-state"),
                    Some("m1"),
                    None,
                ),
                Trigger::Ignore,
            ),
            (
                event(
                    Action::Expire,
                    &format!("{p}/machines/m1/object"),
                    None,
                    Some("{}"),
                ),
                Trigger::Reconcile,
            ),
            (
                event(
                    Action::Create,
                    &format!("{p}/machines/m1/object"),
                    Some("{}"),
                    None,
                ),
                Trigger::Presence {
                    id: "m1",
                    changed: true,
                },
            ),
            (
                event(
                    Action::Update,
                    &format!("{p}/machines/m1/object"),
                    Some("{}"),
                    Some("{}"),
                ),
                Trigger::Presence {
                    id: "m1",
                    changed: false,
                },
            ),
            (
                event(
                    Action::Set,
                    &format!("{p}/machines/m1/metadata/zone"),
                    Some("a"),
                    None,
                ),
                Trigger::Reconcile,
            ),
            (
                event(
                    Action::Set,
                    &format!("{p}/states/a.service/m1"),
                    Some("{}"),
                    None,
                ),
                Trigger::Ignore,
            ),
            (
                event(
                    Action::Expire,
                    &format!("{p}/lease/engine-leader"),
                    None,
                    Some("{}"),
                ),
                Trigger::Lease {
                    modified_index: 7,
                    gone: true,
                },
            ),
            (
                event(
                    Action::CompareAndSwap,
                    &format!("{p}/lease/engine-leader"),
                    Some("{}"),
                    Some("{}"),
                ),
                Trigger::Lease {
                    modified_index: 7,
                    gone: false,
                },
            ),
            (
                event(Action::Create, &format!("{p}/unit/abc"), Some("{}"), None),
                Trigger::Ignore,
            ),
        ];
        for (e, want) in &cases {
            assert_eq!(trigger(&k, e), *want, "{:?} {}", e.action, e.node.key);
        }
        let mut whole = event(Action::Delete, &format!("{p}/job"), None, None);
        whole.node.dir = true;
        assert_eq!(trigger(&k, &whole), Trigger::Reconcile);
    }
}
