//! The `[Service]` settings the native supervisor acts on.
//!
//! [`ServiceConfig`] is this crate's own view of a service unit, built from the unit file
//! text. The reading of the file itself is done by [`crate::unitfile`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::unitfile::{self, UnitText};

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

/// One command of an `Exec*=` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecCommand {
    /// The program to run.
    pub(crate) path: String,
    /// The argument vector, `argv[0]` included (differs from `path` with the `@` prefix).
    pub(crate) argv: Vec<String>,
    /// `-`: a failure is recorded but ignored.
    pub(crate) ignore_failure: bool,
    /// `:`: no `$VAR` expansion.
    pub(crate) no_env_expand: bool,
    /// `+` or `!`/`!!`: run with full privileges (we run as the driver's user then).
    pub(crate) privileged: bool,
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
    pub(crate) environment: Vec<(String, String)>,
    /// (path, ignore if missing).
    pub(crate) environment_files: Vec<(PathBuf, bool)>,
    /// (directory, ignore if missing); `~` is the user's home.
    pub(crate) working_directory: Option<(String, bool)>,
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) memory_max: Option<u64>,
    pub(crate) cpu_quota_percent: Option<u64>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

impl ServiceConfig {
    /// Reads the `[Service]` (and the start-limit part of `[Unit]`) settings of `unit`.
    pub(crate) fn from_text(unit: &str, text: &str) -> Result<ServiceConfig> {
        let file = unitfile::parse(unit, text)?;
        ServiceConfig::from_unit(unit, &file)
    }

