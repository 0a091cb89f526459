//! Watches: the [`EventHistory`] of the last 1000 events and the [`WatcherHub`] that
//! matches new events against registered watchers.
//!
//! Both are pure data. Matching a live event queues a [`Notification`]; the embedding
//! server drains them with [`crate::Store::take_notifications`] after each apply and hands
//! them to its waiting clients. Watchers are not replicated state: a snapshot does not
//! contain them and a restored store has none.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::event::Event;
use crate::node::Node;
use crate::path::{components, hidden_below, is_under};

/// etcd keeps the last 1000 events for `waitIndex` watches.
pub const HISTORY_CAPACITY: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryEntry {
    pub(crate) event: Event,
    /// Refresh events take a slot but are skipped by scans, as in etcd.
    pub(crate) refresh: bool,
}

/// The last [`HISTORY_CAPACITY`] events, oldest first (etcd's `EventHistory`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventHistory {
    pub(crate) entries: VecDeque<HistoryEntry>,
}

impl EventHistory {
    pub(crate) fn push(&mut self, event: Event, refresh: bool) {
        if self.entries.len() == HISTORY_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(HistoryEntry { event, refresh });
    }

    /// Appends a copy of `event`. Once the history is full, the evicted oldest entry's
    /// buffers are reused for the copy, so a steady stream of writes of similar sizes
    /// allocates nothing here.
    pub(crate) fn push_copy(&mut self, event: &Event, refresh: bool) {
        if self.entries.len() == HISTORY_CAPACITY {
            let mut slot = self.entries.pop_front().expect("full");
            slot.event.copy_from(event);
            slot.refresh = refresh;
            self.entries.push_back(slot);
        } else {
            self.push(event.clone(), refresh);
        }
    }

    /// Index of the oldest kept event (0 when empty).
    pub fn start_index(&self) -> u64 {
        self.entries.front().map_or(0, |e| e.event.index)
    }

    /// Index of the newest kept event (0 when empty).
    pub fn last_index(&self) -> u64 {
        self.entries.back().map_or(0, |e| e.event.index)
    }

    /// Number of kept events.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no event is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.entries.iter().map(|e| &e.event)
    }

    /// The first non-refresh event with index `>= index` that a watch on `key` matches
    /// (etcd's `scan`): same key; below it when `recursive`; or a delete/expire of a
    /// directory containing it. Hidden keys are not filtered here, as in etcd.
    ///
    /// # Errors
    /// [`Error::EventIndexCleared`] (401) when `index` is older than the oldest kept
    /// event, with etcd's cause `the requested history has been cleared [<oldest>/<index>]`
    /// and `current_index` as the error's index.
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        index: u64,
        current_index: u64,
    ) -> Result<Option<&Event>, Error> {
        Ok(self
            .since(index, current_index)?
            .find(|e| history_match(e, key, recursive)))
    }

    /// Every non-refresh event with index `>= index` that a watch on `key` matches, oldest
    /// first, with the indexes they happened at: what a stream watch from `index` replays.
    /// [`EventHistory::scan`] finds only the first, which is all etcd's v2 stream watch
    /// sends; the events of one transaction share an index, so a client cannot get the
    /// rest by scanning again from the next index. `key` must be clean
    /// ([`crate::path::clean`]).
    ///
    /// # Errors
    /// As for [`EventHistory::scan`].
    pub fn scan_all<'a>(
        &'a self,
        key: &'a str,
        recursive: bool,
        index: u64,
        current_index: u64,
    ) -> Result<impl Iterator<Item = &'a Event> + 'a, Error> {
        Ok(self
            .since(index, current_index)?
            .filter(move |e| history_match(e, key, recursive)))
    }

    /// The non-refresh events with index `>= index` (none when `index` is past the newest),
    /// or the 401 of [`EventHistory::scan`] when `index` is older than the history.
    fn since(&self, index: u64, current_index: u64) -> Result<impl Iterator<Item = &Event>, Error> {
        let start = self.start_index();
        if index < start {
            return Err(Error::EventIndexCleared {
                cause: format!("the requested history has been cleared [{start}/{index}]"),
                index: current_index,
            });
        }
        let from = self.entries.partition_point(|e| e.event.index < index);
        Ok(self
            .entries
            .range(from..)
            .filter(|e| !e.refresh)
            .map(|e| &e.event))
    }
}

