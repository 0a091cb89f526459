//! The seam between kvd's front ends (v2 HTTP and gRPC `kv.v1`) and the replicated store.
//!
//! [`KvBackend`] is what a front end needs from a store: apply a write and get the etcd event
//! back, read at a consistency level, watch from an index, membership and status. The types
//! here are the etcd v2 vocabulary as the HTTP API shows it ([`Node`], [`Event`],
//! [`StoreError`] with etcd's codes), independent of the engine underneath, so the HTTP layer
//! is written and tested once for every backend.
//!
//! Backends:
//! * [`raft::RaftBackend`]: kv-core replicated by raft-store, durable in RocksDB; kvd's
//!   default.
//! * [`memory::MemoryBackend`]: a single-member, **in-memory, non-durable** store: one
//!   `kv_core::Store` owned by one task, commands through a channel, expiry driven by a timer
//!   that issues expire commands. A scratch store for tests and embedding.

pub mod memory;
pub mod raft;

use std::future::Future;

use tokio::sync::mpsc;

/// One node of the key space as the v2 API shows it (etcd's `NodeExtern`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// Absolute key without a trailing slash; empty for the root.
    pub key: String,
    /// The value of a file; `None` for directories and for the `node` of delete/expire events.
    pub value: Option<String>,
    /// Whether this node is a directory.
    pub dir: bool,
    /// Absolute expiration time in milliseconds since the Unix epoch, for nodes with a TTL.
    pub expiration_ms: Option<u64>,
    /// Seconds left, rounded up, as computed when the event was produced; `0` when none.
    pub ttl: i64,
    /// Children of a directory (`None` when not listed or when there are none to show).
    pub nodes: Option<Vec<Node>>,
    /// Index of the write that created the node (`0` only for the root).
    pub created_index: u64,
    /// Index of the last write that modified the node (`0` only for the root).
    pub modified_index: u64,
}

/// What a v2 event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// A read.
    Get,
    /// Set (create or replace).
    Set,
    /// Create (`prevExist=false` or POST).
    Create,
    /// Update (`prevExist=true`).
    Update,
    /// Compare-and-swap.
    CompareAndSwap,
    /// Delete.
    Delete,
    /// Compare-and-delete.
    CompareAndDelete,
    /// A TTL ran out.
    Expire,
}

impl Action {
    /// The name etcd uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Set => "set",
            Action::Create => "create",
            Action::Update => "update",
            Action::CompareAndSwap => "compareAndSwap",
            Action::Delete => "delete",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }
}

/// One v2 event: the result of a read or write, or a watch notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The node after the operation.
    pub node: Node,
    /// The node before a write, when there was one (never with children).
    pub prev_node: Option<Node>,
    /// The etcd index after the operation (the event's own index for watch events).
    pub etcd_index: u64,
}

impl Event {
    /// Whether etcd answers this event with `201 Created`.
    pub fn is_created(&self) -> bool {
        self.action == Action::Create || (self.action == Action::Set && self.prev_node.is_none())
    }
}

/// An error of the v2 key space, with etcd's stable code (see [`error_message`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {} ({cause}) [{index}]", error_message(*.code))]
pub struct StoreError {
    /// etcd's error code (100 key not found, 101 compare failed, ...).
    pub code: u32,
    /// The detail etcd puts in `cause` (usually the key); may be empty.
    pub cause: String,
    /// The etcd index when the error happened (0 for request-parsing errors).
    pub index: u64,
}

impl StoreError {
    /// A new error.
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> Self {
        StoreError {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// The HTTP status etcd answers this error with.
    pub fn http_status(&self) -> u16 {
        match self.code {
            100 => 404,
            101 | 105 => 412,
            102 | 108 => 403,
            110 => 401,
            300 | 301 => 500,
            _ => 400,
        }
    }
}

/// etcd's fixed message for an error code (`v2error.errors`).
pub fn error_message(code: u32) -> &'static str {
    match code {
        100 => "Key not found",
        101 => "Compare failed",
        102 => "Not a file",
        103 => "Reached the max number of peers in the cluster",
        104 => "Not a directory",
        105 => "Key already exists",
        106 => "The prefix of given key is a keyword in etcd",
        107 => "Root is read only",
        108 => "Directory not empty",
        109 => "Peer address has existed",
        110 => "The request requires user authentication",
        200 => "Value is Required in POST form",
        201 => "PrevValue is Required in POST form",
        202 => "The given TTL in POST form is not a number",
        203 => "The given index in POST form is not a number",
        204 => "Value or TTL is required in POST form",
        205 => "The given timeout in POST form is not a number",
        206 => "Name is required in POST form",
        207 => "Index or value is required",
        208 => "Index and value cannot both be specified",
        209 => "Invalid field",
        210 => "Invalid POST form",
        211 => "Value provided on refresh",
        212 => "A TTL must be provided on refresh",
        300 => "Raft Internal Error",
        301 => "During Leader Election",
        400 => "watcher is cleared due to etcd recovery",
        401 => "The event in requested index is outdated and cleared",
        _ => "Unknown error",
    }
}

/// How a TTL is given with a write (etcd's `TTLOptionSet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ttl {
    /// Seconds to live, counted from the `now` the leader stamps on the command; `None`
    /// makes the node permanent (every etcd write without `ttl` drops an existing TTL).
    pub secs: Option<u64>,
    /// Reset the TTL only: keep the value and do not notify watchers.
    pub refresh: bool,
}

