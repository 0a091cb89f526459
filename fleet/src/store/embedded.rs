//! [`EmbeddedStore`]: the store fleetd runs in its own process (kv-server's backends),
//! used directly, with no client and no network in between.
//!
//! Any [`KvBackend`] serves: kv-server's raft backend (replicated and durable: fleetd's
//! default) or its memory backend (tests). Both speak kv-core's `Op`, `Event` and `Error`,
//! so nothing is converted.

use std::sync::Arc;

use kv_core::{Event, Op};
use kv_server::backend::{KvBackend, ReadRequest, WatchRequest};
use tokio::sync::mpsc;

use super::{KvStore, Result, StoreError, Watch};

/// How many events a watch buffers before the forwarder waits for the reader.
const WATCH_BUFFER: usize = 256;

/// A kv-server backend in this process, as a [`KvStore`].
#[derive(Debug)]
pub struct EmbeddedStore<B> {
    backend: Arc<B>,
    label: String,
}

impl<B> Clone for EmbeddedStore<B> {
    fn clone(&self) -> Self {
        EmbeddedStore {
            backend: Arc::clone(&self.backend),
            label: self.label.clone(),
        }
    }
}

impl<B: KvBackend> EmbeddedStore<B> {
    /// The store of `backend`; `label` names it in messages (its client URL, say).
    pub fn new(backend: Arc<B>, label: impl Into<String>) -> EmbeddedStore<B> {
        EmbeddedStore {
            backend,
            label: label.into(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }
}

impl<B: KvBackend> KvStore for EmbeddedStore<B> {
    async fn apply(&self, op: Op) -> Result<Event> {
        if matches!(op, Op::Expire) {
            return Err(StoreError::Unsupported {
                endpoint: self.label.clone(),
                what: "expiry sweeps (the store runs its own)",
            });
        }
        Ok(self.backend.apply(op).await?.event)
    }

    async fn get(&self, key: &str, recursive: bool, quorum: bool) -> Result<Event> {
        let req = ReadRequest {
            key: key.to_owned(),
            recursive,
            sorted: true,
            quorum,
        };
        Ok(self.backend.read(req).await?.event)
    }

    async fn watch(&self, prefix: &str, since: u64) -> Result<Watch> {
        let mut w = self
            .backend
            .watch(WatchRequest {
                key: prefix.to_owned(),
                recursive: true,
                stream: true,
                since: Some(since),
                all_history: true,
            })
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let label = self.label.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = w.events.recv() => match event {
                        Some(e) => {
                            if tx.send(Ok(e)).await.is_err() {
                                return;
                            }
                        }
                        None => {
                            // The backend ends a watcher that fell behind, or stops: the
                            // follower reads again and watches from there.
                            let _ = tx
                                .send(Err(StoreError::Unavailable {
                                    endpoint: label,
                                    detail: "the store ended the watch".into(),
                                }))
                                .await;
                            return;
                        }
                    },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Watch { events: rx })
    }

    fn supports_txn(&self) -> bool {
        true
    }

    fn endpoint(&self) -> &str {
        &self.label
    }
}
