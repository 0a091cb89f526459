//! Setting values: booleans, time spans, Exec lines, environment, resource limits.
//!
//! Each parser follows the systemd 252 function named in its docs. Parsers take the value as
//! the file parser delivers it (`Entry::value()`: continuations joined, outer whitespace
//! trimmed); an empty value usually means "reset to default", which the typed views handle
//! before calling these.
//!
//! ```
//! use unit_parser::value::{Timespan, parse_bool, parse_exec, parse_sec};
//!
//! assert_eq!(parse_bool("On")?, true);
//! assert_eq!(parse_sec("1h 30min")?.as_micros(), 5_400_000_000);
//! assert_eq!(parse_sec("infinity")?, Timespan::Infinity);
//! let line = parse_exec("/bin/echo one ; -/bin/echo 'two words'", None)?;
//! assert_eq!(line.commands[1].argv, ["/bin/echo", "two words"]);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod boolean;
mod env;
mod resource;
mod timespan;
pub(crate) mod word;

pub use crate::exec::{
    ExecCommand, ExecError, ExecFlags, ExecLine, expand_exec_argv, parse_exec, replace_env,
};
pub use boolean::{BoolError, fleet_truthy, parse_bool};
pub use env::{
    EnvFileError, EnvironmentFile, EnvironmentFileError, EnvironmentLine, env_name_is_valid,
    env_replace, parse_env_file, parse_environment, parse_environment_file,
};
pub use resource::{
    CpuWeight, MemoryLimit, ResourceError, parse_cpu_quota, parse_cpu_weight, parse_memory_limit,
    parse_permyriad, parse_size,
};
pub use timespan::{
    Timespan, TimespanError, parse_sec, parse_sec_fix_0, parse_time, parse_timespan,
};

/// A setting systemd logs and ignores (bad value, unknown key), with where it is.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingWarning {
    /// 1-based line of the assignment.
    pub line: usize,
    /// The section.
    pub section: String,
    /// The key.
    pub key: String,
    /// What is wrong (systemd's wording where it has one).
    pub message: String,
}

impl std::fmt::Display for SettingWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: [{}] {}: {}",
            self.line, self.section, self.key, self.message
        )
    }
}

/// A quoting or escaping error in a word list (systemd's `-EINVAL` from
/// `extract_first_word()`): an unknown escape or an unterminated quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid quoting or escape sequence")]
pub struct WordSyntaxError;

/// Splits `s` into words as systemd's `extract_first_word()` with
/// `EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE` does (the splitter of `Environment=` and, with a
/// relaxed retry, of Exec lines): whitespace separates, quotes group and are removed,
/// C escapes are decoded. Words are bytes since `\xNN` may produce any byte.
///
/// # Errors
/// [`WordSyntaxError`] at the first unknown escape or unterminated quote.
pub fn split_quoted(s: &str) -> Result<Vec<Vec<u8>>, WordSyntaxError> {
    let flags = word::Flags {
        unquote: true,
        cunescape: true,
        ..word::Flags::default()
    };
    let mut p = s.as_bytes();
    let mut out = Vec::new();
    while let Some(w) = word::extract_first_word(&mut p, flags).map_err(|_| WordSyntaxError)? {
        out.push(w);
    }
    Ok(out)
}

/// Splits `s` as `strv_split_full(..., EXTRACT_RELAX|EXTRACT_UNQUOTE)` does, the way a
/// `$VAR` value is split into arguments at exec time: quotes group, a backslash escapes the
/// next byte, an unterminated quote or trailing backslash just ends the word.
pub fn split_relaxed(s: &str) -> Vec<Vec<u8>> {
    let flags = word::Flags {
        unquote: true,
        relax: true,
        ..word::Flags::default()
    };
    let mut p = s.as_bytes();
    let mut out = Vec::new();
    while let Ok(Some(w)) = word::extract_first_word(&mut p, flags) {
        out.push(w);
    }
    out
}

/// systemd's `safe_atoi()`: after white space, a Python-style `0b`/`0o` prefix picks base 2
/// or 8, then C
/// `strtol(s, &end, base)` (base 0 without a prefix: leading white space, a sign, then `0x`
/// hex, `0` octal or decimal) must consume everything and fit an `int`.
pub(crate) fn safe_atoi(s: &str) -> Option<i32> {
    // systemd skips its WHITESPACE before looking for the prefix; strtol() then skips C
    // white space (which also has \v and \f) by itself.
    let s = s.trim_start_matches([' ', '\t', '\n', '\r']);
    let (rest, base) = if let Some(r) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        (r, 2)
    } else if let Some(r) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        (r, 8)
    } else {
        (s, 0)
    };
    let v = c_strtol(rest, base)?;
    i32::try_from(v).ok()
}

/// C's `strtol()` requiring the whole string to be consumed.
fn c_strtol(s: &str, base: u32) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let hex_prefixed = |t: &str| {
        (t.starts_with("0x") || t.starts_with("0X"))
            && t[2..].chars().next().is_some_and(|c| c.is_ascii_hexdigit())
    };
    let (radix, digits) = match base {
        0 if hex_prefixed(t) => (16, &t[2..]),
        0 if t.len() > 1 && t.starts_with('0') => (8, &t[1..]),
        0 => (10, t),
        16 if hex_prefixed(t) => (16, &t[2..]),
        b => (b, t),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// systemd's `unichar_is_valid()`: no surrogates (impossible in a `char`), nothing above
/// U+10FFFF, and none of the Unicode noncharacters U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF.
pub(crate) fn unichar_is_valid(c: char) -> bool {
    let u = c as u32;
    !((0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE)
}

/// systemd's `utf8_is_valid()` on a Rust string: additionally refuses noncharacters.
pub(crate) fn str_is_valid_utf8_systemd(s: &str) -> bool {
    s.chars().all(unichar_is_valid)
}
