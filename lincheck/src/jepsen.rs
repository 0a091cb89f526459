//! Parsers for Jepsen-style history files: the etcd register logs and the key/value EDN
//! histories that ship with Porcupine's test data.

use std::collections::HashMap;

use crate::error::ParseError;
use crate::history::{ClientId, History, Op, OpId, Outcome};

/// The key under which [`parse_etcd_log`] records the single register of a Jepsen etcd test.
pub const ETCD_REGISTER_KEY: &str = "r";

/// Parses a Jepsen etcd register log (`INFO  jepsen.util - PROC TYPE F VALUE` lines).
///
/// Reads become gets, writes sets and `cas [old new]` compare-and-swaps, all on
/// [`ETCD_REGISTER_KEY`]. `:ok` completes an operation, `:fail` is a definite failure (a CAS
/// whose compare failed; a failed read or write did nothing), `:info` and a missing
/// completion leave the outcome unknown. Lines without `jepsen.util` are ignored. The
/// events' line order is their real-time order.
///
/// # Errors
///
/// A [`ParseError`] naming the line: a malformed field, a completion without a pending
/// invocation, or a second invocation by a process that has one pending.
pub fn parse_etcd_log(text: &str) -> Result<History, ParseError> {
    let history = History::new();
    let mut pending: HashMap<ClientId, (OpId, String)> = HashMap::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        let Some(pos) = line.find("jepsen.util - ") else {
            continue;
        };
        let rest = &line[pos + "jepsen.util - ".len()..];
        let mut fields = rest.split_whitespace();
        let (Some(process), Some(kind), Some(f)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(ParseError::new(lineno, "expected PROCESS TYPE F VALUE"));
        };
        let value: Vec<&str> = fields.collect();
        let value = value.join(" ");
        let process: ClientId = process
            .parse()
            .map_err(|_| ParseError::new(lineno, format!("bad process id {process:?}")))?;
        match kind {
            ":invoke" => {
                if pending.contains_key(&process) {
                    return Err(ParseError::new(
                        lineno,
                        format!("process {process} invokes while its previous op is pending"),
                    ));
                }
                let op = match f {
                    ":read" => Op::get(ETCD_REGISTER_KEY),
                    ":write" => Op::set(ETCD_REGISTER_KEY, int(&value, lineno)?),
                    ":cas" => {
                        let (old, new) = pair(&value, lineno)?;
                        Op::cas(ETCD_REGISTER_KEY, old, new)
                    }
                    other => {
                        return Err(ParseError::new(
                            lineno,
                            format!("unknown function {other:?}"),
                        ));
                    }
                };
                let id = history.invoke(process, op);
                pending.insert(process, (id, f.to_owned()));
            }
            ":ok" | ":fail" | ":info" => {
                let Some((id, invoked_f)) = pending.remove(&process) else {
                    return Err(ParseError::new(
                        lineno,
                        format!("process {process} completes an op it never invoked"),
                    ));
                };
                if invoked_f != f {
                    return Err(ParseError::new(
                        lineno,
                        format!("process {process} invoked {invoked_f} but completes {f}"),
                    ));
                }
                let outcome = match (kind, f) {
                    (":ok", ":read") => {
                        if value == "nil" {
                            Outcome::Value(None)
                        } else {
                            Outcome::Value(Some(int(&value, lineno)?))
                        }
                    }
                    (":ok", _) => Outcome::Ok,
                    (":fail", ":cas") => Outcome::Failed,
                    (":fail", _) => Outcome::NotApplied,
                    _ => Outcome::Unknown,
                };
                history
                    .ret(id, outcome)
                    .map_err(|e| ParseError::new(lineno, e.to_string()))?;
            }
            other => {
                return Err(ParseError::new(
                    lineno,
                    format!("unknown event type {other:?}"),
                ));
            }
        }
    }
    Ok(history)
}