    fn from_unit(unit: &str, f: &UnitText) -> Result<ServiceConfig> {
        let svc = "Service";
        let bad = |key: &str, msg: String| {
            let line = f.line_of(svc, key).unwrap_or(0);
            Error::bad_unit(unit, line, format!("{key}=: {msg}"))
        };
        let boolean = |key: &str, default: bool| -> Result<bool> {
            match f.get(svc, key) {
                None | Some("") => Ok(default),
                Some(v) => parse_bool(v).ok_or_else(|| bad(key, format!("invalid boolean {v:?}"))),
            }
        };
        let timespan = |section: &str,
                        key: &str,
                        default: Option<Duration>,
                        zero_is_infinity: bool| match f.get(section, key) {
            None | Some("") => Ok(default),
            Some(v) => match parse_timespan(v) {
                Some(None) => Ok(None),
                Some(Some(d)) if d.is_zero() && zero_is_infinity => Ok(None),
                Some(Some(d)) => Ok(Some(d)),
                None => Err(bad(key, format!("invalid time span {v:?}"))),
            },
        };
        let exec = |key: &str| -> Result<Vec<ExecCommand>> {
            let mut out = Vec::new();
            for v in f.get_list(svc, key) {
                let mut cmds = parse_exec(v).map_err(|m| bad(key, m))?;
                for c in &mut cmds {
                    c.path = expand_specifiers(&c.path, unit).map_err(|m| bad(key, m))?;
                    for a in &mut c.argv {
                        *a = expand_specifiers(a, unit).map_err(|m| bad(key, m))?;
                    }
                }
                out.extend(cmds);
            }
            Ok(out)
        };

        let exec_start = exec("ExecStart")?;
        let service_type = match f.get(svc, "Type") {
            None | Some("") => {
                if exec_start.is_empty() {
                    ServiceType::Oneshot
                } else {
                    ServiceType::Simple
                }
            }
            Some("simple") => ServiceType::Simple,
            Some("exec") => ServiceType::Exec,
            Some("oneshot") => ServiceType::Oneshot,
            Some("forking") => ServiceType::Forking,
            Some("notify") => ServiceType::Notify,
            Some(other) => return Err(bad("Type", format!("unsupported service type {other:?}"))),
        };
        if exec_start.is_empty() && service_type != ServiceType::Oneshot {
            return Err(Error::bad_unit(
                unit,
                0,
                "Service has no ExecStart= setting, which is only allowed for Type=oneshot services",
            ));
        }
        if exec_start.len() > 1 && service_type != ServiceType::Oneshot {
            return Err(bad(
                "ExecStart",
                "more than one command is only allowed for Type=oneshot".into(),
            ));
        }
        let remain_after_exit = boolean("RemainAfterExit", false)?;
        if exec_start.is_empty() && !remain_after_exit {
            return Err(Error::bad_unit(
                unit,
                0,
                "Service has no ExecStart= and no RemainAfterExit=yes, refusing",
            ));
        }
        let restart = match f.get(svc, "Restart") {
            None | Some("") | Some("no") => RestartPolicy::No,
            Some("always") => RestartPolicy::Always,
            Some("on-success") => RestartPolicy::OnSuccess,
            Some("on-failure") => RestartPolicy::OnFailure,
            Some("on-abnormal") => RestartPolicy::OnAbnormal,
            Some("on-abort") => RestartPolicy::OnAbort,
            Some("on-watchdog") => RestartPolicy::OnWatchdog,
            Some(other) => return Err(bad("Restart", format!("invalid restart policy {other:?}"))),
        };
        let kill_mode = match f.get(svc, "KillMode") {
            None | Some("") | Some("control-group") => KillMode::ControlGroup,
            Some("mixed") => KillMode::Mixed,
            Some("process") => KillMode::Process,
            Some("none") => KillMode::None,
            Some(other) => return Err(bad("KillMode", format!("invalid kill mode {other:?}"))),
        };
        let kill_signal = match f.get(svc, "KillSignal") {
            None | Some("") => libc::SIGTERM,
            Some(v) => {
                parse_signal(v).ok_or_else(|| bad("KillSignal", format!("unknown signal {v:?}")))?
            }
        };
        // StartLimit* live in [Unit] in current systemd; [Service] is still accepted.
        let limit_section = |key: &str| {
            if f.get("Unit", key).is_some() {
                "Unit"
            } else {
                svc
            }
        };
        let start_limit_interval = timespan(
            limit_section("StartLimitIntervalSec"),
            "StartLimitIntervalSec",
            Some(Duration::from_secs(10)),
            false,
        )?
        .unwrap_or(Duration::ZERO);
        let start_limit_burst = match f.get(limit_section("StartLimitBurst"), "StartLimitBurst") {
            None | Some("") => 5,
            Some(v) => v
                .parse()
                .map_err(|_| bad("StartLimitBurst", format!("invalid number {v:?}")))?,
        };
        // TimeoutSec= sets both; the specific settings override it.
        let both = timespan(svc, "TimeoutSec", Some(DEFAULT_TIMEOUT), true)?;
        let timeout_start = timespan(svc, "TimeoutStartSec", both, true)?;
        let timeout_stop = timespan(svc, "TimeoutStopSec", both, true)?;

        let mut environment: Vec<(String, String)> = Vec::new();
        for v in f.get_list(svc, "Environment") {
            for word in split_words(v).map_err(|m| bad("Environment", m))? {
                let word = expand_specifiers(&word, unit).map_err(|m| bad("Environment", m))?;
                // Invalid assignments are ignored one by one, as systemd does.
                if let Some((k, val)) = word.split_once('=')
                    && valid_env_name(k)
                {
                    environment.retain(|(name, _)| name != k);
                    environment.push((k.to_owned(), val.to_owned()));
                }
            }
        }
        let environment_files = f
            .get_list(svc, "EnvironmentFile")
            .into_iter()
            .map(|v| match v.strip_prefix('-') {
                Some(rest) => (PathBuf::from(rest.trim()), true),
                None => (PathBuf::from(v), false),
            })
            .collect();
        let working_directory = match f.get(svc, "WorkingDirectory") {
            None | Some("") => None,
            Some(v) => Some(match v.strip_prefix('-') {
                Some(rest) => (rest.to_owned(), true),
                None => (v.to_owned(), false),
            }),
        };
        let nonempty = |key: &str| f.get(svc, key).filter(|v| !v.is_empty()).map(str::to_owned);
        let memory_max = match f
            .get(svc, "MemoryMax")
            .or_else(|| f.get(svc, "MemoryLimit"))
        {
            None | Some("") | Some("infinity") => None,
            Some(v) => Some(
                parse_bytes(v).ok_or_else(|| bad("MemoryMax", format!("invalid size {v:?}")))?,
            ),
        };
        let cpu_quota_percent = match f.get(svc, "CPUQuota") {
            None | Some("") => None,
            Some(v) => Some(
                v.strip_suffix('%')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad("CPUQuota", format!("invalid percentage {v:?}")))?,
            ),
        };
        Ok(ServiceConfig {
            service_type,
            exec_start_pre: exec("ExecStartPre")?,
            exec_start,
            exec_start_post: exec("ExecStartPost")?,
            exec_stop: exec("ExecStop")?,
            exec_stop_post: exec("ExecStopPost")?,
            exec_reload: exec("ExecReload")?,
            remain_after_exit,
            restart,
            restart_sec: timespan(svc, "RestartSec", Some(Duration::from_millis(100)), false)?
                .unwrap_or(Duration::MAX),
            start_limit_interval,
            start_limit_burst,
            timeout_start,
            timeout_stop,
            kill_mode,
            kill_signal,
            send_sigkill: boolean("SendSIGKILL", true)?,
            environment,
            environment_files,
            working_directory,
            user: nonempty("User"),
            group: nonempty("Group"),
            pid_file: nonempty("PIDFile").map(PathBuf::from),
            memory_max,
            cpu_quota_percent,
        })
    }
}

