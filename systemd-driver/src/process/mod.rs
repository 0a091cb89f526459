//! [`ProcessDriver`]: a native supervisor that runs service units as process trees, for
//! hosts without systemd.
//!
//! Layout of the state directory:
//!
//! ```text
//! units/<name>        the loaded unit files (what is loaded survives a restart)
//! run/<name>.json     main PID, process groups with their leaders' start times, cgroup
//!                     (`null` while the unit is at rest; written in place, kept until unload)
//! logs/<name>.log     stdout+stderr of the unit's processes (+ <name>.log.1 after rotation)
//! notify/<name>       the NOTIFY_SOCKET of a Type=notify unit
//! ```
//!
//! On [`ProcessDriver::open`] every loaded unit gets its supervisor task back; a unit whose
//! recorded main process is still alive (same PID *and* same start time, so a reused PID is
//! never mistaken for it) is adopted as `active/running`; processes recorded for a unit that
//! is no longer loaded, and per-unit cgroups nobody claims, are killed.

mod cgroup;
mod logfile;
mod runner;
mod spawn;
mod sys;
mod user;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use unit_parser::name::{UnitName, UnitType};

pub use cgroup::CgroupSupport;
use logfile::LogFiles;
use runner::{Adopted, Cmd, PidRecord, Proc, Runner, UnitShared};

use crate::UnitDriver;
use crate::config::ServiceConfig;
use crate::error::{Error, Result};
use crate::log::{LogOptions, LogStream};
use crate::state::{
    ActiveState, Broadcaster, LoadState, ServiceResult, Subscription, UnitState, UnitStatus,
};

/// Settings of a [`ProcessDriver`].
#[derive(Debug, Clone)]
pub struct ProcessDriverConfig {
    /// Where unit files, PID records, logs and notify sockets live. Two drivers must not
    /// share one.
    pub state_dir: PathBuf,
    /// A unit's log file is rotated past this size (two files are kept).
    pub log_max_bytes: u64,
    /// Use one cgroup v2 per unit when the host allows it (else process groups only).
    pub cgroups: bool,
}

impl ProcessDriverConfig {
    /// Defaults: 1 MiB of log per unit (times two), cgroups when available.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        ProcessDriverConfig {
            state_dir: state_dir.into(),
            log_max_bytes: 1 << 20,
            cgroups: true,
        }
    }
}

/// What every unit task shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) run_dir: PathBuf,
    pub(crate) notify_dir: PathBuf,
    pub(crate) logs: LogFiles,
    pub(crate) events: Broadcaster,
    pub(crate) cgroups: CgroupSupport,
}

#[derive(Debug)]
struct Handle {
    tx: mpsc::UnboundedSender<Cmd>,
    shared: Arc<UnitShared>,
}

/// The native supervisor. Cheap to clone (clones share the units).
///
/// Dropping the last clone leaves the units' processes running, recorded in the state
/// directory for the next [`ProcessDriver::open`]; call [`ProcessDriver::stop_all`] first
/// for a clean shutdown.
#[derive(Debug, Clone)]
pub struct ProcessDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: Arc<Ctx>,
    units_dir: PathBuf,
    units: Mutex<HashMap<String, Handle>>,
    rotator: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.rotator.abort();
        // Empty unit cgroups go, and then the root. A unit killed a moment ago may still be
        // a zombie waiting to be reaped, so retry for a little while off this thread;
        // populated cgroups (units left running for the next driver to adopt) stay.
        if let Some(root) = self.ctx.cgroups.root.clone() {
            let sweep = move || {
                if let Ok(entries) = std::fs::read_dir(&root) {
                    for e in entries.flatten() {
                        let cg = cgroup::UnitCgroup { path: e.path() };
                        if e.path().is_dir() && !cg.populated() {
                            cg.remove();
                        }
                    }
                }
                std::fs::remove_dir(&root).is_ok() || !root.exists()
            };
            if !sweep() {
                std::thread::spawn(move || {
                    for _ in 0..40 {
                        std::thread::sleep(Duration::from_millis(50));
                        if sweep() {
                            return;
                        }
                    }
                });
            }
        }
    }
}

