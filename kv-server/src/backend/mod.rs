//! The seam between kvd's front ends (v2 HTTP and gRPC `kv.v1`) and the replicated store.
//!
//! [`KvBackend`] is what a front end needs from a store: apply a kv-core [`Op`] through the
//! log and get kv-core's [`Event`] back, read at a consistency level, watch from an index,
//! membership and status. It speaks kv-core's vocabulary ([`Op`], [`Event`], and
//! [`kv_core::Error`] with etcd's codes, messages and causes; a request that could not be
//! committed is etcd's 300, [`internal`]), so the front ends are written and tested once
//! for every backend and write kv-core's types to the wire as they are.
//!
//! Backends:
//! * [`raft::RaftBackend`]: kv-core replicated by raft-store, durable in RocksDB; kvd's
//!   default. Its state machine is [`machine::StoreMachine`].
//! * [`memory::MemoryBackend`]: a single-member, **in-memory, non-durable** store: one
//!   `kv_core::Store` owned by one task, commands through a channel, expiry driven by a timer
//!   that issues expire commands. A scratch store for tests and embedding.

pub mod machine;
pub mod memory;
pub mod raft;
mod watchers;

use std::future::Future;

use kv_core::{Event, Op};
use tokio::sync::mpsc;

/// A read of the key space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Absolute key.
    pub key: String,
    /// Include all descendants.
    pub recursive: bool,
    /// Sort children by key at every level.
    pub sorted: bool,
    /// Linearizable read (through the log) instead of the local state.
    pub quorum: bool,
}

/// A watch registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    /// Absolute key.
    pub key: String,
    /// Also match events under the key.
    pub recursive: bool,
    /// Keep delivering events (otherwise the watch ends after one).
    pub stream: bool,
    /// First index to deliver (`waitIndex`); `None` waits for the next event.
    pub since: Option<u64>,
    /// With `stream`: deliver every matching event of the history from `since`, then the
    /// live ones (gRPC). Without it a stream gets the first match of the history, then
    /// live events only: etcd's v2 behaviour.
    pub all_history: bool,
}

/// Raft position of the member that served a request (the `X-Raft-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftPosition {
    /// Committed raft index.
    pub index: u64,
    /// Current term.
    pub term: u64,
}

/// A successful read or write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// kv-core's event: its `index` is the store index after the operation, and a
    /// transaction's summary carries the events of the branch that ran in `batch`.
    pub event: Event,
    /// Where the serving member's log stood.
    pub raft: RaftPosition,
}

/// A registered watcher. Dropping it unregisters the watcher.
#[derive(Debug)]
pub struct Watch {
    /// The store index when the watch was registered (or the current index when the first
    /// event came from history).
    pub start_index: u64,
    /// Where the serving member's log stood.
    pub raft: RaftPosition,
    /// Matching events. The channel is bounded; the backend closes it when the watcher falls
    /// too far behind (etcd ends the stream the same way).
    pub events: mpsc::Receiver<Event>,
}

/// The cause of etcd's error 300 for a request, key or value beyond the size limits, as
/// both of kvd's front ends give it.
pub const CAUSE_TOO_LARGE: &str = "etcdserver: request is too large";

/// The cause of etcd's error 300 for too many watchers, naming the per-connection limit.
pub fn too_many_watchers_cause(per_conn: usize) -> String {
    format!("etcdserver: too many watchers (limit {per_conn})")
}

/// etcd's error 300 ("Raft Internal Error") with `cause`: what a request that did not
/// complete (no quorum, a timeout, a stopping member, a limit) answers.
pub fn internal(cause: impl Into<String>) -> kv_core::Error {
    kv_core::Error::RaftInternal {
        cause: cause.into(),
        index: 0,
    }
}

/// A cluster member as `/v2/members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Member name (empty until the member started).
    pub name: String,
    /// Peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until the member started).
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

/// A failure of a membership change, mapped to etcd's members API statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberError {
    /// No member with that id (404).
    #[error("No such member: {0:x}")]
    NotFound(u64),
    /// The member was removed before (410).
    #[error("Member permanently removed: {0:x}")]
    Removed(u64),
    /// Id or peer URL already in use (409).
    #[error("{0}")]
    Conflict(String),
    /// The backend cannot change membership (500).
    #[error("{0}")]
    Unsupported(String),
    /// The change did not complete (500).
    #[error("{0}")]
    Internal(String),
}

/// Member and cluster status for `/v2/stats/self`, `/health` and the response headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This member's id.
    pub id: u64,
    /// This member's name.
    pub name: String,
    /// The cluster id (`X-Etcd-Cluster-Id`).
    pub cluster_id: u64,
    /// The leader's id, if there is one.
    pub leader: Option<u64>,
    /// Current raft position.
    pub raft: RaftPosition,
    /// Current etcd index.
    pub etcd_index: u64,
    /// When this member started (ms since the epoch).
    pub start_time_ms: u64,
    /// When the current leader was elected, as far as this member knows (ms since the epoch).
    pub leader_since_ms: u64,
    /// Registered watchers.
    pub watchers: u64,
    /// Nodes removed by expiry since start.
    pub expire_count: u64,
}

/// What a front end needs from a store. Implementations are shared between request handlers
/// (`Arc`), so every method takes `&self`.
pub trait KvBackend: Send + Sync + 'static {
    /// Applies a kv-core operation through the log, stamped with this member's clock, and
    /// returns its event once this member applied it (for [`Op::Txn`], the summary with
    /// every event of the branch that ran).
    ///
    /// # Errors
    /// The store's refusal (etcd's 1xx codes), identical on every member; etcd's 300
    /// ([`internal`]) when the operation could not be committed.
    fn apply(&self, op: Op) -> impl Future<Output = Result<Applied, kv_core::Error>> + Send;

    /// Reads a key, locally or (with `quorum`) linearizably.
    ///
    /// # Errors
    /// As for [`KvBackend::apply`].
    fn read(
        &self,
        req: ReadRequest,
    ) -> impl Future<Output = Result<Applied, kv_core::Error>> + Send;

    /// Registers a watcher.
    ///
    /// # Errors
    /// etcd's 401 when `since` is older than the kept history; 300 when the member is
    /// stopping.
    fn watch(
        &self,
        req: WatchRequest,
    ) -> impl Future<Output = Result<Watch, kv_core::Error>> + Send;

    /// The cluster members.
    fn members(&self) -> Vec<Member>;

    /// Adds a member with these peer URLs.
    ///
    /// # Errors
    /// See [`MemberError`].
    fn add_member(
        &self,
        peer_urls: Vec<String>,
    ) -> impl Future<Output = Result<Member, MemberError>> + Send;

    /// Removes a member.
    ///
    /// # Errors
    /// See [`MemberError`].
    fn remove_member(&self, id: u64) -> impl Future<Output = Result<(), MemberError>> + Send;

    /// Changes a member's peer URLs.
    ///
    /// # Errors
    /// See [`MemberError`].
    fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> impl Future<Output = Result<(), MemberError>> + Send;

    /// This member's status.
    fn status(&self) -> Status;

    /// A consistent snapshot of the store, in kv-core's snapshot format (what
    /// `kvctl snapshot save` downloads and `kvctl snapshot restore` installs).
    ///
    /// # Errors
    /// etcd's 300 ([`internal`]) when the snapshot cannot be taken.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<u8>, kv_core::Error>> + Send;
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
