//! `WatchUnits`: each unit's view (its API form and its published states) streamed
//! whenever it changes, followed through the registry's watch.
//!
//! The follower reads every unit and state once, watches the registry from the index after
//! that read, and for each batch of store events under a unit's `job/` or `states/` keys
//! re-reads that unit and sends it if its view differs from the last one sent: heartbeat
//! refreshes and republished states that change nothing are not sent. When the store no
//! longer has the events the watch needs, or a whole subtree changed, everything is read
//! again and the differences are sent (a unit gone since is sent without its form).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use futures::Stream;
use proto::fleet_v1 as w;
use tonic::Status;

use super::{UnitEvent, registry_status};
use crate::api::types::{self, UnitState};
use crate::registry::{KeyKind, PublishedState, Registry, RegistryError};
use crate::store::{KvStore, Watch};

/// A unit's view: what an event carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct View {
    unit: Option<types::Unit>,
    states: Vec<UnitState>,
}

impl View {
    /// The view of a unit (if it exists) and its published states; `reported` as the HTTP
    /// API derives it, from the same states.
    fn of(unit: Option<&crate::registry::Unit>, states: &[PublishedState]) -> View {
        let unit = unit.map(|u| {
            let reported = u
                .target
                .as_ref()
                .is_some_and(|t| states.iter().any(|s| &s.machine_id == t));
            types::Unit::of(u, reported)
        });
        View {
            unit,
            states: states.iter().map(UnitState::of).collect(),
        }
    }

    /// Nothing exists of the unit.
    fn is_empty(&self) -> bool {
        self.unit.is_none() && self.states.is_empty()
    }

    fn event(&self, name: &str, index: u64) -> UnitEvent {
        UnitEvent {
            name: name.to_owned(),
            unit: self.unit.clone(),
            states: self.states.clone(),
            index,
        }
    }
}

/// One `WatchUnits` call's follower.
pub(super) struct Follower<S> {
    registry: Arc<Registry<S>>,
    watch: Watch,
    /// The last view sent (or first read) of every unit of which something exists.
    views: BTreeMap<String, View>,
    /// Events to send before following further.
    queue: VecDeque<UnitEvent>,
}

impl<S: KvStore> Follower<S> {
    /// Reads everything and starts watching after that read; with `initial`, the first
    /// events are the view of every unit that exists, by name.
    pub(super) async fn start(
        registry: Arc<Registry<S>>,
        initial: bool,
    ) -> Result<Follower<S>, RegistryError> {
        let (views, index) = read_all(&registry).await?;
        let watch = registry.watch(index + 1).await?;
        let queue = if initial {
            views.iter().map(|(n, v)| v.event(n, index)).collect()
        } else {
            VecDeque::new()
        };
        Ok(Follower {
            registry,
            watch,
            views,
            queue,
        })
    }

    /// The events, as the service streams them; after an error status, nothing.
    pub(super) fn into_stream(self) -> impl Stream<Item = Result<w::UnitEvent, Status>> + Send {
        futures::stream::unfold(Some(self), |follower| async move {
            let mut f = follower?;
            match f.next().await {
                Ok(e) => Some((Ok(e.into()), Some(f))),
                Err(s) => Some((Err(s), None)),
            }
        })
    }

    async fn next(&mut self) -> Result<UnitEvent, Status> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(e);
            }
            self.follow().await?;
        }
    }

    /// Waits for the store's next events (taking every one already there) and queues the
    /// changes they make.
    async fn follow(&mut self) -> Result<(), Status> {
        let Some(first) = self.watch.events.recv().await else {
            return Err(Status::unavailable("the registry's watch ended"));
        };
        let mut batch = vec![first];
        while let Ok(e) = self.watch.events.try_recv() {
            batch.push(e);
        }
        let keys = self.registry.keys();
        let subtrees = [keys.root().to_owned(), keys.jobs(), keys.states()];
        let (mut names, mut everything, mut rewatch, mut index) =
            (BTreeSet::new(), false, false, 0);
        for event in batch {
            let event = match event {
                Ok(e) => e,
                Err(e) if e.is_index_cleared() => {
                    (everything, rewatch) = (true, true);
                    break;
                }
                Err(e) => return Err(registry_status(e.into())),
            };
            index = index.max(event.index);
            match keys.classify(&event.node.key) {
                KeyKind::Job { unit, .. } | KeyKind::State { unit, .. } => {
                    names.insert(unit.to_owned());
                }
                _ if subtrees.contains(&event.node.key) => everything = true,
                _ => {}
            }
        }
        if everything {
            let (views, read) = read_all(&self.registry).await.map_err(registry_status)?;
            if rewatch {
                self.watch = self
                    .registry
                    .watch(read + 1)
                    .await
                    .map_err(registry_status)?;
            }
            let old = std::mem::take(&mut self.views);
            let names: BTreeSet<&String> = old.keys().chain(views.keys()).collect();
            let none = View::default();
            for name in names {
                let new = views.get(name).unwrap_or(&none);
                if old.get(name).unwrap_or(&none) != new {
                    self.queue.push_back(new.event(name, read));
                }
            }
            self.views = views;
            return Ok(());
        }
        for name in names {
            let view = read_one(&self.registry, &name)
                .await
                .map_err(registry_status)?;
            if self.views.get(&name).unwrap_or(&View::default()) == &view {
                continue;
            }
            self.queue.push_back(view.event(&name, index));
            if view.is_empty() {
                self.views.remove(&name);
            } else {
                self.views.insert(name, view);
            }
        }
        Ok(())
    }
}

/// Every unit's view, and the store index of the read of the units.
async fn read_all<S: KvStore>(
    registry: &Registry<S>,
) -> Result<(BTreeMap<String, View>, u64), RegistryError> {
    let (units, index) = registry.units().await?;
    let (states, _) = registry.states().await?;
    let mut by_unit: BTreeMap<String, Vec<PublishedState>> = BTreeMap::new();
    for s in states {
        by_unit.entry(s.unit.clone()).or_default().push(s);
    }
    let mut views = BTreeMap::new();
    for u in &units {
        let states = by_unit.remove(&u.name).unwrap_or_default();
        views.insert(u.name.clone(), View::of(Some(u), &states));
    }
    for (name, states) in by_unit {
        views.insert(name, View::of(None, &states));
    }
    Ok((views, index))
}

/// One unit's view. A unit whose record is not fleet's counts as absent, as listings
/// leave it out.
async fn read_one<S: KvStore>(registry: &Registry<S>, name: &str) -> Result<View, RegistryError> {
    let unit = match registry.unit(name).await {
        Ok(u) => u,
        Err(RegistryError::BadValue { key, detail }) => {
            tracing::warn!(%key, "watch: skipping a unit: {detail}");
            None
        }
        Err(e) => return Err(e),
    };
    let states = registry.unit_states(name).await?;
    Ok(View::of(unit.as_ref(), &states))
}
