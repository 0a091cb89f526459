//! The `[Service]` settings the native supervisor acts on.
//!
//! [`ServiceConfig`] is the supervisor's own view of a service unit, with systemd's
//! defaults filled in, built from `unit-parser`'s typed `[Service]` and `[Unit]` views.

use std::path::PathBuf;
use std::time::Duration;

use unit_parser::exec::ExecCommand;
use unit_parser::name::UnitName;
use unit_parser::service::{self as up, Service, WorkingDirectory, parse_signal};
use unit_parser::specifier::SpecifierContext;
use unit_parser::unit_section::UnitSection;
use unit_parser::value::{MemoryLimit, Timespan, parse_sec};

use crate::error::{Error, Result};

/// `Type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceType {
    Simple,
    Exec,
    Oneshot,
    Forking,
    Notify,
}

/// `Restart=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RestartPolicy {
    No,
    Always,
    OnSuccess,
    OnFailure,
    OnAbnormal,
    OnAbort,
    OnWatchdog,
}

/// `KillMode=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillMode {
    ControlGroup,
    Mixed,
    Process,
    None,
}

/// `NotifyAccess=`: whose notifications count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotifyAccess {
    None,
    /// The main process only.
    Main,
    /// The main process and the control process running (`ExecStartPre=` ...).
    Exec,
    All,
}

/// A service unit's settings, with systemd's defaults filled in.
#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    pub(crate) service_type: ServiceType,
    pub(crate) exec_start_pre: Vec<ExecCommand>,
    pub(crate) exec_start: Vec<ExecCommand>,
    pub(crate) exec_start_post: Vec<ExecCommand>,
    pub(crate) exec_stop: Vec<ExecCommand>,
    pub(crate) exec_stop_post: Vec<ExecCommand>,
    pub(crate) exec_reload: Vec<ExecCommand>,
    pub(crate) remain_after_exit: bool,
    pub(crate) restart: RestartPolicy,
    pub(crate) restart_sec: Duration,
    pub(crate) start_limit_interval: Duration,
    pub(crate) start_limit_burst: u32,
    /// `None`: no timeout (`infinity` or `0`).
    pub(crate) timeout_start: Option<Duration>,
    pub(crate) timeout_stop: Option<Duration>,
    pub(crate) kill_mode: KillMode,
    pub(crate) kill_signal: i32,
    pub(crate) send_sigkill: bool,
    /// `WatchdogSec=`: `None` when unset, `0` or `infinity` (no watchdog).
    pub(crate) watchdog: Option<Duration>,
    /// `WatchdogSignal=` (`SIGABRT` by default).
    pub(crate) watchdog_signal: i32,
    /// `NotifyAccess=`; systemd's default is `main` for `Type=notify` or with a watchdog,
    /// else `none`.
    pub(crate) notify_access: NotifyAccess,
    pub(crate) environment: Vec<(String, String)>,
    /// (path, ignore if missing).
    pub(crate) environment_files: Vec<(PathBuf, bool)>,
    /// (directory, ignore if missing); `~` is the user's home.
    pub(crate) working_directory: Option<(String, bool)>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) memory_max: Option<u64>,
    /// Percent of one CPU.
    pub(crate) cpu_quota_percent: Option<f64>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

