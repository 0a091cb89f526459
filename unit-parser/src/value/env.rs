//! `Environment=`, `EnvironmentFile=` and the environment-file format itself.

use crate::specifier::{SpecifierContext, expand};

use super::word::{Flags, extract_first_word};

/// systemd's `env_name_is_valid()`: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name_is_valid(name: &str) -> bool {
    let mut b = name.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The result of one `Environment=` line: assignments in order (a later one for the same name
/// replaces the earlier, as `strv_env_replace` does), plus warnings for what systemd ignores.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentLine {
    /// `(name, value)` pairs.
    pub vars: Vec<(String, String)>,
    /// Messages for ignored words or an ignored rest of line.
    pub warnings: Vec<String>,
}

/// Sets `name=value` in `vars`, replacing an earlier assignment of the same name in place.
pub fn env_replace(vars: &mut Vec<(String, String)>, name: String, value: String) {
    match vars.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    }
}

/// Parses one `Environment=` value (systemd's `config_parse_environ()`): words split with
/// quoting and C escapes; each must be `NAME=value` with a valid name. Invalid words are
/// ignored one by one; a syntax error (unknown escape, unterminated quote) ignores the rest
/// of the line. Specifiers are resolved in each word when `ctx` is given; a word whose
/// specifiers fail is ignored.
///
/// An empty value is a reset; the caller handles that before calling.
pub fn parse_environment(value: &str, ctx: Option<&SpecifierContext>) -> EnvironmentLine {
    let mut line = EnvironmentLine::default();
    let flags = Flags {
        unquote: true,
        cunescape: true,
        ..Flags::default()
    };
    let mut p = value.as_bytes();
    loop {
        let word = match extract_first_word(&mut p, flags) {
            Ok(Some(w)) => w,
            Ok(None) => break,
            Err(_) => {
                line.warnings
                    .push(format!("Invalid syntax, ignoring: {value}"));
                break;
            }
        };
        let Ok(word) = String::from_utf8(word) else {
            line.warnings.push(format!(
                "Invalid environment assignment, ignoring: not UTF-8 in {value}"
            ));
            continue;
        };
        let word = match ctx {
            Some(c) => match expand(&word, c) {
                Ok(w) => w,
                Err(e) => {
                    line.warnings.push(format!(
                        "Failed to resolve specifiers in {word}, ignoring: {e}"
                    ));
                    continue;
                }
            },
            None => word,
        };
        match word.split_once('=') {
            Some((name, val))
                if env_name_is_valid(name) && super::str_is_valid_utf8_systemd(val) =>
            {
                env_replace(&mut line.vars, name.to_owned(), val.to_owned());
            }
            _ => line
                .warnings
                .push(format!("Invalid environment assignment, ignoring: {word}")),
        }
    }
    line
}

/// One `EnvironmentFile=` entry.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFile {
    /// The absolute path (may contain glob characters).
    pub path: String,
    /// `-` prefix: a missing file is not an error.
    pub ignore_missing: bool,
}

/// Why an `EnvironmentFile=` value is ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvironmentFileError {
    /// The path is not absolute.
    #[error("Path '{0}' is not absolute, ignoring.")]
    NotAbsolute(String),
    /// Specifier expansion failed.
    #[error("Failed to resolve unit specifiers in '{path}', ignoring: {error}")]
    Specifier {
        /// The raw value.
        path: String,
        /// What went wrong.
        error: crate::specifier::SpecifierError,
    },
}

/// Parses one `EnvironmentFile=` value (`config_parse_unit_env_file()`): an optional `-`, then
/// an absolute path (the whole rest of the value, spaces included), specifiers resolved when
/// `ctx` is given. An empty value is a reset, handled by the caller.
///
/// # Errors
/// [`EnvironmentFileError`] when systemd would ignore the line.
pub fn parse_environment_file(
    value: &str,
    ctx: Option<&SpecifierContext>,
) -> Result<EnvironmentFile, EnvironmentFileError> {
    let resolved = match ctx {
        Some(c) => expand(value, c).map_err(|error| EnvironmentFileError::Specifier {
            path: value.to_owned(),
            error,
        })?,
        None => value.to_owned(),
    };
    let (ignore_missing, path) = match resolved.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, resolved.as_str()),
    };
    if !path.starts_with('/') {
        return Err(EnvironmentFileError::NotAbsolute(resolved.clone()));
    }
    Ok(EnvironmentFile {
        path: path.to_owned(),
        ignore_missing,
    })
}