impl ProcessDriver {
    /// Opens (creating if needed) the state directory and takes over what it records:
    /// loaded units come back, live processes are adopted, orphans are killed.
    ///
    /// # Errors
    /// When the state directory cannot be created or read.
    pub async fn open(config: ProcessDriverConfig) -> Result<ProcessDriver> {
        let dir = &config.state_dir;
        let sub = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            std::fs::create_dir_all(&p).map_err(|e| Error::io("create state directory", &p, e))?;
            Ok(p)
        };
        let (units_dir, run_dir, logs_dir, notify_dir) =
            (sub("units")?, sub("run")?, sub("logs")?, sub("notify")?);
        let cgroups = if config.cgroups {
            let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            CgroupSupport::detect(&format!(
                "flotilla-{:016x}",
                fnv1a(canonical.to_string_lossy().as_bytes())
            ))
        } else {
            CgroupSupport {
                root: None,
                unavailable: Some("disabled by configuration".into()),
                memory: false,
                cpu: false,
            }
        };
        if let Some(reason) = &cgroups.unavailable {
            tracing::info!(
                "process driver: not using cgroups: {reason}; units are tracked by process group"
            );
        }
        let logs = LogFiles::new(logs_dir.clone(), config.log_max_bytes);
        let rotator = {
            let logs = logs.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    // Off the runtime's threads: with a thousand units the scan is about
                    // 2 ms of stat() calls, during which a worker could not run the unit
                    // task that has a state change to report.
                    let (logs, dir) = (logs.clone(), logs_dir.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        let Ok(entries) = std::fs::read_dir(&dir) else {
                            return;
                        };
                        for e in entries.flatten() {
                            let name = e.file_name();
                            if let Some(unit) = name.to_str().and_then(|n| n.strip_suffix(".log")) {
                                logs.rotate_if_needed(unit);
                            }
                        }
                    })
                    .await;
                }
            })
            .abort_handle()
        };
        let ctx = Arc::new(Ctx {
            run_dir,
            notify_dir,
            logs,
            events: Broadcaster::new(),
            cgroups,
        });
        let driver = ProcessDriver {
            inner: Arc::new(Inner {
                ctx,
                units_dir,
                units: Mutex::new(HashMap::new()),
                rotator,
            }),
        };
        driver.recover()?;
        Ok(driver)
    }

    /// What the host's cgroups allow this driver (and why not, when they do not).
    pub fn cgroup_support(&self) -> &CgroupSupport {
        &self.inner.ctx.cgroups
    }

    fn recover(&self) -> Result<()> {
        let ctx = &self.inner.ctx;
        let mut records: HashMap<String, PidRecord> = HashMap::new();
        let entries =
            std::fs::read_dir(&ctx.run_dir).map_err(|e| Error::io("read", &ctx.run_dir, e))?;
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Option<PidRecord>>(&b).ok())
            {
                Some(Some(rec)) => {
                    records.insert(name.to_owned(), rec);
                }
                // A unit at rest: nothing to adopt. The file stays for its next start (and
                // goes below if the unit is no longer loaded).
                Some(None) => {
                    if !self.inner.units_dir.join(name).exists() {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                None => {
                    tracing::warn!(
                        "process driver: unreadable pid record {}, removing",
                        path.display()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let entries = std::fs::read_dir(&self.inner.units_dir)
            .map_err(|e| Error::io("read", &self.inner.units_dir, e))?;
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let cfg = std::fs::read_to_string(&path)
                .map_err(|e| Error::io("read unit file", &path, e))
                .and_then(|text| ServiceConfig::from_text(&name, &text));
            let cfg = match cfg {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!("process driver: dropping unit {name}: {err}");
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let adopted = records.remove(&name).map(|record| {
                let main = match (record.main_pid, record.main_start_time) {
                    (Some(pid), Some(start)) if sys::same_process_alive(pid, start) => {
                        Proc::foreign(pid).ok()
                    }
                    _ => None,
                };
                Adopted { main, record }
            });
            self.spawn_unit(&name, cfg, adopted);
        }
        // Whatever is recorded but no longer loaded must not keep running.
        for (name, rec) in records {
            tracing::warn!(
                "process driver: killing processes of unit {name}, which is no longer loaded"
            );
            kill_recorded(&rec);
            let _ = std::fs::remove_file(ctx.run_dir.join(format!("{name}.json")));
        }
        if let Some(root) = &ctx.cgroups.root {
            let known: Vec<String> = self
                .inner
                .units
                .lock()
                .expect("units lock")
                .keys()
                .cloned()
                .collect();
            if let Ok(entries) = std::fs::read_dir(root) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if e.path().is_dir() && !known.contains(&name) {
                        let cg = cgroup::UnitCgroup { path: e.path() };
                        cg.signal(libc::SIGKILL);
                        cg.remove();
                    }
                }
            }
        }
        Ok(())
    }

    fn spawn_unit(&self, name: &str, cfg: ServiceConfig, adopted: Option<Adopted>) {
        // An adopted unit is reported as what it is from the first moment on.
        let (state, main_pid) = match &adopted {
            Some(a) if a.record.sub == "exited" => (
                UnitState::new(LoadState::Loaded, ActiveState::Active, "exited"),
                None,
            ),
            Some(a) if a.main.is_some() => (
                UnitState::new(LoadState::Loaded, ActiveState::Active, "running"),
                a.record.main_pid,
            ),
            _ => (UnitState::loaded_dead(), None),
        };
        let status = UnitStatus {
            name: name.to_owned(),
            state: state.clone(),
            main_pid,
            result: ServiceResult::Success,
            status_text: None,
        };
        let shared = Arc::new(UnitShared {
            status: Mutex::new(status),
            config: Mutex::new(Arc::new(cfg)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = Runner::new(name.to_owned(), self.inner.ctx.clone(), shared.clone(), rx);
        self.inner
            .units
            .lock()
            .expect("units lock")
            .insert(name.to_owned(), Handle { tx, shared });
        self.inner.ctx.events.send(name, Some(state));
        tokio::spawn(runner.run(adopted));
    }

    async fn request(&self, name: &str, make: fn(runner::Ack) -> Cmd) -> Result<()> {
        let (ack, rx) = oneshot::channel();
        {
            let units = self.inner.units.lock().expect("units lock");
            let h = units
                .get(name)
                .ok_or_else(|| Error::NotLoaded(name.to_owned()))?;
            h.tx.send(make(ack)).map_err(|_| Error::Closed)?;
        }
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Stops every unit and waits until all are at rest (a clean shutdown).
    pub async fn stop_all(&self) {
        let names: Vec<String> = self
            .inner
            .units
            .lock()
            .expect("units lock")
            .keys()
            .cloned()
            .collect();
        for name in &names {
            let _ = self.request(name, Cmd::Stop).await;
        }
        loop {
            let busy = self
                .inner
                .units
                .lock()
                .expect("units lock")
                .values()
                .any(|h| {
                    let st = h.shared.status.lock().expect("status lock");
                    !matches!(st.state.active, ActiveState::Inactive | ActiveState::Failed)
                });
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Kills every unit process recorded in the state directory of a driver that is gone
/// (its process died without stopping its units), as if the machine had died with it.
/// Returns how many units had a record of processes. The records stay: a driver opened on
/// the directory later finds nothing alive to adopt and starts afresh.
///
/// Only processes that are provably the recorded ones are signalled (same PID and start
/// time, or members of a recorded process group no older than its leader, or a recorded
/// cgroup), never a process that merely reuses a number.
///
/// # Errors
/// When the state directory's `run/` cannot be read; a missing one means nothing to do.
pub fn kill_orphaned_units(state_dir: &std::path::Path) -> Result<usize> {
    let run_dir = state_dir.join("run");
    let entries = match std::fs::read_dir(&run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("read", &run_dir, e)),
    };
    let mut n = 0;
    for e in entries.flatten() {
        let record = std::fs::read(e.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Option<PidRecord>>(&b).ok())
            .flatten();
        if let Some(rec) = record {
            kill_recorded(&rec);
            n += 1;
        }
    }
    Ok(n)
}

fn kill_recorded(rec: &PidRecord) {
    if let Some(path) = &rec.cgroup {
        let cg = cgroup::UnitCgroup { path: path.clone() };
        cg.signal(libc::SIGKILL);
        cg.remove();
    }
    if let (Some(pid), Some(start)) = (rec.main_pid, rec.main_start_time)
        && sys::same_process_alive(pid, start)
    {
        let _ = sys::kill(pid, libc::SIGKILL);
    }
    for &(pgid, start) in &rec.groups {
        // Only processes at least as young as the group's recorded leader: never a
        // process that merely reuses the number.
        for pid in sys::group_members(pgid, start) {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
    }
}

/// FNV-1a: a stable short name for the state directory's cgroup.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks that `name` is a valid unit name (systemd's rules, which also make it a safe file
/// name) of a service this driver can run: not a template.
pub(crate) fn check_service_name(name: &str) -> Result<()> {
    let unit = UnitName::parse(name).map_err(|e| Error::invalid_name(name, e))?;
    if unit.unit_type() != UnitType::Service {
        return Err(Error::invalid_name(
            name,
            "the process driver runs only .service units",
        ));
    }
    if unit.is_template() {
        return Err(Error::invalid_name(
            name,
            "templates cannot be run, only their instances",
        ));
    }
    Ok(())
}

fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io("write unit file", path, e))
}

impl UnitDriver for ProcessDriver {
    async fn load(&self, name: &str, contents: &str) -> Result<()> {
        check_service_name(name)?;
        let cfg = ServiceConfig::from_text(name, contents)?;
        write_atomic(&self.inner.units_dir.join(name), contents)?;
        let existing = {
            let units = self.inner.units.lock().expect("units lock");
            units.get(name).map(|h| h.shared.clone())
        };
        match existing {
            Some(shared) => *shared.config.lock().expect("config lock") = Arc::new(cfg),
            None => {
                // The files a start writes exist from now on, so that a start only writes
                // into them (see runner::write_record_file for why that matters).
                let ctx = &self.inner.ctx;
                let record = ctx.run_dir.join(format!("{name}.json"));
                if !record.exists() {
                    runner::write_record_file(&record, b"null")
                        .map_err(|e| Error::io("write pid record", &record, e))?;
                }
                drop(
                    ctx.logs
                        .open_append(name)
                        .map_err(|e| Error::io("create log file", ctx.logs.path(name), e))?,
                );
                self.spawn_unit(name, cfg, None);
            }
        }
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<()> {
        self.request(name, Cmd::Start).await
    }

    async fn stop(&self, name: &str) -> Result<()> {
        self.request(name, Cmd::Stop).await
    }

    async fn reload(&self, name: &str) -> Result<()> {
        self.request(name, Cmd::Reload).await
    }

    async fn unload(&self, name: &str) -> Result<()> {
        match self.request(name, Cmd::Unload).await {
            Ok(()) | Err(Error::NotLoaded(_)) => {}
            Err(e) => return Err(e),
        }
        self.inner.units.lock().expect("units lock").remove(name);
        let path = self.inner.units_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove unit file", path, e)),
        }
        self.inner.ctx.events.send(name, None);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<UnitStatus>> {
        let units = self.inner.units.lock().expect("units lock");
        let mut out: Vec<UnitStatus> = units
            .values()
            .map(|h| h.shared.status.lock().expect("status lock").clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn status(&self, name: &str) -> Result<UnitStatus> {
        let units = self.inner.units.lock().expect("units lock");
        match units.get(name) {
            Some(h) => Ok(h.shared.status.lock().expect("status lock").clone()),
            None => Ok(UnitStatus {
                name: name.to_owned(),
                state: UnitState::new(LoadState::NotFound, ActiveState::Inactive, "dead"),
                main_pid: None,
                result: ServiceResult::Success,
                status_text: None,
            }),
        }
    }

    async fn subscribe(&self) -> Result<Subscription> {
        Ok(self.inner.ctx.events.subscribe())
    }

    async fn logs(&self, name: &str, opts: LogOptions) -> Result<LogStream> {
        check_service_name(name)?;
        Ok(self.inner.ctx.logs.stream(name, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert!(check_service_name("web.service").is_ok());
        assert!(check_service_name("web@1.service").is_ok());
        assert!(check_service_name("web@.service").is_err());
        assert!(check_service_name("web.timer").is_err());
        assert!(check_service_name("../x.service").is_err());
        assert!(check_service_name(".service").is_err());
    }
}
