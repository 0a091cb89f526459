//! Following what is scheduled on this machine, by watch (fleet.md §6.5).
//!
//! The agent reads the whole registry once (its units and its own dynamic metadata), then
//! follows the store's events from the index of that read. It keeps only the units that
//! concern it (global ones and those scheduled here), and re-reads a single unit only when
//! an event concerns it: a new or replaced unit (`object`), a schedule naming this machine
//! or moving a unit it knows, or a desired-state change of a unit it knows. Launch
//! heartbeats, unit states and other machines' records are ignored. So the work per machine
//! follows what happens to *its* units, not the size of the cluster (fleet re-read the whole
//! registry every five seconds on every machine).
//!
//! When the watch fails (the store's history no longer reaches back to the index, or the
//! store went away) the agent reads everything again and watches anew. A full re-read also
//! happens every [`resync_interval`](super::AgentConfig::resync_interval) (minutes) as a
//! safety net, and whenever the executor asks for one through [`Rereads`] (the presence
//! came back from fencing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kv_core::Event;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until};

use super::backoff::Backoff;
use super::counters::AgentCounters;
use super::desired::{DesiredState, concerns, desired_state};
use super::{Agent, stopped};
use crate::registry::{KeyKind, RegistryError, Unit, overlay_metadata};
use crate::store::{KvStore, StoreError};
use systemd_driver::UnitDriver;

/// Fresh reads of the registry, asked for by the executor when the presence comes back from
/// fencing. While the machine was cut off, the engine may have moved its units away, and
/// the follower cannot have seen it: its watch broke (or hangs silent behind a partition)
/// and its retries may be spaced out far beyond the presence's. So the executor starts
/// nothing until a full read that began after the presence came back is done; otherwise it
/// would start, from its last view, units that already run elsewhere.
#[derive(Debug)]
pub(super) struct Rereads {
    /// The number of the last read asked for.
    asked: watch::Sender<u64>,
    /// The number of the last request a completed full read answered.
    done: watch::Sender<u64>,
}

impl Rereads {
    pub(super) fn new() -> Rereads {
        Rereads {
            asked: watch::Sender::new(0),
            done: watch::Sender::new(0),
        }
    }

    /// Asks for a full read; returns the request's number.
    pub(super) fn ask(&self) -> u64 {
        let mut n = 0;
        self.asked.send_modify(|asked| {
            *asked += 1;
            n = *asked;
        });
        n
    }

    /// Whether request `n` has been answered.
    pub(super) fn is_done(&self, n: u64) -> bool {
        *self.done.borrow() >= n
    }

    /// Follows the answered requests.
    pub(super) fn answers(&self) -> watch::Receiver<u64> {
        self.done.subscribe()
    }
}

/// Most events handled in one batch before the desired state is recomputed.
const MAX_BATCH: usize = 1024;

/// What the agent knows of the registry.
#[derive(Debug, Default)]
struct View {
    /// The units concerning this machine, by name.
    units: BTreeMap<String, Unit>,
    /// This machine's dynamic metadata as stored (empty values mask configured keys).
    dynamic: BTreeMap<String, String>,
}

/// What applying a batch of events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Nothing concerning this machine.
    Nothing,
    /// Units or metadata were re-read.
    Reread,
    /// A whole directory went: read everything again.
    ReadAll,
}

/// What a batch of events asks for.
#[derive(Debug, Default)]
struct Reads {
    units: BTreeSet<String>,
    metadata: bool,
    everything: bool,
}

