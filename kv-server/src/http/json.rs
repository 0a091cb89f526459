//! JSON bodies byte-for-byte as etcd writes them: Go's `encoding/json` field order,
//! `omitempty` rules and string escaping (kv-core's [`push_str`]), and `time.RFC3339Nano`
//! timestamps (kv-core's [`format_rfc3339`]).

use std::fmt::Write as _;

use kv_core::json::push_str;
use kv_core::time::format_rfc3339;

use crate::backend::{Event, Node, StoreError, error_message};

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
        push_str(out, &format_rfc3339(exp));
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
    use crate::backend::Action;

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
