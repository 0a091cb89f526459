//! Running units on a machine: systemd over D-Bus, a native process supervisor, and a fake.
//!
//! [`UnitDriver`] is what a fleet agent needs from a machine: load a unit (name and file
//! contents), start, stop, reload and unload it, list the units' states in systemd's own
//! vocabulary ([`UnitState`]: [`LoadState`], [`ActiveState`] and the sub-state, e.g.
//! `loaded/active/running`, `failed/failed`, `activating/auto-restart`), [`subscribe`] to
//! state changes and read or follow a unit's output ([`logs`]). The agent is generic over
//! the trait and never knows which implementation it drives:
//!
//! * [`ProcessDriver`]: a native supervisor implementing the `[Service]` semantics people
//!   rely on (`Type=`, the `Exec*=` commands and prefixes, `Restart=`, start limits,
//!   timeouts, `KillMode=`, environment, users, cgroup limits where the host allows) over
//!   real processes, with bounded per-unit logs, surviving its own restart.
//! * [`SystemdDriver`]: systemd itself over D-Bus (system or user manager), as fleet's
//!   agent drives it; logs come from the journal.
//! * `FakeDriver` (feature `test-util`): in-memory, for other crates' tests.
//!
//! Every operation is cancel-safe: start and stop return once the request is queued (like
//! a systemd job) and the unit's supervisor carries it out whether or not the caller keeps
//! waiting; watch [`subscribe`] or poll [`list`] for the outcome.
//!
//! [`subscribe`]: UnitDriver::subscribe
//! [`logs`]: UnitDriver::logs
//! [`list`]: UnitDriver::list
//!
//! # Example
//!
//! ```
//! use systemd_driver::{ActiveState, LogOptions, ProcessDriver, ProcessDriverConfig, UnitDriver};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let driver = ProcessDriver::open(ProcessDriverConfig::new(dir.path())).await?;
//! driver
//!     .load("hello.service", "[Service]\nType=oneshot\nExecStart=/bin/echo hello\n")
//!     .await?;
//! let mut changes = driver.subscribe().await?;
//! driver.start("hello.service").await?;
//! // A oneshot service without RemainAfterExit= runs, then goes back to inactive/dead.
//! loop {
//!     let change = changes.recv().await?;
//!     let state = change.state.expect("still loaded");
//!     if state.active == ActiveState::Inactive {
//!         assert_eq!(state.to_string(), "loaded/inactive/dead");
//!         break;
//!     }
//! }
//! let mut log = driver.logs("hello.service", LogOptions::default()).await?;
//! assert_eq!(log.next().await.map(|l| l.message).as_deref(), Some("hello"));
//! driver.unload("hello.service").await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
mod log;
mod process;
mod state;
mod systemd;

#[cfg(feature = "test-util")]
pub mod fake;

use std::future::Future;

pub use error::{Error, Result};
pub use log::{LogLine, LogOptions, LogStream};
pub use process::{CgroupSupport, ProcessDriver, ProcessDriverConfig, kill_orphaned_units};
pub use state::{
    ActiveState, LoadState, RecvError, ServiceResult, StateChange, Subscription, UnitState,
    UnitStatus,
};
pub use systemd::{Instance, SystemdDriver, SystemdDriverConfig, booted_with_systemd};

#[cfg(feature = "test-util")]
pub use fake::FakeDriver;

/// What an agent needs from a machine to run units. See the crate docs.
///
/// All methods take `&self` and may be called concurrently; calls about one unit are
/// carried out in the order they were made.
pub trait UnitDriver: Send + Sync + 'static {
    /// Makes `contents` the unit file of `name` (replacing an earlier one: a running unit
    /// keeps running and uses the new file at its next start).
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a bad name, [`Error::BadUnit`] for a file the driver
    /// cannot run (the unit is then not loaded), I/O and D-Bus errors.
    fn load(&self, name: &str, contents: &str) -> impl Future<Output = Result<()>> + Send;

    /// Loads several units at once (systemd: one `daemon-reload` for the batch).
    ///
    /// # Errors
    /// As [`load`](Self::load); stops at the first failure.
    fn load_all(&self, units: &[(String, String)]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for (name, contents) in units {
                self.load(name, contents).await?;
            }
            Ok(())
        }
    }

    /// Asks for the unit to start (systemd `StartUnit(name, "replace")`). Returns once the
    /// request is accepted; the unit then moves through `activating` to `active` or `failed`.
    ///
    /// # Errors
    /// [`Error::NotLoaded`], [`Error::StartLimitHit`] when started too often.
    fn start(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Asks for the unit to stop (systemd `StopUnit(name, "replace")`). Returns once the
    /// request is accepted.
    ///
    /// # Errors
    /// [`Error::NotLoaded`].
    fn stop(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Runs the unit's `ExecReload=` (systemd `ReloadUnit`).
    ///
    /// # Errors
    /// [`Error::NotLoaded`]; [`Error::Unsupported`] when the unit is not active or has no
    /// `ExecReload=`.
    fn reload(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Stops the unit, then forgets it: disable, reset-failed, remove its file. Unloading a
    /// unit that is not loaded succeeds.
    ///
    /// # Errors
    /// I/O and D-Bus errors.
    fn unload(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Unloads several units at once (systemd: one `daemon-reload` for the batch).
    ///
    /// # Errors
    /// As [`unload`](Self::unload); stops at the first failure.
    fn unload_all(&self, names: &[String]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for name in names {
                self.unload(name).await?;
            }
            Ok(())
        }
    }

    /// The states of all units loaded through this driver, sorted by name.
    ///
    /// # Errors
    /// D-Bus errors.
    fn list(&self) -> impl Future<Output = Result<Vec<UnitStatus>>> + Send;

    /// The state of one unit (`not-found/inactive/dead` when it is not loaded).
    ///
    /// # Errors
    /// D-Bus errors.
    fn status(&self, name: &str) -> impl Future<Output = Result<UnitStatus>> + Send;

    /// A stream of the state changes of units loaded through this driver, from now on.
    ///
    /// # Errors
    /// D-Bus errors.
    fn subscribe(&self) -> impl Future<Output = Result<Subscription>> + Send;

    /// The unit's output: the kept lines (or the last `opts.lines`), then, with
    /// `opts.follow`, new lines as they come.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Journal`].
    fn logs(&self, name: &str, opts: LogOptions) -> impl Future<Output = Result<LogStream>> + Send;
}