/// Resolves the unit specifiers that make sense for a supervised service (`%n %N %p %i %I
/// %t %u %U %h %%`); others are an error, as in systemd.
pub(crate) fn expand_specifiers(v: &str, unit: &str) -> std::result::Result<String, String> {
    if !v.contains('%') {
        return Ok(v.to_owned());
    }
    let stem = unit.rsplit_once('.').map_or(unit, |(s, _)| s);
    let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('n') => out.push_str(unit),
            Some('N') => out.push_str(stem),
            Some('p') => out.push_str(prefix),
            Some('i') | Some('I') => out.push_str(instance),
            Some('t') => {
                out.push_str(&std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/run".into()))
            }
            Some('u') => out.push_str(&std::env::var("USER").unwrap_or_else(|_| "root".into())),
            Some('U') => out.push_str(&crate::process::euid().to_string()),
            Some('h') => out.push_str(&std::env::var("HOME").unwrap_or_else(|_| "/".into())),
            Some(other) => return Err(format!("unsupported specifier %{other} in {v:?}")),
            None => return Err(format!("incomplete specifier at the end of {v:?}")),
        }
    }
    Ok(out)
}

/// systemd's `parse_boolean()`.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// systemd's `parse_sec()`: `Some(None)` is `infinity`, `None` is invalid.
pub(crate) fn parse_timespan(v: &str) -> Option<Option<Duration>> {
    let v = v.trim();
    if v == "infinity" {
        return Some(None);
    }
    if v.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    let mut rest = v;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num.chars().filter(|&c| c == '.').count() > 1 || num == "." {
            return None;
        }
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_len);
        let usec_per: u128 = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1_000_000,
            "us" | "usec" | "µs" => 1,
            "ms" | "msec" => 1_000,
            "m" | "min" | "minute" | "minutes" => 60_000_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000_000,
            "d" | "day" | "days" => 86_400_000_000,
            "w" | "week" | "weeks" => 604_800_000_000,
            "M" | "month" | "months" => 2_629_800_000_000,
            "y" | "year" | "years" => 31_557_600_000_000,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        total = total.checked_add(int.checked_mul(usec_per)?)?;
        let mut scale = usec_per;
        for d in frac.chars() {
            scale /= 10;
            total += u128::from(d.to_digit(10)?) * scale;
        }
        rest = after;
    }
    Some(Some(Duration::from_micros(u64::try_from(total).ok()?)))
}

/// `1K`, `512M`, `2G`... (base 1024), or plain bytes.
fn parse_bytes(v: &str) -> Option<u64> {
    let (num, mult) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 1u64 << 10),
        'M' => (&v[..v.len() - 1], 1 << 20),
        'G' => (&v[..v.len() - 1], 1 << 30),
        'T' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// `SIGTERM`, `TERM` or a number.
pub(crate) fn parse_signal(v: &str) -> Option<i32> {
    if let Ok(n) = v.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = v.strip_prefix("SIG").unwrap_or(v);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => return None,
    })
}

