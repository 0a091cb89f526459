//! The `[X-Fleet]` section as fleet reads it: placement requirements for the scheduler.
//!
//! Parsing follows fleet (`job/job.go`, `unit/unit.go`) rather than systemd, since systemd
//! ignores the section:
//!
//! * a value that starts **and** ends with `"` holds several quoted values separated by
//!   spaces (`MachineMetadata="a=b" "c=d"`); any other value is one value;
//! * `%n %N %p %i` are replaced with parts of the unit name (fleet's `unitPrintf`, nothing
//!   else, no unescaping);
//! * `Conflicts`/`X-Conflicts` values are further split at whitespace;
//! * `MachineID` takes the first value of `MachineID`, else `X-ConditionMachineID`, else
//!   `X-ConditionMachineBootID`; `Global` takes the last value, truthy per fleet.
//!
//! Values come from this crate's systemd-exact tokenizer. fleet read them through go-systemd,
//! which differs only on odd input (a value continued with a trailing `\` keeps the
//! backslash and newline there; see `reference/systemd-syntax.md` section 15); on everything
//! else the view equals fleet's, which `tests/typed.rs` checks against readings produced by
//! fleet's own code.
//!
//! [`XFleet::from_unit`] also applies fleet's submit-time validation (`api.ValidateOptions`)
//! to the raw values, with fleet's exact messages. Unknown keys and deprecated aliases give
//! [`XFleetWarning`]s, available from [`XFleet::parse`] or [`warnings`].
//!
//! ```
//! use unit_parser::xfleet::XFleet;
//!
//! let unit = unit_parser::parse(
//!     "[X-Fleet]\nConflicts=%p@*.service\nMachineMetadata=\"region=us-east\" \"disk=ssd\"\n",
//! )?;
//! let x = XFleet::from_unit(&unit, "web@1.service")?;
//! assert_eq!(x.conflicts, ["web@*.service"]);
//! assert_eq!(x.machine_metadata[1], ("disk".to_owned(), "ssd".to_owned()));
//!
//! let bad = unit_parser::parse("[X-Fleet]\nMachineID=abc\nGlobal=true\n")?;
//! let err = XFleet::from_unit(&bad, "x.service").unwrap_err();
//! assert_eq!(err.to_string(), "MachineID cannot be used with Global");
//! assert_eq!(err.line(), 3);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use thiserror::Error;

use crate::UnitFile;
use crate::name::go_quote_str;
use crate::specifier::fleet_printf;
use crate::value::fleet_truthy;

/// The section name.
pub const SECTION: &str = "X-Fleet";

/// Every key fleet accepts (anything else only produces a warning).
pub const KNOWN_KEYS: [&str; 11] = [
    "MachineID",
    "X-ConditionMachineID",
    "X-ConditionMachineBootID",
    "X-ConditionMachineOf",
    "MachineOf",
    "X-Conflicts",
    "Conflicts",
    "X-ConditionMachineMetadata",
    "MachineMetadata",
    "Global",
    "Replaces",
];

/// Deprecated spellings and the modern key replacing each.
const DEPRECATED: [(&str, &str); 5] = [
    ("X-ConditionMachineID", "MachineID"),
    ("X-ConditionMachineBootID", "MachineID"),
    ("X-ConditionMachineOf", "MachineOf"),
    ("X-Conflicts", "Conflicts"),
    ("X-ConditionMachineMetadata", "MachineMetadata"),
];

/// The placement requirements of a unit, specifiers resolved.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XFleet {
    /// Required machine (full or 8-character short ID).
    pub machine_id: Option<String>,
    /// Units that must be scheduled on the same machine (exact names).
    pub machine_of: Vec<String>,
    /// Required machine metadata `(key, value)`: same key = OR, different keys = AND.
    /// Deprecated-key items first, then `MachineMetadata`, each in file order; items with
    /// an empty key or value, or not exactly one `=`, are dropped (as fleet does).
    pub machine_metadata: Vec<(String, String)>,
    /// Glob patterns of units that must not share the machine.
    pub conflicts: Vec<String>,
    /// Run on every machine matching the metadata.
    pub global: bool,
    /// Glob patterns of units this one pushes off its machine.
    pub replaces: Vec<String>,
}

/// An `[X-Fleet]` key fleet does not act on, or acts on under a deprecated name.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XFleetWarning {
    /// 1-based line of the assignment.
    pub line: usize,
    /// The key.
    pub key: String,
    /// What is wrong; for unknown keys fleetctl's message.
    pub message: String,
}

/// The view plus the warnings found while building it.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XFleetParse {
    /// The requirements.
    pub xfleet: XFleet,
    /// Unknown keys and deprecated aliases, in file order.
    pub warnings: Vec<XFleetWarning>,
}