fn history_match(e: &Event, key: &str, recursive: bool) -> bool {
    let k = e.node.key.as_str();
    k == key
        || (recursive && key == "/")
        || (recursive
            && k.len() > key.len()
            && k.starts_with(key)
            && k.as_bytes()[key.len()] == b'/')
        || (e.removes_dir() && e.prev_node.as_ref().is_some_and(|p| is_under(key, &p.key)))
}

/// Identifies a registered watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WatcherId(pub u64);

/// What [`crate::Store::watch`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchStart {
    /// A matching event was found in the history; nothing was registered unless the watch
    /// is a stream (then `Some` id for the following events).
    Ready(Event, Option<WatcherId>),
    /// Registered; matching events will be queued as [`Notification`]s.
    Pending(WatcherId),
}

/// An event delivered to a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The watcher.
    pub watcher: WatcherId,
    /// The event it matched.
    pub event: Event,
}

#[derive(Debug, Clone)]
struct Watcher {
    key: String,
    recursive: bool,
    stream: bool,
    since_index: u64,
}

/// Registered watchers by watched key (etcd's `watcherHub`).
#[derive(Debug, Default)]
pub struct WatcherHub {
    by_key: BTreeMap<String, Vec<WatcherId>>,
    watchers: HashMap<WatcherId, Watcher>,
    next_id: u64,
    pending: Vec<Notification>,
}

impl WatcherHub {
    /// Number of registered watchers.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether no watcher is registered.
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    pub(crate) fn add(
        &mut self,
        key: String,
        recursive: bool,
        stream: bool,
        since_index: u64,
    ) -> WatcherId {
        let id = WatcherId(self.next_id);
        self.next_id += 1;
        self.by_key.entry(key.clone()).or_default().push(id);
        self.watchers.insert(
            id,
            Watcher {
                key,
                recursive,
                stream,
                since_index,
            },
        );
        id
    }

    pub(crate) fn remove(&mut self, id: WatcherId) -> bool {
        let Some(w) = self.watchers.remove(&id) else {
            return false;
        };
        if let Some(list) = self.by_key.get_mut(&w.key) {
            list.retain(|x| *x != id);
            if list.is_empty() {
                self.by_key.remove(&w.key);
            }
        }
        true
    }

    pub(crate) fn take(&mut self) -> Vec<Notification> {
        std::mem::take(&mut self.pending)
    }

    /// Matches a live event (etcd's `notify` plus the delete callbacks). `removed` is the
    /// subtree a delete/expire took away: watchers on any path that existed in it are
    /// notified as etcd's removal callback does.
    pub(crate) fn notify(&mut self, event: &Event, removed: Option<&Node>) {
        if self.watchers.is_empty() {
            return;
        }
        let key = event.node.key.as_str();
        let mut hits: Vec<WatcherId> = Vec::new();
        if let Some(node) = removed.filter(|n| n.is_dir()) {
            let prefix = format!("{key}/");
            let below = self.by_key.range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ));
            for (path, ids) in below.take_while(|(p, _)| p.starts_with(&prefix)) {
                if exists_in(node, &path[key.len()..]) {
                    for id in ids {
                        if self.watchers[id].since_index <= event.index {
                            hits.push(*id);
                        }
                    }
                }
            }
        }
        let at = |path: &str, hits: &mut Vec<WatcherId>, deleted: bool| {
            if let Some(ids) = self.by_key.get(path) {
                let original = path == key;
                if !original && !deleted && hidden_below(path, key) {
                    return;
                }
                for id in ids {
                    let w = &self.watchers[id];
                    if (w.recursive || original || deleted) && event.index >= w.since_index {
                        hits.push(*id);
                    }
                }
            }
        };
        at("/", &mut hits, false);
        let mut end = 0;
        for c in components(key) {
            end += 1 + c.len();
            at(&key[..end], &mut hits, false);
        }
        if hits.is_empty() {
            return;
        }
        hits.sort_unstable();
        hits.dedup();
        for id in hits {
            if !self.watchers[&id].stream {
                self.remove(id);
            }
            self.pending.push(Notification {
                watcher: id,
                event: event.clone(),
            });
        }
    }
}

/// Whether the relative path `rel` (`/a/b`) exists inside `node`.
fn exists_in(node: &Node, rel: &str) -> bool {
    let mut n = node;
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        match n.children().and_then(|ch| ch.get(c)) {
            Some(child) => n = child,
            None => return false,
        }
    }
    true
}
