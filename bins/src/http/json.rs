//! JSON bodies byte-for-byte as etcd writes them: Go's `encoding/json` field order,
//! `omitempty` rules and string escaping, and `time.RFC3339Nano` timestamps.

use std::fmt::Write as _;

use crate::store::{Event, Node, StoreError, error_message};

/// Appends `s` as a JSON string the way Go's encoder does (HTML-safe: `<`, `>`, `&`, U+2028
/// and U+2029 are escaped too, and `\b`/`\f` as `\u00XX` like Go 1.19).
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Copy the runs between characters that need escaping in one go: values are mostly
    // plain text, and a char-by-char push cost kvd several percent of a put.
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' | b'\\' | b'<' | b'>' | b'&' => true,
            0..0x20 => true,
            // U+2028 and U+2029 (E2 80 A8, E2 80 A9), which Go escapes too.
            0xE2 => {
                bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9))
            }
            _ => false,
        };
        if !escape {
            continue;
        }
        // `i` is at a character boundary: every byte matched above starts a character.
        out.push_str(&s[run..i]);
        let c = s[i..].chars().next().unwrap_or_default();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Formats milliseconds since the epoch as Go's `time.RFC3339Nano` in UTC (trailing zeros of
/// the fraction trimmed, no fraction when it is zero).
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let frac = ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    if frac != 0 {
        let f = format!("{frac:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm: shift the era to start on March 1st so leap days fall last.
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends a node object: `key, value, dir, expiration, ttl, nodes, modifiedIndex,
/// createdIndex`, each omitted when empty as etcd's `omitempty` does.
pub(crate) fn push_node(out: &mut String, n: &Node) {
    out.push('{');
    let mut first = true;
    let mut field = |out: &mut String, name: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
    };
    if !n.key.is_empty() {
        field(out, "key");
        push_str(out, &n.key);
    }
    if let Some(v) = &n.value {
        field(out, "value");
        push_str(out, v);
    }
    if n.dir {
        field(out, "dir");
        out.push_str("true");
    }
    if let Some(exp) = n.expiration_ms {
        field(out, "expiration");
        push_str(out, &rfc3339_ms(exp));
    }
    if n.ttl != 0 {
        field(out, "ttl");
        let _ = write!(out, "{}", n.ttl);
    }
    if let Some(children) = n.nodes.as_ref().filter(|c| !c.is_empty()) {
        field(out, "nodes");
        out.push('[');
        for (i, c) in children.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_node(out, c);
        }
        out.push(']');
    }
    if n.modified_index != 0 {
        field(out, "modifiedIndex");
        let _ = write!(out, "{}", n.modified_index);
    }
    if n.created_index != 0 {
        field(out, "createdIndex");
        let _ = write!(out, "{}", n.created_index);
    }
    out.push('}');
}

/// An event body plus the trailing newline of Go's `json.Encoder`. With `no_value` only the
/// action is written (etcd's `noValueOnSuccess`).
pub(crate) fn event_body(ev: &Event, no_value: bool) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"action\":\"");
    out.push_str(ev.action.as_str());
    out.push('"');
    if !no_value {
        out.push_str(",\"node\":");
        push_node(&mut out, &ev.node);
        if let Some(p) = &ev.prev_node {
            out.push_str(",\"prevNode\":");
            push_node(&mut out, p);
        }
    }
    out.push_str("}\n");
    out
}

/// An error body: `{"errorCode":..,"message":..,"cause":..,"index":..}` plus a newline.
pub(crate) fn error_body(e: &StoreError) -> String {
    let mut out = String::with_capacity(96);
    let _ = write!(out, "{{\"errorCode\":{},\"message\":", e.code);
    push_str(&mut out, error_message(e.code));
    if !e.cause.is_empty() {
        out.push_str(",\"cause\":");
        push_str(&mut out, &e.cause);
    }
    let _ = writeln!(out, ",\"index\":{}}}", e.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Action;

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_795_610_496_084), "2026-11-25T12:41:36.084Z");
        assert_eq!(rfc3339_ms(951_782_400_500), "2000-02-29T00:00:00.5Z");
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n<&>\u{1}\u{2028}é");
        assert_eq!(s, r#""a\"b\\c\n\u003c\u0026\u003e\u0001\u2028é""#);
    }

    /// Go's escaping, one character at a time: the reference the run-copying version is
    /// held to.
    fn escape_per_char(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_the_per_character_reference(
            s in "(\\PC|[\"\\\\<>&\u{0}-\u{1f}\u{2028}\u{2029}\u{2027}\u{e2}])*",
        ) {
            let mut out = String::new();
            push_str(&mut out, &s);
            proptest::prop_assert_eq!(out, escape_per_char(&s));
        }
    }

    #[test]
    fn event_fields_are_ordered_and_omitted_like_etcd() {
        let ev = Event {
            action: Action::CompareAndSwap,
            node: Node {
                key: "/foo".into(),
                value: Some("two".into()),
                modified_index: 9,
                created_index: 8,
                ..Node::default()
            },
            prev_node: Some(Node {
                key: "/foo".into(),
                value: Some("one".into()),
                modified_index: 8,
                created_index: 8,
                ..Node::default()
            }),
            etcd_index: 9,
        };
        assert_eq!(
            event_body(&ev, false),
            "{\"action\":\"compareAndSwap\",\"node\":{\"key\":\"/foo\",\"value\":\"two\",\"modifiedIndex\":9,\"createdIndex\":8},\"prevNode\":{\"key\":\"/foo\",\"value\":\"one\",\"modifiedIndex\":8,\"createdIndex\":8}}\n"
        );
        assert_eq!(event_body(&ev, true), "{\"action\":\"compareAndSwap\"}\n");
        let root = Node {
            dir: true,
            nodes: Some(vec![]),
            ..Node::default()
        };
        let mut s = String::new();
        push_node(&mut s, &root);
        assert_eq!(s, "{\"dir\":true}");
    }

    #[test]
    fn errors_omit_an_empty_cause() {
        assert_eq!(
            error_body(&StoreError::new(100, "/foo", 6)),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/foo\",\"index\":6}\n"
        );
        assert_eq!(
            error_body(&StoreError::new(209, "", 0)),
            "{\"errorCode\":209,\"message\":\"Invalid field\",\"index\":0}\n"
        );
    }
}