fn valid_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits systemd-style words: whitespace separates, quotes group, C escapes are decoded.
pub(crate) fn split_words(v: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = v.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('r') => word.push('\r'),
                    Some('s') => word.push(' '),
                    Some('a') => word.push('\x07'),
                    Some('b') => word.push('\x08'),
                    Some('f') => word.push('\x0c'),
                    Some('v') => word.push('\x0b'),
                    Some(c @ ('\\' | '"' | '\'')) => word.push(c),
                    // Unknown escapes are kept verbatim (systemd's relaxed mode).
                    Some(other) => {
                        word.push('\\');
                        word.push(other);
                    }
                    None => word.push('\\'),
                },
                (q @ ('"' | '\''), None) => quote = Some(q),
                (c, Some(q)) if c == q => quote = None,
                (c, None) if c.is_whitespace() => break,
                (c, _) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err(format!("unterminated quote in {v:?}"));
        }
        words.push(word);
    }
}

/// Parses one `Exec*=` value: prefixes, then words; `;` separates several commands.
pub(crate) fn parse_exec(v: &str) -> std::result::Result<Vec<ExecCommand>, String> {
    let mut commands = Vec::new();
    let words = split_words(v)?;
    let mut groups: Vec<Vec<String>> = vec![Vec::new()];
    for w in words {
        if w == ";" {
            groups.push(Vec::new());
        } else if w == "\\;" {
            groups.last_mut().expect("non-empty").push(";".into());
        } else {
            groups.last_mut().expect("non-empty").push(w);
        }
    }
    for mut words in groups.into_iter().filter(|g| !g.is_empty()) {
        let first = words.remove(0);
        let mut rest = first.as_str();
        let (mut ignore_failure, mut argv0_override, mut no_env_expand, mut privileged) =
            (false, false, false, false);
        loop {
            match rest.chars().next() {
                Some('-') => ignore_failure = true,
                Some('@') => argv0_override = true,
                Some(':') => no_env_expand = true,
                Some('+') | Some('!') => privileged = true,
                _ => break,
            }
            rest = &rest[1..];
        }
        let path = rest.to_owned();
        if path.is_empty() {
            return Err(format!("empty executable path in {v:?}"));
        }
        let argv = if argv0_override {
            if words.is_empty() {
                return Err(format!("'@' prefix without argv[0] in {v:?}"));
            }
            words
        } else {
            let mut argv = vec![path.clone()];
            argv.extend(words);
            argv
        };
        commands.push(ExecCommand {
            path,
            argv,
            ignore_failure,
            no_env_expand,
            privileged,
        });
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(
            parse_timespan("5min 20s"),
            Some(Some(Duration::from_secs(320)))
        );
        assert_eq!(
            parse_timespan("1.5s"),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(
            parse_timespan("100ms"),
            Some(Some(Duration::from_millis(100)))
        );
        assert_eq!(parse_timespan("infinity"), Some(None));
        assert_eq!(parse_timespan("5S"), None);
        assert_eq!(parse_timespan(""), None);
    }

    #[test]
    fn exec_lines() {
        let c = parse_exec("-@/bin/sh mysh -c 'echo a b'").unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].ignore_failure);
        assert_eq!(c[0].path, "/bin/sh");
        assert_eq!(c[0].argv, ["mysh", "-c", "echo a b"]);
        let c = parse_exec("/bin/echo a ; /bin/echo \\; b").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].argv, ["/bin/echo", ";", "b"]);
        assert!(parse_exec("/bin/echo 'unterminated").is_err());
    }

    #[test]
    fn defaults_and_errors() {
        let c = ServiceConfig::from_text("a.service", "[Service]\nExecStart=/bin/true\n").unwrap();
        assert_eq!(c.service_type, ServiceType::Simple);
        assert_eq!(c.timeout_stop, Some(DEFAULT_TIMEOUT));
        assert_eq!(c.kill_signal, libc::SIGTERM);
        let e = ServiceConfig::from_text("a.service", "[Service]\nType=simple\n").unwrap_err();
        assert!(e.to_string().contains("no ExecStart="), "{e}");
        let e = ServiceConfig::from_text(
            "a.service",
            "[Service]\nExecStart=/bin/true\nRestart=sometimes\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let c = ServiceConfig::from_text(
            "a.service",
            "[Service]\nExecStart=/bin/true\nEnvironment=\"A=x y\" B=2 1C=bad\nTimeoutStopSec=0\n",
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
    }
}
