//! etcd's v2 JSON bodies byte for byte, as Go's `encoding/json` writes them: the field
//! order, the `omitempty` rules, `time.RFC3339Nano` timestamps, and strings escaped the
//! HTML-safe way (`<`, `>`, `&`, U+2028 and U+2029 too). kvd's HTTP front end writes its
//! events ([`event_body`]) and errors ([`error_body`]) with it, and kvctl its output
//! ([`push_str`]).
//!
//! serde's forms of [`NodeView`], [`Event`] and [`Error`] have etcd's fields too, but
//! serde_json escapes strings differently and writes an event's `index`; this writer is
//! also several times faster, which matters on kvd's hot path.
//!
//! ```
//! use kv_core::{Action, Command, Op, Store};
//!
//! let mut store = Store::new();
//! let set = Op::Set { key: "/a".into(), value: "<b>".into(), dir: false, ttl: None, refresh: false };
//! let e = store.apply(&Command::new(0, set))?;
//! assert_eq!(
//!     kv_core::json::event_body(&e, false),
//!     "{\"action\":\"set\",\"node\":{\"key\":\"/a\",\"value\":\"\\u003cb\\u003e\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
//! );
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::Write as _;

use crate::time::format_rfc3339;
use crate::{Error, Event, NodeView};

/// Appends `s` as a JSON string the way Go's encoder does (HTML-safe: `<`, `>`, `&`, U+2028
/// and U+2029 are escaped too, and `\b`/`\f` as `\u00XX` like Go 1.19).
pub fn push_str(out: &mut String, s: &str) {
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

/// Appends a node object as etcd writes it: `key, value, dir, expiration, ttl, nodes,
/// modifiedIndex, createdIndex`, each omitted when empty as Go's `omitempty` does (the
/// root's key `/` is omitted too).
pub fn push_node(out: &mut String, n: &NodeView) {
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
    if n.key != "/" {
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
    if let Some(exp) = n.expiration {
        field(out, "expiration");
        push_str(out, &format_rfc3339(exp));
    }
    if let Some(ttl) = n.ttl.filter(|t| *t != 0) {
        field(out, "ttl");
        let _ = write!(out, "{ttl}");
    }
    if !n.nodes.is_empty() {
        field(out, "nodes");
        out.push('[');
        for (i, c) in n.nodes.iter().enumerate() {
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

/// An event body (`action`, `node`, `prevNode`; a batch's events are not written) plus the
/// trailing newline of Go's `json.Encoder`. With `no_value` only the action is written
/// (etcd's `noValueOnSuccess`).
pub fn event_body(ev: &Event, no_value: bool) -> String {
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

/// An error body, `{"errorCode":..,"message":..,"cause":..,"index":..}` (the cause omitted
/// when empty), plus a newline.
pub fn error_body(e: &Error) -> String {
    let mut out = String::with_capacity(96);
    let _ = write!(out, "{{\"errorCode\":{},\"message\":", e.code());
    push_str(&mut out, e.message());
    if !e.cause().is_empty() {
        out.push_str(",\"cause\":");
        push_str(&mut out, e.cause());
    }
    let _ = writeln!(out, ",\"index\":{}}}", e.index());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;

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
            node: NodeView {
                key: "/foo".into(),
                value: Some("two".into()),
                modified_index: 9,
                created_index: 8,
                ..NodeView::default()
            },
            prev_node: Some(NodeView {
                key: "/foo".into(),
                value: Some("one".into()),
                modified_index: 8,
                created_index: 8,
                ..NodeView::default()
            }),
            index: 9,
            batch: None,
        };
        assert_eq!(
            event_body(&ev, false),
            "{\"action\":\"compareAndSwap\",\"node\":{\"key\":\"/foo\",\"value\":\"two\",\"modifiedIndex\":9,\"createdIndex\":8},\"prevNode\":{\"key\":\"/foo\",\"value\":\"one\",\"modifiedIndex\":8,\"createdIndex\":8}}\n"
        );
        assert_eq!(event_body(&ev, true), "{\"action\":\"compareAndSwap\"}\n");
        let root = NodeView {
            key: "/".into(),
            dir: true,
            ..NodeView::default()
        };
        let mut s = String::new();
        push_node(&mut s, &root);
        assert_eq!(s, "{\"dir\":true}");
        let ttl = NodeView {
            key: "/t".into(),
            value: Some(String::new()),
            expiration: Some(10_500),
            ttl: Some(11),
            modified_index: 3,
            created_index: 3,
            ..NodeView::default()
        };
        let dir = NodeView {
            key: "/d".into(),
            dir: true,
            nodes: vec![ttl],
            modified_index: 2,
            created_index: 2,
            ..NodeView::default()
        };
        let mut s = String::new();
        push_node(&mut s, &dir);
        assert_eq!(
            s,
            r#"{"key":"/d","dir":true,"nodes":[{"key":"/t","value":"","expiration":"1970-01-01T00:00:10.5Z","ttl":11,"modifiedIndex":3,"createdIndex":3}],"modifiedIndex":2,"createdIndex":2}"#
        );
    }

    #[test]
    fn errors_omit_an_empty_cause() {
        let missing = Error::KeyNotFound {
            cause: "/foo".into(),
            index: 6,
        };
        assert_eq!(
            error_body(&missing),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/foo\",\"index\":6}\n"
        );
        let invalid = Error::InvalidField {
            cause: String::new(),
            index: 0,
        };
        assert_eq!(
            error_body(&invalid),
            "{\"errorCode\":209,\"message\":\"Invalid field\",\"index\":0}\n"
        );
    }
}