impl ServiceConfig {
    /// Reads the `[Service]` settings (and the start limits of `[Unit]`) of unit `unit`
    /// through `unit-parser`'s typed views, resolving specifiers for `unit`, and fills in
    /// systemd's defaults. Settings systemd would ignore with a warning are ignored (and
    /// logged); what systemd refuses to load is an error naming the line.
    pub(crate) fn from_text(unit: &str, text: &str) -> Result<ServiceConfig> {
        let file =
            unit_parser::parse(text).map_err(|e| Error::bad_unit(unit, e.line(), e.to_string()))?;
        let name = UnitName::parse(unit).map_err(|e| Error::invalid_name(unit, e))?;
        let ctx = SpecifierContext::system(Some(name));
        let svc = Service::from_unit_with(&file, Some(&ctx))
            .map_err(|e| Error::bad_unit(unit, e.line(), e.to_string()))?;
        let unit_section = UnitSection::from_unit_with(&file, Some(&ctx));
        for w in &svc.warnings {
            tracing::warn!(unit, line = w.line, "{}={}: ignored", w.key, w.message);
        }
        let service_type = match svc.effective_type() {
            up::ServiceType::Oneshot => ServiceType::Oneshot,
            up::ServiceType::Forking => ServiceType::Forking,
            up::ServiceType::Notify => ServiceType::Notify,
            up::ServiceType::Exec => ServiceType::Exec,
            // dbus (no bus to watch for the name) and idle run like simple.
            _ => ServiceType::Simple,
        };
        let restart = match svc.restart {
            None | Some(up::Restart::No) => RestartPolicy::No,
            Some(up::Restart::Always) => RestartPolicy::Always,
            Some(up::Restart::OnSuccess) => RestartPolicy::OnSuccess,
            Some(up::Restart::OnFailure) => RestartPolicy::OnFailure,
            Some(up::Restart::OnAbnormal) => RestartPolicy::OnAbnormal,
            Some(up::Restart::OnAbort) => RestartPolicy::OnAbort,
            Some(up::Restart::OnWatchdog) => RestartPolicy::OnWatchdog,
            Some(_) => RestartPolicy::No,
        };
        if service_type == ServiceType::Oneshot
            && matches!(restart, RestartPolicy::Always | RestartPolicy::OnSuccess)
        {
            return Err(Error::bad_unit(
                unit,
                0,
                "Service has Restart= set to either always or on-success, which isn't allowed for Type=oneshot services. Refusing.",
            ));
        }
        let kill_mode = match svc.kill_mode {
            None | Some(up::KillMode::ControlGroup) => KillMode::ControlGroup,
            Some(up::KillMode::Mixed) => KillMode::Mixed,
            Some(up::KillMode::Process) => KillMode::Process,
            Some(_) => KillMode::None,
        };
        let timeout = |t: Option<Timespan>| match t {
            None => Some(DEFAULT_TIMEOUT),
            Some(t) => t.duration(),
        };
        let start_limit_interval = match unit_section
            .start_limit_interval
            .or(svc.start_limit_interval)
        {
            None => Duration::from_secs(10),
            Some(t) => t.duration().unwrap_or(Duration::MAX),
        };
        let watchdog = raw_setting(&file, unit, "WatchdogSec", |v| {
            parse_sec(v)
                .ok()
                .map(|t| t.duration().filter(|d| !d.is_zero()))
        })
        .flatten();
        let notify_access = raw_setting(&file, unit, "NotifyAccess", |v| match v {
            "none" => Some(NotifyAccess::None),
            "main" => Some(NotifyAccess::Main),
            "exec" => Some(NotifyAccess::Exec),
            "all" => Some(NotifyAccess::All),
            _ => None,
        })
        .unwrap_or(
            if service_type == ServiceType::Notify || watchdog.is_some() {
                NotifyAccess::Main
            } else {
                NotifyAccess::None
            },
        );
        let memory_max = match svc.memory_max {
            None | Some(MemoryLimit::Infinity) => None,
            Some(MemoryLimit::Bytes(b)) => Some(b),
            Some(MemoryLimit::Permyriad(p)) => Some(physical_memory() / 10_000 * u64::from(p)),
        };
        Ok(ServiceConfig {
            service_type,
            exec_start_pre: svc.exec_start_pre,
            exec_start: svc.exec_start,
            exec_start_post: svc.exec_start_post,
            exec_stop: svc.exec_stop,
            exec_stop_post: svc.exec_stop_post,
            exec_reload: svc.exec_reload,
            remain_after_exit: svc.remain_after_exit.unwrap_or(false),
            restart,
            restart_sec: svc.restart_sec.map_or(Duration::from_millis(100), |t| {
                t.duration().unwrap_or(Duration::MAX)
            }),
            start_limit_interval,
            start_limit_burst: unit_section
                .start_limit_burst
                .or(svc.start_limit_burst)
                .unwrap_or(5),
            timeout_start: timeout(svc.timeout_start_sec),
            timeout_stop: timeout(svc.timeout_stop_sec),
            kill_mode,
            kill_signal: svc.kill_signal.unwrap_or(libc::SIGTERM),
            send_sigkill: svc.send_sigkill.unwrap_or(true),
            watchdog,
            watchdog_signal: raw_setting(&file, unit, "WatchdogSignal", parse_signal)
                .unwrap_or(libc::SIGABRT),
            notify_access,
            environment: svc.environment.clone(),
            environment_files: svc
                .environment_files
                .iter()
                .map(|f| (PathBuf::from(&f.path), f.ignore_missing))
                .collect(),
            working_directory: match &svc.working_directory {
                None => None,
                Some(WorkingDirectory::Home { ignore_missing }) => {
                    Some(("~".to_owned(), *ignore_missing))
                }
                Some(WorkingDirectory::Path {
                    path,
                    ignore_missing,
                }) => Some((path.clone(), *ignore_missing)),
            },
            user: svc.user.clone(),
            group: svc.group.clone(),
            // Not part of the typed view: read the raw (last) assignment.
            pid_file: file
                .get("Service", "PIDFile")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            memory_max,
            cpu_quota_percent: svc.cpu_quota,
        })
    }
}

