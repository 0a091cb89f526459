//! `/v2/keys`: dispatch of GET/HEAD/PUT/POST/DELETE to the backend, as etcd's
//! `keysHandler` and `applierV2store` do.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;

use kv_core::json::{error_body, event_body};
use kv_core::{Action, Op};

use super::params::{self, Form, KeyParams};
use super::{AppState, ConnWatchGuard};
use crate::backend::{
    Applied, CAUSE_TOO_LARGE, KvBackend, ReadRequest, WatchRequest, internal,
    too_many_watchers_cause,
};

const KEYS_PREFIX: &str = "/v2/keys";

/// Entry point for every request under `/v2/keys`.
pub(crate) async fn handle<B: KvBackend>(
    state: Arc<AppState<B>>,
    conn: Option<std::net::SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let is_get = method == Method::GET || method == Method::HEAD;
    if !(is_get || method == Method::PUT || method == Method::POST || method == Method::DELETE) {
        return Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "HEAD,GET,PUT,POST,DELETE")
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from("Method Not Allowed\n"))
            .unwrap_or_default();
    }
    let raw_path = uri.path();
    let Some(decoded) = decode_path(raw_path) else {
        return state.store_error(&invalid_form("invalid URL escape"));
    };
    if let Some(clean) = needs_redirect(&decoded) {
        let loc = match uri.query() {
            Some(q) => format!("{clean}?{q}"),
            None => clean,
        };
        // Go's http.Redirect: a small HTML body for GET (and HEAD's length), none otherwise.
        let mut b = Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, loc.as_str());
        let body = if is_get {
            b = b.header(header::CONTENT_TYPE, "text/html; charset=utf-8");
            Body::from(format!(
                "<a href=\"{}\">Moved Permanently</a>.\n\n",
                html_escape(&loc)
            ))
        } else {
            Body::empty()
        };
        return b.body(body).unwrap_or_default();
    }
    let key = clean_key(&decoded[KEYS_PREFIX.len()..]);
    if key.len() > state.limits.max_key_bytes {
        return state.store_error(&internal(CAUSE_TOO_LARGE));
    }

    let mut form = Form::default();
    if method == Method::PUT || method == Method::POST {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
            .unwrap_or(false);
        let bytes: Bytes = match axum::body::to_bytes(body, state.limits.max_request_bytes).await {
            Ok(b) => b,
            Err(_) => {
                return state.store_error(&internal(CAUSE_TOO_LARGE));
            }
        };
        if is_form {
            let text = match std::str::from_utf8(&bytes) {
                Ok(t) => t,
                Err(_) => {
                    return state.store_error(&invalid_form("invalid UTF-8 in form"));
                }
            };
            if let Err(e) = form.extend_urlencoded(text) {
                return state.store_error(&invalid_form(e));
            }
        }
    }
    if let Some(Err(e)) = uri.query().map(|q| form.extend_urlencoded(q)) {
        return state.store_error(&invalid_form(e));
    }
    let p = match params::parse(&form, is_get) {
        Ok(p) => p,
        Err(e) => return state.store_error(&e),
    };

    if is_get {
        if p.wait {
            return watch(state, conn, key, &p).await;
        }
        let res = state
            .backend
            .read(ReadRequest {
                key,
                recursive: p.recursive,
                sorted: p.sorted,
                quorum: p.quorum,
            })
            .await;
        let counter = if res.is_ok() {
            &state.stats.gets_success
        } else {
            &state.stats.gets_fail
        };
        counter.fetch_add(1, Ordering::Relaxed);
        return state.applied(res, false);
    }

    if p.value.len() > state.limits.max_request_bytes {
        return state.store_error(&internal(CAUSE_TOO_LARGE));
    }
    let (kind, op) = write_op(&method, key, &p);
    let res = state.backend.apply(op).await;
    state.stats.count_write(kind, res.is_ok());
    state.applied(res, p.no_value_on_success)
}

