//! The `[Service]` section: type, Exec commands, restart policy, timeouts, environment,
//! credentials, kill settings and resource limits.
//!
//! Values are read as systemd 252's `load-fragment.c` reads them. Exec settings accumulate
//! commands and reset on an empty assignment; an Exec value systemd refuses fails the view
//! (as it fails the unit) unless prefixed with `-`. Other invalid values and unknown keys
//! become [`SettingWarning`]s. After reading, the checks of `service_verify()` that concern
//! these settings are applied (several `ExecStart=` only for `Type=oneshot`, ...).
//!
//! ```
//! use unit_parser::service::{Restart, Service};
//! use unit_parser::specifier::SpecifierContext;
//!
//! let unit = unit_parser::parse(
//!     "[Service]\nExecStart=-/usr/bin/web --port=%i \"a b\"\nRestart=on-failure\n\
//!      TimeoutStopSec=1min 30s\nEnvironment=A=1 \"B=two words\"\n",
//! )?;
//! let ctx = SpecifierContext::system(Some("web@8080.service".parse()?));
//! let s = Service::from_unit_with(&unit, Some(&ctx))?;
//! assert_eq!(s.exec_start[0].argv, ["/usr/bin/web", "--port=8080", "a b"]);
//! assert!(s.exec_start[0].flags.ignore_failure);
//! assert_eq!(s.restart, Some(Restart::OnFailure));
//! assert_eq!(s.timeout_stop_sec.unwrap().as_micros(), 90_000_000);
//! assert_eq!(s.environment[1], ("B".to_owned(), "two words".to_owned()));
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use thiserror::Error;

use crate::UnitFile;
use crate::exec::{ExecCommand, ExecError, parse_exec};
use crate::specifier::SpecifierContext;
use crate::unit_section::{parse_burst, parse_start_limit_interval, resolve, unknown_key_message};
use crate::value::{
    CpuWeight, EnvironmentFile, MemoryLimit, SettingWarning, Timespan, env_replace, parse_bool,
    parse_cpu_quota, parse_cpu_weight, parse_environment, parse_environment_file,
    parse_memory_limit, parse_sec, parse_sec_fix_0,
};

/// The section name.
pub const SECTION: &str = "Service";

/// `Type=`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceType {
    /// `simple`
    Simple,
    /// `exec`
    Exec,
    /// `forking`
    Forking,
    /// `oneshot`
    Oneshot,
    /// `dbus`
    Dbus,
    /// `notify`
    Notify,
    /// `idle`
    Idle,
}

impl ServiceType {
    fn parse(s: &str) -> Option<ServiceType> {
        Some(match s {
            "simple" => ServiceType::Simple,
            "exec" => ServiceType::Exec,
            "forking" => ServiceType::Forking,
            "oneshot" => ServiceType::Oneshot,
            "dbus" => ServiceType::Dbus,
            "notify" => ServiceType::Notify,
            "idle" => ServiceType::Idle,
            _ => return None,
        })
    }
}

/// `Restart=`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restart {
    /// `no`
    No,
    /// `on-success`
    OnSuccess,
    /// `on-failure`
    OnFailure,
    /// `on-abnormal`
    OnAbnormal,
    /// `on-watchdog`
    OnWatchdog,
    /// `on-abort`
    OnAbort,
    /// `always`
    Always,
}

impl Restart {
    fn parse(s: &str) -> Option<Restart> {
        Some(match s {
            "no" => Restart::No,
            "on-success" => Restart::OnSuccess,
            "on-failure" => Restart::OnFailure,
            "on-abnormal" => Restart::OnAbnormal,
            "on-watchdog" => Restart::OnWatchdog,
            "on-abort" => Restart::OnAbort,
            "always" => Restart::Always,
            _ => return None,
        })
    }
}

/// `KillMode=`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillMode {
    /// `control-group`
    ControlGroup,
    /// `process`
    Process,
    /// `mixed`
    Mixed,
    /// `none`
    None,
}

impl KillMode {
    fn parse(s: &str) -> Option<KillMode> {
        Some(match s {
            "control-group" => KillMode::ControlGroup,
            "process" => KillMode::Process,
            "mixed" => KillMode::Mixed,
            "none" => KillMode::None,
            _ => return None,
        })
    }
}

