//! fleetctl's command line as fleet 1.0 reads it (cobra and pflag): its commands and flags
//! with fleet's help texts, a command named by a unique prefix of its name, flags before or
//! after the command and between arguments (`--flag=value`, `--flag value`, a bare boolean
//! `--flag`, `--` ending the flags), and fleet's words for what is wrong.
//!
//! Unlike fleet, `-l` is `--full`'s shorthand on the list commands (fleet registered a long
//! flag named `l`, so only `--l` worked).

use std::collections::BTreeMap;
use std::fmt;

/// A flag's value type. Help names it (`string`, `int`, `float`; nothing for a boolean).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag`, `--flag=false`.
    Bool,
    /// Any text.
    String,
    /// An integer (Go's `strconv.ParseInt` with base prefixes).
    Int,
    /// A number.
    Float,
}

/// One flag.
#[derive(Debug)]
pub struct Flag {
    /// Its name (`--name`).
    pub name: &'static str,
    /// Its one-letter shorthand (`-l`).
    pub short: Option<char>,
    /// Its value type.
    pub kind: Kind,
    /// Its value when not given, as help shows it.
    pub default: &'static str,
    /// What it does, as help shows it.
    pub usage: &'static str,
}

/// One command.
#[derive(Debug)]
pub struct Spec {
    /// Its name.
    pub name: &'static str,
    /// Its usage line without the program's name (cobra's `Use`).
    pub usage: &'static str,
    /// One line on what it does.
    pub short: &'static str,
    /// Its description (may be empty).
    pub long: &'static str,
    /// Its own flags (the global ones come on top), by name.
    pub flags: &'static [Flag],
    /// Why it is deprecated, if it is (it is then not listed).
    pub deprecated: Option<&'static str>,
}

impl Spec {
    /// Whether help lists it among the commands: not deprecated and not `help`.
    pub fn listed(&self) -> bool {
        self.deprecated.is_none() && self.name != "help"
    }

    /// The flag named `name`, its own or a global one.
    fn flag(&self, name: &str) -> Option<&'static Flag> {
        self.flags
            .iter()
            .chain(GLOBAL_FLAGS)
            .find(|f| f.name == name)
    }

    /// The flag whose shorthand is `c`.
    fn short(&self, c: char) -> Option<&'static Flag> {
        self.flags
            .iter()
            .chain(GLOBAL_FLAGS)
            .find(|f| f.short == Some(c))
    }
}

const fn flag(name: &'static str, kind: Kind, default: &'static str, usage: &'static str) -> Flag {
    Flag {
        name,
        short: None,
        kind,
        default,
        usage,
    }
}

/// The flags every command takes, by name.
pub const GLOBAL_FLAGS: &[Flag] = &[
    flag(
        "driver",
        Kind::String,
        "API",
        "Adapter used to execute fleetctl commands. Options include \"API\" and \"etcd\".",
    ),
    flag(
        "endpoint",
        Kind::String,
        "unix:///var/run/fleet.sock",
        "Location of the fleet API if --driver=API. Alternatively, if --driver=etcd, location of the etcd API.",
    ),
    flag(
        "etcd-key-prefix",
        Kind::String,
        crate::registry::DEFAULT_PREFIX,
        "Keyspace for fleet data in etcd (development use only!)",
    ),
    flag("h", Kind::Bool, "false", "Print usage information and exit"),
    flag(
        "help",
        Kind::Bool,
        "false",
        "Print usage information and exit",
    ),
    flag(
        "request-timeout",
        Kind::Float,
        "3",
        "Amount of time in seconds to allow a single request before considering it failed.",
    ),
    flag("version", Kind::Bool, "false", "Print the version and exit"),
];

/// fleetctl itself.
pub const ROOT: Spec = Spec {
    name: "fleetctl",
    usage: "fleetctl",
    short: "fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system.",
    long: "",
    flags: &[],
    deprecated: None,
};

const SIGN: Flag = flag(
    "sign",
    Kind::Bool,
    "false",
    "DEPRECATED - this option cannot be used",
);
const FULL: Flag = Flag {
    name: "full",
    short: Some('l'),
    kind: Kind::Bool,
    default: "false",
    usage: "Do not ellipsize fields on output",
};
const L: Flag = flag("l", Kind::Bool, "false", "Shorthand for --full");
const NO_LEGEND: Flag = flag(
    "no-legend",
    Kind::Bool,
    "false",
    "Do not print a legend (column headers)",
);