impl<S: KvStore, D: UnitDriver> Agent<S, D> {
    /// Follows the registry until `stop`, publishing this machine's desired state on
    /// `desired` (`None` until the first full read), and answering `rereads`.
    pub(super) async fn follow(
        &self,
        mut stop: watch::Receiver<bool>,
        desired: &watch::Sender<Option<Arc<DesiredState>>>,
        rereads: &Rereads,
    ) {
        let cfg = &self.config;
        let mut backoff = Backoff::new(cfg.retry_backoff, cfg.max_retry_backoff);
        let mut delay = None;
        let mut asked = rereads.asked.subscribe();
        'read: loop {
            if let Some(d) = delay.take() {
                // A request for a fresh read does not wait out the backoff.
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => return,
                    Ok(()) = asked.changed() => {}
                    () = sleep(d) => {}
                }
            }
            // The requests so far are answered by this read, which begins after them.
            let answering = *asked.borrow_and_update();
            let read = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                r = self.full_read() => r,
            };
            let (mut view, index) = match read {
                Ok(v) => v,
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, "reading the registry failed; retrying in {d:?}");
                    delay = Some(d);
                    continue;
                }
            };
            self.send_desired(&view, desired);
            rereads.done.send_if_modified(|done| {
                let newer = answering > *done;
                if newer {
                    *done = answering;
                }
                newer
            });
            let watch = tokio::select! {
                biased;
                () = stopped(&mut stop) => return,
                w = self.registry.watch(index + 1) => w,
            };
            let mut watch = match watch {
                Ok(w) => w,
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, "watching the registry failed; retrying in {d:?}");
                    delay = Some(d);
                    continue;
                }
            };
            let resync_at = Instant::now() + cfg.resync_interval;
            loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut stop) => return,
                    Ok(()) = asked.changed() => {
                        tracing::info!("presence back: reading the registry again");
                        continue 'read;
                    }
                    () = sleep_until(resync_at) => {
                        tracing::debug!("periodic full read of the registry");
                        continue 'read;
                    }
                    first = watch.events.recv() => {
                        let Some(first) = first else {
                            let d = backoff.next_delay();
                            tracing::warn!("the registry watch ended; reading again in {d:?}");
                            delay = Some(d);
                            continue 'read;
                        };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match watch.events.try_recv() {
                                Ok(e) => batch.push(e),
                                Err(_) => break,
                            }
                        }
                        let applied = tokio::select! {
                            biased;
                            () = stopped(&mut stop) => return,
                            r = self.apply_events(&mut view, batch) => r,
                        };
                        match applied {
                            Ok(Applied::Nothing) => {
                                backoff.reset();
                                continue;
                            }
                            Ok(Applied::Reread) => backoff.reset(),
                            Ok(Applied::ReadAll) => continue 'read,
                            Err(e) => {
                                if matches!(&e, RegistryError::Store(s) if s.is_index_cleared()) {
                                    tracing::info!(error = %e, "the registry watch fell behind; reading again");
                                } else {
                                    let d = backoff.next_delay();
                                    tracing::warn!(error = %e, "following the registry failed; reading again in {d:?}");
                                    delay = Some(d);
                                }
                                continue 'read;
                            }
                        }
                        self.send_desired(&view, desired);
                    }
                }
            }
        }
    }

    /// Reads this machine's units and dynamic metadata, and the index to watch from.
    async fn full_read(&self) -> Result<(View, u64), RegistryError> {
        AgentCounters::inc(&self.counters.full_reads);
        let me = &self.config.machine_id;
        let (units, index) = self.registry.units().await?;
        let dynamic = self.registry.dynamic_metadata(me).await?;
        let units = units
            .into_iter()
            .filter(|u| concerns(u, me))
            .map(|u| (u.name.clone(), u))
            .collect();
        Ok((View { units, dynamic }, index))
    }

    /// Applies a batch of watch events to `view`, re-reading what they concern.
    async fn apply_events(
        &self,
        view: &mut View,
        batch: Vec<Result<Event, StoreError>>,
    ) -> Result<Applied, RegistryError> {
        let me = self.config.machine_id.as_str();
        let keys = self.registry.keys();
        let mut reads = Reads::default();
        let mut failure = None;
        for event in batch {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            classify_event(keys.classify(&event.node.key), &event, view, me, &mut reads);
            if event.node.key == keys.root() || event.node.key == keys.jobs() {
                reads.everything = true;
            }
        }
        if reads.everything {
            return Ok(Applied::ReadAll);
        }
        let reread = !reads.units.is_empty() || reads.metadata;
        for name in &reads.units {
            AgentCounters::inc(&self.counters.unit_reads);
            match self.registry.unit(name).await? {
                Some(u) if concerns(&u, me) => {
                    view.units.insert(name.clone(), u);
                }
                _ => {
                    view.units.remove(name);
                }
            }
        }
        if reads.metadata {
            view.dynamic = self.registry.dynamic_metadata(me).await?;
        }
        match failure {
            Some(e) => Err(e.into()),
            None if reread => Ok(Applied::Reread),
            None => Ok(Applied::Nothing),
        }
    }

    /// Recomputes the desired state and publishes it if it changed.
    fn send_desired(&self, view: &View, desired: &watch::Sender<Option<Arc<DesiredState>>>) {
        let metadata = overlay_metadata(self.config.metadata.clone(), view.dynamic.clone());
        let new = desired_state(view.units.values(), &self.config.machine_id, &metadata);
        desired.send_if_modified(|current| {
            if current.as_deref() == Some(&new) {
                return false;
            }
            tracing::debug!(units = new.len(), "desired state changed");
            *current = Some(Arc::new(new));
            true
        });
    }
}