/// fleet's reasons to refuse a unit; `Display` is fleet's exact message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum XFleetError {
    /// `unresolvable requirements: peer "p" matches conflict "c"`
    #[error("unresolvable requirements: peer {} matches conflict {}", go_quote_str(.peer), go_quote_str(.pattern))]
    PeerMatchesConflict {
        /// The `MachineOf` unit.
        peer: String,
        /// The `Conflicts` pattern.
        pattern: String,
        /// Line of the `Conflicts` assignment.
        line: usize,
    },
    /// `unresolvable requirements: peer "p" matches replace "r"`
    #[error("unresolvable requirements: peer {} matches replace {}", go_quote_str(.peer), go_quote_str(.pattern))]
    PeerMatchesReplace {
        /// The `MachineOf` unit.
        peer: String,
        /// The `Replaces` pattern.
        pattern: String,
        /// Line of the `Replaces` assignment.
        line: usize,
    },
    /// Two options that cannot be combined, e.g. `MachineID cannot be used with Peers`.
    #[error("{first} cannot be used with {second}")]
    Exclusive {
        /// `MachineID`, `Global` or `Conflicts`.
        first: &'static str,
        /// `Peers`, `Conflicts`, `Global` or `Replaces`.
        second: &'static str,
        /// Line of the last assignment of the second option.
        line: usize,
    },
    /// A line of the re-serialised unit is longer than go-systemd accepts.
    #[error("line too long (max 2048 bytes)")]
    LineTooLong,
}

impl XFleetError {
    /// 1-based line of the assignment that triggered the error (0 if none applies).
    pub fn line(&self) -> usize {
        match self {
            XFleetError::PeerMatchesConflict { line, .. }
            | XFleetError::PeerMatchesReplace { line, .. }
            | XFleetError::Exclusive { line, .. } => *line,
            XFleetError::LineTooLong => 0,
        }
    }
}

/// fleet's `parseMultivalueLine`.
pub fn parse_multivalue(line: &str) -> Vec<String> {
    if !(line.starts_with('"') && line.ends_with('"')) {
        return vec![line.to_owned()];
    }
    let mut values = Vec::new();
    let mut v = Vec::new();
    let mut quoted = false;
    for &b in line.as_bytes() {
        if b == b'"' {
            quoted = !quoted;
            continue;
        }
        if b == b' ' && !quoted {
            values.push(String::from_utf8_lossy(&v).into_owned());
            v.clear();
            continue;
        }
        v.push(b);
    }
    values.push(String::from_utf8_lossy(&v).into_owned());
    values
}

/// One value of one key, with where it came from.
struct Req<'a> {
    key: &'a str,
    value: String,
    line: usize,
}

fn requirements<'a>(unit: &'a UnitFile, unit_name: Option<&str>) -> Vec<Req<'a>> {
    let mut out = Vec::new();
    for (section, entry) in unit.entries() {
        if section != SECTION {
            continue;
        }
        for v in parse_multivalue(entry.value()) {
            out.push(Req {
                key: entry.key(),
                value: match unit_name {
                    Some(n) => fleet_printf(&v, n),
                    None => v,
                },
                line: entry.line(),
            });
        }
    }
    out
}

struct Collected {
    xfleet: XFleet,
    /// Lines of the last value of each option, for error locations.
    peers_line: usize,
    conflicts_lines: Vec<usize>,
    replaces_lines: Vec<usize>,
    machine_id_line: usize,
    global_line: usize,
}

