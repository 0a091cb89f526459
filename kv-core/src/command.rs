//! The inputs of the state machine: [`Command`] (an [`Op`] plus the leader's clock).

use serde::{Deserialize, Serialize};

/// One replicated write. `now` is the proposing leader's clock in milliseconds since the
/// Unix epoch: TTLs are computed from it, and [`Op::Expire`] removes what expired by it,
/// so every replica applying the same commands reaches the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The leader's clock, milliseconds since the Unix epoch.
    pub now: u64,
    /// The operation.
    pub op: Op,
}

impl Command {
    /// A command applying `op` at time `now`.
    pub fn new(now: u64, op: Op) -> Command {
        Command { now, op }
    }
}

/// A mutation of the store, with etcd v2's parameters. `ttl` is in seconds: `Some(n)`
/// expires the node at `now + n` seconds (`Some(0)`: at the next expiry sweep), `None`
/// makes it permanent (every etcd write without `ttl` drops an existing TTL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
#[non_exhaustive]
pub enum Op {
    /// PUT without conditions: creates or replaces a file (a replaced file is re-created:
    /// new `createdIndex`), or creates a directory (`dir`, value ignored). A directory in
    /// the way is error 102. With `refresh`, keeps the value, resets the TTL, requires the
    /// node to exist and does not notify watchers.
    Set {
        /// The key.
        key: String,
        /// The value (ignored for directories and with `refresh`).
        #[serde(default)]
        value: String,
        /// Create a directory.
        #[serde(default)]
        dir: bool,
        /// TTL in seconds.
        #[serde(default)]
        ttl: Option<u64>,
        /// TTL refresh.
        #[serde(default)]
        refresh: bool,
    },
    /// PUT with `prevExist=false`, or POST with `unique`: creates a node that must not
    /// exist. `unique` appends a 20-digit name equal to the new index (in-order keys).
    Create {
        /// The key (the parent directory when `unique`).
        key: String,
        /// The value (ignored for directories).
        #[serde(default)]
        value: String,
        /// Create a directory.
        #[serde(default)]
        dir: bool,
        /// TTL in seconds.
        #[serde(default)]
        ttl: Option<u64>,
        /// In-order key under `key`.
        #[serde(default)]
        unique: bool,
    },
    /// PUT with `prevExist=true`: changes an existing node's value and TTL (a directory
    /// only its TTL).
    Update {
        /// The key.
        key: String,
        /// The new value (kept as is with `refresh`).
        #[serde(default)]
        value: String,
        /// TTL in seconds.
        #[serde(default)]
        ttl: Option<u64>,
        /// TTL refresh.
        #[serde(default)]
        refresh: bool,
    },
    /// PUT with `prevValue` and/or `prevIndex`: writes a file only if the given conditions
    /// hold (`None` = not checked).
    CompareAndSwap {
        /// The key.
        key: String,
        /// The new value (kept as is with `refresh`).
        #[serde(default)]
        value: String,
        /// Required current value.
        #[serde(default)]
        prev_value: Option<String>,
        /// Required current `modifiedIndex`.
        #[serde(default)]
        prev_index: Option<u64>,
        /// TTL in seconds.
        #[serde(default)]
        ttl: Option<u64>,
        /// TTL refresh.
        #[serde(default)]
        refresh: bool,
    },
    /// DELETE: removes a file, or a directory with `dir` (a non-empty one with
    /// `recursive`, which implies `dir`).
    Delete {
        /// The key.
        key: String,
        /// Allow removing an empty directory.
        #[serde(default)]
        dir: bool,
        /// Allow removing a directory and everything below it.
        #[serde(default)]
        recursive: bool,
    },
    /// DELETE with `prevValue` and/or `prevIndex`: removes a file only if the conditions
    /// hold.
    CompareAndDelete {
        /// The key.
        key: String,
        /// Required current value.
        #[serde(default)]
        prev_value: Option<String>,
        /// Required current `modifiedIndex`.
        #[serde(default)]
        prev_index: Option<u64>,
    },
    /// Removes every node whose expiry time is `<= now`, in expiry order, each taking its
    /// own index and producing its own `expire` event (etcd's leader `SYNC`).
    Expire,
    /// A multi-key transaction (beyond etcd v2).
    Txn(Txn),
}

impl Op {
    /// The key the operation is about (`/` for [`Op::Expire`] and [`Op::Txn`]).
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. }
            | Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::CompareAndSwap { key, .. }
            | Op::Delete { key, .. }
            | Op::CompareAndDelete { key, .. } => key,
            Op::Expire | Op::Txn(_) => "/",
        }
    }
}

/// A multi-key transaction: if every comparison holds, the `success` operations run,
/// otherwise the `failure` ones; either list runs atomically (all or nothing: if one
/// operation fails, nothing changes and its error is returned) and all its events share
/// one new index. An empty list that runs consumes no index. The operations are
/// single-key ones ([`Op::Expire`] and nested [`Op::Txn`] are rejected with error 209).
/// In-order creates inside a transaction all get the same name, so a second one in
/// the same directory fails with 105.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Txn {
    /// Conditions, all of which must hold.
    #[serde(default)]
    pub compare: Vec<Compare>,
    /// Operations run when every comparison holds.
    #[serde(default)]
    pub success: Vec<Op>,
    /// Operations run otherwise.
    #[serde(default)]
    pub failure: Vec<Op>,
}

/// A condition on one key of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key.
    pub key: String,
    /// What must hold.
    pub target: CompareTarget,
}

/// What a [`Compare`] checks. Conditions on a value or an index fail for a missing key;
/// a value condition fails for a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum CompareTarget {
    /// The key is a file with exactly this value.
    Value(String),
    /// The key's `modifiedIndex` equals this.
    ModifiedIndex(u64),
    /// The key's `createdIndex` equals this.
    CreatedIndex(u64),
    /// The key exists (`true`) or does not (`false`).
    Exists(bool),
}