fn int(v: &str, line: usize) -> Result<String, ParseError> {
    v.parse::<i64>()
        .map(|n| n.to_string())
        .map_err(|_| ParseError::new(line, format!("expected an integer, found {v:?}")))
}

fn pair(v: &str, line: usize) -> Result<(String, String), ParseError> {
    let inner = v
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| ParseError::new(line, format!("expected [old new], found {v:?}")))?;
    let mut it = inner.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), None) => Ok((int(a, line)?, int(b, line)?)),
        _ => Err(ParseError::new(
            line,
            format!("expected [old new], found {v:?}"),
        )),
    }
}

/// Parses Porcupine's key/value histories: one EDN map per line,
/// `{:process P, :type :invoke|:ok|:fail|:info, :f :get|:put|:append, :key "K", :value V}`.
///
/// Keys start empty and the model of those histories does not tell an empty value from an
/// absent key, so a read of `""` is recorded as a read of an absent key (puts and appends
/// of `""` are rejected for the same reason). Blank lines are ignored.
///
/// # Errors
///
/// A [`ParseError`] naming the line, as for [`parse_etcd_log`].
pub fn parse_kv_edn(text: &str) -> Result<History, ParseError> {
    let history = History::new();
    let mut pending: HashMap<ClientId, OpId> = HashMap::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        if line.trim().is_empty() {
            continue;
        }
        let map = edn_map(line, lineno)?;
        let get = |k: &str| {
            map.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v)
                .ok_or_else(|| ParseError::new(lineno, format!("missing :{k}")))
        };
        let process: ClientId = match get("process")? {
            Edn::Int(p) => *p,
            other => {
                return Err(ParseError::new(
                    lineno,
                    format!(":process must be an integer, found {other:?}"),
                ));
            }
        };
        let kind = keyword(get("type")?, "type", lineno)?;
        let f = keyword(get("f")?, "f", lineno)?;
        let key = match get("key")? {
            Edn::Str(s) => s.clone(),
            Edn::Int(i) => i.to_string(),
            other => {
                return Err(ParseError::new(
                    lineno,
                    format!(":key must be a string, found {other:?}"),
                ));
            }
        };
        let value = match get("value") {
            Ok(Edn::Str(s)) => Some(s.clone()),
            Ok(Edn::Int(i)) => Some(i.to_string()),
            Ok(Edn::Nil) | Err(_) => None,
            Ok(other) => {
                return Err(ParseError::new(
                    lineno,
                    format!("unexpected :value {other:?}"),
                ));
            }
        };
        match kind {
            "invoke" => {
                if pending.contains_key(&process) {
                    return Err(ParseError::new(
                        lineno,
                        format!("process {process} invokes while its previous op is pending"),
                    ));
                }
                let nonempty = |v: Option<String>| match v {
                    Some(v) if !v.is_empty() => Ok(v),
                    _ => Err(ParseError::new(
                        lineno,
                        format!(":{f} needs a non-empty string value"),
                    )),
                };
                let op = match f {
                    "get" => Op::get(key),
                    "put" => Op::set(key, nonempty(value)?),
                    "append" => Op::append(key, nonempty(value)?),
                    other => {
                        return Err(ParseError::new(
                            lineno,
                            format!("unknown function :{other}"),
                        ));
                    }
                };
                pending.insert(process, history.invoke(process, op));
            }
            "ok" | "fail" | "info" => {
                let Some(id) = pending.remove(&process) else {
                    return Err(ParseError::new(
                        lineno,
                        format!("process {process} completes an op it never invoked"),
                    ));
                };
                let outcome = match (kind, f) {
                    ("ok", "get") => Outcome::Value(value.filter(|v| !v.is_empty())),
                    ("ok", _) => Outcome::Ok,
                    ("fail", _) => Outcome::NotApplied,
                    _ => Outcome::Unknown,
                };
                history
                    .ret(id, outcome)
                    .map_err(|e| ParseError::new(lineno, e.to_string()))?;
            }
            other => {
                return Err(ParseError::new(
                    lineno,
                    format!("unknown event type :{other}"),
                ));
            }
        }
    }
    Ok(history)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Edn {
    Nil,
    Int(u64),
    Keyword(String),
    Str(String),
}