/// `WorkingDirectory=`.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkingDirectory {
    /// `~`: the user's home directory.
    Home {
        /// `-` prefix: a missing directory is not an error.
        ignore_missing: bool,
    },
    /// An absolute path.
    Path {
        /// The path.
        path: String,
        /// `-` prefix: a missing directory is not an error.
        ignore_missing: bool,
    },
}

/// Linux signal names in number order (1..=31), as `signal_from_string()` knows them.
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// systemd's `signal_from_string()` with the optional `SIG` prefix: a name, `RTMIN+n`,
/// `RTMAX-n` or a number in 1..=64.
pub fn parse_signal(s: &str) -> Option<i32> {
    const RTMIN: i32 = 34;
    const RTMAX: i32 = 64;
    // A number first (safe_atoi: white space, sign, 0x and octal accepted).
    if let Some(n) = crate::value::safe_atoi(s) {
        return (1..=RTMAX).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    if let Some(i) = SIGNALS.iter().position(|n| *n == name) {
        return Some(i as i32 + 1);
    }
    // RTMIN+n / RTMAX-n: the text after RTMIN (including its sign) goes through safe_atoi.
    if let Some(p) = name.strip_prefix("RTMIN") {
        if p.is_empty() {
            return Some(RTMIN);
        }
        let n = p.strip_prefix('+').and(crate::value::safe_atoi(p))?;
        return (0..=RTMAX - RTMIN).contains(&n).then_some(RTMIN + n);
    }
    if let Some(p) = name.strip_prefix("RTMAX") {
        if p.is_empty() {
            return Some(RTMAX);
        }
        let n = p.strip_prefix('-').and(crate::value::safe_atoi(p))?;
        return (RTMIN - RTMAX..=0).contains(&n).then_some(RTMAX + n);
    }
    None
}

/// systemd's relaxed `valid_user_group_name()` for `User=`/`Group=`: a numeric ID below
/// 4294967295, or a name without `:`, `/`, control characters or surrounding whitespace
/// (and not `.` or `..`).
fn valid_user_group_name(v: &str) -> Option<String> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<u32>()
            .ok()
            .filter(|id| *id != u32::MAX)
            .map(|_| v.to_owned());
    }
    let ok = !v.contains([':', '/'])
        && !v.chars().any(char::is_control)
        && v.trim() == v
        && v != "."
        && v != "..";
    ok.then(|| v.to_owned())
}

/// A `[Service]` section systemd refuses (the unit fails to load).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// An Exec value systemd refuses.
    #[error("line {line}: {key}: {source}")]
    Exec {
        /// 1-based line of the assignment.
        line: usize,
        /// The Exec key.
        key: String,
        /// Why.
        source: ExecError,
    },
    /// `service_verify()`: several commands for `ExecStart=` on a non-oneshot service.
    #[error(
        "line {line}: Service has more than one ExecStart= setting, which is only allowed for Type=oneshot services. Refusing."
    )]
    MultipleExecStart {
        /// Line of the last `ExecStart=` assignment.
        line: usize,
    },
    /// `service_verify()`: no `ExecStart=` on a non-oneshot service.
    #[error(
        "Service has no ExecStart= setting, which is only allowed for Type=oneshot services. Refusing."
    )]
    NoExecStart,
    /// `service_verify()`: no `ExecStart=` and no `ExecStop=` at all.
    #[error("Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.")]
    NothingToRun,
}

impl ServiceError {
    /// 1-based line the error refers to (0 when it concerns the whole section).
    pub fn line(&self) -> usize {
        match self {
            ServiceError::Exec { line, .. } | ServiceError::MultipleExecStart { line } => *line,
            ServiceError::NoExecStart | ServiceError::NothingToRun => 0,
        }
    }
}

