//! [`Error`]: why kvd's server could not start, or stopped with an error.

use kv_client::tls::TlsError;

use crate::backend::memory::MemoryError;

/// Why [`crate::run`] (or [`crate::Config`]'s checks) failed. Each variant says what was
/// being done; the underlying error is its `source()` (print the chain, as kvd does with
/// `{:#}` through anyhow, to see both).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag, or a combination of flags, that cannot work; the message names the flag.
    #[error("{0}")]
    Config(String),
    /// A TLS file or setting (the error names the flag and the file).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A file, directory or socket operation failed.
    #[error("{what}")]
    Io {
        /// What was being done (`binding client URL http://...`, `reading <path>`).
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The member's identity file is not one kvd wrote.
    #[error("{what}")]
    Identity {
        /// The file, and what is wrong with it.
        what: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// raft-store refused the member's configuration or data directory.
    #[error("{what}")]
    Raft {
        /// What was being done.
        what: String,
        /// raft-store's error.
        source: raft_store::Error,
    },
    /// A restored store (`kvctl snapshot restore`'s) is not a kv-core snapshot.
    #[error("{what}")]
    Snapshot {
        /// The file.
        what: String,
        /// kv-core's error.
        source: kv_core::SnapshotError,
    },
    /// The memory backend's store could not be loaded or saved.
    #[error("{what}")]
    Memory {
        /// What was being done.
        what: String,
        /// The backend's error.
        source: MemoryError,
    },
    /// A client listener's server task ended abnormally.
    #[error("server task")]
    Task(#[from] tokio::task::JoinError),
}

/// Result type of the server's set-up and run.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `return Err(Error::Config(format!(...)))`.
macro_rules! bail_config {
    ($($arg:tt)*) => {
        return Err($crate::Error::Config(format!($($arg)*)))
    };
}
pub(crate) use bail_config;

/// The [`Error::Io`] of `what`, for `map_err`.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