/// A mutation of the key space, exactly the v2 store operations etcd dispatches to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOp {
    /// Create or replace a file, or create a directory.
    Set {
        /// Absolute key.
        key: String,
        /// Create a directory instead of a file.
        dir: bool,
        /// Value (ignored for directories).
        value: String,
        /// TTL options.
        ttl: Ttl,
    },
    /// Create a node that must not exist; `unique` appends an in-order name (POST).
    Create {
        /// Absolute key (the parent directory when `unique`).
        key: String,
        /// Create a directory.
        dir: bool,
        /// Value.
        value: String,
        /// Name the node after the new index under `key`.
        unique: bool,
        /// TTL options.
        ttl: Ttl,
    },
    /// Update a node that must exist.
    Update {
        /// Absolute key.
        key: String,
        /// New value.
        value: String,
        /// TTL options.
        ttl: Ttl,
    },
    /// Compare-and-swap a file.
    CompareAndSwap {
        /// Absolute key.
        key: String,
        /// Expected value; empty means no check.
        prev_value: String,
        /// Expected modified index; `0` means no check.
        prev_index: u64,
        /// New value.
        value: String,
        /// TTL options.
        ttl: Ttl,
    },
    /// Delete a node.
    Delete {
        /// Absolute key.
        key: String,
        /// Allow deleting a directory.
        dir: bool,
        /// Allow deleting a non-empty directory (implies `dir`).
        recursive: bool,
    },
    /// Compare-and-delete a file.
    CompareAndDelete {
        /// Absolute key.
        key: String,
        /// Expected value; empty means no check.
        prev_value: String,
        /// Expected modified index; `0` means no check.
        prev_index: u64,
    },
}

impl WriteOp {
    /// The key the operation addresses.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Set { key, .. }
            | WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::CompareAndSwap { key, .. }
            | WriteOp::Delete { key, .. }
            | WriteOp::CompareAndDelete { key, .. } => key,
        }
    }
}

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
    /// The event (its `etcd_index` is the store index after the operation).
    pub event: Event,
    /// Where the serving member's log stood.
    pub raft: RaftPosition,
}

/// A write applied in kv-core's own terms: what the gRPC front end sends as it is, and the
/// only way to see a transaction's individual events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedOp {
    /// kv-core's event (a transaction's summary carries its events in `batch`).
    pub event: kv_core::Event,
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

/// A failure of a keys operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// The store refused the operation (etcd error codes 1xx, 4xx).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation did not complete (no quorum, shutting down, ...): etcd's 300.
    #[error("raft internal error: {0}")]
    Internal(String),
    /// Too many watchers are registered.
    #[error("too many watchers (limit {0})")]
    TooManyWatchers(usize),
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
    /// Applies a write through the log and returns its event once this member applied it.
    ///
    /// # Errors
    /// [`KeysError::Store`] when the store refuses it, [`KeysError::Internal`] when it could not
    /// be committed.
    fn write(&self, op: WriteOp) -> impl Future<Output = Result<Applied, KeysError>> + Send;

    /// Applies a kv-core operation through the log, as [`KvBackend::write`] does, and returns
    /// kv-core's event (for [`kv_core::Op::Txn`], the summary with every event of the branch
    /// that ran).
    ///
    /// # Errors
    /// As for [`KvBackend::write`].
    fn apply(&self, op: kv_core::Op) -> impl Future<Output = Result<AppliedOp, KeysError>> + Send;

    /// Reads a key, locally or (with `quorum`) linearizably.
    ///
    /// # Errors
    /// As for [`KvBackend::write`].
    fn read(&self, req: ReadRequest) -> impl Future<Output = Result<Applied, KeysError>> + Send;

    /// Registers a watcher.
    ///
    /// # Errors
    /// [`KeysError::Store`] with code 401 when `since` is older than the kept history.
    fn watch(&self, req: WatchRequest) -> impl Future<Output = Result<Watch, KeysError>> + Send;

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
    /// [`KeysError::Internal`] when the snapshot cannot be taken.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<u8>, KeysError>> + Send;
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