/// The typed `[Service]` section.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    /// `Type=` as written (see [`Service::effective_type`]).
    pub service_type: Option<ServiceType>,
    /// `BusName=`.
    pub bus_name: Option<String>,
    /// `ExecCondition=`.
    pub exec_condition: Vec<ExecCommand>,
    /// `ExecStartPre=`.
    pub exec_start_pre: Vec<ExecCommand>,
    /// `ExecStart=`.
    pub exec_start: Vec<ExecCommand>,
    /// `ExecStartPost=`.
    pub exec_start_post: Vec<ExecCommand>,
    /// `ExecReload=`.
    pub exec_reload: Vec<ExecCommand>,
    /// `ExecStop=`.
    pub exec_stop: Vec<ExecCommand>,
    /// `ExecStopPost=`.
    pub exec_stop_post: Vec<ExecCommand>,
    /// `Restart=`.
    pub restart: Option<Restart>,
    /// `RestartSec=`.
    pub restart_sec: Option<Timespan>,
    /// `TimeoutStartSec=` (or `TimeoutSec=`); `0` is infinity.
    pub timeout_start_sec: Option<Timespan>,
    /// `TimeoutStopSec=` (or `TimeoutSec=`); `0` is infinity.
    pub timeout_stop_sec: Option<Timespan>,
    /// `RemainAfterExit=`.
    pub remain_after_exit: Option<bool>,
    /// `Environment=`: `(name, value)`; a later assignment of a name replaces it in place.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` entries in order.
    pub environment_files: Vec<EnvironmentFile>,
    /// `User=`.
    pub user: Option<String>,
    /// `Group=`.
    pub group: Option<String>,
    /// `WorkingDirectory=`.
    pub working_directory: Option<WorkingDirectory>,
    /// `KillMode=`.
    pub kill_mode: Option<KillMode>,
    /// `KillSignal=` as a signal number.
    pub kill_signal: Option<i32>,
    /// `SendSIGKILL=`.
    pub send_sigkill: Option<bool>,
    /// `StartLimitInterval=` (systemd's old `[Service]` spelling; `StartLimitIntervalSec=` is
    /// read too, with a warning, since systemd 252 ignores it here).
    pub start_limit_interval: Option<Timespan>,
    /// `StartLimitBurst=` (accepted here as in old systemd; `[Unit]` is its home).
    pub start_limit_burst: Option<u32>,
    /// `MemoryMax=`.
    pub memory_max: Option<MemoryLimit>,
    /// `MemoryHigh=`.
    pub memory_high: Option<MemoryLimit>,
    /// `CPUQuota=` in percent of one CPU.
    pub cpu_quota: Option<f64>,
    /// `CPUWeight=`.
    pub cpu_weight: Option<CpuWeight>,
    /// Ignored values, unknown keys and Exec warnings.
    pub warnings: Vec<SettingWarning>,
}

impl Service {
    /// Reads every `[Service]` section of `unit`, specifiers unresolved.
    ///
    /// # Errors
    /// A [`ServiceError`] where systemd refuses the unit.
    pub fn from_unit(unit: &UnitFile) -> Result<Service, ServiceError> {
        Self::from_unit_with(unit, None)
    }

    /// `Type=` as systemd applies it: the written type, else `dbus` with `BusName=`, else
    /// `oneshot` without `ExecStart=`, else `simple`.
    pub fn effective_type(&self) -> ServiceType {
        match self.service_type {
            Some(t) => t,
            None if self.bus_name.is_some() => ServiceType::Dbus,
            None if self.exec_start.is_empty() => ServiceType::Oneshot,
            None => ServiceType::Simple,
        }
    }

