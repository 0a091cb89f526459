//! Unit names: validation, template/instance/prefix, and `systemd-escape`.
//!
//! Two rule sets live here because they disagree:
//!
//! * [`UnitName::parse`] applies systemd 252's `unit_name_is_valid()`: at most 255 bytes, a
//!   known lowercase type suffix after the last `.`, a non-empty prefix, only
//!   `[A-Za-z0-9:_.\-\\@]` before the suffix, and no leading `@`.
//! * [`validate_fleet_name`] applies fleet's API check (`api.ValidateName`), which allows 256
//!   bytes, accepts the removed `snapshot` and `busname` types, restricts templates to five
//!   types, and reports problems with fleet's exact messages.
//!
//! [`escape`], [`escape_path`], [`unescape`] and [`unescape_path`] behave exactly as
//! `systemd-escape`, `systemd-escape --path` and their `--unescape` forms.
//!
//! ```
//! use unit_parser::name::{UnitName, escape, escape_path, validate_fleet_name};
//!
//! let n = UnitName::parse("getty@tty1.service")?;
//! assert_eq!((n.prefix(), n.instance()), ("getty", Some("tty1")));
//! assert_eq!(n.template().unwrap().as_str(), "getty@.service");
//! assert_eq!(escape("foo-bar baz"), "foo\\x2dbar\\x20baz");
//! assert_eq!(escape_path("/dev/disk/by-label/data")?, "dev-disk-by\\x2dlabel-data");
//! assert_eq!(
//!     validate_fleet_name("foo@1.mount").unwrap_err().to_string(),
//!     "invalid unit type for template: \"mount\""
//! );
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use thiserror::Error;

/// systemd's `UNIT_NAME_MAX` minus the terminating NUL: the longest valid name in bytes.
pub const UNIT_NAME_MAX: usize = 255;

/// Characters systemd allows in a unit name before the type suffix (`VALID_CHARS`), `@` aside.
fn is_valid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\')
}

/// The unit types systemd 252 knows (`unit_type_table`).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnitType {
    /// `.service`
    Service,
    /// `.socket`
    Socket,
    /// `.target`
    Target,
    /// `.device`
    Device,
    /// `.mount`
    Mount,
    /// `.automount`
    Automount,
    /// `.swap`
    Swap,
    /// `.timer`
    Timer,
    /// `.path`
    Path,
    /// `.slice`
    Slice,
    /// `.scope`
    Scope,
}

impl UnitType {
    /// Every type, in systemd's table order.
    pub const ALL: [UnitType; 11] = [
        UnitType::Service,
        UnitType::Socket,
        UnitType::Target,
        UnitType::Device,
        UnitType::Mount,
        UnitType::Automount,
        UnitType::Swap,
        UnitType::Timer,
        UnitType::Path,
        UnitType::Slice,
        UnitType::Scope,
    ];

