//! The [`Node`]: a raft member driving `RawNode` on tokio over a [`RocksLogStore`].
//!
//! This file holds the handle API callers use; the member's parts are one file each:
//! [`bootstrap`] writes a new cluster's first state, [`raft_loop`] is the task that owns
//! `RawNode`, [`snapshotter`] takes snapshots off that task, and [`snapshot_format`] is the
//! bytes of a snapshot.

mod bootstrap;
mod raft_loop;
mod snapshot_format;
mod snapshotter;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use raft::{RawNode, ReadOnlyOption, Storage};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::{Config, Member};
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::storage::{DataDir, LogStore, RocksLogStore};
use crate::transport::Transport;

pub(crate) use raft_loop::{blocking, failpoint};

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadConsistency {
    /// Linearizable: confirmed with a quorum through raft's ReadIndex, then served once this
    /// member has applied up to the confirmed index. Reads waiting together share one round.
    Linearizable,
    /// Serializable: served from this member's applied state at once; may be stale.
    Serializable,
}

/// A member's role in raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Following a leader (or waiting for one).
    Follower,
    /// Campaigning.
    Candidate,
    /// Checking whether it could win before campaigning (pre-vote).
    PreCandidate,
    /// The leader.
    Leader,
}

/// A snapshot of a member's raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This member's id.
    pub id: u64,
    /// The leader this member knows of.
    pub leader: Option<u64>,
    /// When this member first saw the current leader lead (wall clock; etcd's
    /// `leaderInfo.startTime`). None while no leader is known.
    pub leader_since: Option<std::time::SystemTime>,
    /// The current term.
    pub term: u64,
    /// This member's role.
    pub role: Role,
    /// The highest index known committed.
    pub commit: u64,
    /// The highest index applied to the state machine.
    pub applied: u64,
    /// The index of the newest snapshot (0 if none).
    pub snapshot_index: u64,
    /// The first index still in the log.
    pub first_index: u64,
    /// The last index in the log.
    pub last_index: u64,
    /// Whether the member has stopped (shut down, removed, or failed).
    pub stopped: bool,
}

/// What flows from the API into the raft loop.
enum Request<S: StateMachine> {
    Propose {
        data: Vec<u8>,
        tx: oneshot::Sender<Result<(u64, Arc<S::Output>)>>,
    },
    ReadIndex {
        tx: oneshot::Sender<Result<u64>>,
    },
    ConfChange {
        cc: ConfChangeV2,
        tx: oneshot::Sender<Result<u64>>,
    },
    TransferLeader {
        to: u64,
    },
    Shutdown,
}

/// State shared between the raft loop and API callers.
struct Shared<S: StateMachine> {
    id: u64,
    sm: RwLock<S>,
    members: RwLock<BTreeMap<u64, Member>>,
    status: Mutex<Status>,
    // Watchers wait on this rather than polling the status.
    applied: watch::Sender<u64>,
    // Sent while holding the state machine's write lock, so a watch that reads history under
    // the read lock and then subscribes sees every event exactly once.
    events: broadcast::Sender<Arc<S::Output>>,
    failure: Mutex<Option<String>>,
}

/// A raft member replicating a [`StateMachine`], durable in a RocksDB data directory.
///
/// Cloning gives another handle on the same member.
pub struct Node<S: StateMachine> {
    shared: Arc<Shared<S>>,
    requests: mpsc::UnboundedSender<Request<S>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    timeout: Duration,
    conf_lock: Arc<tokio::sync::Mutex<()>>,
}

impl<S: StateMachine> Clone for Node<S> {
    fn clone(&self) -> Self {
        Node {
            shared: self.shared.clone(),
            requests: self.requests.clone(),
            task: self.task.clone(),
            timeout: self.timeout,
            conf_lock: self.conf_lock.clone(),
        }
    }
}

impl<S: StateMachine> std::fmt::Debug for Node<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("status", &self.status())
            .finish()
    }
}

/// A stream of state-machine outputs, from [`Node::watch`].
pub struct Watch<S: StateMachine> {
    backlog: VecDeque<Arc<S::Output>>,
    rx: broadcast::Receiver<Arc<S::Output>>,
}

