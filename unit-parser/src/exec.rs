//! Exec lines (`ExecStart=` and friends) into commands, as systemd's `config_parse_exec()`.
//!
//! A value holds one or more commands separated by a lone `;`. Each command starts with
//! optional prefix characters (`-`, `@`, `:`, `+`, `!`, `!!`), then the executable, then
//! arguments. Words are split like a shell would without its syntax: `"..."` and `'...'`
//! group (also mid-word), C escapes are decoded, an unknown escape is kept verbatim with a
//! warning. Specifiers are resolved when a [`SpecifierContext`] is given. `$VAR` and
//! `${VAR}` are kept for exec time; [`expand_exec_argv`] does that expansion the way systemd
//! does when it runs the command.

use thiserror::Error;

use crate::specifier::{SpecifierContext, SpecifierError, expand};
use crate::value::word::{Flags, Warned, extract_first_word, extract_first_word_and_warn, is_ws};

/// The prefix characters of one command.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecFlags {
    /// `-`: a non-zero exit is not a failure (and parse errors only ignore the line).
    pub ignore_failure: bool,
    /// `@`: the word after the executable is `argv[0]`.
    pub separate_argv0: bool,
    /// `:`: no `$VAR` expansion.
    pub no_env_expand: bool,
    /// `+`: full privileges, no sandboxing.
    pub full_privileges: bool,
    /// `!`: sandboxing without the user/group credential changes.
    pub no_setuid: bool,
    /// `!!`: like `!` unless the kernel supports ambient capabilities.
    pub ambient_magic: bool,
}

/// One command: what to execute and its arguments.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// The executable (specifiers resolved, path simplified); absolute or a plain file name.
    pub path: String,
    /// The argument vector including `argv[0]`.
    pub argv: Vec<String>,
    /// The prefix flags.
    pub flags: ExecFlags,
}

/// Everything one Exec value yielded.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecLine {
    /// The commands, in order.
    pub commands: Vec<ExecCommand>,
    /// What systemd logs and ignores: unknown escapes kept verbatim, errors on a `-` line.
    pub warnings: Vec<String>,
}

/// An Exec value systemd refuses (`-ENOEXEC`: the unit fails to load).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExecError {
    /// A specifier could not be resolved.
    #[error("Failed to resolve unit specifiers in '{word}': {error}")]
    Specifier {
        /// The word.
        word: String,
        /// The specifier error.
        error: SpecifierError,
    },
    /// Only prefix characters, no executable.
    #[error("Empty path in command line: '{0}'")]
    EmptyPath(String),
    /// Control characters, quotes or backslashes in the executable.
    #[error("Executable name contains special characters: {0}")]
    UnsafePath(String),
    /// The executable ends in `/`.
    #[error("Executable path specifies a directory: {0}")]
    Directory(String),
    /// Neither absolute nor a plain file name.
    #[error("Neither a valid executable name nor an absolute path: {0}")]
    NotAbsolute(String),
    /// `@` without an `argv[0]`.
    #[error("Empty executable name or zeroeth argument: {0}")]
    EmptyArgv(String),
    /// An unterminated quote in an argument.
    #[error("Unbalanced quoting: \"{0}\"")]
    Unbalanced(String),
    /// A decoded word is not UTF-8 (systemd would pass the raw bytes).
    #[error("Word decodes to bytes that are not UTF-8: \"{0}\"")]
    NotUtf8(String),
}

/// systemd's `string_is_safe()`.
fn string_is_safe(s: &str) -> bool {
    !s.bytes()
        .any(|b| (1..b' ').contains(&b) || b == 0x7f || b == b'"' || b == b'\'' || b == b'\\')
}

/// systemd's `filename_is_valid()`.
fn filename_is_valid(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && s.len() <= 255
}