    /// The suffix without the dot, e.g. `"service"`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitType::Service => "service",
            UnitType::Socket => "socket",
            UnitType::Target => "target",
            UnitType::Device => "device",
            UnitType::Mount => "mount",
            UnitType::Automount => "automount",
            UnitType::Swap => "swap",
            UnitType::Timer => "timer",
            UnitType::Path => "path",
            UnitType::Slice => "slice",
            UnitType::Scope => "scope",
        }
    }

    /// Looks a suffix up; case-sensitive like systemd.
    pub fn from_suffix(s: &str) -> Option<UnitType> {
        UnitType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for UnitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a name is plain, a template or an instance (systemd's `UnitNameFlags`).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// No `@`: `foo.service`.
    Plain,
    /// `@` directly before the suffix: `foo@.service`.
    Template,
    /// Non-empty text between the first `@` and the suffix: `foo@bar.service`.
    Instance,
}

/// Why a string is not a valid systemd unit name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("unit name is empty")]
    Empty,
    /// Longer than [`UNIT_NAME_MAX`] bytes.
    #[error("unit name {name:?} is {len} bytes long, the maximum is 255")]
    TooLong {
        /// The offending name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// No `.` at all, or nothing before the last `.`.
    #[error("unit name {0:?} has no type suffix (or an empty prefix)")]
    NoSuffix(String),
    /// The text after the last `.` is not a known unit type.
    #[error("unit name {name:?} has unknown type suffix {suffix:?}")]
    UnknownType {
        /// The offending name.
        name: String,
        /// The suffix found.
        suffix: String,
    },
    /// A character outside `[A-Za-z0-9:_.\-\\@]` before the suffix.
    #[error("unit name {name:?} contains invalid character {ch:?} at byte {pos}")]
    InvalidChar {
        /// The offending name.
        name: String,
        /// The character.
        ch: char,
        /// Its byte offset.
        pos: usize,
    },
    /// The name starts with `@` (empty prefix of a template or instance).
    #[error("unit name {0:?} starts with '@'")]
    StartsWithAt(String),
    /// A template was required but the name is not one (or similar kind mismatch).
    #[error("unit name {name:?} is a {found:?} name, expected {expected:?}")]
    WrongKind {
        /// The offending name.
        name: String,
        /// What it is.
        found: NameKind,
        /// What the caller needed.
        expected: NameKind,
    },
    /// The instance string to insert into a template is not valid.
    #[error("invalid instance {0:?}")]
    InvalidInstance(String),
}

/// A validated systemd unit name, with its parts located.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitName {
    name: String,
    /// Byte index of the first `@`, if any.
    at: Option<usize>,
    /// Byte index of the last `.`.
    dot: usize,
    unit_type: UnitType,
}

impl UnitName {
    /// Validates `name` with systemd's rules.
    ///
    /// # Errors
    /// A [`NameError`] naming the first rule broken.
    pub fn parse(name: &str) -> Result<UnitName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > UNIT_NAME_MAX {
            return Err(NameError::TooLong {
                name: name.to_owned(),
                len: name.len(),
            });
        }
        let dot = match name.rfind('.') {
            Some(0) | None => return Err(NameError::NoSuffix(name.to_owned())),
            Some(d) => d,
        };
        let suffix = &name[dot + 1..];
        let unit_type = UnitType::from_suffix(suffix).ok_or_else(|| NameError::UnknownType {
            name: name.to_owned(),
            suffix: suffix.to_owned(),
        })?;
        let mut at = None;
        for (pos, ch) in name[..dot].char_indices() {
            if ch == '@' {
                at.get_or_insert(pos);
            } else if !(ch.is_ascii() && is_valid_char(ch as u8)) {
                return Err(NameError::InvalidChar {
                    name: name.to_owned(),
                    ch,
                    pos,
                });
            }
        }
        if at == Some(0) {
            return Err(NameError::StartsWithAt(name.to_owned()));
        }
        Ok(UnitName {
            name: name.to_owned(),
            at,
            dot,
            unit_type,
        })
    }

    /// The full name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The unit type from the suffix.
    pub fn unit_type(&self) -> UnitType {
        self.unit_type
    }

    /// Plain, template or instance.
    pub fn kind(&self) -> NameKind {
        match self.at {
            None => NameKind::Plain,
            Some(a) if a + 1 == self.dot => NameKind::Template,
            Some(_) => NameKind::Instance,
        }
    }

    /// True for `foo@.service`.
    pub fn is_template(&self) -> bool {
        self.kind() == NameKind::Template
    }

    /// True for `foo@bar.service`.
    pub fn is_instance(&self) -> bool {
        self.kind() == NameKind::Instance
    }

    /// The name without the type suffix (`%N`): `foo@bar` for `foo@bar.service`.
    pub fn without_suffix(&self) -> &str {
        &self.name[..self.dot]
    }

    /// The prefix (`%p`): text before the first `@`, or the whole name without suffix.
    pub fn prefix(&self) -> &str {
        &self.name[..self.at.unwrap_or(self.dot)]
    }

    /// The instance (`%i`): between the first `@` and the last `.`; `None` for plain names,
    /// `Some("")` for templates.
    pub fn instance(&self) -> Option<&str> {
        self.at.map(|a| &self.name[a + 1..self.dot])
    }

    /// The type suffix including the dot, e.g. `.service`.
    pub fn suffix(&self) -> &str {
        &self.name[self.dot..]
    }

    /// For an instance or template, the template's name (`foo@.service`).
    pub fn template(&self) -> Option<UnitName> {
        let at = self.at?;
        let name = format!("{}@{}", &self.name[..at], self.suffix());
        Some(UnitName {
            dot: at + 1,
            at: Some(at),
            unit_type: self.unit_type,
            name,
        })
    }

    /// Builds the instance `instance` of this template (`foo@.service` + `bar` →
    /// `foo@bar.service`).
    ///
    /// # Errors
    /// [`NameError::WrongKind`] if `self` is not a template, or the error for the resulting
    /// name (e.g. an instance containing `/`, or one making the name too long).
    pub fn with_instance(&self, instance: &str) -> Result<UnitName, NameError> {
        if !self.is_template() {
            return Err(NameError::WrongKind {
                name: self.name.clone(),
                found: self.kind(),
                expected: NameKind::Template,
            });
        }
        if instance.is_empty() {
            return Err(NameError::InvalidInstance(instance.to_owned()));
        }
        UnitName::parse(&format!("{}@{}{}", self.prefix(), instance, self.suffix()))
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::str::FromStr for UnitName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UnitName::parse(s)
    }
}