/// Notes in `reads` what one event makes the agent re-read.
fn classify_event(kind: KeyKind<'_>, event: &Event, view: &View, me: &str, reads: &mut Reads) {
    match kind {
        KeyKind::Job { unit, field } => {
            let known = view.units.contains_key(unit);
            let reread = match field {
                // New or replaced contents: it may be a global unit, or change one of ours.
                Some("object") => true,
                Some("target") => known || event.node.value.as_deref() == Some(me),
                Some("target-state") | None => known,
                // Launch heartbeats (`job-state`) and anything else do not change what runs.
                _ => false,
            };
            if reread {
                reads.units.insert(unit.to_owned());
            }
        }
        KeyKind::Machine { id, field } if id == me && matches!(field, None | Some("metadata")) => {
            reads.metadata = true;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use kv_core::{Action, NodeView};

    use super::*;
    use crate::registry::{JobState, Keys, UnitContents};

    fn event(key: &str, value: Option<&str>) -> Event {
        Event {
            action: Action::Set,
            node: NodeView {
                key: key.into(),
                value: value.map(Into::into),
                ..NodeView::default()
            },
            prev_node: None,
            index: 1,
            batch: None,
        }
    }

    /// Which events make the agent of `m1` re-read something.
    #[test]
    fn only_events_concerning_this_machine_are_followed() {
        let keys = Keys::default();
        let mut view = View::default();
        view.units.insert(
            "known.service".into(),
            Unit {
                name: "known.service".into(),
                contents: Arc::new(
                    UnitContents::from_text("[Service]\nExecStart=/bin/true\n").unwrap(),
                ),
                desired: JobState::Launched,
                target: Some("m1".into()),
                launched_on: None,
            },
        );
        let reads_for = |key: &str, value: Option<&str>| {
            let key = format!("/_coreos.com/fleet/{key}");
            let mut reads = Reads::default();
            classify_event(
                keys.classify(&key),
                &event(&key, value),
                &view,
                "m1",
                &mut reads,
            );
            (reads.units.into_iter().collect::<Vec<_>>(), reads.metadata)
        };
        let unit = |n: &str| (vec![n.to_string()], false);
        let nothing = (Vec::<String>::new(), false);
        // New or replaced contents: always (it may be a global unit).
        assert_eq!(
            reads_for("job/new.service/object", Some("{}")),
            unit("new.service")
        );
        // Schedules: onto this machine, or of a unit known here.
        assert_eq!(
            reads_for("job/new.service/target", Some("m1")),
            unit("new.service")
        );
        assert_eq!(reads_for("job/new.service/target", Some("m2")), nothing);
        assert_eq!(
            reads_for("job/known.service/target", None),
            unit("known.service")
        );
        // Desired states and destruction: of units known here only.
        assert_eq!(
            reads_for("job/known.service/target-state", Some("loaded")),
            unit("known.service")
        );
        assert_eq!(
            reads_for("job/other.service/target-state", Some("loaded")),
            nothing
        );
        assert_eq!(reads_for("job/known.service", None), unit("known.service"));
        assert_eq!(reads_for("job/other.service", None), nothing);
        // Heartbeats, states, presences, other machines, the lease: never.
        assert_eq!(
            reads_for("job/known.service/job-state", Some("m1")),
            nothing
        );
        assert_eq!(reads_for("states/known.service/m1", Some("{}")), nothing);
        assert_eq!(reads_for("machines/m1/object", Some("{}")), nothing);
        assert_eq!(reads_for("machines/m2/metadata/zone", Some("a")), nothing);
        assert_eq!(reads_for("lease/engine-leader", Some("{}")), nothing);
        // This machine's dynamic metadata.
        assert_eq!(
            reads_for("machines/m1/metadata/zone", Some("a")),
            (vec![], true)
        );
    }
}