impl<S: StateMachine> std::fmt::Debug for Watch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("backlog", &self.backlog.len())
            .finish()
    }
}

impl<S: StateMachine> Watch<S> {
    /// The next output, in apply order. `None` once the node has stopped.
    ///
    /// # Errors
    ///
    /// [`Error::HistoryCleared`] if this watcher fell so far behind that outputs were
    /// dropped (it should re-watch from its last seen index).
    pub async fn next(&mut self) -> Option<Result<Arc<S::Output>>> {
        if let Some(o) = self.backlog.pop_front() {
            return Some(Ok(o));
        }
        match self.rx.recv().await {
            Ok(o) => Some(Ok(o)),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Err(Error::HistoryCleared {
                requested: 0,
                oldest: n,
            })),
        }
    }
}

fn single(id: u64, ty: ConfChangeType) -> ConfChangeSingle {
    let mut s = ConfChangeSingle {
        node_id: id,
        ..Default::default()
    };
    s.set_change_type(ty);
    s
}

fn conf_change(change: ConfChangeSingle, member: Option<&Member>) -> Result<ConfChangeV2> {
    let mut cc = ConfChangeV2::default();
    cc.mut_changes().push(change);
    if let Some(m) = member {
        cc.context = serde_json::to_vec(m)
            .map_err(|e| Error::Codec(e.to_string()))?
            .into();
    }
    Ok(cc)
}

impl<S: StateMachine> Node<S> {
    /// Opens the member described by `config` in its data directory, bootstrapping a new
    /// cluster if the directory is fresh and `config.initial_members` is set, restoring the
    /// state machine from the newest snapshot and replaying the log otherwise. `machine` is
    /// the empty state machine (replaced by the snapshot's state if there is one).
    ///
    /// Must be called inside a tokio runtime: the raft loop runs as a task on it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid configuration; [`Error::Storage`] for a locked,
    /// foreign, newer or corrupt data directory; [`Error::Snapshot`] if the stored snapshot
    /// does not restore.
    pub async fn open(config: Config, machine: S, transport: impl Transport) -> Result<Self> {
        config.validate()?;
        let dir_path = config.data_dir.clone();
        let (dir, store) = tokio::task::spawn_blocking(move || -> Result<_> {
            let dir = DataDir::open(&dir_path)?;
            let store = RocksLogStore::open(&dir)?;
            Ok((dir, store))
        })
        .await
        .map_err(|e| Error::Config(format!("opening the data directory: {e}")))??;
        Self::start(config, dir, store, machine, Arc::new(transport))
    }