/// systemd's `path_simplify()` for executables: collapse `//`, drop `.` components.
fn simplify(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_owned();
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn to_string(w: Vec<u8>) -> Result<String, ExecError> {
    String::from_utf8(w)
        .map_err(|e| ExecError::NotUtf8(String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Parses one Exec value into commands.
///
/// An empty value yields no commands (the caller treats it as a reset). Specifiers are
/// resolved in the executable and every argument when `ctx` is `Some`; with `None` they are
/// kept as written.
///
/// # Errors
/// An [`ExecError`] where systemd refuses the unit. With the `-` prefix the same problems
/// become warnings: the commands parsed before are kept and the rest of the value ignored.
pub fn parse_exec(value: &str, ctx: Option<&SpecifierContext>) -> Result<ExecLine, ExecError> {
    let mut line = ExecLine::default();
    let flags = Flags {
        unquote: true,
        cunescape: true,
        ..Flags::default()
    };
    let resolve = |w: String| -> Result<String, ExecError> {
        match ctx {
            Some(c) => expand(&w, c).map_err(|error| ExecError::Specifier { word: w, error }),
            None => Ok(w),
        }
    };
    let mut p = value.as_bytes();
    loop {
        let first = match extract_first_word_and_warn(&mut p, flags) {
            Warned::End => return Ok(line),
            Warned::Unbalanced => {
                line.warnings
                    .push(format!("Unbalanced quoting, ignoring: \"{value}\""));
                return Ok(line);
            }
            Warned::Word(w, warning) => {
                line.warnings.extend(warning);
                w
            }
        };
        if first == b";" {
            continue;
        }
        let mut cmd_flags = ExecFlags::default();
        let mut i = 0;
        while let Some(&c) = first.get(i) {
            let privileged =
                cmd_flags.full_privileges || cmd_flags.no_setuid || cmd_flags.ambient_magic;
            match c {
                b'-' if !cmd_flags.ignore_failure => cmd_flags.ignore_failure = true,
                b'@' if !cmd_flags.separate_argv0 => cmd_flags.separate_argv0 = true,
                b':' if !cmd_flags.no_env_expand => cmd_flags.no_env_expand = true,
                b'+' if !privileged => cmd_flags.full_privileges = true,
                b'!' if !privileged => cmd_flags.no_setuid = true,
                b'!' if !(cmd_flags.full_privileges || cmd_flags.ambient_magic) => {
                    cmd_flags.no_setuid = false;
                    cmd_flags.ambient_magic = true;
                }
                _ => break,
            }
            i += 1;
        }
        let ignore = cmd_flags.ignore_failure;
        match parse_command(
            first[i..].to_vec(),
            cmd_flags,
            &mut p,
            value,
            &resolve,
            flags,
            &mut line.warnings,
        ) {
            Ok((cmd, more)) => {
                line.commands.push(cmd);
                if !more {
                    return Ok(line);
                }
            }
            Err(e) if ignore => {
                line.warnings.push(format!("{e}, ignoring"));
                return Ok(line);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Parses the rest of one command after its prefix; returns it and whether a `;` follows.
fn parse_command(
    path_word: Vec<u8>,
    cmd_flags: ExecFlags,
    p: &mut &[u8],
    value: &str,
    resolve: &dyn Fn(String) -> Result<String, ExecError>,
    flags: Flags,
    warnings: &mut Vec<String>,
) -> Result<(ExecCommand, bool), ExecError> {
    let path = resolve(to_string(path_word)?)?;
    if path.is_empty() {
        return Err(ExecError::EmptyPath(value.to_owned()));
    }
    if !string_is_safe(&path) {
        return Err(ExecError::UnsafePath(path));
    }
    if path.ends_with('/') {
        return Err(ExecError::Directory(path));
    }
    if !path.starts_with('/') && !filename_is_valid(&path) {
        return Err(ExecError::NotAbsolute(path));
    }
    let mut argv = Vec::new();
    if !cmd_flags.separate_argv0 {
        argv.push(path.clone());
    }
    let mut semicolon = false;
    loop {
        let s = *p;
        if s.is_empty() {
            break;
        }
        let ends_word = |i: usize| s.get(i).is_none_or(|&b| is_ws(b));
        if s[0] == b';' && ends_word(1) {
            *p = skip_ws(&s[1..]);
            semicolon = true;
            break;
        }
        if s.starts_with(b"\\;") && ends_word(2) {
            *p = skip_ws(&s[2..]);
            argv.push(";".to_owned());
            continue;
        }
        match extract_first_word_and_warn(p, flags) {
            Warned::End => break,
            Warned::Unbalanced => return Err(ExecError::Unbalanced(value.to_owned())),
            Warned::Word(w, warning) => {
                warnings.extend(warning);
                argv.push(resolve(to_string(w)?)?);
            }
        }
    }
    if argv.is_empty() {
        return Err(ExecError::EmptyArgv(value.to_owned()));
    }
    Ok((
        ExecCommand {
            path: simplify(&path),
            argv,
            flags: cmd_flags,
        },
        semicolon,
    ))
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| is_ws(b)).count();
    &s[n..]
}

/// systemd's `replace_env()` without extensions: `${NAME}` is replaced by the value (empty if
/// unset), `$$` is a literal `$`, anything else (including `$NAME` without braces, `${A:-b}`
/// and an unterminated `${`) is kept.
pub fn replace_env<'a>(s: &str, env: &dyn Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            // systemd's VARIABLE state consumes everything up to the first `}` or `:`
            // without interpreting it (a `$$` inside stays `$$`).
            match tail.find(['}', ':']) {
                Some(j) if tail.as_bytes()[j] == b'}' => {
                    out.push_str(env(&tail[..j]).unwrap_or(""));
                    rest = &tail[j + 1..];
                }
                Some(j) => {
                    // `${A:...}`: unsupported syntax; the text up to the `:` stays as it is
                    // and what follows is read as ordinary text again.
                    out.push_str("${");
                    out.push_str(&tail[..=j]);
                    rest = &tail[j + 1..];
                }
                None => {
                    // Unterminated: the rest of the string stays as it is.
                    out.push_str("${");
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Expands `$VAR`/`${VAR}` in a command's arguments as systemd does at exec time
/// (`replace_env_argv()`): an argument that is exactly `$NAME` becomes the variable's value
/// split at whitespace (quotes respected; zero words if unset or empty), `${NAME}` inside an
/// argument is replaced in place. Commands with the `:` prefix are returned unchanged.
pub fn expand_exec_argv<'a>(
    cmd: &ExecCommand,
    env: &dyn Fn(&str) -> Option<&'a str>,
) -> Vec<String> {
    if cmd.flags.no_env_expand {
        return cmd.argv.clone();
    }
    let split = Flags {
        unquote: true,
        relax: true,
        ..Flags::default()
    };
    let mut out = Vec::with_capacity(cmd.argv.len());
    for arg in &cmd.argv {
        let b = arg.as_bytes();
        if b.first() == Some(&b'$') && !matches!(b.get(1), Some(b'{') | Some(b'$')) {
            if let Some(v) = env(&arg[1..]) {
                let mut p = v.as_bytes();
                while let Ok(Some(w)) = extract_first_word(&mut p, split) {
                    out.push(String::from_utf8_lossy(&w).into_owned());
                }
            }
            continue;
        }
        out.push(replace_env(arg, env));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::UnitName;

    fn argv(v: &str) -> Vec<Vec<String>> {
        parse_exec(v, None)
            .unwrap()
            .commands
            .into_iter()
            .map(|c| c.argv)
            .collect()
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(
            argv(r#"/bin/echo "a b" 'c d' mid"dle" \x41 \; x;y"#),
            [vec!["/bin/echo", "a b", "c d", "middle", "A", ";", "x;y"]]
        );
        assert_eq!(
            argv("/bin/a one ; /bin/b two;  ;"),
            [vec!["/bin/a", "one"], vec!["/bin/b", "two;"]]
        );
        assert_eq!(argv("/bin/a ; /bin/b"), [vec!["/bin/a"], vec!["/bin/b"]]);
        // Only an unquoted `\;` is the literal `;`; quoted, `\;` is an unknown escape kept as is.
        assert_eq!(argv("/bin/a \"\\;\" \\\\;"), [vec!["/bin/a", "\\;", "\\;"]]);
        assert_eq!(argv("  "), Vec::<Vec<String>>::new());
        let l = parse_exec(r"/bin/a a\qb", None).unwrap();
        assert_eq!(l.commands[0].argv, ["/bin/a", "a\\qb"]);
        assert_eq!(l.warnings, ["Ignoring unknown escape sequences: \"a\\qb\""]);
    }

    #[test]
    fn prefixes() {
        let c = &parse_exec("-@:/bin/sh sh -c true", None).unwrap().commands[0];
        assert_eq!(c.path, "/bin/sh");
        assert_eq!(c.argv, ["sh", "-c", "true"]);
        assert!(c.flags.ignore_failure && c.flags.separate_argv0 && c.flags.no_env_expand);
        let c = &parse_exec("!!/bin/x", None).unwrap().commands[0];
        assert!(c.flags.ambient_magic && !c.flags.no_setuid);
        let c = &parse_exec("!/bin/x", None).unwrap().commands[0];
        assert!(c.flags.no_setuid);
        let c = &parse_exec("+/bin/x", None).unwrap().commands[0];
        assert!(c.flags.full_privileges);
        // `+` excludes `!`, so the `!` is the start of the path, which is then relative.
        assert_eq!(
            parse_exec("+!/bin/x", None),
            Err(ExecError::NotAbsolute("!/bin/x".into()))
        );
        // A repeated prefix ends the prefix run; the `-` still turns the error into a warning.
        assert_eq!(
            parse_exec("--/bin/x", None).unwrap().warnings,
            ["Neither a valid executable name nor an absolute path: -/bin/x, ignoring"]
        );
        assert_eq!(
            parse_exec("\"-/bin/x\" a", None).unwrap().commands[0].argv,
            ["/bin/x", "a"]
        );
        assert_eq!(
            parse_exec("|/bin/x", None),
            Err(ExecError::NotAbsolute("|/bin/x".into()))
        );
        assert_eq!(parse_exec("true", None).unwrap().commands[0].path, "true");
        assert_eq!(
            parse_exec("/usr//bin/./x", None).unwrap().commands[0].path,
            "/usr/bin/x"
        );
        assert_eq!(
            parse_exec("/usr//bin/./x", None).unwrap().commands[0].argv[0],
            "/usr//bin/./x"
        );
    }

    #[test]
    fn errors_and_ignore_prefix() {
        assert_eq!(parse_exec("-", None).unwrap().commands, []);
        assert_eq!(parse_exec("@", None), Err(ExecError::EmptyPath("@".into())));
        assert_eq!(
            parse_exec("@/bin/x", None),
            Err(ExecError::EmptyArgv("@/bin/x".into()))
        );
        assert_eq!(
            parse_exec("/bin/", None),
            Err(ExecError::Directory("/bin/".into()))
        );
        assert_eq!(
            parse_exec("bin/x", None),
            Err(ExecError::NotAbsolute("bin/x".into()))
        );
        assert_eq!(
            parse_exec("/bin/a \\xff", None),
            Err(ExecError::NotUtf8("\u{fffd}".into()))
        );
        assert_eq!(
            parse_exec("/bin/a \\xff", None).unwrap_err().to_string(),
            "Word decodes to bytes that are not UTF-8: \"\u{fffd}\""
        );
        assert_eq!(
            parse_exec("\"/bin/a\\tb\"", None),
            Err(ExecError::UnsafePath("/bin/a\tb".into()))
        );
        assert_eq!(
            parse_exec("/bin/x 'open", None),
            Err(ExecError::Unbalanced("/bin/x 'open".into()))
        );
        let l = parse_exec("/bin/a ; -/bin/x 'open", None).unwrap();
        assert_eq!(l.commands.len(), 1);
        assert_eq!(
            l.warnings,
            ["Unbalanced quoting: \"/bin/a ; -/bin/x 'open\", ignoring"]
        );
        // An unbalanced first word only ignores the line, as in systemd 252.
        let l = parse_exec("'/bin/x", None).unwrap();
        assert!(l.commands.is_empty() && l.warnings.len() == 1);
    }

    #[test]
    fn specifiers() {
        let ctx = SpecifierContext::system(Some(UnitName::parse("web@8080.service").unwrap()));
        let c = &parse_exec("/usr/bin/%p --port=%i %%", Some(&ctx))
            .unwrap()
            .commands[0];
        assert_eq!(c.path, "/usr/bin/web");
        assert_eq!(c.argv, ["/usr/bin/web", "--port=8080", "%"]);
        assert!(matches!(
            parse_exec("/bin/x %z", Some(&ctx)),
            Err(ExecError::Specifier { .. })
        ));
        assert_eq!(
            parse_exec("-/bin/x %z", Some(&ctx)).unwrap().warnings.len(),
            1
        );
    }

    #[test]
    fn env_expansion() {
        let vars = [("A", "one two"), ("Q", "'x y' z"), ("E", "")];
        let env = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let cmd = &parse_exec(
            "/bin/x $A ${A} pre${A}post $$A $Q $E $NOPE ${NOPE}x ${A:-d} ${A $A/b",
            None,
        )
        .unwrap()
        .commands[0];
        assert_eq!(
            expand_exec_argv(cmd, &env),
            [
                "/bin/x",
                "one",
                "two",
                "one two",
                "preone twopost",
                "$A",
                "x y",
                "z",
                "x",
                "${A:-d}",
                "${A"
            ]
        );
        let raw = &parse_exec(":/bin/x $A", None).unwrap().commands[0];
        assert_eq!(expand_exec_argv(raw, &env), ["/bin/x", "$A"]);
    }
}
