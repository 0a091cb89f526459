//! Which missing machines keep their units for now: the engine's guard against
//! rescheduling on a store hiccup (fleet issue #746 and its kin).
//!
//! A machine's presence can vanish for two reasons: the machine died, or its agent could
//! not refresh the key because the store itself was unreachable. Expiry is proposed by
//! the store's leader with its own clock, so after an outage longer than the time left on
//! some presence keys, those keys expire the moment the store is back, before their agents
//! had a chance to refresh them. Read naively, that looks like dead machines.
//!
//! The engine tells the two apart by what it saw itself. Its *contact epoch* starts at
//! the first successful store operation after a failure (or after start-up), and it
//! remembers every machine seen present since then. During the first `window` of an
//! epoch, a unit's target machine that is missing *and was not seen present in this
//! epoch* is held: its units keep their targets (an alive agent re-registers well within
//! one agent TTL), and nothing new goes there. A machine seen present in this epoch that
//! then disappears did so while the engine was talking to the store, so it is gone, and
//! its units move at once, which keeps the promise "units of a dead machine run
//! elsewhere within TTL + 1 s". Outside the window nothing is held.
//!
//! So a store hiccup, a store leader change or an engine restart costs at most one
//! window of delay for a machine that died at the same time, and never moves a unit of
//! a machine that is alive.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use crate::registry::Snapshot;

/// The contact epoch and the machines seen present in it.
#[derive(Debug)]
pub(crate) struct PresenceGrace {
    window: Duration,
    /// When the current epoch began; `None` while the store is unreachable.
    epoch: Option<Instant>,
    seen: HashSet<String>,
}

impl PresenceGrace {
    /// No epoch yet: the first contact starts one.
    pub(crate) fn new(window: Duration) -> PresenceGrace {
        PresenceGrace {
            window,
            epoch: None,
            seen: HashSet::new(),
        }
    }

    /// A store operation succeeded at `now`: starts an epoch if none is running.
    pub(crate) fn contact(&mut self, now: Instant) {
        if self.epoch.is_none() {
            self.epoch = Some(now);
            self.seen.clear();
        }
    }

    /// A store operation failed because the store was unreachable: the epoch ends.
    pub(crate) fn lost(&mut self) {
        self.epoch = None;
    }

    /// Whether an epoch is running (the store was reachable last time).
    pub(crate) fn in_contact(&self) -> bool {
        self.epoch.is_some()
    }

    /// A machine was seen present in the current epoch.
    pub(crate) fn saw(&mut self, id: &str) {
        if self.epoch.is_some() && !self.seen.contains(id) {
            self.seen.insert(id.to_owned());
        }
    }

    /// When the current epoch's window ends (`None` without an epoch).
    pub(crate) fn window_end(&self) -> Option<Instant> {
        self.epoch.map(|e| e + self.window)
    }

    /// The target machines of `snapshot`'s units that are held at `now`: missing from
    /// the snapshot, not seen in this epoch, within the epoch's window.
    pub(crate) fn held(&self, snapshot: &Snapshot, now: Instant) -> BTreeSet<String> {
        let Some(end) = self.window_end() else {
            return BTreeSet::new();
        };
        if now >= end {
            return BTreeSet::new();
        }
        let present: HashSet<&str> = snapshot.machines.iter().map(|m| m.id.as_str()).collect();
        snapshot
            .units
            .iter()
            .filter_map(|u| u.target.as_deref())
            .filter(|t| !present.contains(t) && !self.seen.contains(*t))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::{JobState, Machine, MachineRecord, Unit, UnitContents};

    fn snapshot(targets: &[(&str, &str)], present: &[&str]) -> Snapshot {
        let c = Arc::new(UnitContents::from_text("[Service]\nExecStart=/bin/true\n").unwrap());
        Snapshot {
            units: targets
                .iter()
                .map(|(u, m)| Unit {
                    name: (*u).into(),
                    contents: c.clone(),
                    desired: JobState::Launched,
                    target: Some((*m).into()),
                    launched_on: None,
                })
                .collect(),
            machines: present
                .iter()
                .map(|id| Machine {
                    id: (*id).into(),
                    public_ip: String::new(),
                    metadata: Default::default(),
                    version: String::new(),
                    capacity: Default::default(),
                    record: MachineRecord::default(),
                })
                .collect(),
            index: 1,
        }
    }

    #[test]
    fn machines_missing_at_the_start_of_an_epoch_are_held_for_the_window() {
        let w = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut g = PresenceGrace::new(w);
        let snap = snapshot(&[("a", "m1"), ("b", "m2")], &["m2"]);
        assert!(g.held(&snap, t0).is_empty(), "no epoch: nothing read yet");
        g.contact(t0);
        g.saw("m2");
        assert_eq!(g.held(&snap, t0), BTreeSet::from(["m1".to_string()]));
        assert!(g.held(&snap, t0 + w).is_empty(), "the window is over");
    }

    #[test]
    fn a_machine_seen_in_the_epoch_is_not_held() {
        let t0 = Instant::now();
        let mut g = PresenceGrace::new(Duration::from_secs(30));
        g.contact(t0);
        g.saw("m1");
        let snap = snapshot(&[("a", "m1")], &[]);
        assert!(g.held(&snap, t0).is_empty(), "it died while we watched");
    }

    #[test]
    fn an_outage_starts_a_new_epoch() {
        let w = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut g = PresenceGrace::new(w);
        g.contact(t0);
        g.saw("m1");
        let later = t0 + Duration::from_secs(100);
        g.lost();
        assert!(!g.in_contact());
        g.saw("ignored while out of contact");
        g.contact(later);
        g.contact(later + Duration::from_secs(1)); // does not restart the epoch
        assert_eq!(g.window_end(), Some(later + w));
        let snap = snapshot(&[("a", "m1")], &[]);
        assert_eq!(
            g.held(&snap, later + Duration::from_secs(1)),
            BTreeSet::from(["m1".to_string()]),
            "its presence may have expired during the outage"
        );
    }
}