fn collect(reqs: &[Req<'_>]) -> Collected {
    fn values<'r, 'a>(reqs: &'r [Req<'a>], key: &'r str) -> impl Iterator<Item = &'r Req<'a>> {
        reqs.iter().filter(move |r| r.key == key)
    }
    let mut x = XFleet::default();
    let mut machine_id_line = 0;
    for key in [
        "MachineID",
        "X-ConditionMachineID",
        "X-ConditionMachineBootID",
    ] {
        if let Some(r) = values(reqs, key).next() {
            x.machine_id = Some(r.value.clone());
            machine_id_line = r.line;
            break;
        }
    }
    let mut peers_line = 0;
    for key in ["X-ConditionMachineOf", "MachineOf"] {
        for r in values(reqs, key) {
            x.machine_of.push(r.value.clone());
            peers_line = peers_line.max(r.line);
        }
    }
    let mut conflicts_lines = Vec::new();
    for key in ["X-Conflicts", "Conflicts"] {
        for r in values(reqs, key) {
            // Go's strings.Fields: Unicode white space, as Rust's split_whitespace.
            for w in r.value.split_whitespace() {
                x.conflicts.push(w.to_owned());
                conflicts_lines.push(r.line);
            }
        }
    }
    let mut replaces_lines = Vec::new();
    for r in values(reqs, "Replaces") {
        x.replaces.push(r.value.clone());
        replaces_lines.push(r.line);
    }
    let mut global_line = 0;
    if let Some(r) = values(reqs, "Global").last() {
        x.global = fleet_truthy(&r.value);
        global_line = r.line;
    }
    for key in ["X-ConditionMachineMetadata", "MachineMetadata"] {
        for r in values(reqs, key) {
            let parts: Vec<&str> = r.value.split('=').collect();
            if let [k, v] = parts[..]
                && !k.is_empty()
                && !v.is_empty()
            {
                x.machine_metadata.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    Collected {
        xfleet: x,
        peers_line,
        conflicts_lines,
        replaces_lines,
        machine_id_line,
        global_line,
    }
}

/// Warnings for unknown keys (fleetctl's message) and deprecated aliases.
pub fn warnings(unit: &UnitFile) -> Vec<XFleetWarning> {
    let mut out = Vec::new();
    for (section, entry) in unit.entries() {
        if section != SECTION {
            continue;
        }
        let key = entry.key();
        let message = if !KNOWN_KEYS.contains(&key) {
            format!(
                "unrecognized requirement in [X-Fleet] section: {}",
                go_quote_str(key)
            )
        } else if let Some((_, modern)) = DEPRECATED.iter().find(|(old, _)| *old == key) {
            format!("deprecated [X-Fleet] option {key}, use {modern}")
        } else {
            continue;
        };
        out.push(XFleetWarning {
            line: entry.line(),
            key: key.to_owned(),
            message,
        });
    }
    out
}

impl XFleet {
    /// Reads the section with specifiers resolved for `unit_name` (none if `None`), without
    /// validating it.
    pub fn parse(unit: &UnitFile, unit_name: Option<&str>) -> XFleetParse {
        XFleetParse {
            xfleet: collect(&requirements(unit, unit_name)).xfleet,
            warnings: warnings(unit),
        }
    }

    /// Validates the section as fleet's API does on submission (on the raw values, as fleet
    /// does), then returns it with specifiers resolved for `unit_name`.
    ///
    /// # Errors
    /// The first [`XFleetError`] in fleet's order.
    pub fn from_unit(unit: &UnitFile, unit_name: &str) -> Result<XFleet, XFleetError> {
        validate(unit)?;
        Ok(Self::parse(unit, Some(unit_name)).xfleet)
    }
}

/// fleet's `api.ValidateOptions` on the `[X-Fleet]` section of `unit`: the go-systemd line
/// length limit on the re-serialised unit, peers matching conflicts or replaces, and the
/// pairwise exclusions, in fleet's order.
///
/// # Errors
/// The first [`XFleetError`] found.
pub fn validate(unit: &UnitFile) -> Result<(), XFleetError> {
    if crate::hash::go_reparse_too_long(unit) {
        return Err(XFleetError::LineTooLong);
    }
    let c = collect(&requirements(unit, None));
    let x = &c.xfleet;
    let mut peers: Vec<&String> = Vec::new();
    for p in &x.machine_of {
        if !peers.contains(&p) {
            peers.push(p);
        }
    }
    for peer in &peers {
        for (pattern, line) in x.conflicts.iter().zip(&c.conflicts_lines) {
            if glob_match(pattern, peer) {
                return Err(XFleetError::PeerMatchesConflict {
                    peer: (*peer).clone(),
                    pattern: pattern.clone(),
                    line: *line,
                });
            }
        }
        for (pattern, line) in x.replaces.iter().zip(&c.replaces_lines) {
            if glob_match(pattern, peer) {
                return Err(XFleetError::PeerMatchesReplace {
                    peer: (*peer).clone(),
                    pattern: pattern.clone(),
                    line: *line,
                });
            }
        }
    }
    let has_target = x.machine_id.is_some();
    let has_peers = !x.machine_of.is_empty();
    let has_conflicts = !x.conflicts.is_empty();
    let has_replaces = !x.replaces.is_empty();
    let last = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
    let ex = |first, second, line| {
        Err(XFleetError::Exclusive {
            first,
            second,
            line,
        })
    };
    let _ = c.machine_id_line;
    match () {
        _ if has_target && has_peers => ex("MachineID", "Peers", c.peers_line),
        _ if has_target && has_conflicts => ex("MachineID", "Conflicts", last(&c.conflicts_lines)),
        _ if has_target && x.global => ex("MachineID", "Global", c.global_line),
        _ if has_target && has_replaces => ex("MachineID", "Replaces", last(&c.replaces_lines)),
        _ if x.global && has_peers => ex("Global", "Peers", c.peers_line),
        _ if x.global && has_replaces => ex("Global", "Replaces", last(&c.replaces_lines)),
        _ if has_conflicts && has_replaces => ex("Conflicts", "Replaces", last(&c.replaces_lines)),
        _ => Ok(()),
    }
}

/// Go's `path.Match(pattern, name)` with errors counted as no match (as fleet uses it):
/// `*` matches any run of non-`/` characters, `?` one non-`/` character, `[...]` a class
/// (`^` negates, `a-z` ranges), `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    go_match(pattern.as_bytes(), name.as_bytes()).unwrap_or(false)
}

struct BadPattern;

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while let [b'*', rest @ ..] = pattern {
        pattern = rest;
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

fn decode_char(s: &[u8]) -> (Option<char>, usize) {
    let n = match s.first() {
        None => return (None, 0),
        Some(b) if *b < 0x80 => 1,
        Some(b) if *b >= 0xF0 => 4,
        Some(b) if *b >= 0xE0 => 3,
        Some(_) => 2,
    };
    match std::str::from_utf8(&s[..n.min(s.len())]) {
        Ok(t) => (t.chars().next(), n),
        Err(_) => (None, 1),
    }
}

fn get_esc(chunk: &[u8]) -> Result<(char, &[u8]), BadPattern> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some(b'-') | Some(b']') => return Err(BadPattern),
        Some(b'\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(BadPattern);
            }
        }
        _ => {}
    }
    let (c, n) = decode_char(chunk);
    let c = c.ok_or(BadPattern)?;
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(BadPattern);
    }
    Ok((c, rest))
}