/// fleet's longest accepted unit name (`unitNameMax`), one more than systemd's.
pub const FLEET_UNIT_NAME_MAX: usize = 256;

const FLEET_UNIT_TYPES: [&str; 13] = [
    "automount",
    "busname",
    "device",
    "mount",
    "path",
    "scope",
    "service",
    "slice",
    "snapshot",
    "socket",
    "swap",
    "target",
    "timer",
];

const FLEET_TEMPLATE_TYPES: [&str; 5] = ["path", "service", "socket", "target", "timer"];

/// A unit name fleet's API refuses; `Display` is fleet's exact message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FleetNameError {
    /// `unit name cannot be empty`
    #[error("unit name cannot be empty")]
    Empty,
    /// `unit name exceeds maximum length (256)`
    #[error("unit name exceeds maximum length (256)")]
    TooLong,
    /// `unit name must contain "."`
    #[error("unit name must contain \".\"")]
    NoDot,
    /// `unit name cannot end in "."`
    #[error("unit name cannot end in \".\"")]
    EndsInDot,
    /// `invalid unit type: "bar"`
    #[error("invalid unit type: {}", go_quote_str(.0))]
    InvalidType(String),
    /// `invalid unit type for template: "mount"`
    #[error("invalid unit type for template: {}", go_quote_str(.0))]
    InvalidTemplateType(String),
    /// `invalid character '%' in unit name`
    #[error("invalid character {} in unit name", go_quote_char(*.0))]
    InvalidChar(char),
    /// `unit name cannot start in "@"`
    #[error("unit name cannot start in \"@\"")]
    StartsWithAt,
}

/// Checks a unit name the way fleet's API and fleetctl do (`api.ValidateName`), in fleet's
/// order, returning fleet's message for the first problem.
///
/// # Errors
/// The first [`FleetNameError`] found.
pub fn validate_fleet_name(name: &str) -> Result<(), FleetNameError> {
    if name.is_empty() {
        return Err(FleetNameError::Empty);
    }
    if name.len() > FLEET_UNIT_NAME_MAX {
        return Err(FleetNameError::TooLong);
    }
    let dot = name.rfind('.').ok_or(FleetNameError::NoDot)?;
    if dot == name.len() - 1 {
        return Err(FleetNameError::EndsInDot);
    }
    let suffix = &name[dot + 1..];
    if !FLEET_UNIT_TYPES.contains(&suffix) {
        return Err(FleetNameError::InvalidType(suffix.to_owned()));
    }
    if name.contains('@') && !FLEET_TEMPLATE_TYPES.contains(&suffix) {
        return Err(FleetNameError::InvalidTemplateType(suffix.to_owned()));
    }
    for ch in name[..dot].chars() {
        if !(ch.is_ascii() && (is_valid_char(ch as u8) || ch == '@')) {
            return Err(FleetNameError::InvalidChar(ch));
        }
    }
    if name.starts_with('@') {
        return Err(FleetNameError::StartsWithAt);
    }
    Ok(())
}