/// fleetctl's commands, by name.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "cat",
        usage: "cat UNIT",
        short: "Output the contents of a submitted unit",
        long: "Outputs the unit file that is currently loaded in the cluster. Useful to verify\nthe correct version of a unit is running.",
        flags: &[],
        deprecated: None,
    },
    Spec {
        name: "destroy",
        usage: "destroy UNIT...",
        short: "Destroy one or more units in the cluster",
        long: "Completely remove one or more running or submitted units from the cluster.\n\nInstructs systemd on the host machine to destroy the unit, deferring to systemd\ncompletely for any custom stop directives (i.e. ExecStop option in the unit\nfile).\n\nDestroyed units are impossible to start unless re-submitted.",
        flags: &[
            flag(
                "block-attempts",
                Kind::Int,
                "0",
                "Wait until the units are destroyed, performing up to N attempts before giving up. A value of 0 indicates no limit. Does not apply to global units.",
            ),
            flag(
                "no-block",
                Kind::Bool,
                "false",
                "Do not wait until the units are destroyed before exiting. Always the case for global units.",
            ),
        ],
        deprecated: None,
    },
    Spec {
        name: "help",
        usage: "help [command]",
        short: "Help about any command",
        long: "Help provides help for any command in the application.\n    Simply type fleetctl help [path to command] for full details.",
        flags: &[],
        deprecated: None,
    },
    Spec {
        name: "list-machines",
        usage: "list-machines [-l|--full] [--no-legend]",
        short: "Enumerate the current hosts in the cluster",
        long: "Lists all active machines within the cluster. Previously active machines will not appear in this list.\n\nFor easily parsable output, you can remove the column headers:\nfleetctl list-machines --no-legend\n\nOutput the list without truncation:\nfleetctl list-machines --full",
        flags: &[
            flag(
                "fields",
                Kind::String,
                super::fields::MACHINE_DEFAULT,
                "Columns to print for each Machine. Valid fields are \"ip,machine,metadata\"",
            ),
            FULL,
            L,
            NO_LEGEND,
        ],
        deprecated: None,
    },
    Spec {
        name: "list-unit-files",
        usage: "list-unit-files [--fields]",
        short: "List the units that exist in the cluster.",
        long: "Lists all unit files that exist in the cluster (whether or not they are loaded onto a machine).",
        flags: &[
            flag(
                "fields",
                Kind::String,
                super::fields::UNIT_FILE_DEFAULT,
                "Columns to print for each Unit file. Valid fields are \"desc,dstate,global,hash,state,target,tmachine,unit\"",
            ),
            FULL,
            NO_LEGEND,
        ],
        deprecated: None,
    },
    Spec {
        name: "list-units",
        usage: "list-units [--no-legend] [-l|--full] [--fields]",
        short: "List the current state of units in the cluster",
        long: "Lists the state of all units in the cluster loaded onto a machine.\n\nFor easily parsable output, you can remove the column headers:\nfleetctl list-units --no-legend\n\nOutput the list without ellipses:\nfleetctl list-units --full\n\nOr, choose the columns to display:\nfleetctl list-units --fields=unit,machine",
        flags: &[
            flag(
                "fields",
                Kind::String,
                super::fields::UNIT_STATE_DEFAULT,
                "Columns to print for each Unit. Valid fields are \"active,hash,load,machine,sub,unit\"",
            ),
            FULL,
            L,
            NO_LEGEND,
        ],
        deprecated: None,
    },
    Spec {
        name: "load",
        usage: "load [--no-block|--block-attempts=N] UNIT...",
        short: "Schedule one or more units in the cluster, first submitting them if necessary.",
        long: "Load one or many units in the cluster into systemd, but do not start.\n\nSelect units to load by glob matching for units in the current working directory\nor matching the names of previously submitted units.\n\nFor units which are not global, load operations are performed synchronously,\nwhich means fleetctl will block until it detects that the unit(s) have\ntransitioned to a loaded state. This behaviour can be configured with the\nrespective --block-attempts and --no-block options. Load operations on global\nunits are always non-blocking.",
        flags: &[
            flag(
                "block-attempts",
                Kind::Int,
                "0",
                "Wait until the jobs are loaded, performing up to N attempts before giving up. A value of 0 indicates no limit. Does not apply to global units.",
            ),
            flag(
                "no-block",
                Kind::Bool,
                "false",
                "Do not wait until the jobs have been loaded before exiting. Always the case for global units.",
            ),
            flag(
                "replace",
                Kind::Bool,
                "false",
                "Replace the old scheduled units in the cluster with new versions.",
            ),
            SIGN,
        ],
        deprecated: None,
    },
    Spec {
        name: "start",
        usage: "start [--no-block|--block-attempts=N] UNIT...",
        short: "Instruct systemd to start one or more units in the cluster, first submitting and loading if necessary.",
        long: "Start one or many units on the cluster. Select units to start by glob matching\nfor units in the current working directory or matching names of previously\nsubmitted units.\n\nFor units which are not global, start operations are performed synchronously,\nwhich means fleetctl will block until it detects that the unit(s) have\ntransitioned to a started state. This behaviour can be configured with the\nrespective --block-attempts and --no-block options. Start operations on global\nunits are always non-blocking.\n\nStart a single unit:\nfleetctl start foo.service\n\nStart an entire directory of units with glob matching:\nfleetctl start myservice/*\n\nYou may filter suitable hosts based on metadata provided by the machine.\nMachine metadata is located in the fleet configuration file.",
        flags: &[
            flag(
                "block-attempts",
                Kind::Int,
                "0",
                "Wait until the units are launched, performing up to N attempts before giving up. A value of 0 indicates no limit. Does not apply to global units.",
            ),
            flag(
                "no-block",
                Kind::Bool,
                "false",
                "Do not wait until the units have launched before exiting. Always the case for global units.",
            ),
            flag(
                "replace",
                Kind::Bool,
                "false",
                "Replace the already started units in the cluster with new versions.",
            ),
            SIGN,
        ],
        deprecated: None,
    },
    Spec {
        name: "stop",
        usage: "stop [--no-block|--block-attempts=N] UNIT...",
        short: "Instruct systemd to stop one or more units in the cluster.",
        long: "Stop one or more units from running in the cluster, but allow them to be\nstarted again in the future.\n\nInstructs systemd on the host machine to stop the unit, deferring to systemd\ncompletely for any custom stop directives (i.e. ExecStop option in the unit\nfile).\n\nFor units which are not global, stop operations are performed synchronously,\nwhich means fleetctl will block until it detects that the unit(s) have\ntransitioned to a stopped state. This behaviour can be configured with the\nrespective --block-attempts and --no-block options. Stop operations on global\nunits are always non-blocking.\n\nStop a single unit:\nfleetctl stop foo.service\n\nStop an entire directory of units with glob matching, without waiting:\nfleetctl --no-block stop myservice/*",
        flags: &[
            flag(
                "block-attempts",
                Kind::Int,
                "0",
                "Wait until the units are stopped, performing up to N attempts before giving up. A value of 0 indicates no limit. Does not apply to global units.",
            ),
            flag(
                "no-block",
                Kind::Bool,
                "false",
                "Do not wait until the units have stopped before exiting. Always the case for global units.",
            ),
        ],
        deprecated: None,
    },
    Spec {
        name: "submit",
        usage: "submit UNIT...",
        short: "Upload one or more units to the cluster without starting them",
        long: "Upload one or more units to the cluster without starting them. Useful\nfor validating units before they are started.\n\nThis operation is idempotent; if a named unit already exists in the cluster, it will not be resubmitted.\n\nSubmit a single unit:\nfleetctl submit foo.service\n\nSubmit a directory of units with glob matching:\nfleetctl submit myservice/*",
        flags: &[
            flag(
                "replace",
                Kind::Bool,
                "false",
                "Replace the old submitted units in the cluster with new versions.",
            ),
            SIGN,
        ],
        deprecated: None,
    },
    Spec {
        name: "unload",
        usage: "unload UNIT...",
        short: "Unschedule one or more units in the cluster.",
        long: "",
        flags: &[
            flag(
                "block-attempts",
                Kind::Int,
                "0",
                "Wait until the units are inactive, performing up to N attempts before giving up. A value of 0 indicates no limit.",
            ),
            flag(
                "no-block",
                Kind::Bool,
                "false",
                "Do not wait until the units have become inactive before exiting.",
            ),
        ],
        deprecated: None,
    },
    Spec {
        name: "verify",
        usage: "verify UNIT",
        short: "",
        long: "",
        flags: &[],
        deprecated: Some("DEPRECATED - No longer works"),
    },
    Spec {
        name: "version",
        usage: "version",
        short: "Print the version and exit",
        long: "Print the version and exit",
        flags: &[],
        deprecated: None,
    },
];

