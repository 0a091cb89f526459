//! Error types: [`StorageError`] for the data directory and the log, [`Error`] for the node.

use std::path::PathBuf;

/// Errors from the data directory and the raft log storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// Another process (or another handle in this process) holds the directory's lock.
    #[error("data directory {path} is locked by another process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The directory holds files that raft-store did not write.
    #[error("data directory {path} is not a raft-store directory: {detail}")]
    Foreign {
        /// The data directory.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The directory was written by a newer raft-store with a format this one cannot read.
    #[error("data directory {path} has format version {found}, this build reads up to {supported}")]
    NewerVersion {
        /// The data directory.
        path: PathBuf,
        /// The format version on disk.
        found: u32,
        /// The newest format version this build reads.
        supported: u32,
    },
    /// Stored bytes failed a checksum or could not be decoded.
    #[error("corrupt data in {what}: {detail}")]
    Corrupt {
        /// Which record (key or file) is corrupt.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// The requested entries were compacted away.
    #[error("log compacted: index {index} is below the first index {first}")]
    Compacted {
        /// The requested index.
        index: u64,
        /// The first index still in the log.
        first: u64,
    },
    /// The requested entries are beyond the end of the log.
    #[error("log unavailable: index {index} is past the last index {last}")]
    Unavailable {
        /// The requested index.
        index: u64,
        /// The last index in the log.
        last: u64,
    },
    /// An append would leave a gap or rewrite compacted entries.
    #[error("invalid append: first new index {first_new}, log spans {first}..={last}")]
    BadAppend {
        /// Index of the first entry appended.
        first_new: u64,
        /// First index in the log.
        first: u64,
        /// Last index in the log.
        last: u64,
    },
    /// A snapshot older than the log's state was offered.
    #[error("snapshot at index {index} is older than the log's first index {first}")]
    SnapshotOutOfDate {
        /// The snapshot's index.
        index: u64,
        /// The log's first index.
        first: u64,
    },
}

impl From<rocksdb::Error> for StorageError {
    fn from(e: rocksdb::Error) -> Self {
        StorageError::Rocks(e.into_string())
    }
}

impl From<StorageError> for raft::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Compacted { .. } => raft::Error::Store(raft::StorageError::Compacted),
            StorageError::Unavailable { .. } => raft::Error::Store(raft::StorageError::Unavailable),
            StorageError::SnapshotOutOfDate { .. } => {
                raft::Error::Store(raft::StorageError::SnapshotOutOfDate)
            }
            other => raft::Error::Store(raft::StorageError::Other(Box::new(other))),
        }
    }
}

/// Errors from a running node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Raft refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No leader is known, so the request could not be forwarded.
    #[error("no leader is known; retry later")]
    NoLeader,
    /// The request did not complete in time; a write may or may not have been applied.
    #[error("request timed out after {0:?}; its outcome is unknown")]
    Timeout(std::time::Duration),
    /// A new term began (the leader changed) while the request was in flight; a write may
    /// or may not have been applied, as after a timeout, but the caller learns it at once.
    #[error(
        "the leader changed (now term {term}) while the request was in flight; its outcome is unknown"
    )]
    LeaderChanged {
        /// The term the member moved to.
        term: u64,
    },
    /// The node has shut down (or was removed from the cluster).
    #[error("the node has stopped")]
    Stopped,
    /// A command could not be encoded or decoded.
    #[error("command codec: {0}")]
    Codec(String),
    /// A command's encoding is larger than [`crate::MAX_COMMAND_BYTES`]; nothing was
    /// proposed.
    #[error("command of {size} bytes (encoded) exceeds the limit of {limit} bytes")]
    CommandTooLarge {
        /// The command's encoded size.
        size: usize,
        /// The limit, [`crate::MAX_COMMAND_BYTES`].
        limit: usize,
    },
    /// A membership operation was refused.
    #[error("membership: {0}")]
    Membership(String),
    /// A watch asked for events no longer in history.
    #[error("watch from index {requested}: history starts at {oldest}")]
    HistoryCleared {
        /// The index asked for.
        requested: u64,
        /// The oldest index still available.
        oldest: u64,
    },
    /// A failpoint (feature `failpoints`) stopped the member at the named boundary.
    #[error("stopped by the failpoint at {0}")]
    Injected(&'static str),
    /// The state machine rejected a snapshot.
    #[error("state machine snapshot: {0}")]
    Snapshot(String),
}

/// Result with the node's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