    /// Reads every `[Service]` section of `unit`, resolving specifiers with `ctx` if given.
    ///
    /// # Errors
    /// A [`ServiceError`] where systemd refuses the unit.
    pub fn from_unit_with(
        unit: &UnitFile,
        ctx: Option<&SpecifierContext>,
    ) -> Result<Service, ServiceError> {
        let mut s = Service::default();
        let mut last_exec_start_line = 0;
        for (section, entry) in unit.entries() {
            if section != SECTION {
                continue;
            }
            let (key, value, line) = (entry.key(), entry.value(), entry.line());
            let mut warnings = Vec::new();
            let mut warn = |message: String| {
                warnings.push(SettingWarning {
                    line,
                    section: SECTION.to_owned(),
                    key: key.to_owned(),
                    message,
                })
            };
            // Settings whose systemd parser has no empty-value case: `Key=` is just an
            // invalid value (warning, previous value kept).
            macro_rules! strict_setting {
                ($field:expr, $parse:expr, $what:literal) => {
                    match resolve(value, ctx) {
                        Err(m) => warn(m),
                        Ok(v) => match $parse(v.as_str()) {
                            Some(t) => $field = Some(t),
                            None => warn(format!("Failed to parse {}, ignoring: {v}", $what)),
                        },
                    }
                };
            }
            // Settings whose systemd parser resets to the default on `Key=`.
            macro_rules! enum_setting {
                ($field:expr, $parse:expr, $what:literal) => {
                    match resolve(value, ctx) {
                        Err(m) => warn(m),
                        Ok(v) if v.is_empty() => $field = None,
                        Ok(v) => match $parse(v.as_str()) {
                            Some(t) => $field = Some(t),
                            None => warn(format!("Failed to parse {}, ignoring: {v}", $what)),
                        },
                    }
                };
            }
            match key {
                "Type" => strict_setting!(s.service_type, ServiceType::parse, "service type"),
                "Restart" => {
                    strict_setting!(s.restart, Restart::parse, "service restart specifier")
                }
                "KillMode" => strict_setting!(s.kill_mode, KillMode::parse, "kill mode"),
                "KillSignal" => enum_setting!(s.kill_signal, parse_signal, "signal"),
                "CPUWeight" => {
                    enum_setting!(s.cpu_weight, |v| parse_cpu_weight(v).ok(), "CPU weight")
                }
                "MemoryMax" | "MemoryHigh" => {
                    let slot = if key == "MemoryMax" {
                        &mut s.memory_max
                    } else {
                        &mut s.memory_high
                    };
                    enum_setting!(*slot, |v| parse_memory_limit(v).ok(), "memory limit")
                }
                "CPUQuota" => {
                    enum_setting!(s.cpu_quota, |v| parse_cpu_quota(v).ok(), "CPU quota")
                }
                "BusName" => {
                    strict_setting!(
                        s.bus_name,
                        |v: &str| (!v.is_empty()).then(|| v.to_owned()),
                        "bus name"
                    )
                }
                "User" | "Group" => {
                    let slot = if key == "User" {
                        &mut s.user
                    } else {
                        &mut s.group
                    };
                    enum_setting!(
                        *slot,
                        valid_user_group_name,
                        "user/group name or numeric ID"
                    )
                }
                "RestartSec" => {
                    strict_setting!(s.restart_sec, |v| parse_sec(v).ok(), "RestartSec= value")
                }
                "TimeoutStartSec" | "TimeoutStopSec" | "TimeoutSec" => {
                    let mut t = None;
                    strict_setting!(t, |v| parse_sec_fix_0(v).ok(), "timeout value");
                    if let Some(t) = t {
                        if key != "TimeoutStopSec" {
                            s.timeout_start_sec = Some(t);
                        }
                        if key != "TimeoutStartSec" {
                            s.timeout_stop_sec = Some(t);
                        }
                    }
                }
                "RemainAfterExit" | "SendSIGKILL" => {
                    let slot = if key == "RemainAfterExit" {
                        &mut s.remain_after_exit
                    } else {
                        &mut s.send_sigkill
                    };
                    strict_setting!(*slot, |v| parse_bool(v).ok(), "boolean")
                }
                "StartLimitIntervalSec" | "StartLimitInterval" => {
                    if key == "StartLimitIntervalSec" {
                        // Read anyway (the shared API promises it), but say what systemd does.
                        warn(
                            "systemd 252 ignores StartLimitIntervalSec= in [Service] (it belongs \
                             in [Unit]; [Service] only knows the old StartLimitInterval=)"
                                .to_owned(),
                        );
                    }
                    match resolve(value, ctx).and_then(|v| parse_start_limit_interval(&v)) {
                        Ok(v) => s.start_limit_interval = v,
                        Err(m) => warn(m),
                    }
                }
                "StartLimitBurst" => match parse_burst(value) {
                    Ok(v) => s.start_limit_burst = v,
                    Err(m) => warn(m),
                },
                "WorkingDirectory" => match resolve(value, ctx) {
                    Err(m) => warn(m),
                    Ok(v) if v.is_empty() => s.working_directory = None,
                    Ok(v) => {
                        let (ignore_missing, p) = match v.strip_prefix('-') {
                            Some(rest) => (true, rest),
                            None => (false, v.as_str()),
                        };
                        if p == "~" {
                            s.working_directory = Some(WorkingDirectory::Home { ignore_missing });
                        } else if p.starts_with('/') {
                            s.working_directory = Some(WorkingDirectory::Path {
                                path: p.to_owned(),
                                ignore_missing,
                            });
                        } else {
                            warn(format!(
                                "Working directory path '{p}' is not absolute, ignoring."
                            ));
                        }
                    }
                },
                "Environment" => {
                    if value.is_empty() {
                        s.environment.clear();
                    } else {
                        let l = parse_environment(value, ctx);
                        for (n, v) in l.vars {
                            env_replace(&mut s.environment, n, v);
                        }
                        for m in l.warnings {
                            warn(m);
                        }
                    }
                }
                "EnvironmentFile" => {
                    if value.is_empty() {
                        s.environment_files.clear();
                    } else {
                        match parse_environment_file(value, ctx) {
                            Ok(f) => s.environment_files.push(f),
                            Err(e) => warn(e.to_string()),
                        }
                    }
                }
                "ExecCondition" | "ExecStartPre" | "ExecStart" | "ExecStartPost" | "ExecReload"
                | "ExecStop" | "ExecStopPost" => {
                    if key == "ExecStart" {
                        last_exec_start_line = line;
                    }
                    let list = match key {
                        "ExecCondition" => &mut s.exec_condition,
                        "ExecStartPre" => &mut s.exec_start_pre,
                        "ExecStart" => &mut s.exec_start,
                        "ExecStartPost" => &mut s.exec_start_post,
                        "ExecReload" => &mut s.exec_reload,
                        "ExecStop" => &mut s.exec_stop,
                        _ => &mut s.exec_stop_post,
                    };
                    if value.is_empty() {
                        list.clear();
                    } else {
                        let parsed =
                            parse_exec(value, ctx).map_err(|source| ServiceError::Exec {
                                line,
                                key: key.to_owned(),
                                source,
                            })?;
                        list.extend(parsed.commands);
                        for m in parsed.warnings {
                            warn(m);
                        }
                    }
                }
                k => {
                    if let Some(m) = unknown_key_message(k, SECTION, KNOWN_KEYS) {
                        warn(m);
                    }
                }
            }
            s.warnings.extend(warnings);
        }
        let oneshot = s.effective_type() == ServiceType::Oneshot;
        if s.exec_start.len() > 1 && !oneshot {
            return Err(ServiceError::MultipleExecStart {
                line: last_exec_start_line,
            });
        }
        let success_action = unit
            .get_list(crate::unit_section::SECTION, "SuccessAction")
            .last()
            .is_some_and(|a| !a.is_empty() && *a != "none");
        if s.exec_start.is_empty() && s.exec_stop.is_empty() && !success_action {
            return Err(ServiceError::NothingToRun);
        }
        if s.exec_start.is_empty() && !oneshot {
            return Err(ServiceError::NoExecStart);
        }
        Ok(s)
    }
}

