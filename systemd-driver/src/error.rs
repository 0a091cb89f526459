//! The crate's error type.

use std::path::PathBuf;

/// Everything a [`UnitDriver`](crate::UnitDriver) operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The unit name is not a valid unit name (or not a kind this driver can run).
    #[error("invalid unit name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The unit file could not be understood.
    #[error("unit {unit}: line {line}: {message}")]
    BadUnit {
        /// The unit whose file is bad.
        unit: String,
        /// 1-based line in the unit file (0 when the problem is not tied to one line).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The unit has not been loaded.
    #[error("unit {0} is not loaded")]
    NotLoaded(String),
    /// The unit refused to start because it was started too often
    /// (`StartLimitIntervalSec=`/`StartLimitBurst=`).
    #[error("unit {0}: start request repeated too quickly (start-limit-hit)")]
    StartLimitHit(String),
    /// A unit setting needs a feature this host does not offer.
    #[error("unit {unit}: {message}")]
    Unsupported {
        /// The unit concerned.
        unit: String,
        /// What is unsupported and why.
        message: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("write unit file", "create state directory", ...).
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call and its subject ("kill process group 1234").
        call: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A D-Bus call to systemd failed.
    #[error("systemd D-Bus {method}: {source}")]
    Dbus {
        /// The D-Bus method or operation.
        method: String,
        /// The underlying error.
        #[source]
        source: Box<zbus::Error>,
    },
    /// Reading the journal failed.
    #[error("journal for {unit}: {message}")]
    Journal {
        /// The unit whose journal was read.
        unit: String,
        /// What went wrong.
        message: String,
    },
    /// The driver has shut down.
    #[error("the driver has shut down")]
    Closed,
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// A name systemd's rules refuse (`unit_parser::name`), or one this driver cannot run.
    pub(crate) fn invalid_name(name: &str, reason: impl std::fmt::Display) -> Self {
        Error::InvalidName {
            name: name.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn bad_unit(unit: &str, line: usize, message: impl Into<String>) -> Self {
        Error::BadUnit {
            unit: unit.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