/// A command line, read.
#[derive(Debug)]
pub struct Parsed {
    /// The command ([`ROOT`] when none was named).
    pub command: &'static Spec,
    /// The flags given, by name, with their values as given.
    values: BTreeMap<&'static str, String>,
    /// The other arguments.
    pub args: Vec<String>,
    /// `--help` (or `-h`) was given.
    pub help: bool,
}

impl Parsed {
    /// The value of flag `name` if given on the command line.
    pub fn given(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A flag's value: given, else its default.
    fn raw(&self, name: &str) -> &str {
        self.given(name)
            .unwrap_or_else(|| self.command.flag(name).map_or("", |f| f.default))
    }

    /// A boolean flag (`false` if the command has no such flag).
    pub fn bool(&self, name: &str) -> bool {
        go_parse_bool(self.raw(name)).unwrap_or(false)
    }

    /// A text flag.
    pub fn string(&self, name: &str) -> String {
        self.raw(name).to_owned()
    }

    /// An integer flag.
    pub fn int(&self, name: &str) -> i64 {
        go_parse_int(self.raw(name)).unwrap_or(0)
    }

    /// A number flag.
    pub fn float(&self, name: &str) -> f64 {
        go_parse_float(self.raw(name)).unwrap_or(0.0)
    }
}

/// Why a command line cannot be run, in fleet's words.
#[derive(Debug, Clone)]
pub enum UsageError {
    /// The first word names no command (nor is a unique prefix of one).
    UnknownCommand {
        /// The word.
        name: String,
        /// Commands with a name close to it or starting with it.
        suggestions: Vec<&'static str>,
    },
    /// A flag is unknown, lacks its value or has a bad one.
    Flag {
        /// The command whose flags these are.
        command: &'static Spec,
        /// What is wrong (pflag's words).
        message: String,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownCommand { name, suggestions } => {
                write!(f, "unknown command {} for \"fleetctl\"", go_quote(name))?;
                if !suggestions.is_empty() {
                    f.write_str("\n\nDid you mean this?\n")?;
                    for s in suggestions {
                        writeln!(f, "\t{s}")?;
                    }
                }
                Ok(())
            }
            UsageError::Flag { message, .. } => f.write_str(message),
        }
    }
}