/// fleetctl's name mangling for command-line arguments (`unitNameMangle`): the base name of
/// the argument (directories stripped), with `.service` appended unless it already ends in
/// a type fleetctl recognises (`.service .socket .timer .path .device .mount .automount`;
/// note: not `.target`, so `x.target` becomes `x.target.service`).
pub fn fleet_mangle_name(arg: &str) -> String {
    const RECOGNISED: [&str; 7] = [
        ".service",
        ".socket",
        ".timer",
        ".path",
        ".device",
        ".mount",
        ".automount",
    ];
    // Go's path.Base: trailing slashes removed, then the last element; "" and "/" special.
    let trimmed = arg.trim_end_matches('/');
    let base = match (arg.is_empty(), trimmed.is_empty()) {
        (true, _) => ".",
        (false, true) => "/",
        _ => trimmed.rsplit('/').next().unwrap_or(trimmed),
    };
    if RECOGNISED.iter().any(|t| base.ends_with(t)) {
        base.to_owned()
    } else {
        format!("{base}.service")
    }
}

/// Go's `strconv.Quote` closely enough for the messages fleet builds with `%q` (its API
/// quotes names the same way in its other messages).
pub fn go_quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        go_escape_into(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// Go's `strconv.QuoteRune` (`%q` on a rune).
pub(crate) fn go_quote_char(c: char) -> String {
    let mut out = String::from("'");
    go_escape_into(&mut out, c, '\'');
    out.push('\'');
    out
}

fn go_escape_into(out: &mut String, c: char, quote: char) {
    use std::fmt::Write as _;
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() || (c.is_whitespace() && c != ' ') => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
}

/// Why escaping or unescaping failed (systemd returns `-EINVAL` in each case).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EscapeError {
    /// `--path` input that is not a normalized path (contains `..`, a component longer
    /// than 255 bytes, or is longer than `PATH_MAX`).
    #[error("{0:?} is not a valid normalized file system path")]
    InvalidPath(String),
    /// A `\` not followed by `x` and two hex digits.
    #[error("invalid escape sequence at byte {pos} of {input:?}")]
    InvalidEscape {
        /// The input.
        input: String,
        /// Byte offset of the backslash.
        pos: usize,
    },
    /// Unescaped bytes that are not UTF-8.
    #[error("{0:?} unescapes to bytes that are not UTF-8")]
    NotUtf8(String),
    /// `--path --unescape` input that decodes to a path with a leading or trailing `/`, or an
    /// empty one, or a non-normalized one.
    #[error("{0:?} does not unescape to a normalized absolute path")]
    InvalidEscapedPath(String),
}

fn push_escaped_byte(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(HEX[(b >> 4) as usize] as char);
    out.push(HEX[(b & 15) as usize] as char);
}

/// `systemd-escape STRING`: `/` becomes `-`; `-`, `\` and every byte outside
/// `[A-Za-z0-9:_.]` becomes `\xNN` (lowercase hex); a leading `.` is escaped too.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' {
            out.push('-');
        } else if (i == 0 && b == b'.') || b == b'-' || b == b'\\' || !is_valid_char(b) {
            push_escaped_byte(&mut out, b);
        } else {
            out.push(b as char);
        }
    }
    out
}

