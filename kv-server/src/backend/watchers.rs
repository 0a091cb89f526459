//! [`Watchers`]: the channels of the watchers registered in a kv-core store. Both backends
//! keep one next to their store.

use std::collections::HashMap;

use kv_core::{Event, Store, WatchStart, WatcherId};
use tokio::sync::mpsc;

use super::WatchRequest;

/// Events a watcher may fall behind before its stream is ended (etcd's channel size).
pub(crate) const WATCH_BUFFER: usize = 100;

/// The channels of the watchers registered in a kv-core store, by watcher id, with whether
/// each one streams.
#[derive(Debug, Default)]
pub(crate) struct Watchers(HashMap<WatcherId, (mpsc::Sender<Event>, bool)>);

impl Watchers {
    /// Watchers whose clients are still there: a watch whose client went away (a gRPC
    /// stream closed after its first event) counts no more, though it stays registered
    /// until the next [`Watchers::prune`].
    pub(crate) fn open(&self) -> usize {
        self.0.values().filter(|(tx, _)| !tx.is_closed()).count()
    }

    /// Drops every channel, which ends every watch.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Registers `req` on `store`; a match already in the history is queued at once.
    pub(crate) fn register(
        &mut self,
        store: &mut Store,
        req: &WatchRequest,
    ) -> Result<mpsc::Receiver<Event>, kv_core::Error> {
        if req.stream && req.all_history {
            return self.register_replay(store, req);
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let start = store.watch(&req.key, req.recursive, req.stream, req.since)?;
        match start {
            WatchStart::Ready(ev, id) => {
                let _ = tx.try_send(ev);
                if let Some(id) = id {
                    self.0.insert(id, (tx, true));
                }
            }
            WatchStart::Pending(id) => {
                self.0.insert(id, (tx, req.stream));
            }
            _ => {}
        }
        Ok(rx)
    }

    /// A stream watch that first replays every match of the history from `req.since`.
    /// The channel has room for the replay on top of the usual buffer, so the replay never
    /// ends the stream; the history's capacity bounds it.
    fn register_replay(
        &mut self,
        store: &mut Store,
        req: &WatchRequest,
    ) -> Result<mpsc::Receiver<Event>, kv_core::Error> {
        let key = kv_core::path::clean(&req.key).into_owned();
        let current = store.index();
        let live_from = current + 1;
        let since = req.since.unwrap_or(live_from);
        let past: Vec<Event> = store
            .history()
            .scan_all(&key, req.recursive, since, current)?
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER + past.len());
        for e in past {
            let _ = tx.try_send(e);
        }
        let start = store.watch(&key, req.recursive, true, Some(since.max(live_from)))?;
        if let WatchStart::Pending(id) = start {
            self.0.insert(id, (tx, true));
        }
        Ok(rx)
    }

    /// Hands `store`'s queued notifications to their watchers; a watcher whose buffer is
    /// full or whose client went away is removed (etcd ends a stream that falls 100 events
    /// behind). Returns whether there was anything to deliver.
    pub(crate) fn deliver(&mut self, store: &mut Store) -> bool {
        let notes = store.take_notifications();
        if notes.is_empty() {
            return false;
        }
        for n in notes {
            let Some((tx, stream)) = self.0.get(&n.watcher) else {
                continue;
            };
            let stream = *stream;
            let ok = tx.try_send(n.event).is_ok();
            if !stream || !ok {
                self.0.remove(&n.watcher);
                if stream {
                    store.unwatch(n.watcher);
                }
            }
        }
        true
    }

    /// Unregisters the watchers whose clients went away.
    pub(crate) fn prune(&mut self, store: &mut Store) {
        self.0.retain(|id, (tx, _)| {
            let open = !tx.is_closed();
            if !open {
                store.unwatch(*id);
            }
            open
        });
    }

    /// Unregisters every watcher from `store` and ends its watch.
    pub(crate) fn unwatch_all(&mut self, store: &mut Store) {
        for id in self.0.keys() {
            store.unwatch(*id);
        }
        self.0.clear();
    }
}
