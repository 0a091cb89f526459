//! Unit states in systemd's vocabulary, and the stream of their changes.

use std::fmt;
use std::time::Instant;

use tokio::sync::broadcast;

/// systemd's `LoadState` of a unit, spelled exactly as systemd spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadState {
    /// `stub`: known but not loaded.
    Stub,
    /// `loaded`: the unit file was read and accepted.
    Loaded,
    /// `not-found`: no unit file exists.
    NotFound,
    /// `bad-setting`: the unit file has a setting that makes it unusable.
    BadSetting,
    /// `error`: the unit file could not be parsed.
    Error,
    /// `merged`: merged into another unit.
    Merged,
    /// `masked`: masked (linked to /dev/null or empty).
    Masked,
}

/// systemd's `ActiveState` of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActiveState {
    /// `active`
    Active,
    /// `reloading`
    Reloading,
    /// `inactive`
    Inactive,
    /// `failed`
    Failed,
    /// `activating`
    Activating,
    /// `deactivating`
    Deactivating,
    /// `maintenance` (newer systemd)
    Maintenance,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// The name systemd uses for this state.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),* }
            }

            /// Parses systemd's name for this state; `None` for an unknown name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($ty::$variant),)* _ => None }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(LoadState {
    Stub => "stub",
    Loaded => "loaded",
    NotFound => "not-found",
    BadSetting => "bad-setting",
    Error => "error",
    Merged => "merged",
    Masked => "masked",
});

string_enum!(ActiveState {
    Active => "active",
    Reloading => "reloading",
    Inactive => "inactive",
    Failed => "failed",
    Activating => "activating",
    Deactivating => "deactivating",
    Maintenance => "maintenance",
});

/// The (LoadState, ActiveState, SubState) triple systemd reports for a unit.
///
/// `sub` is a string because sub-states depend on the unit type (`running`, `exited`,
/// `start-pre`, `auto-restart`, `waiting`, `mounted`, ...). Displays as `load/active/sub`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitState {
    /// The load state.
    pub load: LoadState,
    /// The active state.
    pub active: ActiveState,
    /// The type-specific sub-state, as systemd names it.
    pub sub: String,
}

impl UnitState {
    /// Builds a state from its three parts.
    pub fn new(load: LoadState, active: ActiveState, sub: impl Into<String>) -> Self {
        UnitState {
            load,
            active,
            sub: sub.into(),
        }
    }

    /// `loaded/inactive/dead`: the state of a service that is loaded and not running.
    pub fn loaded_dead() -> Self {
        UnitState::new(LoadState::Loaded, ActiveState::Inactive, "dead")
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.load, self.active, self.sub)
    }
}

/// One unit and its state, as listed by [`UnitDriver::list`](crate::UnitDriver::list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    /// The unit name (`foo.service`).
    pub name: String,
    /// Its current state.
    pub state: UnitState,
    /// The main process, when there is one.
    pub main_pid: Option<u32>,
    /// systemd's `Result` property: `success`, `exit-code`, `signal`, `timeout`,
    /// `core-dump`, `start-limit-hit`, `resources`, `protocol`...
    pub result: String,
    /// A human-readable explanation of the last failure or of the latest `STATUS=`
    /// notification, if any.
    pub status_text: Option<String>,
}

/// A unit changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The unit.
    pub name: String,
    /// Its new state; `None` when the unit was unloaded.
    pub state: Option<UnitState>,
    /// When the driver observed the change (for latency measurements).
    pub at: Instant,
}

/// Why [`Subscription::recv`] returned no change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber fell behind and `0` changes were dropped: re-list the states.
    #[error("subscriber lagged behind by {0} state changes")]
    Lagged(u64),
    /// The driver shut down.
    #[error("the driver has shut down")]
    Closed,
}

/// A stream of [`StateChange`]s, from [`UnitDriver::subscribe`](crate::UnitDriver::subscribe).
///
/// Each subscription buffers a bounded number of changes; a slow subscriber gets
/// [`RecvError::Lagged`] and should re-read [`UnitDriver::list`](crate::UnitDriver::list).
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<StateChange>,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<StateChange>) -> Self {
        Subscription { rx }
    }

    /// Waits for the next change. Cancel-safe: dropping the future loses nothing.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] when changes were dropped, [`RecvError::Closed`] at shutdown.
    pub async fn recv(&mut self) -> Result<StateChange, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }
}

/// The sender side shared by drivers: publishes changes to every subscription.
#[derive(Debug, Clone)]
pub(crate) struct Broadcaster {
    tx: broadcast::Sender<StateChange>,
}

impl Broadcaster {
    pub(crate) fn new() -> Self {
        // Large enough for bursts of 1,000 units changing at once without lagging.
        let (tx, _) = broadcast::channel(16_384);
        Broadcaster { tx }
    }

    pub(crate) fn send(&self, name: &str, state: Option<UnitState>) {
        // No subscriber is not an error.
        let _ = self.tx.send(StateChange {
            name: name.to_owned(),
            state,
            at: Instant::now(),
        });
    }

    pub(crate) fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            "stub",
            "loaded",
            "not-found",
            "bad-setting",
            "error",
            "merged",
            "masked",
        ] {
            assert_eq!(LoadState::parse(s).map(LoadState::as_str), Some(s));
        }
        for s in [
            "active",
            "reloading",
            "inactive",
            "failed",
            "activating",
            "deactivating",
        ] {
            assert_eq!(ActiveState::parse(s).map(ActiveState::as_str), Some(s));
        }
        assert_eq!(LoadState::parse("Loaded"), None);
        assert_eq!(UnitState::loaded_dead().to_string(), "loaded/inactive/dead");
    }
}
