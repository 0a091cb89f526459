//! Unit states in systemd's vocabulary, and the stream of their changes.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
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

/// systemd's `Result` of a service: how its last activation ended (the `Result` property of
/// `org.freedesktop.systemd1.Service`, systemd 252's `service_result_table`).
///
/// The native supervisor produces the known values; [`SystemdDriver`](crate::SystemdDriver)
/// reads the property from systemd and keeps a value this crate does not know (from a newer
/// systemd) as [`Other`](ServiceResult::Other) rather than failing or guessing. Displays as
/// systemd spells it.
///
/// ```
/// use systemd_driver::ServiceResult;
///
/// assert_eq!("exit-code".parse(), Ok(ServiceResult::ExitCode));
/// assert_eq!(ServiceResult::StartLimitHit.to_string(), "start-limit-hit");
/// assert_eq!(ServiceResult::parse("new-thing"), ServiceResult::Other("new-thing".into()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServiceResult {
    /// `success`: the last run ended well (or nothing has run yet).
    #[default]
    Success,
    /// `resources`: systemd could not set up the run (cgroup, environment file, socket...).
    Resources,
    /// `protocol`: the service broke its type's protocol (e.g. `Type=notify` exiting
    /// before `READY=1`, a `Type=forking` daemon with no main process).
    Protocol,
    /// `timeout`: a start, stop or control command took longer than its timeout.
    Timeout,
    /// `exit-code`: a process exited with a non-zero status (or could not be executed).
    ExitCode,
    /// `signal`: the main process was killed by a signal that is not a clean one.
    Signal,
    /// `core-dump`: the main process was killed by a signal and dumped core.
    CoreDump,
    /// `watchdog`: the watchdog's keep-alives stopped (or the service asked for it).
    Watchdog,
    /// `start-limit-hit`: started too often within `StartLimitIntervalSec=`.
    StartLimitHit,
    /// `oom-kill`: the kernel's OOM killer killed a process of the unit.
    OomKill,
    /// `exec-condition`: `ExecCondition=` told systemd to skip the unit.
    ExecCondition,
    /// A value this crate does not know, as systemd spelled it; never one of the names
    /// above ([`parse`](Self::parse) maps those to their variants).
    Other(String),
}

impl ServiceResult {
    /// Every known value, in systemd's table order.
    const KNOWN: [ServiceResult; 11] = [
        ServiceResult::Success,
        ServiceResult::Resources,
        ServiceResult::Protocol,
        ServiceResult::Timeout,
        ServiceResult::ExitCode,
        ServiceResult::Signal,
        ServiceResult::CoreDump,
        ServiceResult::Watchdog,
        ServiceResult::StartLimitHit,
        ServiceResult::OomKill,
        ServiceResult::ExecCondition,
    ];

    /// The name systemd uses for this result.
    pub fn as_str(&self) -> &str {
        match self {
            ServiceResult::Success => "success",
            ServiceResult::Resources => "resources",
            ServiceResult::Protocol => "protocol",
            ServiceResult::Timeout => "timeout",
            ServiceResult::ExitCode => "exit-code",
            ServiceResult::Signal => "signal",
            ServiceResult::CoreDump => "core-dump",
            ServiceResult::Watchdog => "watchdog",
            ServiceResult::StartLimitHit => "start-limit-hit",
            ServiceResult::OomKill => "oom-kill",
            ServiceResult::ExecCondition => "exec-condition",
            ServiceResult::Other(s) => s,
        }
    }

    /// Reads systemd's name for a result; an unknown name becomes
    /// [`Other`](Self::Other).
    pub fn parse(s: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or_else(|| ServiceResult::Other(s.to_owned()))
    }

    /// Whether this is [`Success`](Self::Success).
    pub fn is_success(&self) -> bool {
        *self == ServiceResult::Success
    }
}

impl FromStr for ServiceResult {
    /// Never fails: unknown names are kept as [`ServiceResult::Other`].
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self::parse(s))
    }
}

impl fmt::Display for ServiceResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// systemd's `Result` property: how the unit's last run ended (always
    /// [`ServiceResult::Success`] for units that are not services).
    pub result: ServiceResult,
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
        for (r, name) in ServiceResult::KNOWN.into_iter().zip([
            "success",
            "resources",
            "protocol",
            "timeout",
            "exit-code",
            "signal",
            "core-dump",
            "watchdog",
            "start-limit-hit",
            "oom-kill",
            "exec-condition",
        ]) {
            assert_eq!(ServiceResult::parse(name), r);
            assert_eq!(r.to_string(), name);
        }
        let other = ServiceResult::parse("Success");
        assert_eq!(other, ServiceResult::Other("Success".into()));
        assert_eq!(other.to_string(), "Success");
        assert_eq!(UnitState::loaded_dead().to_string(), "loaded/inactive/dead");
    }
}