/// An environment file that systemd refuses to load (`load_env_file()` returns an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what} is not valid UTF-8")]
pub struct EnvFileError {
    /// 1-based line of the assignment.
    pub line: usize,
    /// `"key"` or `"value"`.
    pub what: &'static str,
}

/// Parses the contents of an environment file as systemd's `load_env_file()` does: shell-like
/// `KEY=VALUE` lines, `#`/`;` comment lines, `'...'` and `"..."` quoting (backslash escapes
/// only `"`, `\`, `` ` ``, `$` inside double quotes), backslash-newline continuation, trailing
/// whitespace of unquoted values dropped, lines without `=` ignored. Later assignments of a
/// name replace earlier ones.
///
/// # Errors
/// [`EnvFileError`] if a key or value is not valid UTF-8 (checked after unquoting).
pub fn parse_env_file(contents: &[u8]) -> Result<Vec<(String, String)>, EnvFileError> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        PreKey,
        Key,
        PreValue,
        Value,
        ValueEscape,
        SingleQuote,
        DoubleQuote,
        DoubleQuoteEscape,
        Comment,
        CommentEscape,
    }
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
    let nl = |c: u8| c == b'\n' || c == b'\r';
    let mut vars = Vec::new();
    let mut key: Vec<u8> = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    let mut last_key_ws: Option<usize> = None;
    let mut last_value_ws: Option<usize> = None;
    let mut line = 1usize;
    let mut state = St::PreKey;

    let mut push = |key: &mut Vec<u8>,
                    value: &mut Vec<u8>,
                    key_ws: Option<usize>,
                    value_ws: Option<usize>,
                    line: usize|
     -> Result<(), EnvFileError> {
        if let Some(k) = key_ws {
            key.truncate(k);
        }
        if let Some(v) = value_ws {
            value.truncate(v);
        }
        let k = String::from_utf8(std::mem::take(key))
            .ok()
            .filter(|k| super::str_is_valid_utf8_systemd(k))
            .ok_or(EnvFileError { line, what: "key" })?;
        let v = String::from_utf8(std::mem::take(value))
            .ok()
            .filter(|v| super::str_is_valid_utf8_systemd(v))
            .ok_or(EnvFileError {
                line,
                what: "value",
            })?;
        env_replace(&mut vars, k, v);
        Ok(())
    };

    for &c in contents {
        // systemd reads the file as a C string: a NUL ends it.
        if c == 0 {
            break;
        }
        match state {
            St::PreKey => {
                if c == b'#' || c == b';' {
                    state = St::Comment;
                } else if !ws(c) {
                    state = St::Key;
                    last_key_ws = None;
                    key.push(c);
                } else if nl(c) {
                    line += 1;
                }
            }
            St::Key => {
                if nl(c) {
                    state = St::PreKey;
                    line += 1;
                    key.clear();
                } else if c == b'=' {
                    state = St::PreValue;
                    last_value_ws = None;
                } else {
                    if !ws(c) {
                        last_key_ws = None;
                    } else if last_key_ws.is_none() {
                        last_key_ws = Some(key.len());
                    }
                    key.push(c);
                }
            }
            St::PreValue => {
                if nl(c) {
                    state = St::PreKey;
                    push(&mut key, &mut value, last_key_ws, None, line)?;
                    line += 1;
                } else if c == b'\'' {
                    state = St::SingleQuote;
                } else if c == b'"' {
                    state = St::DoubleQuote;
                } else if c == b'\\' {
                    state = St::ValueEscape;
                } else if !ws(c) {
                    state = St::Value;
                    value.push(c);
                }
            }
            St::Value => {
                if nl(c) {
                    state = St::PreKey;
                    push(&mut key, &mut value, last_key_ws, last_value_ws, line)?;
                    line += 1;
                } else if c == b'\\' {
                    state = St::ValueEscape;
                    last_value_ws = None;
                } else {
                    if !ws(c) {
                        last_value_ws = None;
                    } else if last_value_ws.is_none() {
                        last_value_ws = Some(value.len());
                    }
                    value.push(c);
                }
            }
            St::ValueEscape => {
                state = St::Value;
                if !nl(c) {
                    value.push(c);
                } else {
                    line += 1;
                }
            }
            St::SingleQuote => {
                if c == b'\'' {
                    state = St::PreValue;
                } else {
                    value.push(c);
                }
            }
            St::DoubleQuote => {
                if c == b'"' {
                    state = St::PreValue;
                } else if c == b'\\' {
                    state = St::DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            St::DoubleQuoteEscape => {
                state = St::DoubleQuote;
                if matches!(c, b'"' | b'\\' | b'`' | b'$') {
                    value.push(c);
                } else if c != b'\n' {
                    value.push(b'\\');
                    value.push(c);
                }
            }
            St::Comment => {
                if c == b'\\' {
                    state = St::CommentEscape;
                } else if nl(c) {
                    state = St::PreKey;
                    line += 1;
                }
            }
            St::CommentEscape => state = St::Comment,
        }
    }
    match state {
        St::PreValue
        | St::ValueEscape
        | St::SingleQuote
        | St::DoubleQuote
        | St::DoubleQuoteEscape => {
            push(&mut key, &mut value, last_key_ws, None, line)?;
        }
        St::Value => push(&mut key, &mut value, last_key_ws, last_value_ws, line)?,
        _ => {}
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    #[test]
    fn environment_lines() {
        let l = parse_environment(r#""VAR1=word1 word2" VAR2=word3 "VAR3=$word 5 6""#, None);
        assert_eq!(
            pairs(&l.vars),
            [
                ("VAR1", "word1 word2"),
                ("VAR2", "word3"),
                ("VAR3", "$word 5 6")
            ]
        );
        assert!(l.warnings.is_empty());
        let l = parse_environment("A-B=c 1A=b NOEQUALS =x OK=1 OK=2 E=", None);
        assert_eq!(pairs(&l.vars), [("OK", "2"), ("E", "")]);
        assert_eq!(l.warnings.len(), 4);
        let l = parse_environment(r#"A=1 B=\q C=3"#, None);
        assert_eq!(pairs(&l.vars), [("A", "1")]);
        assert_eq!(l.warnings, ["Invalid syntax, ignoring: A=1 B=\\q C=3"]);
        let l = parse_environment(r#"A=1 "B=2"#, None);
        assert_eq!(pairs(&l.vars), [("A", "1")]);
        let l = parse_environment(r"T=a\tb", None);
        assert_eq!(pairs(&l.vars), [("T", "a\tb")]);
        let ctx =
            SpecifierContext::system(Some(crate::name::UnitName::parse("x@y.service").unwrap()));
        let l = parse_environment("I=%i BAD=%z", Some(&ctx));
        assert_eq!(pairs(&l.vars), [("I", "y")]);
        assert_eq!(l.warnings.len(), 1);
    }

    #[test]
    fn environment_files() {
        assert_eq!(
            parse_environment_file("-/etc/default/my app", None),
            Ok(EnvironmentFile {
                path: "/etc/default/my app".into(),
                ignore_missing: true
            })
        );
        assert!(
            !parse_environment_file("/etc/x", None)
                .unwrap()
                .ignore_missing
        );
        assert_eq!(
            parse_environment_file("etc/x", None)
                .unwrap_err()
                .to_string(),
            "Path 'etc/x' is not absolute, ignoring."
        );
        assert!(parse_environment_file("-", None).is_err());
    }

    #[test]
    fn env_file_format() {
        // The escaped newline in the "#c\\" comment swallows "I=x" into the comment.
        let text = b"# comment\n; also\nA=1\n  B = two words  \nC='single $x' \nD=\"dq \\\"x\\\" \\n \\$y\"\nE=cont\\\ninued\nnoequals\nF\nG=\nA=override\nH=a\\ b\n#c\\\nI=x";
        let v = parse_env_file(text).unwrap();
        assert_eq!(
            pairs(&v),
            [
                ("A", "override"),
                ("B", "two words"),
                ("C", "single $x"),
                ("D", "dq \"x\" \\n $y"),
                ("E", "continued"),
                ("G", ""),
                ("H", "a b"),
            ]
        );
        assert_eq!(
            parse_env_file(b"A=\xff\n"),
            Err(EnvFileError {
                line: 1,
                what: "value"
            })
        );
        assert_eq!(
            pairs(&parse_env_file(b"K='unterminated").unwrap()),
            [("K", "unterminated")]
        );
    }
}
