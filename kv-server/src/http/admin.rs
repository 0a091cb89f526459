//! Everything outside `/v2/keys`: members, machines, stats, version, health, metrics.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use kv_core::json::push_str;
use kv_core::time::format_rfc3339;

use super::keys::OpKind;
use super::{AppState, text};
use crate::backend::{KvBackend, Member, MemberError, now_ms};

/// The etcd version kvd reports, so clients that gate features on it treat kvd as 3.4.
const ETCD_VERSION: &str = "3.4.23";
const CLUSTER_VERSION: &str = "3.4.0";

pub(crate) async fn handle<B: KvBackend>(
    state: Arc<AppState<B>>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let get = method == Method::GET || method == Method::HEAD;
    match path {
        "/version" if get => json_resp(
            StatusCode::OK,
            format!(
                "{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\",\"kvd\":\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        "/health" if method == Method::GET => {
            if state.backend.status().leader.is_some() {
                text(StatusCode::OK, "{\"health\":\"true\"}")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "{\"health\":\"false\"}\n")
            }
        }
        "/v2/machines" if get => {
            let mut urls: Vec<String> = state
                .backend
                .members()
                .into_iter()
                .flat_map(|m| m.client_urls)
                .collect();
            urls.sort();
            text(StatusCode::OK, urls.join(", "))
        }
        "/v2/stats/self" if get => json_resp(StatusCode::OK, stats_self(&state)),
        "/v2/stats/leader" if get => {
            let st = state.backend.status();
            if st.leader != Some(st.id) {
                return message(&state, StatusCode::FORBIDDEN, "not current leader");
            }
            let mut s = format!("{{\"leader\":\"{:x}\",\"followers\":{{", st.id);
            let followers: Vec<_> = state
                .backend
                .members()
                .into_iter()
                .filter(|m| m.id != st.id)
                .collect();
            for (i, m) in followers.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "\"{:x}\":{{\"latency\":{{\"current\":0,\"average\":0,\"standardDeviation\":0,\"minimum\":0,\"maximum\":0}},\"counts\":{{\"fail\":0,\"success\":0}}}}",
                    m.id
                );
            }
            s.push_str("}}");
            json_resp(StatusCode::OK, s)
        }
        "/v2/stats/store" if get => json_resp(StatusCode::OK, stats_store(&state)),
        "/metrics" if get => text(StatusCode::OK, metrics(&state)),
        "/kvd/v1/snapshot" if method == Method::GET => match state.backend.snapshot().await {
            Ok(bytes) => {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            Err(e) => message(&state, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        "/v2/members" | "/v2/members/" => members(state, method, None, headers, body).await,
        p if p.starts_with("/v2/members/") => {
            let id = &p["/v2/members/".len()..];
            members(state, method, Some(id), headers, body).await
        }
        "/version" | "/health" | "/v2/machines" | "/v2/stats/self" | "/v2/stats/leader"
        | "/v2/stats/store" | "/metrics" => method_not_allowed("GET"),
        _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn json_resp(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// etcd's `httptypes.HTTPError` body: `{"message":...}`.
fn message<B: KvBackend>(state: &AppState<B>, status: StatusCode, msg: &str) -> Response {
    let mut s = String::from("{\"message\":");
    push_str(&mut s, msg);
    s.push('}');
    let mut r = json_resp(status, s);
    state.cluster_header(r.headers_mut());
    r
}

fn member_json(out: &mut String, m: &Member) {
    let _ = write!(out, "{{\"id\":\"{:x}\",\"name\":", m.id);
    push_str(out, &m.name);
    for (name, urls) in [("peerURLs", &m.peer_urls), ("clientURLs", &m.client_urls)] {
        let _ = write!(out, ",\"{name}\":[");
        for (i, u) in urls.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(out, u);
        }
        out.push(']');
    }
    out.push('}');
}

#[derive(serde::Deserialize)]
struct MemberBody {
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
}

async fn members<B: KvBackend>(
    state: Arc<AppState<B>>,
    method: &Method,
    id: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let with_cluster = |mut r: Response| {
        state.cluster_header(r.headers_mut());
        r
    };
    match (method.as_str(), id) {
        ("GET" | "HEAD", None) => {
            let mut s = String::from("{\"members\":[");
            for (i, m) in state.backend.members().iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                member_json(&mut s, m);
            }
            s.push_str("]}\n");
            with_cluster(json_resp(StatusCode::OK, s))
        }
        ("GET" | "HEAD", Some("leader")) => {
            let st = state.backend.status();
            match st
                .leader
                .and_then(|l| state.backend.members().into_iter().find(|m| m.id == l))
            {
                Some(m) => {
                    let mut s = String::new();
                    member_json(&mut s, &m);
                    s.push('\n');
                    with_cluster(json_resp(StatusCode::OK, s))
                }
                None => message(&state, StatusCode::SERVICE_UNAVAILABLE, "During election"),
            }
        }
        ("POST", None) => {
            let urls = match member_body(&state, headers, body).await {
                Ok(u) => u,
                Err(r) => return r,
            };
            match state.backend.add_member(urls).await {
                Ok(m) => {
                    let mut s = String::new();
                    member_json(&mut s, &m);
                    s.push('\n');
                    with_cluster(json_resp(StatusCode::CREATED, s))
                }
                Err(e) => member_error(&state, &e),
            }
        }
        ("DELETE" | "PUT", Some(raw)) => {
            let Ok(id) = u64::from_str_radix(raw, 16) else {
                return message(
                    &state,
                    StatusCode::NOT_FOUND,
                    &format!("No such member: {raw}"),
                );
            };
            let res = if method == Method::DELETE {
                state.backend.remove_member(id).await
            } else {
                match member_body(&state, headers, body).await {
                    Ok(urls) => state.backend.update_member(id, urls).await,
                    Err(r) => return r,
                }
            };
            match res {
                Ok(()) => with_cluster(StatusCode::NO_CONTENT.into_response_plain()),
                Err(e) => member_error(&state, &e),
            }
        }
        _ => method_not_allowed("GET, POST, DELETE, PUT"),
    }
}

trait PlainResponse {
    fn into_response_plain(self) -> Response;
}

impl PlainResponse for StatusCode {
    fn into_response_plain(self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self;
        r
    }
}

async fn member_body<B: KvBackend>(
    state: &AppState<B>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<String>, Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let base = ct.split(';').next().unwrap_or("").trim();
    if base != "application/json" {
        return Err(message(
            state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {ct}, accept application/json"),
        ));
    }
    let bytes = axum::body::to_bytes(body, state.limits.max_request_bytes)
        .await
        .map_err(|e| message(state, StatusCode::BAD_REQUEST, &e.to_string()))?;
    let b: MemberBody = serde_json::from_slice(&bytes)
        .map_err(|e| message(state, StatusCode::BAD_REQUEST, &e.to_string()))?;
    if b.peer_urls.is_empty() {
        return Err(message(
            state,
            StatusCode::BAD_REQUEST,
            "peerURLs must not be empty",
        ));
    }
    Ok(b.peer_urls)
}

fn member_error<B: KvBackend>(state: &AppState<B>, e: &MemberError) -> Response {
    let status = match e {
        MemberError::NotFound(_) => StatusCode::NOT_FOUND,
        MemberError::Removed(_) => StatusCode::GONE,
        MemberError::Conflict(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    message(state, status, &e.to_string())
}

/// Go's `time.Duration.String()` for a span of milliseconds.
fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let (s, frac) = ((ms / 1000) % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let f = format!("{frac:03}");
        let _ = write!(out, ".{}", f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn stats_self<B: KvBackend>(state: &AppState<B>) -> String {
    let st = state.backend.status();
    let is_leader = st.leader == Some(st.id);
    let mut s = String::from("{\"name\":");
    push_str(&mut s, &st.name);
    let _ = write!(
        s,
        ",\"id\":\"{:x}\",\"state\":\"{}\",\"startTime\":\"{}\",\"leaderInfo\":{{\"leader\":\"{}\",\"uptime\":\"{}\",\"startTime\":\"{}\"}},\"recvAppendRequestCnt\":0,\"sendAppendRequestCnt\":0}}",
        st.id,
        if is_leader {
            "StateLeader"
        } else {
            "StateFollower"
        },
        format_rfc3339(st.start_time_ms),
        st.leader.map(|l| format!("{l:x}")).unwrap_or_default(),
        go_duration(now_ms().saturating_sub(st.leader_since_ms)),
        format_rfc3339(st.leader_since_ms),
    );
    s
}

fn stats_store<B: KvBackend>(state: &AppState<B>) -> String {
    let st = state.backend.status();
    let w = |k, ok| state.stats.write(k, ok);
    format!(
        "{{\"getsSuccess\":{},\"getsFail\":{},\"setsSuccess\":{},\"setsFail\":{},\"deleteSuccess\":{},\"deleteFail\":{},\"updateSuccess\":{},\"updateFail\":{},\"createSuccess\":{},\"createFail\":{},\"compareAndSwapSuccess\":{},\"compareAndSwapFail\":{},\"compareAndDeleteSuccess\":{},\"compareAndDeleteFail\":{},\"expireCount\":{},\"watchers\":{}}}",
        state.stats.gets_success.load(Ordering::Relaxed),
        state.stats.gets_fail.load(Ordering::Relaxed),
        w(OpKind::Set, true),
        w(OpKind::Set, false),
        w(OpKind::Delete, true),
        w(OpKind::Delete, false),
        w(OpKind::Update, true),
        w(OpKind::Update, false),
        w(OpKind::Create, true),
        w(OpKind::Create, false),
        w(OpKind::Cas, true),
        w(OpKind::Cas, false),
        w(OpKind::Cad, true),
        w(OpKind::Cad, false),
        st.expire_count,
        st.watchers,
    )
}

/// Prometheus text exposition (version 0.0.4) of the store and server counters, under etcd's
/// metric names where etcd has one.
fn metrics<B: KvBackend>(state: &AppState<B>) -> String {
    let st = state.backend.status();
    let mut s = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(s, "{name}{labels} {v}");
        }
    };
    metric(
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        &[("", u64::from(st.leader.is_some()))],
    );
    metric(
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        &[("", u64::from(st.leader == Some(st.id)))],
    );
    metric(
        "etcd_server_proposals_committed_total",
        "gauge",
        "The total number of consensus proposals committed.",
        &[("", st.raft.index)],
    );
    metric(
        "etcd_debugging_store_watchers",
        "gauge",
        "Count of currently active watchers.",
        &[("", st.watchers)],
    );
    metric(
        "etcd_debugging_store_expires_total",
        "counter",
        "Total number of expired keys.",
        &[("", st.expire_count)],
    );
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    metric(
        "etcd_debugging_store_reads_total",
        "counter",
        "Total number of reads action by (get/getRecursive), local to this member.",
        &[(
            "{action=\"get\"}",
            g(&state.stats.gets_success) + g(&state.stats.gets_fail),
        )],
    );
    let w = |k| state.stats.write(k, true) + state.stats.write(k, false);
    metric(
        "etcd_debugging_store_writes_total",
        "counter",
        "Total number of writes (e.g. set/compareAndDelete) seen by this member.",
        &[
            ("{action=\"set\"}", w(OpKind::Set)),
            ("{action=\"create\"}", w(OpKind::Create)),
            ("{action=\"update\"}", w(OpKind::Update)),
            ("{action=\"compareAndSwap\"}", w(OpKind::Cas)),
            ("{action=\"delete\"}", w(OpKind::Delete)),
            ("{action=\"compareAndDelete\"}", w(OpKind::Cad)),
        ],
    );
    metric(
        "kvd_http_requests_total",
        "counter",
        "HTTP requests received by this member.",
        &[("", state.requests.load(Ordering::Relaxed))],
    );
    metric(
        "kvd_store_index",
        "gauge",
        "Current etcd (v2 store) index.",
        &[("", st.etcd_index)],
    );
    s
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(971), "971ms");
        assert_eq!(go_duration(1500), "1.5s");
        assert_eq!(go_duration(3_723_000), "1h2m3s");
    }
}