/// A setting unit-parser's typed view does not read: its last assignment, parsed. An empty
/// assignment means the default; a value that does not parse is ignored with a warning, as
/// systemd does.
fn raw_setting<T>(
    file: &unit_parser::UnitFile,
    unit: &str,
    key: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    let v = file.get("Service", key)?.trim();
    if v.is_empty() {
        return None;
    }
    let parsed = parse(v);
    if parsed.is_none() {
        tracing::warn!(unit, "{key}={v}: cannot parse, ignoring");
    }
    parsed
}

/// Total physical memory in bytes (for `MemoryMax=N%`).
fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = ServiceConfig::from_text("a.service", "[Service]\nExecStart=/bin/true\n").unwrap();
        assert_eq!(c.service_type, ServiceType::Simple);
        assert_eq!(c.timeout_stop, Some(DEFAULT_TIMEOUT));
        assert_eq!(c.kill_signal, libc::SIGTERM);
        assert_eq!((c.watchdog, c.watchdog_signal), (None, libc::SIGABRT));
        assert_eq!(c.notify_access, NotifyAccess::None);
        for (text, want) in [
            ("Type=notify", NotifyAccess::Main),
            ("WatchdogSec=1", NotifyAccess::Main),
            ("WatchdogSec=1\nNotifyAccess=all", NotifyAccess::All),
            ("NotifyAccess=exec", NotifyAccess::Exec),
            ("Type=notify\nNotifyAccess=bogus", NotifyAccess::Main),
        ] {
            let c = ServiceConfig::from_text(
                "n.service",
                &format!("[Service]\nExecStart=/bin/true\n{text}\n"),
            )
            .unwrap();
            assert_eq!(c.notify_access, want, "{text}");
        }
        for (text, want) in [
            (
                "WatchdogSec=1.5\nWatchdogSignal=USR1",
                (Some(1500), libc::SIGUSR1),
            ),
            (
                "WatchdogSec=200ms\nWatchdogSignal=9",
                (Some(200), libc::SIGKILL),
            ),
            ("WatchdogSec=0\nWatchdogSignal=", (None, libc::SIGABRT)),
            ("WatchdogSec=infinity", (None, libc::SIGABRT)),
            (
                "WatchdogSec=soon\nWatchdogSignal=SIGNOPE",
                (None, libc::SIGABRT),
            ),
            ("WatchdogSec=3s\nWatchdogSec=", (None, libc::SIGABRT)),
        ] {
            let c = ServiceConfig::from_text(
                "w.service",
                &format!("[Service]\nExecStart=/bin/true\n{text}\n"),
            )
            .unwrap();
            let got = (c.watchdog.map(|d| d.as_millis() as u64), c.watchdog_signal);
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(
            (c.start_limit_interval, c.start_limit_burst),
            (Duration::from_secs(10), 5)
        );
        let e = ServiceConfig::from_text("a.service", "[Service]\nType=simple\n").unwrap_err();
        assert!(e.to_string().contains("no ExecStart="), "{e}");
        let e = ServiceConfig::from_text(
            "a.service",
            "[Service]\nExecStart=/bin/true\nExecStart=/bin/false\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        // systemd ignores an invalid Restart= with a warning.
        let c = ServiceConfig::from_text(
            "a.service",
            "[Service]\nExecStart=/bin/true\nRestart=maybe\n",
        )
        .unwrap();
        assert_eq!(c.restart, RestartPolicy::No);
        let c = ServiceConfig::from_text(
            "web@8080.service",
            "[Unit]\nStartLimitBurst=2\n[Service]\nExecStart=-@/bin/sh web %i\nEnvironment=\"A=x y\" B=2 1C=bad\nTimeoutStopSec=0\nPIDFile=/run/web.pid\nMemoryMax=64M\nCPUQuota=50%\n",
        )
        .unwrap();
        assert_eq!(
            c.environment,
            [
                ("A".to_owned(), "x y".to_owned()),
                ("B".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(c.timeout_stop, None);
        assert_eq!(c.start_limit_burst, 2);
        assert_eq!(c.exec_start[0].argv, ["web", "8080"]);
        assert!(c.exec_start[0].flags.ignore_failure);
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/web.pid")));
        assert_eq!(
            (c.memory_max, c.cpu_quota_percent),
            (Some(64 << 20), Some(50.0))
        );
        let e = ServiceConfig::from_text(
            "o.service",
            "[Service]\nType=oneshot\nExecStart=/bin/true\nRestart=always\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("oneshot"), "{e}");
    }
}
