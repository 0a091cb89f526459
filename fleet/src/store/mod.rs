//! The store under fleet's registry: an etcd-v2-shaped key space spoken in kv-core's words.
//!
//! [`KvStore`] is the whole contract the registry needs: apply a kv-core [`Op`], read a key
//! (optionally its subtree), and follow a subtree's events from an index. Its vocabulary
//! is kv-core's ([`Op`], [`Event`], [`kv_core::Error`] with etcd's codes), so every
//! implementation answers in the same terms as kvd itself:
//!
//! * [`etcd::EtcdStore`]: any etcd v2 keys API over HTTP (kvd, or a real
//!   `etcd --enable-v2`). It has no transactions: [`KvStore::supports_txn`] is false and
//!   the registry falls back to single-key conditional writes, as fleet 1.0 did.
//!
//! * [`embedded::EmbeddedStore`] (feature `embedded`, on by default): a kv-server backend
//!   in this process, used directly: fleetd's replicated store.
//!
//! * [`kvd::KvdStore`]: a remote kvd cluster over its gRPC API (`kv.v1`, kv-client), with
//!   transactions.

#[cfg(feature = "embedded")]
pub mod embedded;
pub mod etcd;
pub mod kvd;

use std::future::Future;

use kv_core::{Event, Op};
use tokio::sync::mpsc;

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store refused the operation with one of etcd's errors (key not found, compare
    /// failed, ...), as kv-core defines them.
    #[error(transparent)]
    Kv(#[from] kv_core::Error),
    /// The store could not be reached, or did not answer in time.
    #[error("store {endpoint} unavailable: {detail}")]
    Unavailable {
        /// The endpoint that failed.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The store answered, but not as an etcd v2 store would.
    #[error("store {endpoint} answered unexpectedly: {detail}")]
    Protocol {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The store cannot run this kind of operation (a transaction on a plain etcd).
    #[error("store {endpoint} does not support {what}")]
    Unsupported {
        /// The endpoint.
        endpoint: String,
        /// The operation.
        what: &'static str,
    },
}

impl StoreError {
    /// etcd's error code, when the store refused the operation.
    pub fn code(&self) -> Option<u32> {
        match self {
            StoreError::Kv(e) => Some(e.code()),
            _ => None,
        }
    }

    /// Error 100: the key does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(100)
    }

    /// Error 105: the key exists already.
    pub fn is_exists(&self) -> bool {
        self.code() == Some(105)
    }

    /// Error 101: a compare-and-swap or compare-and-delete condition failed.
    pub fn is_compare_failed(&self) -> bool {
        self.code() == Some(101)
    }

    /// Error 401: a watch asked for events older than the store keeps.
    pub fn is_index_cleared(&self) -> bool {
        self.code() == Some(401)
    }

    /// Whether retrying later may succeed (the store was unreachable or busy), as opposed
    /// to a refusal that will repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            // 300 (raft internal: no leader, timeout) and 301 (election) pass.
            StoreError::Kv(e) => matches!(e.code(), 300 | 301),
            _ => false,
        }
    }
}

/// A subtree's events, in index order, from a starting index on.
///
/// The stream ends with an error when it cannot go on: [`StoreError::is_index_cleared`]
/// when the start is older than the store's history, or a transient error when the store
/// went away. Either way the follower re-reads the subtree and watches again from the
/// index of that read; dropping the `Watch` stops it.
#[derive(Debug)]
pub struct Watch {
    /// The events; each is a single-key event (never a batch summary).
    pub events: mpsc::Receiver<Result<Event>>,
}

/// What fleet's registry needs from a store. Implementations are shared (`Arc`) between the
/// engine, the agent and the API, so every method takes `&self`.
pub trait KvStore: Send + Sync + 'static {
    /// Applies one write and returns its event. A [`Op::Txn`] returns the summary event,
    /// whose `batch` says whether the comparisons held.
    ///
    /// # Errors
    /// [`StoreError::Kv`] when the store refuses the operation;
    /// [`StoreError::Unsupported`] for a transaction when [`KvStore::supports_txn`] is
    /// false; [`StoreError::Unavailable`] when it could not be carried out.
    fn apply(&self, op: Op) -> impl Future<Output = Result<Event>> + Send;

    /// Reads a key: with `recursive`, its whole subtree, every directory's children sorted
    /// by key. With `quorum` the read is linearizable. The event's `index` is the store's
    /// index at the time of the read, the index to watch from (plus one).
    ///
    /// # Errors
    /// As for [`KvStore::apply`]; error 100 when the key does not exist.
    fn get(
        &self,
        key: &str,
        recursive: bool,
        quorum: bool,
    ) -> impl Future<Output = Result<Event>> + Send;

    /// Follows every event at or below `prefix` whose index is at least `since`.
    ///
    /// # Errors
    /// When the watch cannot be set up; later failures arrive on the stream.
    fn watch(&self, prefix: &str, since: u64) -> impl Future<Output = Result<Watch>> + Send;

    /// Whether [`Op::Txn`] is available (fencing with a compared lease).
    fn supports_txn(&self) -> bool;

    /// Where the store is, for messages.
    fn endpoint(&self) -> &str;
}

impl<S: KvStore> KvStore for std::sync::Arc<S> {
    fn apply(&self, op: Op) -> impl Future<Output = Result<Event>> + Send {
        (**self).apply(op)
    }

    fn get(
        &self,
        key: &str,
        recursive: bool,
        quorum: bool,
    ) -> impl Future<Output = Result<Event>> + Send {
        (**self).get(key, recursive, quorum)
    }

    fn watch(&self, prefix: &str, since: u64) -> impl Future<Output = Result<Watch>> + Send {
        (**self).watch(prefix, since)
    }

    fn supports_txn(&self) -> bool {
        (**self).supports_txn()
    }

    fn endpoint(&self) -> &str {
        (**self).endpoint()
    }
}