/// etcd's 210 ("Invalid POST form") with `cause`, for a request that cannot be parsed.
fn invalid_form(cause: impl Into<String>) -> kv_core::Error {
    kv_core::Error::InvalidForm {
        cause: cause.into(),
        index: 0,
    }
}

/// Which `/v2/stats/store` counter a write feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Set,
    Create,
    Update,
    Cas,
    Delete,
    Cad,
}

/// Maps a validated request to the store operation, as etcd's `applierV2store` does, and
/// the statistics counter it feeds.
fn write_op(method: &Method, key: String, p: &KeyParams) -> (OpKind, Op) {
    let value = p.value.clone();
    let ttl = p.ttl;
    let prev_value = (!p.prev_value.is_empty()).then(|| p.prev_value.clone());
    let prev_index = (p.prev_index > 0).then_some(p.prev_index);
    if *method == Method::POST {
        let op = Op::Create {
            key,
            value,
            dir: p.dir,
            ttl,
            unique: true,
        };
        return (OpKind::Create, op);
    }
    let has_prev = prev_index.is_some() || prev_value.is_some();
    if *method == Method::DELETE {
        return if has_prev {
            let op = Op::CompareAndDelete {
                key,
                prev_value,
                prev_index,
            };
            (OpKind::Cad, op)
        } else {
            let op = Op::Delete {
                key,
                dir: p.dir,
                recursive: p.recursive,
            };
            (OpKind::Delete, op)
        };
    }
    match p.prev_exist {
        Some(true) if !has_prev => {
            let op = Op::Update {
                key,
                value,
                ttl,
                refresh: p.refresh,
            };
            (OpKind::Update, op)
        }
        Some(false) => {
            let op = Op::Create {
                key,
                value,
                dir: p.dir,
                ttl,
                unique: false,
            };
            (OpKind::Create, op)
        }
        _ if has_prev => {
            let op = Op::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh: p.refresh,
            };
            (OpKind::Cas, op)
        }
        _ => {
            let op = Op::Set {
                key,
                value,
                dir: p.dir,
                ttl,
                refresh: p.refresh,
            };
            (OpKind::Set, op)
        }
    }
}

async fn watch<B: KvBackend>(
    state: Arc<AppState<B>>,
    conn: Option<std::net::SocketAddr>,
    key: String,
    p: &KeyParams,
) -> Response {
    let Some(guard) = ConnWatchGuard::acquire(&state, conn) else {
        return state.store_error(&internal(too_many_watchers_cause(
            state.limits.max_watchers_per_conn,
        )));
    };
    let req = WatchRequest {
        key,
        recursive: p.recursive,
        stream: p.stream,
        since: (p.wait_index > 0).then_some(p.wait_index),
        all_history: false,
    };
    let w = match state.backend.watch(req).await {
        Ok(w) => w,
        Err(e) => return state.store_error(&e),
    };
    let stream = p.stream;
    let start = w.start_index;
    let raft = w.raft;
    // The guard rides along with the body so the per-connection count drops when the client
    // goes away or the watch ends.
    let body = futures::stream::unfold(
        (w.events, guard, false),
        move |(mut rx, guard, done)| async move {
            if done {
                return None;
            }
            let ev = rx.recv().await?;
            let chunk = Bytes::from(event_body(&ev, false));
            Some((
                Ok::<_, std::convert::Infallible>(chunk),
                (rx, guard, !stream),
            ))
        },
    );
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("X-Etcd-Index", HeaderValue::from(start));
    h.insert("X-Raft-Index", HeaderValue::from(raft.index));
    h.insert("X-Raft-Term", HeaderValue::from(raft.term));
    state.cluster_header(h);
    resp
}

impl<B: KvBackend> AppState<B> {
    /// A keys response for a read or write result.
    fn applied(&self, res: Result<Applied, kv_core::Error>, no_value: bool) -> Response {
        let a = match res {
            Ok(a) => a,
            Err(e) => return self.store_error(&e),
        };
        let blank = no_value
            && matches!(
                a.event.action,
                Action::Set | Action::CompareAndSwap | Action::Create | Action::Update
            );
        let body = event_body(&a.event, blank);
        let status = StatusCode::from_u16(a.event.http_status()).unwrap_or(StatusCode::OK);
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("X-Etcd-Index", HeaderValue::from(a.event.index));
        h.insert("X-Raft-Index", HeaderValue::from(a.raft.index));
        h.insert("X-Raft-Term", HeaderValue::from(a.raft.term));
        self.cluster_header(h);
        resp
    }