    fn start(
        config: Config,
        dir: DataDir,
        store: RocksLogStore,
        mut machine: S,
        transport: Arc<dyn Transport>,
    ) -> Result<Self> {
        let id = config.id;
        let mut members = BTreeMap::new();
        let mut applied = 0;
        let fresh = store.last_index()? == 0 && store.latest_snapshot().is_none();
        if fresh && !config.initial_members.is_empty() {
            if config.bootstrap_from_machine {
                bootstrap::bootstrap_from_machine(&store, &config.initial_members, &machine)?;
            } else {
                bootstrap::bootstrap(&store, &config.initial_members)?;
            }
        }
        if let Some(snap) = store.latest_snapshot() {
            let (m, sm_bytes) = snapshot_format::decode_snapshot(&snap.data)?;
            machine
                .restore(&mut &sm_bytes[..])
                .map_err(Error::Snapshot)?;
            members = m;
            applied = snap.get_metadata().index;
        }
        let raft_config = raft::Config {
            id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            max_size_per_msg: MAX_MSG_BYTES as u64,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, store.clone(), &logger)?;
        let conf_state = store.initial_state()?.conf_state;
        for m in members.values() {
            transport.set_peer(m.id, &m.peer_urls);
        }
        let (applied_tx, _) = watch::channel(applied);
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            id,
            sm: RwLock::new(machine),
            members: RwLock::new(members),
            status: Mutex::new(Status {
                id,
                leader: None,
                leader_since: None,
                term: raw.raft.term,
                role: Role::Follower,
                commit: raw.raft.raft_log.committed,
                applied,
                snapshot_index: applied,
                first_index: store.first_index()?,
                last_index: store.last_index()?,
                stopped: false,
            }),
            applied: applied_tx,
            events,
            failure: Mutex::new(None),
        });
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let task = raft_loop::spawn(
            shared.clone(),
            raw,
            store,
            dir,
            transport,
            config.clone(),
            conf_state,
            applied,
            req_rx,
        )?;
        Ok(Node {
            shared,
            requests: req_tx,
            task: Arc::new(Mutex::new(Some(task))),
            timeout: config.request_timeout,
            conf_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The member's raft status.
    pub fn status(&self) -> Status {
        self.shared.status.lock().clone()
    }

    /// Why the raft loop stopped, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().clone()
    }

    /// The cluster's members as this member last applied them.
    pub fn members(&self) -> Vec<Member> {
        self.shared.members.read().values().cloned().collect()
    }

    async fn call<T>(&self, req: Request<S>, rx: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.requests.send(req).map_err(|_| Error::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Replicates `command` and applies it; returns the raft index it was applied at and the
    /// state machine's output. Any member accepts writes: followers forward the proposal to
    /// the leader. Returns once the command is durable on a quorum and applied here.
    ///
    /// # Errors
    ///
    /// [`Error::NoLeader`] if no leader is known (retry), [`Error::Timeout`] if it did not
    /// complete in time (its outcome is then unknown), [`Error::Stopped`] after shutdown,
    /// [`Error::CommandTooLarge`] if the encoded command exceeds [`MAX_COMMAND_BYTES`].
    pub async fn write(&self, command: &S::Command) -> Result<(u64, Arc<S::Output>)> {
        let data = serde_json::to_vec(command).map_err(|e| Error::Codec(e.to_string()))?;
        if data.len() > MAX_COMMAND_BYTES {
            return Err(Error::CommandTooLarge {
                size: data.len(),
                limit: MAX_COMMAND_BYTES,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.call(Request::Propose { data, tx }, rx).await
    }

    /// Runs `f` on the state machine with the given consistency.
    ///
    /// # Errors
    ///
    /// For linearizable reads, as [`Node::write`]; serializable reads fail only once the
    /// node has stopped.
    pub async fn read<R>(
        &self,
        consistency: ReadConsistency,
        f: impl FnOnce(&S) -> R,
    ) -> Result<R> {
        if consistency == ReadConsistency::Linearizable {
            let (tx, rx) = oneshot::channel();
            let index = self.call(Request::ReadIndex { tx }, rx).await?;
            self.wait_applied(index).await?;
        } else if self.shared.status.lock().stopped {
            return Err(Error::Stopped);
        }
        let sm = self.shared.sm.read();
        Ok(f(&sm))
    }

    /// Waits until this member has applied `index`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after the request timeout, [`Error::Stopped`] if the node stops.
    pub async fn wait_applied(&self, index: u64) -> Result<()> {
        let mut rx = self.shared.applied.subscribe();
        let wait = rx.wait_for(|&a| a >= index);
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Streams the state machine's outputs: those from its history at or after `from`
    /// (its own event index, see [`StateMachine::history`]) and then every new one as it
    /// is applied on this member. `None` starts at the next applied command.
    ///
    /// # Errors
    ///
    /// [`Error::HistoryCleared`] if `from` is older than the machine's history.
    pub fn watch(&self, from: Option<u64>) -> Result<Watch<S>> {
        let sm = self.shared.sm.read();
        let backlog = match from {
            None => VecDeque::new(),
            Some(i) => sm
                .history(i)
                .ok_or(Error::HistoryCleared {
                    requested: i,
                    oldest: 0,
                })?
                .into_iter()
                .map(Arc::new)
                .collect(),
        };
        let rx = self.shared.events.subscribe();
        drop(sm);
        Ok(Watch { backlog, rx })
    }

    async fn conf(&self, cc: ConfChangeV2) -> Result<u64> {
        // Raft refuses a second change while one is pending; queue them here instead.
        let _one_at_a_time = self.conf_lock.lock().await;
        let (tx, rx) = oneshot::channel();
        self.call(Request::ConfChange { cc, tx }, rx).await
    }

    /// Adds `member` to the cluster, as a learner if `member.is_learner`, else as a voter.
    /// Returns the raft index of the change once applied here. Start the new member with an
    /// empty `initial_members`; it catches up from the log or a snapshot.
    ///
    /// # Errors
    ///
    /// [`Error::Membership`] if the id is in use; otherwise as [`Node::write`].
    pub async fn add_member(&self, member: Member) -> Result<u64> {
        if member.id == 0 || self.shared.members.read().contains_key(&member.id) {
            return Err(Error::Membership(format!(
                "member id {:#x} is zero or in use",
                member.id
            )));
        }
        let ty = if member.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.conf(conf_change(single(member.id, ty), Some(&member))?)
            .await
    }

    /// Changes the peer URLs of member `id` (etcd's member update), keeping its name,
    /// client URLs and role. Every member learns the new URLs through the log and reconnects.
    ///
    /// # Errors
    ///
    /// [`Error::Membership`] if `id` is not a member; otherwise as [`Node::write`].
    pub async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<u64> {
        let mut m = self
            .shared
            .members
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::Membership(format!("member {id:#x} is not in the cluster")))?;
        m.peer_urls = peer_urls;
        // Re-adding a member in its current role changes no configuration; raft commits it
        // like any other change and every member applies the new URLs from its context.
        let ty = if m.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.conf(conf_change(single(id, ty), Some(&m))?).await
    }

    /// Promotes learner `id` to a voter.
    ///
    /// # Errors
    ///
    /// [`Error::Membership`] if `id` is not a learner; otherwise as [`Node::write`].
    pub async fn promote_member(&self, id: u64) -> Result<u64> {
        let mut m = match self.shared.members.read().get(&id) {
            Some(m) if m.is_learner => m.clone(),
            _ => {
                return Err(Error::Membership(format!(
                    "member {id:#x} is not a learner"
                )));
            }
        };
        m.is_learner = false;
        self.conf(conf_change(single(id, ConfChangeType::AddNode), Some(&m))?)
            .await
    }

    /// Removes member `id` from the cluster. A removed member stops its raft loop.
    ///
    /// # Errors
    ///
    /// [`Error::Membership`] if `id` is not a member; otherwise as [`Node::write`].
    pub async fn remove_member(&self, id: u64) -> Result<u64> {
        if !self.shared.members.read().contains_key(&id) {
            return Err(Error::Membership(format!(
                "member {id:#x} is not in the cluster"
            )));
        }
        self.conf(conf_change(single(id, ConfChangeType::RemoveNode), None)?)
            .await
    }

    /// Asks the leader to hand leadership to voter `to`, and waits until this member sees
    /// `to` lead.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if leadership did not move in time.
    pub async fn transfer_leader(&self, to: u64) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let mut rx = self.shared.applied.subscribe();
        loop {
            if self.status().leader == Some(to) {
                return Ok(());
            }
            self.requests
                .send(Request::TransferLeader { to })
                .map_err(|_| Error::Stopped)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(self.timeout));
            }
            // Re-ask every election timeout or so; a transfer is dropped if it times out.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    /// Stops the raft loop and closes the data directory, waiting for both.
    pub async fn shutdown(&self) {
        let _ = self.requests.send(Request::Shutdown);
        let task = self.task.lock().take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Stops the member abruptly, as a crash would: the raft loop is aborted wherever it
    /// is waiting, nothing is flushed beyond what was already synced.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn crash(&self) {
        let task = self.task.lock().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        self.shared.status.lock().stopped = true;
    }
}

/// The largest command [`Node::write`] accepts, in encoded bytes. Raft sends an entry larger
/// than its per-message bound alone, and a peer's gRPC server decodes messages of up to
/// 16 MiB: a larger entry would sit in the leader's log, never reach the followers, and
/// stop every later write from committing. 12 MiB leaves room for the message's envelope,
/// and holds the JSON of any value etcd accepts by default (1.5 MiB, even of control
/// characters, which JSON escapes in 6 bytes each).
pub const MAX_COMMAND_BYTES: usize = 12 << 20;

/// The most entry bytes in one raft message: raft's bound on an append
/// (`max_size_per_msg`), and on the commands stepped into raft as one proposal, which a
/// follower forwards to the leader whole (the peer transport refuses messages over 16 MiB).
pub(crate) const MAX_MSG_BYTES: usize = 1 << 20;