/// The command an argument list names (cobra's `Find`): the first word that is neither a
/// flag nor a flag's value names a command, or is a unique prefix of one's name. Returns
/// the command ([`ROOT`] when no word is given) and the arguments without that word.
pub fn find(args: &[String]) -> Result<(&'static Spec, Vec<String>), UsageError> {
    let words = words(args);
    let Some(typed) = words.first() else {
        return Ok((&ROOT, args.to_vec()));
    };
    let found = COMMANDS.iter().find(|c| c.name == *typed).or_else(|| {
        let mut prefixed = COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(typed.as_str()));
        match (prefixed.next(), prefixed.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    });
    let Some(command) = found else {
        return Err(UsageError::UnknownCommand {
            name: typed.clone(),
            suggestions: suggestions(typed),
        });
    };
    let mut rest = args.to_vec();
    if let Some(i) = rest.iter().position(|a| a == typed) {
        rest.remove(i);
    }
    Ok((command, rest))
}

/// The words of an argument list that are neither flags nor (as far as fleetctl's global
/// flags tell) flags' values: cobra's `stripFlags`, quirks included.
fn words(args: &[String]) -> Vec<String> {
    let is_bool = |name: &str| ROOT.flag(name).is_some_and(|f| f.kind == Kind::Bool);
    let is_bool_short = |name: &str| {
        let mut chars = name.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => ROOT.short(c).is_some_and(|f| f.kind == Kind::Bool),
            _ => false,
        }
    };
    let mut out = Vec::new();
    let (mut in_quote, mut in_flag) = (false, false);
    for y in args {
        if !in_quote {
            if y.starts_with('"') || y.contains("=\"") {
                in_quote = true;
            } else if y.starts_with("--") && !y.contains('=') {
                in_flag = !is_bool(&y[2..]);
            } else if y.starts_with('-')
                && !y.contains('=')
                && y.len() == 2
                && !is_bool_short(&y[1..])
            {
                in_flag = true;
            } else if in_flag {
                in_flag = false;
            } else if y.is_empty() {
            } else if !y.starts_with('-') {
                out.push(y.clone());
                in_flag = false;
            }
        }
        if y.ends_with('"') && !y.ends_with("\\\"") {
            in_quote = false;
        }
    }
    out
}