    /// An etcd error body with its status and `X-Etcd-Index`.
    pub(crate) fn store_error(&self, e: &kv_core::Error) -> Response {
        let mut resp = Response::new(Body::from(error_body(e)));
        *resp.status_mut() =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("X-Etcd-Index", HeaderValue::from(e.index()));
        self.cluster_header(h);
        resp
    }
}

/// Go's `html.EscapeString`.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('\'', "&#39;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
}

/// Percent-decodes a URL path (`+` stays a plus). `None` on a malformed escape.
fn decode_path(p: &str) -> Option<String> {
    if !p.contains('%') {
        return Some(p.to_owned());
    }
    params::unescape(&p.replace('+', "%2B"))
}

/// Go's `path.Clean`.
pub(crate) fn path_clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The cleaned path when Go's ServeMux would redirect (`//`, `.` or `..` segments).
fn needs_redirect(p: &str) -> Option<String> {
    let mut clean = path_clean(p);
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    (clean != p).then_some(clean)
}

/// The store key: absolute, no trailing slash (`path.Join("/", rest)`).
fn clean_key(rest: &str) -> String {
    let c = path_clean(rest);
    if c == "/" {
        c
    } else {
        c.trim_end_matches('/').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_clean_like_go() {
        assert_eq!(path_clean("/a//b/./c/.."), "/a/b");
        assert_eq!(needs_redirect("/v2/keys/a//b"), Some("/v2/keys/a/b".into()));
        assert_eq!(needs_redirect("/v2/keys/a/"), None);
        assert_eq!(needs_redirect("/v2/keys/"), None);
        assert_eq!(clean_key(""), "/");
        assert_eq!(clean_key("/k1/"), "/k1");
        assert_eq!(
            decode_path("/v2/keys/enc%2Fslash+x").unwrap(),
            "/v2/keys/enc/slash+x"
        );
    }

    #[test]
    fn dispatch_follows_etcd() {
        let p = |s: &str| {
            let mut f = Form::default();
            f.extend_urlencoded(s).unwrap();
            params::parse(&f, false).unwrap()
        };
        let k = || "/k".to_string();
        assert!(matches!(
            write_op(&Method::PUT, k(), &p("prevExist=true")),
            (OpKind::Update, Op::Update { .. })
        ));
        assert!(matches!(
            write_op(&Method::PUT, k(), &p("prevExist=true&prevIndex=3")),
            (
                OpKind::Cas,
                Op::CompareAndSwap {
                    prev_index: Some(3),
                    prev_value: None,
                    ..
                }
            )
        ));
        assert!(matches!(
            write_op(&Method::PUT, k(), &p("prevExist=false&prevValue=x")),
            (OpKind::Create, Op::Create { unique: false, .. })
        ));
        assert!(matches!(
            write_op(&Method::PUT, k(), &p("prevValue=x")),
            (OpKind::Cas, Op::CompareAndSwap { prev_value: Some(ref v), prev_index: None, .. }) if v == "x"
        ));
        assert!(matches!(
            write_op(&Method::PUT, k(), &p("")),
            (OpKind::Set, Op::Set { .. })
        ));
        assert!(matches!(
            write_op(&Method::POST, k(), &p("")),
            (OpKind::Create, Op::Create { unique: true, .. })
        ));
        assert!(matches!(
            write_op(&Method::DELETE, k(), &p("prevIndex=2")),
            (OpKind::Cad, Op::CompareAndDelete { .. })
        ));
        assert!(matches!(
            write_op(&Method::DELETE, k(), &p("dir=true")),
            (OpKind::Delete, Op::Delete { dir: true, .. })
        ));
    }
}