/// Every `[Service]` key systemd 252 knows: service settings plus the exec, kill and cgroup
/// contexts, typed here or not (checked against `systemd --dump-configuration-items`).
pub const KNOWN_KEYS: &[&str] = &[
    // Service proper.
    "PIDFile",
    "ExecCondition",
    "ExecStartPre",
    "ExecStart",
    "ExecStartPost",
    "ExecReload",
    "ExecStop",
    "ExecStopPost",
    "RestartSec",
    "TimeoutSec",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "TimeoutAbortSec",
    "TimeoutStartFailureMode",
    "TimeoutStopFailureMode",
    "RuntimeMaxSec",
    "RuntimeRandomizedExtraSec",
    "WatchdogSec",
    "StartLimitInterval",
    "StartLimitBurst",
    "StartLimitAction",
    "FailureAction",
    "RebootArgument",
    "Type",
    "ExitType",
    "Restart",
    "PermissionsStartOnly",
    "RootDirectoryStartOnly",
    "RemainAfterExit",
    "GuessMainPID",
    "RestartPreventExitStatus",
    "RestartForceExitStatus",
    "SuccessExitStatus",
    "NonBlocking",
    "BusName",
    "FileDescriptorStoreMax",
    "NotifyAccess",
    "Sockets",
    "USBFunctionDescriptors",
    "USBFunctionStrings",
    "OOMPolicy",
    // Exec context.
    "WorkingDirectory",
    "RootDirectory",
    "RootImage",
    "RootImageOptions",
    "RootHash",
    "RootHashSignature",
    "RootVerity",
    "ExtensionDirectories",
    "ExtensionImages",
    "MountImages",
    "User",
    "Group",
    "SupplementaryGroups",
    "Nice",
    "OOMScoreAdjust",
    "CoredumpFilter",
    "IOSchedulingClass",
    "IOSchedulingPriority",
    "CPUSchedulingPolicy",
    "CPUSchedulingPriority",
    "CPUSchedulingResetOnFork",
    "CPUAffinity",
    "NUMAPolicy",
    "NUMAMask",
    "UMask",
    "Environment",
    "EnvironmentFile",
    "PassEnvironment",
    "UnsetEnvironment",
    "DynamicUser",
    "RemoveIPC",
    "StandardInput",
    "StandardOutput",
    "StandardError",
    "StandardInputText",
    "StandardInputData",
    "TTYPath",
    "TTYReset",
    "TTYVHangup",
    "TTYRows",
    "TTYColumns",
    "TTYVTDisallocate",
    "SyslogIdentifier",
    "SyslogFacility",
    "SyslogLevel",
    "SyslogLevelPrefix",
    "LogLevelMax",
    "LogExtraFields",
    "LogRateLimitIntervalSec",
    "LogRateLimitBurst",
    "LogNamespace",
    "SecureBits",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "TimerSlackNSec",
    "NoNewPrivileges",
    "KeyringMode",
    "ProtectProc",
    "ProcSubset",
    "ProtectSystem",
    "ProtectHome",
    "SystemCallFilter",
    "SystemCallArchitectures",
    "SystemCallErrorNumber",
    "SystemCallLog",
    "MemoryDenyWriteExecute",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RestrictAddressFamilies",
    "RestrictFileSystems",
    "LockPersonality",
    "LimitCPU",
    "LimitFSIZE",
    "LimitDATA",
    "LimitSTACK",
    "LimitCORE",
    "LimitRSS",
    "LimitNOFILE",
    "LimitAS",
    "LimitNPROC",
    "LimitMEMLOCK",
    "LimitLOCKS",
    "LimitSIGPENDING",
    "LimitMSGQUEUE",
    "LimitNICE",
    "LimitRTPRIO",
    "LimitRTTIME",
    "ReadWriteDirectories",
    "ReadOnlyDirectories",
    "InaccessibleDirectories",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "ExecSearchPath",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "ProtectControlGroups",
    "NetworkNamespacePath",
    "IPCNamespacePath",
    "PrivateNetwork",
    "PrivateUsers",
    "PrivateMounts",
    "PrivateIPC",
    "ProtectHostname",
    "MountFlags",
    "MountAPIVFS",
    "Personality",
    "RuntimeDirectoryPreserve",
    "RuntimeDirectoryMode",
    "RuntimeDirectory",
    "StateDirectoryMode",
    "StateDirectory",
    "CacheDirectoryMode",
    "CacheDirectory",
    "LogsDirectoryMode",
    "LogsDirectory",
    "ConfigurationDirectoryMode",
    "ConfigurationDirectory",
    "TimeoutCleanSec",
    "ProtectSystem",
    "UtmpIdentifier",
    "UtmpMode",
    "PAMName",
    "IgnoreSIGPIPE",
    "SELinuxContext",
    "AppArmorProfile",
    "SmackProcessLabel",
    "LoadCredential",
    "LoadCredentialEncrypted",
    "SetCredential",
    "SetCredentialEncrypted",
    "BPFProgram",
    "SocketBindAllow",
    "SocketBindDeny",
    "RestrictNetworkInterfaces",
    "CPUShares",
    "MemoryLimit",
    // Kill context.
    "KillMode",
    "KillSignal",
    "RestartKillSignal",
    "SendSIGKILL",
    "SendSIGHUP",
    "FinalKillSignal",
    "WatchdogSignal",
    // Cgroup context.
    "Slice",
    "CPUAccounting",
    "CPUWeight",
    "StartupCPUWeight",
    "CPUQuota",
    "CPUQuotaPeriodSec",
    "StartupCPUShares",
    "AllowedCPUs",
    "StartupAllowedCPUs",
    "AllowedMemoryNodes",
    "StartupAllowedMemoryNodes",
    "MemoryAccounting",
    "MemoryMin",
    "DefaultMemoryMin",
    "DefaultMemoryLow",
    "MemoryLow",
    "MemoryHigh",
    "MemoryMax",
    "MemorySwapMax",
    "DeviceAllow",
    "DevicePolicy",
    "IOAccounting",
    "IOWeight",
    "StartupIOWeight",
    "IODeviceWeight",
    "IOReadBandwidthMax",
    "IOWriteBandwidthMax",
    "IOReadIOPSMax",
    "IOWriteIOPSMax",
    "IODeviceLatencyTargetSec",
    "BlockIOAccounting",
    "BlockIOWeight",
    "StartupBlockIOWeight",
    "BlockIODeviceWeight",
    "BlockIOReadBandwidth",
    "BlockIOWriteBandwidth",
    "TasksAccounting",
    "TasksMax",
    "Delegate",
    "DisableControllers",
    "IPAccounting",
    "IPAddressAllow",
    "IPAddressDeny",
    "IPIngressFilterPath",
    "IPEgressFilterPath",
    "ManagedOOMSwap",
    "ManagedOOMMemoryPressure",
    "ManagedOOMMemoryPressureLimit",
    "ManagedOOMPreference",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("TERM"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+2"), Some(36));
        assert_eq!(parse_signal("RTMAX-1"), Some(63));
        assert_eq!(parse_signal(" 0x9"), Some(9));
        assert_eq!(parse_signal("010"), Some(8));
        assert_eq!(parse_signal("RTMIN+0x1"), Some(35));
        assert_eq!(parse_signal("0b11"), Some(3));
        assert_eq!(parse_signal("0o7"), Some(7));
        for bad in [
            "SIG9", "0", "65", "sigterm", "", "RTMIN+31", "9 ", "RTMIN+ 1", "RTMAX-+1", "-1",
        ] {
            assert_eq!(parse_signal(bad), None, "{bad}");
        }
    }

    #[test]
    fn user_names() {
        for good in ["www-data", "0", "4294967294", "user.name", "Ünïcode"] {
            assert!(valid_user_group_name(good).is_some(), "{good}");
        }
        for bad in [
            "a:b",
            "a/b",
            " a",
            "a ",
            ".",
            "..",
            "4294967295",
            "99999999999",
            "a\tb",
        ] {
            assert!(valid_user_group_name(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn empty_and_invalid_values() {
        let f = crate::parse(
            "[Service]\nExecStart=/bin/a\nType=simple\nType=\nTimeoutSec=5\nTimeoutStopSec=bogus\n\
             TimeoutStartSec=\nUser=a\nUser=\nKillSignal=KILL\nKillSignal=\nRestartSec=\n",
        )
        .unwrap();
        let s = Service::from_unit(&f).unwrap();
        // No empty-value case in systemd's parser: a warning, the previous value stays.
        assert_eq!(s.service_type, Some(ServiceType::Simple));
        assert_eq!(s.timeout_start_sec.unwrap().as_micros(), 5_000_000);
        assert_eq!(s.timeout_stop_sec.unwrap().as_micros(), 5_000_000);
        // These reset.
        assert_eq!(s.user, None);
        assert_eq!(s.kill_signal, None);
        let keys: Vec<&str> = s.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            ["Type", "TimeoutStopSec", "TimeoutStartSec", "RestartSec"]
        );
    }

    #[test]
    fn verification() {
        let f = crate::parse("[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n").unwrap();
        assert_eq!(
            Service::from_unit(&f),
            Err(ServiceError::MultipleExecStart { line: 3 })
        );
        let f = crate::parse("[Service]\nType=oneshot\nExecStart=/bin/a ; /bin/b\n").unwrap();
        assert_eq!(Service::from_unit(&f).unwrap().exec_start.len(), 2);
        let f = crate::parse("[Service]\nType=simple\nExecStop=/bin/a\n").unwrap();
        assert_eq!(Service::from_unit(&f), Err(ServiceError::NoExecStart));
        let f = crate::parse("[Service]\nUser=x\n").unwrap();
        assert_eq!(Service::from_unit(&f), Err(ServiceError::NothingToRun));
        let f = crate::parse("[Unit]\nSuccessAction=exit\n[Service]\nType=oneshot\n").unwrap();
        assert!(Service::from_unit(&f).is_ok());
        let f = crate::parse("[Service]\nExecStart=relative/x\n").unwrap();
        assert_eq!(
            Service::from_unit(&f).unwrap_err().to_string(),
            "line 2: ExecStart: Neither a valid executable name nor an absolute path: relative/x"
        );
        let f =
            crate::parse("[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n").unwrap();
        assert_eq!(Service::from_unit(&f).unwrap().exec_start[0].path, "/bin/b");
    }
}