/// systemd's `path_simplify()`: collapse `//`, drop `.` components and trailing slashes.
fn simplify_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let mut out = String::with_capacity(p.len());
    if absolute {
        out.push('/');
    }
    out.push_str(&parts.join("/"));
    if out.is_empty() && !p.is_empty() {
        // "." and "./" simplify to "." in systemd, not to the empty string.
        out.push('.');
    }
    out
}

/// systemd's `path_is_normalized()` on an already-simplified path.
fn path_is_normalized(p: &str) -> bool {
    const PATH_MAX: usize = 4096;
    const NAME_MAX: usize = 255;
    if p.is_empty() || p.len() >= PATH_MAX {
        return false;
    }
    if p == "." || p.starts_with("./") || p.ends_with("/.") || p.contains("/./") {
        return false;
    }
    if p.contains("//") {
        return false;
    }
    p.split('/').all(|c| c != ".." && c.len() <= NAME_MAX)
}

/// `systemd-escape --path PATH`: simplify, refuse non-normalized paths, map `/` (or the
/// empty path) to `-`, otherwise strip the outer slashes and [`escape`].
///
/// # Errors
/// [`EscapeError::InvalidPath`] for paths with `..` components, over-long components, or
/// `.` alone.
pub fn escape_path(path: &str) -> Result<String, EscapeError> {
    let simplified = simplify_path(path);
    if simplified.bytes().all(|b| b == b'/') {
        return Ok("-".to_owned());
    }
    if !path_is_normalized(&simplified) {
        return Err(EscapeError::InvalidPath(path.to_owned()));
    }
    Ok(escape(simplified.trim_matches('/')))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `systemd-escape --unescape` on bytes: `-` becomes `/`, `\xNN` is decoded. Like systemd's C
/// string handling, a decoded NUL ends the result.
///
/// # Errors
/// [`EscapeError::InvalidEscape`] for a `\` not followed by `x` and two hex digits.
pub fn unescape_bytes(s: &str) -> Result<Vec<u8>, EscapeError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b'\\' => {
                let decoded = (b.get(i + 1) == Some(&b'x'))
                    .then(|| Some((hex_val(*b.get(i + 2)?)? << 4) | hex_val(*b.get(i + 3)?)?))
                    .flatten();
                match decoded {
                    Some(v) => out.push(v),
                    None => {
                        return Err(EscapeError::InvalidEscape {
                            input: s.to_owned(),
                            pos: i,
                        });
                    }
                }
                i += 4;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    if let Some(nul) = out.iter().position(|&c| c == 0) {
        out.truncate(nul);
    }
    Ok(out)
}

/// `systemd-escape --unescape STRING`, requiring the result to be UTF-8.
///
/// # Errors
/// [`EscapeError::InvalidEscape`], or [`EscapeError::NotUtf8`] when the decoded bytes are not
/// UTF-8 (systemd would return them raw).
pub fn unescape(s: &str) -> Result<String, EscapeError> {
    String::from_utf8(unescape_bytes(s)?).map_err(|_| EscapeError::NotUtf8(s.to_owned()))
}

/// `systemd-escape --path --unescape STRING`: `-` alone is `/`; otherwise unescape, refuse a
/// leading or trailing `/`, prepend `/` and require a normalized path.
///
/// # Errors
/// [`EscapeError::InvalidEscapedPath`] for an empty input or a result that is not a
/// normalized path, or the errors of [`unescape`].
pub fn unescape_path(s: &str) -> Result<String, EscapeError> {
    if s.is_empty() {
        return Err(EscapeError::InvalidEscapedPath(s.to_owned()));
    }
    if s == "-" {
        return Ok("/".to_owned());
    }
    let w = unescape(s)?;
    if w.starts_with('/') || w.ends_with('/') {
        return Err(EscapeError::InvalidEscapedPath(s.to_owned()));
    }
    let p = format!("/{w}");
    if !path_is_normalized(&p) {
        return Err(EscapeError::InvalidEscapedPath(s.to_owned()));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_names() {
        let n = UnitName::parse("foo@bar@baz.service").unwrap();
        assert_eq!(n.kind(), NameKind::Instance);
        assert_eq!(n.prefix(), "foo");
        assert_eq!(n.instance(), Some("bar@baz"));
        assert_eq!(n.without_suffix(), "foo@bar@baz");
        assert_eq!(n.template().unwrap().as_str(), "foo@.service");
        let t = UnitName::parse("foo.1@.service").unwrap();
        assert!(t.is_template());
        assert_eq!(t.prefix(), "foo.1");
        assert_eq!(t.instance(), Some(""));
        assert_eq!(t.with_instance("2").unwrap().as_str(), "foo.1@2.service");
        assert!(t.with_instance("a/b").is_err());
        let p = UnitName::parse("-.mount").unwrap();
        assert_eq!(p.kind(), NameKind::Plain);
        assert_eq!(p.unit_type(), UnitType::Mount);
        assert_eq!(p.instance(), None);
        assert_eq!(
            UnitName::parse("foo@@.service").unwrap().instance(),
            Some("@")
        );
        assert!(UnitName::parse("foo..service").is_ok());
    }

    #[test]
    fn invalid_names() {
        assert_eq!(UnitName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            UnitName::parse(".service"),
            Err(NameError::NoSuffix(_))
        ));
        assert!(matches!(
            UnitName::parse("foo"),
            Err(NameError::NoSuffix(_))
        ));
        assert!(matches!(
            UnitName::parse("foo.Service"),
            Err(NameError::UnknownType { .. })
        ));
        assert!(matches!(
            UnitName::parse("foo.snapshot"),
            Err(NameError::UnknownType { .. })
        ));
        assert!(matches!(
            UnitName::parse("a b.service"),
            Err(NameError::InvalidChar {
                ch: ' ',
                pos: 1,
                ..
            })
        ));
        assert!(matches!(
            UnitName::parse("@foo.service"),
            Err(NameError::StartsWithAt(_))
        ));
        let long = format!("{}.service", "a".repeat(247));
        assert_eq!(long.len(), 255);
        assert!(UnitName::parse(&long).is_ok());
        let longer = format!("a{long}");
        assert!(matches!(
            UnitName::parse(&longer),
            Err(NameError::TooLong { len: 256, .. })
        ));
    }

    #[test]
    fn escaping_examples() {
        assert_eq!(escape("foo-bar"), "foo\\x2dbar");
        assert_eq!(escape("a b"), "a\\x20b");
        assert_eq!(escape("ü"), "\\xc3\\xbc");
        assert_eq!(escape(".hidden/x"), "\\x2ehidden-x");
        assert_eq!(escape(""), "");
        assert_eq!(escape_path("/foo//bar/baz/").unwrap(), "foo-bar-baz");
        assert_eq!(
            escape_path("/dev/disk/by-label/My Data").unwrap(),
            "dev-disk-by\\x2dlabel-My\\x20Data"
        );
        assert_eq!(escape_path("/").unwrap(), "-");
        assert_eq!(escape_path("").unwrap(), "-");
        assert_eq!(escape_path("/./a/.").unwrap(), "a");
        assert!(escape_path("/a/../b").is_err());
        assert_eq!(unescape("foo\\x2dbar-baz").unwrap(), "foo-bar/baz");
        assert_eq!(unescape("\\X41").ok(), None);
        assert_eq!(unescape("\\x4A").unwrap(), "J");
        assert!(unescape("a\\").is_err());
        assert_eq!(unescape_path("-").unwrap(), "/");
        assert_eq!(unescape_path("dev-sda1").unwrap(), "/dev/sda1");
        for bad in ["-foo", "foo-", "foo--bar", "", "a-..-b"] {
            assert!(unescape_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fleet_name_messages() {
        let cases: &[(&str, &str)] = &[
            ("", "unit name cannot be empty"),
            ("fooservice", "unit name must contain \".\""),
            ("foo.", "unit name cannot end in \".\""),
            ("foo.bar", "invalid unit type: \"bar\""),
            ("foo.servICE", "invalid unit type: \"servICE\""),
            ("foo@1.mount", "invalid unit type for template: \"mount\""),
            (
                "dog=woof@.mount",
                "invalid unit type for template: \"mount\"",
            ),
            ("foo%.service", "invalid character '%' in unit name"),
            ("yes/no.service", "invalid character '/' in unit name"),
            ("this+that.mount", "invalid character '+' in unit name"),
            ("foo@{1,3}.service", "invalid character '{' in unit name"),
            ("@foo.service", "unit name cannot start in \"@\""),
        ];
        for (name, msg) in cases {
            assert_eq!(
                validate_fleet_name(name).unwrap_err().to_string(),
                *msg,
                "{name}"
            );
        }
        let long = format!("{}.service", "a".repeat(249));
        assert_eq!(
            validate_fleet_name(&long).unwrap_err().to_string(),
            "unit name exceeds maximum length (256)"
        );
        for good in [
            "foo.service",
            "hello.mount",
            "foo@123.service",
            "foo@.service",
            "yo.yo.service",
            "hello@world.path",
            "hello:world.service",
            "yes@no\\.service",
            "foo-bar.mount",
            "jalapano_chips.service",
            "x.snapshot",
        ] {
            assert_eq!(validate_fleet_name(good), Ok(()), "{good}");
        }
        assert!(validate_fleet_name(&format!("{}.service", "a".repeat(248))).is_ok());
    }

    #[test]
    fn fleetctl_mangling() {
        // fleet's fleetctl TestUnitNameMangle, plus the `.target` quirk.
        assert_eq!(fleet_mangle_name("foo"), "foo.service");
        assert_eq!(fleet_mangle_name("foo.1"), "foo.1.service");
        assert_eq!(fleet_mangle_name("foo/bar.socket"), "bar.socket");
        assert_eq!(fleet_mangle_name("foo.socket"), "foo.socket");
        assert_eq!(fleet_mangle_name("/a/b/web@.service"), "web@.service");
        assert_eq!(fleet_mangle_name("x.target"), "x.target.service");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote_char('\''), "'\\''");
        assert_eq!(go_quote_char('\u{1}'), "'\\x01'");
        assert_eq!(go_quote_char('ü'), "'ü'");
        assert_eq!(go_quote_str("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn every_error_message() {
        let plain = UnitName::parse("a.service").unwrap();
        let t = UnitName::parse("a@.service").unwrap();
        let cases: Vec<(String, &str)> = vec![
            (
                UnitName::parse("").unwrap_err().to_string(),
                "unit name is empty",
            ),
            (
                UnitName::parse(&"a".repeat(256)).unwrap_err().to_string(),
                "is 256 bytes long, the maximum is 255",
            ),
            (
                UnitName::parse("x").unwrap_err().to_string(),
                "has no type suffix",
            ),
            (
                UnitName::parse("x.bar").unwrap_err().to_string(),
                "unknown type suffix \"bar\"",
            ),
            (
                UnitName::parse("x/y.service").unwrap_err().to_string(),
                "invalid character '/' at byte 1",
            ),
            (
                UnitName::parse("@x.service").unwrap_err().to_string(),
                "starts with '@'",
            ),
            (
                plain.with_instance("i").unwrap_err().to_string(),
                "is a Plain name, expected Template",
            ),
            (
                t.with_instance("").unwrap_err().to_string(),
                "invalid instance \"\"",
            ),
            (
                escape_path("/a/../b").unwrap_err().to_string(),
                "not a valid normalized file system path",
            ),
            (
                unescape("a\\b").unwrap_err().to_string(),
                "invalid escape sequence at byte 1",
            ),
            (
                unescape("\\xff").unwrap_err().to_string(),
                "unescapes to bytes that are not UTF-8",
            ),
            (
                unescape_path("a-").unwrap_err().to_string(),
                "does not unescape to a normalized absolute path",
            ),
        ];
        for (got, want) in cases {
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
        assert_eq!(unescape_bytes("\\xff-").unwrap(), b"\xff/");
    }
}