/// Commands to suggest for an unknown `typed` one: those within a Levenshtein distance of
/// 2 (ignoring case) or whose name starts with it.
fn suggestions(typed: &str) -> Vec<&'static str> {
    let typed = typed.to_lowercase();
    COMMANDS
        .iter()
        .filter(|c| c.listed())
        .filter(|c| levenshtein(&typed, &c.name.to_lowercase()) <= 2 || c.name.starts_with(&typed))
        .map(|c| c.name)
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = if ca == cb {
                prev[j]
            } else {
                1 + prev[j].min(prev[j + 1]).min(cur[j])
            };
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Reads `args` (without the program's name) as fleet's fleetctl does.
///
/// # Errors
/// An unknown command, or a flag that is unknown, lacks its value or has a bad one.
pub fn parse(args: &[String]) -> Result<Parsed, UsageError> {
    let (command, rest) = find(args)?;
    let fail = |message: String| UsageError::Flag { command, message };
    let mut parsed = Parsed {
        command,
        values: BTreeMap::new(),
        args: Vec::new(),
        help: false,
    };
    let mut rest = rest.into_iter();
    while let Some(s) = rest.next() {
        if s.len() < 2 || !s.starts_with('-') {
            parsed.args.push(s);
            continue;
        }
        if s == "--" {
            parsed.args.extend(rest.by_ref());
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            if long.is_empty() || long.starts_with('-') || long.starts_with('=') {
                return Err(fail(format!("bad flag syntax: {s}")));
            }
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let Some(flag) = command.flag(name) else {
                return Err(fail(format!("unknown flag: --{name}")));
            };
            let value = match value {
                Some(v) => v,
                None if flag.kind == Kind::Bool => "true".to_owned(),
                None => match rest.next() {
                    Some(v) => v,
                    None => return Err(fail(format!("flag needs an argument: {s}"))),
                },
            };
            set(&mut parsed, flag, value, &s).map_err(fail)?;
            continue;
        }
        // Shorthands, possibly several in one (`-lx`).
        let mut shorts = s[1..].to_owned();
        while let Some(c) = shorts.chars().next() {
            let Some(flag) = command.short(c) else {
                if c == 'h' {
                    parsed.help = true;
                    return Ok(parsed);
                }
                return Err(fail(format!("unknown shorthand flag: '{c}' in -{shorts}")));
            };
            let after = &shorts[c.len_utf8()..];
            let orig = shorts.clone();
            let value = if let Some(v) = after.strip_prefix('=').filter(|v| !v.is_empty()) {
                let v = v.to_owned();
                shorts.clear();
                v
            } else if flag.kind == Kind::Bool {
                shorts = after.to_owned();
                "true".to_owned()
            } else if !after.is_empty() {
                let v = after.to_owned();
                shorts.clear();
                v
            } else {
                match rest.next() {
                    Some(v) => {
                        shorts.clear();
                        v
                    }
                    None => {
                        return Err(fail(format!("flag needs an argument: '{c}' in -{orig}")));
                    }
                }
            };
            set(&mut parsed, flag, value, &orig).map_err(fail)?;
        }
    }
    parsed.help |= parsed.bool("help") || parsed.bool("h");
    Ok(parsed)
}

/// Records a flag's value once it is known to be one of its kind.
fn set(parsed: &mut Parsed, flag: &'static Flag, value: String, orig: &str) -> Result<(), String> {
    let bad = |what: &str| {
        format!(
            "invalid argument {} for {orig}: strconv.{what}: parsing {}: invalid syntax",
            go_quote(&value),
            go_quote(&value)
        )
    };
    let ok = match flag.kind {
        Kind::Bool => go_parse_bool(&value)
            .map(drop)
            .ok_or_else(|| bad("ParseBool")),
        Kind::Int => go_parse_int(&value)
            .map(drop)
            .ok_or_else(|| bad("ParseInt")),
        Kind::Float => go_parse_float(&value)
            .map(drop)
            .ok_or_else(|| bad("ParseFloat")),
        Kind::String => Ok(()),
    };
    ok?;
    // `--l` is `--full` by another name.
    let name = if flag.name == "l" { "full" } else { flag.name };
    parsed.values.insert(name, value);
    Ok(())
}

/// Go's `strconv.ParseBool`.
pub fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a sign, then decimal, `0x` hex, `0o`/`0` octal or
/// `0b` binary digits.
pub fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(b) = lower.strip_prefix("0x") {
        (16, b)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else if let Some(b) = lower.strip_prefix("0o") {
        (8, b)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Go's `strconv.ParseFloat(s, 64)`, for the forms people write.
pub fn go_parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.starts_with(['+', '-']) && s[1..].starts_with(['+', '-']) {
        return None;
    }
    s.parse().ok()
}

/// Go's `%q`.
fn go_quote(s: &str) -> String {
    unit_parser::name::go_quote_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_are_found_by_unique_prefix_past_global_flags() {
        let (c, rest) = find(&args(&["--endpoint", "x", "list-m", "--full"])).unwrap();
        assert_eq!(
            (c.name, rest),
            ("list-machines", args(&["--endpoint", "x", "--full"]))
        );
        let e = find(&args(&["lis"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown command \"lis\" for \"fleetctl\"\n\nDid you mean this?\n\tlist-machines\n\tlist-unit-files\n\tlist-units\n"
        );
        let e = find(&args(&["bogus"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown command \"bogus\" for \"fleetctl\"");
        assert_eq!(
            find(&args(&["--driver", "etcd"])).unwrap().0.name,
            "fleetctl"
        );
    }

    #[test]
    fn flags_are_read_as_pflag_reads_them() {
        let p = parse(&args(&[
            "start",
            "a",
            "--block-attempts",
            "3",
            "--no-block",
            "b",
            "--",
            "--c",
        ]))
        .unwrap();
        assert_eq!(p.command.name, "start");
        assert_eq!((p.int("block-attempts"), p.bool("no-block")), (3, true));
        assert_eq!(p.args, args(&["a", "b", "--c"]));
        let p = parse(&args(&[
            "list-units",
            "-l",
            "--fields=unit",
            "--endpoint=e",
        ]))
        .unwrap();
        assert!(p.bool("full"));
        assert_eq!(
            (p.string("fields"), p.string("endpoint")),
            ("unit".into(), "e".into())
        );
        assert_eq!(p.float("request-timeout"), 3.0);
        assert!(
            parse(&args(&["list-machines", "--l"]))
                .unwrap()
                .bool("full")
        );
        assert!(
            !parse(&args(&["list-machines", "--full=false"]))
                .unwrap()
                .bool("full")
        );
        assert!(parse(&args(&["cat", "--help"])).unwrap().help);
        assert!(parse(&args(&["cat", "-h"])).unwrap().help);

        let message = |a: &[&str]| match parse(&args(a)).unwrap_err() {
            UsageError::Flag { message, .. } => message,
            e => panic!("{e:?}"),
        };
        assert_eq!(message(&["cat", "--bogus"]), "unknown flag: --bogus");
        assert_eq!(message(&["cat", "-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(
            message(&["list-units", "--fields"]),
            "flag needs an argument: --fields"
        );
        assert_eq!(
            message(&["stop", "--block-attempts=x"]),
            "invalid argument \"x\" for --block-attempts=x: strconv.ParseInt: parsing \"x\": invalid syntax"
        );
        assert_eq!(message(&["list-unit-files", "--l"]), "unknown flag: --l");
    }

    #[test]
    fn numbers_are_gos() {
        assert_eq!(go_parse_int("-1"), Some(-1));
        assert_eq!(go_parse_int("0x10"), Some(16));
        assert_eq!(go_parse_int("010"), Some(8));
        assert_eq!(go_parse_int("x"), None);
        assert_eq!(go_parse_float("2.5"), Some(2.5));
        assert_eq!(go_parse_bool("T"), Some(true));
        assert_eq!(go_parse_bool("yes"), None);
    }
}
