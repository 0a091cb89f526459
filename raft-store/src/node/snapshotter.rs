//! Snapshots taken off the raft loop, on a thread of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::SnapshotMetadata;
use tokio::sync::mpsc;

use super::Shared;
use super::raft_loop::failpoint;
use super::snapshot_format::encode_snapshot_until;
use crate::config::Member;
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::storage::{LogStore, RocksLogStore};

/// What a snapshot thread did.
pub(super) struct Saved {
    pub(super) bytes: usize,
    pub(super) encode: Duration,
}

/// A snapshot being encoded and saved on a thread of its own. A state machine of a million
/// keys takes seconds to encode and write, longer than an election timeout: on the loop, that
/// stopped the leader's heartbeats and made the followers elect another (etcd, too, saves its
/// snapshots off its raft loop). Meanwhile the loop keeps ticking, replicating and persisting,
/// and keeps the committed entries (`Loop::apply_or_defer`) until the thread has let go of
/// the state machine.
pub(super) struct Snapshotter {
    pub(super) index: u64,
    pub(super) started: Instant,
    /// Set once the thread has let go of the state machine.
    encoded: Arc<AtomicBool>,
    /// Set once the thread has its result (before its last wake-up: the loop may look
    /// before the thread has exited, so `JoinHandle::is_finished` would miss it).
    done: Arc<AtomicBool>,
    /// Tells the thread not to save (the member is being dropped, as in a crash).
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Saved>>>,
}

impl Snapshotter {
    /// Starts encoding the state machine and `members` as of `md.index`, then saving them to
    /// `store`; `wake` is sent to when the encoding is done and again when the thread ends.
    pub(super) fn start<S: StateMachine>(
        shared: Arc<Shared<S>>,
        store: RocksLogStore,
        md: SnapshotMetadata,
        members: BTreeMap<u64, Member>,
        wake: mpsc::UnboundedSender<()>,
    ) -> Result<Snapshotter> {
        let id = shared.id;
        let index = md.index;
        let encoded = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (encoded, done, stop) = (encoded.clone(), done.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("raft-snap-{id:x}"))
                .spawn(move || {
                    let t = Instant::now();
                    let data = {
                        let sm = shared.sm.read();
                        encode_snapshot_until(&members, &*sm, &stop)
                    };
                    encoded.store(true, Ordering::Release);
                    let _ = wake.send(());
                    let encode = t.elapsed();
                    let result = data.and_then(|data| {
                        if stop.load(Ordering::Acquire) {
                            return Err(Error::Stopped);
                        }
                        failpoint(id, "raft_store::before_snapshot")?;
                        let bytes = data.len();
                        store.save_snapshot(&md, Bytes::from(data))?;
                        failpoint(id, "raft_store::after_snapshot")?;
                        Ok(Saved { bytes, encode })
                    });
                    done.store(true, Ordering::Release);
                    let _ = wake.send(());
                    result
                })
                .map_err(|e| Error::Config(format!("starting the snapshot thread: {e}")))?
        };
        Ok(Snapshotter {
            index,
            started: Instant::now(),
            encoded,
            done,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the thread has let go of the state machine.
    pub(super) fn encoded(&self) -> bool {
        self.encoded.load(Ordering::Acquire)
    }

    /// Whether the thread has its result ([`Snapshotter::join`] then returns at once).
    pub(super) fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Waits for the thread and returns what it did.
    pub(super) fn join(&mut self) -> Result<Saved> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Snapshot("the snapshot thread panicked".into())),
            None => Err(Error::Stopped),
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