fn keyword<'e>(v: &'e Edn, field: &str, line: usize) -> Result<&'e str, ParseError> {
    match v {
        Edn::Keyword(k) => Ok(k),
        other => Err(ParseError::new(
            line,
            format!(":{field} must be a keyword, found {other:?}"),
        )),
    }
}

/// A flat EDN map of keyword keys to scalars: all these histories use.
fn edn_map(line: &str, lineno: usize) -> Result<Vec<(String, Edn)>, ParseError> {
    let err = |m: &str| ParseError::new(lineno, m.to_owned());
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| err("expected an EDN map {...}"))?;
    let mut chars = body.chars().peekable();
    let mut tokens = Vec::new();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(err("unterminated string")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(e @ ('"' | '\\')) => s.push(e),
                        _ => return Err(err("bad escape in string")),
                    },
                    Some(ch) => s.push(ch),
                }
            }
            tokens.push(Edn::Str(s));
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == ',' || ch == '"' {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            tokens.push(if word == "nil" {
                Edn::Nil
            } else if let Some(k) = word.strip_prefix(':') {
                Edn::Keyword(k.to_owned())
            } else {
                Edn::Int(
                    word.parse()
                        .map_err(|_| err(&format!("unexpected token {word:?}")))?,
                )
            });
        }
    }
    if tokens.len() % 2 != 0 {
        return Err(err("odd number of forms in map"));
    }
    let mut map = Vec::new();
    let mut it = tokens.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        match k {
            Edn::Keyword(k) => map.push((k, v)),
            other => return Err(err(&format!("map key must be a keyword, found {other:?}"))),
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_log_lines() {
        let text = "noise\nINFO  jepsen.util - 0\t:invoke\t:cas\t[1 2]\n\
                    INFO  jepsen.util - 1   :invoke :read   nil\n\
                    INFO  jepsen.util - 0\t:fail\t:cas\t[1 2]\n\
                    INFO  jepsen.util - 1\t:ok\t:read\t3\n\
                    INFO  jepsen.util - 2\t:invoke\t:write\t4\n\
                    INFO  jepsen.util - 2\t:info\t:write\t:timed-out\n";
        let h = parse_etcd_log(text).unwrap();
        let ops = h.ops();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].op, Op::cas("r", "1", "2"));
        assert_eq!(ops[0].outcome(), &Outcome::Failed);
        assert_eq!(ops[1].outcome(), &Outcome::Value(Some("3".into())));
        assert_eq!(ops[2].outcome(), &Outcome::Unknown);
    }

    #[test]
    fn etcd_log_errors_name_the_line() {
        let e = parse_etcd_log("INFO  jepsen.util - 0\t:ok\t:read\t3\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_etcd_log("\nINFO  jepsen.util - 0\t:invoke\t:cas\t[1]\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("[old new]"), "{e}");
        let e = parse_etcd_log("INFO  jepsen.util - x\t:invoke\t:read\tnil\n").unwrap_err();
        assert!(e.to_string().starts_with("line 1:"), "{e}");
    }

    #[test]
    fn kv_edn_lines() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :ok, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 1, :type :invoke, :f :get, :key \"0\", :value nil}\n\
                    {:process 1, :type :ok, :f :get, :key \"0\", :value \"\"}\n";
        let h = parse_kv_edn(text).unwrap();
        let ops = h.ops();
        assert_eq!(ops[0].op, Op::append("0", "x 0 0 y"));
        assert_eq!(ops[1].outcome(), &Outcome::Value(None));
        let e = parse_kv_edn("{:process 0, :type :invoke, :f :get, :key \"0}").unwrap_err();
        assert!(e.message.contains("unterminated"), "{e}");
    }
}