fn match_chunk<'s>(mut chunk: &[u8], mut s: &'s [u8]) -> Result<Option<&'s [u8]>, BadPattern> {
    let mut failed = false;
    while let Some(&c0) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c0 {
            b'[' => {
                let mut r = None;
                if !failed {
                    let (c, n) = decode_char(s);
                    r = Some(c.unwrap_or('\u{fffd}'));
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&b'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if let Some(r) = r
                        && lo <= r
                        && r <= hi
                    {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_char(s);
                    s = &s[n.max(1)..];
                }
                chunk = &chunk[1..];
            }
            b'\\' => {
                chunk = &chunk[1..];
                let Some(&c) = chunk.first() else {
                    return Err(BadPattern);
                };
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            c => {
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let r = match_chunk(chunk, name);
        if let Ok(Some(t)) = r
            && (t.is_empty() || !pattern.is_empty())
        {
            name = t;
            continue;
        }
        r?;
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                match match_chunk(chunk, &name[i + 1..])? {
                    Some(t) => {
                        if pattern.is_empty() && !t.is_empty() {
                            i += 1;
                            continue;
                        }
                        name = t;
                        continue 'pattern;
                    }
                    None => i += 1,
                }
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, b"")?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multivalue_lines() {
        let mv = |s: &str| parse_multivalue(s);
        assert_eq!(mv(r#""a=b" "c=d""#), ["a=b", "c=d"]);
        assert_eq!(mv(r#""""#), [""]);
        assert_eq!(mv(r#""bar"#), [r#""bar"#]);
        assert_eq!(mv(r#""bar" ""#), ["bar", ""]);
        assert_eq!(mv(r#""foo\"bar""#), ["foo\\bar"]);
        assert_eq!(mv("plain value"), ["plain value"]);
        assert_eq!(mv(""), [""]);
    }

    #[test]
    fn go_glob() {
        assert!(glob_match("*", "foo.service"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_match("foo.*", "foo.socket"));
        assert!(glob_match("foo@*.service", "foo@12.service"));
        assert!(glob_match("foo@[abc].service", "foo@a.service"));
        assert!(!glob_match("foo@[abc].service", "foo@d.service"));
        assert!(glob_match("foo@[^abc].service", "foo@d.service"));
        assert!(glob_match("foo@[a-c].service", "foo@b.service"));
        assert!(glob_match("foo@?.service", "foo@1.service"));
        assert!(!glob_match("foo@?.service", "foo@12.service"));
        assert!(glob_match("b*e", "bar.service"));
        assert!(glob_match("*bar*", "foobarbaz"));
        assert!(glob_match("a\\*b", "a*b"));
        assert!(!glob_match("a\\*b", "axb"));
        assert!(!glob_match("[", "a"));
        assert!(!glob_match("a[", "a"));
        assert!(!glob_match("\\", "a"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
        assert!(glob_match("*x*y", "axbxy"));
    }
}
