//! The scheduler's error type.

/// What can go wrong when feeding the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two machines with one ID, or a machine added twice.
    #[error("machine {id:?} is already in the cluster")]
    DuplicateMachine {
        /// The machine ID.
        id: String,
    },
    /// A machine ID that is not in the cluster.
    #[error("no machine {id:?} in the cluster")]
    UnknownMachine {
        /// The machine ID.
        id: String,
    },
    /// Two units with one name, or a unit added twice.
    #[error("unit {name:?} is already in the cluster")]
    DuplicateUnit {
        /// The unit name.
        name: String,
    },
    /// A unit name that is not in the cluster.
    #[error("no unit {name:?} in the cluster")]
    UnknownUnit {
        /// The unit name.
        name: String,
    },
    /// An empty machine ID or unit name.
    #[error("empty {what}")]
    Empty {
        /// What was empty ("machine ID", "unit name").
        what: &'static str,
    },
    /// A strategy name that is not `least-loaded`, `bin-pack` or `spread:<key>`.
    #[error("unknown strategy {text:?} (expected least-loaded, bin-pack or spread:<key>)")]
    BadStrategy {
        /// The text given.
        text: String,
    },
    /// A desired state that is not `inactive`, `loaded` or `launched`.
    #[error("unknown desired state {text:?} (expected inactive, loaded or launched)")]
    BadDesired {
        /// The text given.
        text: String,
    },
}

/// The scheduler's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
