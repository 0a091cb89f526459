//! A plain-text form of a history, to save one as a test artefact and check it again later
//! (`examples/check_file.rs` reads it).
//!
//! One operation per line, tab-separated:
//! `CLIENT INVOKED RETURNED F KEY ARGS... OUTCOME`, where `RETURNED` is `-` for an
//! operation that never returned, `F` is `get`, `set`, `cas`, `delete`, `cad`, `create` or
//! `append` followed by its arguments (`set`/`create`: value; `cas`: expected, new;
//! `cad`: expected; `append`: suffix), and `OUTCOME` is `ok`, `failed`, `not-applied`,
//! `unknown`, `absent` or `=VALUE`. Strings escape `\`, tab, newline and carriage return
//! as `\\`, `\t`, `\n`, `\r`. Lines starting with `#` and blank lines are ignored. The
//! first line is a `# lincheck history v1` header.

use std::fmt::Write as _;

use crate::error::ParseError;
use crate::history::{History, Op, OpRecord, Outcome};

/// The header line [`to_text`] writes.
pub const HEADER: &str = "# lincheck history v1";

/// Renders operation records in the text form (see the [module docs](self)).
pub fn to_text(records: &[OpRecord]) -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push('\n');
    for r in records {
        let ret = r
            .returned
            .as_ref()
            .map_or("-".to_owned(), |(t, _)| t.to_string());
        let _ = write!(out, "{}\t{}\t{}\t", r.client, r.invoked_at, ret);
        let (f, key, args): (&str, &str, Vec<&str>) = match &r.op {
            Op::Get { key } => ("get", key, vec![]),
            Op::Set { key, value } => ("set", key, vec![value]),
            Op::Cas { key, expected, new } => ("cas", key, vec![expected, new]),
            Op::Delete { key } => ("delete", key, vec![]),
            Op::Cad { key, expected } => ("cad", key, vec![expected]),
            Op::Create { key, value } => ("create", key, vec![value]),
            Op::Append { key, suffix } => ("append", key, vec![suffix]),
        };
        out.push_str(f);
        out.push('\t');
        out.push_str(&escape(key));
        for a in args {
            out.push('\t');
            out.push_str(&escape(a));
        }
        out.push('\t');
        match r.returned.as_ref().map(|(_, o)| o) {
            None | Some(Outcome::Unknown) => out.push_str("unknown"),
            Some(Outcome::Ok) => out.push_str("ok"),
            Some(Outcome::Failed) => out.push_str("failed"),
            Some(Outcome::NotApplied) => out.push_str("not-applied"),
            Some(Outcome::Value(None)) => out.push_str("absent"),
            Some(Outcome::Value(Some(v))) => {
                out.push('=');
                out.push_str(&escape(v));
            }
        }
        out.push('\n');
    }
    out
}

/// Parses the text form back into a timestamped history.
///
/// # Errors
///
/// A [`ParseError`] naming the line: a wrong field count, a bad number, escape, function
/// or outcome, or an outcome that does not fit the operation.
pub fn parse_text(text: &str) -> Result<History, ParseError> {
    let history = History::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: String| ParseError::new(lineno, m);
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() < 6 {
            return Err(err(format!(
                "expected at least 6 tab-separated fields, found {}",
                fields.len()
            )));
        }
        let num = |s: &str, what: &str| {
            s.parse::<u64>()
                .map_err(|_| err(format!("{what} must be a number, found {s:?}")))
        };
        let client = num(fields[0], "client")?;
        let invoked = num(fields[1], "invocation time")?;
        let returned = match fields[2] {
            "-" => None,
            t => Some(num(t, "return time")?),
        };
        let f = fields[3];
        let key = unescape(fields[4]).map_err(|m| err(m.to_owned()))?;
        let args = &fields[5..fields.len() - 1];
        let want = match f {
            "get" | "delete" => 0,
            "set" | "create" | "cad" | "append" => 1,
            "cas" => 2,
            other => return Err(err(format!("unknown function {other:?}"))),
        };
        if args.len() != want {
            return Err(err(format!(
                "{f} takes {want} argument(s), found {}",
                args.len()
            )));
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| unescape(a).map_err(|m| err(m.to_owned())))
            .collect::<Result<_, _>>()?;
        let op = match (f, args.as_slice()) {
            ("get", []) => Op::Get { key },
            ("delete", []) => Op::Delete { key },
            ("set", [v]) => Op::set(key, v.clone()),
            ("create", [v]) => Op::create(key, v.clone()),
            ("cad", [v]) => Op::cad(key, v.clone()),
            ("append", [v]) => Op::append(key, v.clone()),
            ("cas", [e, n]) => Op::cas(key, e.clone(), n.clone()),
            _ => return Err(err(format!("bad arguments for {f}"))),
        };
        let outcome = match fields[fields.len() - 1] {
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "not-applied" => Outcome::NotApplied,
            "unknown" => Outcome::Unknown,
            "absent" => Outcome::Value(None),
            v if v.starts_with('=') => {
                Outcome::Value(Some(unescape(&v[1..]).map_err(|m| err(m.to_owned()))?))
            }
            other => return Err(err(format!("unknown outcome {other:?}"))),
        };
        let id = history
            .invoke_at(client, op, invoked)
            .map_err(|e| err(e.to_string()))?;
        match returned {
            Some(t) => history.ret_at(id, outcome, t),
            None if outcome == Outcome::Unknown => Ok(()),
            None => {
                return Err(err(
                    "an operation that never returned has outcome unknown".to_owned()
                ));
            }
        }
        .map_err(|e| err(e.to_string()))?;
    }
    Ok(history)
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => return Err("bad escape: only \\\\, \\t, \\n and \\r are allowed"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = History::new();
        let a = h.invoke_at(1, Op::set("k\t1", "a\\b\nc"), 0).unwrap();
        let b = h.invoke_at(2, Op::cas("k\t1", "x", "y"), 1).unwrap();
        let _never = h.invoke_at(3, Op::append("k2", "z"), 2).unwrap();
        let c = h.invoke_at(4, Op::get("k2"), 3).unwrap();
        let d = h.invoke_at(5, Op::cad("k2", "q"), 3).unwrap();
        h.ret_at(a, Outcome::Ok, 5).unwrap();
        h.ret_at(b, Outcome::Failed, 6).unwrap();
        h.ret_at(c, Outcome::Value(Some("=v".into())), 7).unwrap();
        h.ret_at(d, Outcome::NotApplied, 8).unwrap();
        let text = to_text(&h.ops());
        assert!(text.starts_with(HEADER));
        let back = parse_text(&text).unwrap();
        assert_eq!(back.ops(), h.ops());
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_text("# lincheck history v1\n1\t0\t1\tget\tk\tok\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("cannot complete"), "{e}");
        let e = parse_text("1\t0\t1\tfrob\tk\tok\n").unwrap_err();
        assert!(e.message.contains("unknown function"), "{e}");
        let e = parse_text("1\t0\t-\tset\tk\tv\tok\n").unwrap_err();
        assert!(e.message.contains("never returned"), "{e}");
        let e = parse_text("1\t0\t1\tset\tk\\x\tv\tok\n").unwrap_err();
        assert!(e.message.contains("escape"), "{e}");
        let e = parse_text("1\t0\t1\tcas\tk\tv\tok\n").unwrap_err();
        assert!(e.message.contains("2 argument"), "{e}");
    }
}
