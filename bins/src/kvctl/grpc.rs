//! kvctl's gRPC [`Api`]: kvd's `kv.v1` through [`KvClient`], on a current-thread tokio
//! runtime (kvctl itself is blocking).
//!
//! The answers are turned into the v2 HTTP API's vocabulary (hex member ids, RFC 3339
//! expirations, the root's empty key, `X-Etcd-Index`) and kv.v1's errors, which carry
//! etcd's code, cause and index, into etcd's error text, so the commands print exactly
//! what they print over HTTP (limits too: kvd's `RESOURCE_EXHAUSTED` names the cause of
//! the etcd error its HTTP API answers).
//!
//! Endpoints fail over as etcdctl's client does: a call that cannot reach its member (no
//! connection could be made, so nothing was sent) goes to the next endpoint, which is then
//! used until it fails in turn; a watch whose member went away is opened again on the next
//! one, from the same index.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kv_core::{Event, NodeView};

use super::{
    Api, CError, CMember, CNode, CResponse, Fail, KeysRequest, Put, Settings, error, exit,
    root_cause, unavailable,
};
use kv_client::{ClientError, KvClient, wire};

/// How long `cluster-health` waits for each member (as over HTTP).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A `kv.v1` client of the endpoints, on the first that accepts a connection and answers.
pub(super) struct GrpcApi {
    endpoints: Vec<String>,
    /// The TLS of the flags (ALPN `h2`), used for `https://` URLs.
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    total_timeout: Duration,
    debug: bool,
    rt: tokio::runtime::Runtime,
    /// The endpoint in use (its position in `endpoints`) and its client: made on first
    /// use, replaced when a call cannot reach that member.
    conn: RefCell<Option<(usize, KvClient)>>,
}

impl GrpcApi {
    /// The API of `settings`' endpoints; connects on the first request.
    pub(super) fn new(
        settings: &Settings,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<GrpcApi, Fail> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| error(exit::BAD_CONNECTION, e))?;
        Ok(GrpcApi {
            endpoints: settings.endpoints.clone(),
            tls: tls.map(Arc::new),
            timeout: settings.timeout,
            total_timeout: settings.total_timeout,
            debug: settings.debug,
            rt,
            conn: RefCell::new(None),
        })
    }

    /// The TLS configuration for `url`: the flags' for `https://`, none otherwise.
    fn tls_for(&self, url: &str) -> Option<Arc<rustls::ClientConfig>> {
        self.tls
            .as_ref()
            .filter(|_| url.starts_with("https://"))
            .cloned()
    }

    /// The client of endpoint `i`: the one in use, or a new connection (which becomes the
    /// one in use).
    fn client_at(&self, i: usize) -> Result<KvClient, ClientError> {
        if let Some((at, kv)) = self.conn.borrow().as_ref()
            && *at == i
        {
            return Ok(kv.clone());
        }
        let ep = &self.endpoints[i];
        if self.debug {
            eprintln!("gRPC: connecting to {ep}");
        }
        let kv = self
            .rt
            .block_on(KvClient::connect_with(ep, self.tls_for(ep), self.timeout))?;
        *self.conn.borrow_mut() = Some((i, kv.clone()));
        Ok(kv)
    }

    /// Runs one call, within `timeout` when given: its outcome and the endpoint that gave
    /// it (for messages). The endpoint in use is tried first, then the others in order
    /// (as etcdctl's client does); one that cannot be reached is skipped, and etcdctl's
    /// "unavailable" error (exit 2) lists them all when none can. `f` makes the call on a
    /// client, once per endpoint tried. With `idempotent` (a watch), a call whose
    /// connection broke before it was answered also goes to the next endpoint.
    fn run<T, Fut>(
        &self,
        method: &str,
        timeout: Option<Duration>,
        idempotent: bool,
        f: impl Fn(KvClient) -> Fut,
    ) -> Result<(String, Result<T, ClientError>), Fail>
    where
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let n = self.endpoints.len();
        let first = self.conn.borrow().as_ref().map_or(0, |(i, _)| *i);
        let mut errors = Vec::new();
        for i in (first..n).chain(0..first) {
            let ep = &self.endpoints[i];
            let kv = match self.client_at(i) {
                Ok(kv) => kv,
                Err(e @ ClientError::Connect { .. }) => {
                    errors.push(format!("{ep}: {}", root_cause(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(error(
                        exit::SERVER_ERROR,
                        format!("client: endpoint {ep}: {}", root_cause(&e)),
                    ));
                }
            };
            if self.debug {
                eprintln!("gRPC call: {ep} kv.v1.KV/{method}");
            }
            let fut = f(kv);
            let res = match timeout {
                None => self.rt.block_on(fut),
                // The timer is made inside the runtime, which drives it.
                Some(t) => match self
                    .rt
                    .block_on(async { tokio::time::timeout(t, fut).await })
                {
                    Ok(r) => r,
                    Err(_) => {
                        return Err(error(
                            exit::SERVER_ERROR,
                            format!("client: endpoint {ep}: operation timed out"),
                        ));
                    }
                },
            };
            match res {
                Err(e) if unreachable(&e) || (idempotent && watch_broken(&e)) => {
                    if self.debug {
                        eprintln!("gRPC: {ep} is unreachable: {}", root_cause(&e));
                    }
                    errors.push(format!("{ep}: {}", root_cause(&e)));
                    *self.conn.borrow_mut() = None;
                }
                res => return Ok((ep.clone(), res)),
            }
        }
        Err(unavailable(&errors))
    }

    /// Runs one call within `--total-timeout`; every error as etcdctl prints it.
    fn call<T, Fut>(&self, method: &str, f: impl Fn(KvClient) -> Fut) -> Result<T, Fail>
    where
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.call_on(method, false, f).map(|(_, v)| v)
    }

    /// [`GrpcApi::call`], also returning the endpoint that answered (`idempotent`: as
    /// in [`GrpcApi::run`]).
    fn call_on<T, Fut>(
        &self,
        method: &str,
        idempotent: bool,
        f: impl Fn(KvClient) -> Fut,
    ) -> Result<(String, T), Fail>
    where
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (ep, res) = self.run(method, Some(self.total_timeout), idempotent, f)?;
        match res {
            Ok(v) => Ok((ep, v)),
            Err(e) => Err(call_fail(&ep, &e)),
        }
    }

    /// A membership call: `Ok(Err(message))` when the server refused it (the message the
    /// members API would have sent), `Err` when it could not be made.
    fn member_call<T, Fut>(
        &self,
        method: &str,
        f: impl Fn(KvClient) -> Fut,
    ) -> Result<Result<T, String>, Fail>
    where
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (ep, res) = self.run(method, Some(self.total_timeout), false, f)?;
        match res {
            Ok(v) => Ok(Ok(v)),
            Err(e) => match refusal(&e) {
                Some(msg) => Ok(Err(msg)),
                None => Err(call_fail(&ep, &e)),
            },
        }
    }
}

/// Whether a call failed without reaching its member: no connection could be made (tonic
/// reports a failed reconnection as a `ConnectError` in the status' sources), so the
/// request was not sent and another member may be asked, writes included.
pub(super) fn unreachable(e: &ClientError) -> bool {
    match e {
        ClientError::Connect { .. } => true,
        ClientError::Status(s) => {
            let mut cur = std::error::Error::source(s);
            while let Some(err) = cur {
                if err.is::<tonic::ConnectError>() {
                    return true;
                }
                cur = err.source();
            }
            false
        }
        _ => false,
    }
}

/// Whether a watch ended, or could not be opened, because its member went away (the
/// connection broke) rather than by the server's answer: then the watch is opened again, on
/// the next member if this one is gone. kvd itself ends a watch only with etcd's 400.
fn watch_broken(e: &ClientError) -> bool {
    matches!(e, ClientError::Status(s) if matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
    ))
}

/// The failure etcdctl prints for a failed call to `ep`: etcd's errors as the keys API's
/// error body prints (`Error:  100: Key not found (/a) [7]`), anything else as a failed
/// request (`Error:  client: endpoint <ep>: <cause>`); both exit 4.
pub(super) fn call_fail(ep: &str, e: &ClientError) -> Fail {
    match e {
        ClientError::Etcd { error: err, .. } => {
            let code = err.code();
            error(
                exit::SERVER_ERROR,
                CError {
                    error_code: code,
                    message: err.message().to_owned(),
                    cause: err.cause().to_owned(),
                    index: err.index(),
                },
            )
        }
        ClientError::Status(s) => {
            // A kvd limit: the etcd error its HTTP API answers for the same limit.
            if let Some(cause) = proto::convert::kv::limit_cause(s) {
                let err = kv_core::Error::RaftInternal {
                    cause: cause.to_owned(),
                    index: 0,
                };
                return error(
                    exit::SERVER_ERROR,
                    CError {
                        error_code: err.code(),
                        message: err.message().to_owned(),
                        cause: err.cause().to_owned(),
                        index: 0,
                    },
                );
            }
            let cause = match std::error::Error::source(s) {
                Some(src) => root_cause(src),
                None => s.message().to_owned(),
            };
            error(
                exit::SERVER_ERROR,
                format!("client: endpoint {ep}: {cause}"),
            )
        }
        e => error(
            exit::SERVER_ERROR,
            format!("client: endpoint {ep}: {}", root_cause(e)),
        ),
    }
}

/// The server's refusal of a membership change (its message, as the members API sends
/// it); `None` for a failure to reach it or an unreadable answer.
pub(super) fn refusal(e: &ClientError) -> Option<String> {
    match e {
        ClientError::Status(s) if std::error::Error::source(s).is_none() => {
            Some(s.message().to_owned())
        }
        _ => None,
    }
}

/// A node as the v2 HTTP API writes it: the root's key empty, no value for directories
/// and deletions, `nodes` absent when empty, the expiration in RFC 3339.
fn cnode(n: NodeView) -> CNode {
    CNode {
        key: if n.key == "/" { String::new() } else { n.key },
        dir: n.dir,
        value: n.value.unwrap_or_default(),
        nodes: (!n.nodes.is_empty()).then(|| n.nodes.into_iter().map(cnode).collect()),
        created_index: n.created_index,
        modified_index: n.modified_index,
        expiration: n.expiration.map(kv_core::time::format_rfc3339),
        ttl: n.ttl.unwrap_or(0),
    }
}

/// An event as the keys API answers it, with `index` as its `X-Etcd-Index`.
fn response(e: Event, index: u64) -> CResponse {
    CResponse {
        action: e.action.as_str().to_owned(),
        node: Some(cnode(e.node)),
        prev_node: e.prev_node.map(cnode),
        index,
    }
}

fn cmember(m: wire::Member) -> CMember {
    CMember {
        id: format!("{:x}", m.id),
        name: m.name,
        peer_urls: m.peer_urls,
        client_urls: m.client_urls,
    }
}

/// A hex member id as the members API parses it; its error message otherwise.
fn member_id(id: &str) -> Result<u64, String> {
    u64::from_str_radix(id, 16).map_err(|_| format!("No such member: {id}"))
}

/// The key with the leading `/` the HTTP API's URL gives it.
fn abs(key: &str) -> String {
    if key.starts_with('/') {
        key.to_owned()
    } else {
        format!("/{key}")
    }
}

impl Api for GrpcApi {
    fn keys(&self, req: &KeysRequest) -> Result<CResponse, Fail> {
        let ev = match req {
            KeysRequest::Get {
                key,
                recursive,
                sorted,
                quorum,
            } => {
                let consistency = if *quorum {
                    wire::Consistency::Linearizable
                } else {
                    wire::Consistency::Serializable
                };
                let r = wire::GetRequest {
                    key: abs(key),
                    recursive: *recursive,
                    sorted: *sorted,
                    consistency: consistency as i32,
                };
                self.call("Get", |kv| {
                    let r = r.clone();
                    async move { kv.get_with(r).await }
                })?
            }
            KeysRequest::Put(p) if p.prev_value.is_some() || p.prev_index > 0 => {
                let r = wire::CompareAndSwapRequest {
                    key: abs(&p.key),
                    value: p.value.clone().unwrap_or_default(),
                    prev_value: p.prev_value.clone(),
                    prev_index: (p.prev_index > 0).then_some(p.prev_index),
                    ttl: p.ttl,
                    refresh: false,
                };
                self.call("CompareAndSwap", |kv| {
                    let r = r.clone();
                    async move { kv.compare_and_swap_with(r).await }
                })?
            }
            KeysRequest::Put(Put {
                key,
                value,
                dir,
                ttl,
                prev_exist,
                in_order,
                ..
            }) => {
                let r = wire::PutRequest {
                    key: abs(key),
                    value: value.clone().unwrap_or_default(),
                    dir: *dir,
                    ttl: *ttl,
                    refresh: false,
                    prev_exist: *prev_exist,
                    in_order: *in_order,
                };
                self.call("Put", |kv| {
                    let r = r.clone();
                    async move { kv.put_with(r).await }
                })?
            }
            KeysRequest::Delete {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
            } => {
                let r = wire::DeleteRequest {
                    key: abs(key),
                    dir: *dir,
                    recursive: *recursive,
                    prev_value: prev_value.clone(),
                    prev_index: (*prev_index > 0).then_some(*prev_index),
                };
                self.call("Delete", |kv| {
                    let r = r.clone();
                    async move { kv.delete_with(r).await }
                })?
            }
        };
        let index = ev.index;
        Ok(response(ev, index))
    }

    /// A watch stream from `wait_index`, closed after its first event. Its index is the
    /// store's when the watch was registered, which kvd sends with the stream's headers
    /// (as the HTTP API's `X-Etcd-Index` of a long poll). When the stream breaks because
    /// its member went away, `Ok(None)` has the watch opened again (on the next endpoint).
    fn wait(
        &self,
        key: &str,
        wait_index: Option<u64>,
        recursive: bool,
    ) -> Result<Option<CResponse>, Fail> {
        let key = abs(key);
        let start = wait_index.unwrap_or(0);
        let (ep, mut w) = self.call_on("Watch", true, |kv| {
            let key = key.clone();
            async move { kv.watch(&key, recursive, start).await }
        })?;
        let index = match w.etcd_index() {
            Some(i) => i,
            // A server that does not send it: the store index now, as near as can be.
            None => {
                self.call_on("Status", true, |kv| async move { kv.status().await })?
                    .1
                    .etcd_index
            }
        };
        if self.debug {
            eprintln!("gRPC: {ep} watching {key} from index {start} (store index {index})");
        }
        match self.rt.block_on(w.next()) {
            Some(Ok(ev)) => Ok(Some(response(ev, index))),
            // The stream ended, or the server ended the watch (etcd's 400): wait again.
            None => Ok(None),
            Some(Err(e)) if e.etcd_code() == Some(400) => Ok(None),
            Some(Err(e)) if watch_broken(&e) => {
                if self.debug {
                    eprintln!("gRPC: the watch on {ep} broke: {}", root_cause(&e));
                }
                // Its connection may be gone: the next watch connects afresh.
                *self.conn.borrow_mut() = None;
                Ok(None)
            }
            Some(Err(e)) => Err(call_fail(&ep, &e)),
        }
    }

    fn members(&self) -> Result<Vec<CMember>, Fail> {
        let members = self.call("MemberList", |kv| async move { kv.members().await })?;
        Ok(members.into_iter().map(cmember).collect())
    }

    fn leader(&self) -> Result<Option<String>, Fail> {
        let members = self.call("MemberList", |kv| async move { kv.members().await })?;
        Ok(members
            .into_iter()
            .find(|m| m.is_leader)
            .map(|m| format!("{:x}", m.id)))
    }

    fn add_member(&self, peer_url: &str) -> Result<Result<CMember, String>, Fail> {
        let urls = vec![peer_url.to_owned()];
        let added = self.member_call("MemberAdd", |kv| {
            let urls = urls.clone();
            async move { kv.add_member(urls).await }
        })?;
        Ok(added.map(cmember))
    }

    fn remove_member(&self, id: &str) -> Result<Result<(), String>, Fail> {
        let id = match member_id(id) {
            Ok(id) => id,
            Err(msg) => return Ok(Err(msg)),
        };
        self.member_call(
            "MemberRemove",
            |kv| async move { kv.remove_member(id).await },
        )
    }

    fn update_member(&self, id: &str, peer_urls: &[&str]) -> Result<Result<(), String>, Fail> {
        let id = match member_id(id) {
            Ok(id) => id,
            Err(msg) => return Ok(Err(msg)),
        };
        let urls: Vec<String> = peer_urls.iter().map(|u| (*u).to_owned()).collect();
        self.member_call("MemberUpdate", |kv| {
            let urls = urls.clone();
            async move { kv.update_member(id, urls).await }
        })
    }

    /// The member's `Status`: healthy when it knows a leader (what kvd's `/health` says).
    fn health(&self, client_url: &str) -> Result<bool, String> {
        let tls = self.tls_for(client_url);
        let check = async {
            let kv = KvClient::connect_with(client_url, tls, HEALTH_TIMEOUT).await?;
            kv.status().await
        };
        match self
            .rt
            .block_on(async { tokio::time::timeout(HEALTH_TIMEOUT, check).await })
        {
            Ok(Ok(st)) => Ok(st.leader != 0),
            Ok(Err(e)) => Err(root_cause(&e)),
            Err(_) => Err("operation timed out".into()),
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, Fail> {
        let (_, res) = self.run(
            "Snapshot",
            None,
            false,
            |kv| async move { kv.snapshot().await },
        )?;
        res.map_err(|e| {
            let cause = match &e {
                ClientError::Status(s) => s.message().to_owned(),
                e => root_cause(e),
            };
            error(exit::SERVER_ERROR, format!("snapshot failed: {cause}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(code: u32, cause: &str, index: u64) -> ClientError {
        ClientError::from(proto::convert::kv::etcd_status(code, cause, index))
    }

    #[test]
    fn etcd_errors_print_as_over_http() {
        // The same body over HTTP, decoded by the HTTP API, prints the same line.
        for (code, cause, index, body) in [
            (
                100,
                "/c/nope",
                7,
                r#"{"errorCode":100,"message":"Key not found","cause":"/c/nope","index":7}"#,
            ),
            (
                101,
                "[4 != 9]",
                9,
                r#"{"errorCode":101,"message":"Compare failed","cause":"[4 != 9]","index":9}"#,
            ),
            (
                105,
                "/c/a",
                6,
                r#"{"errorCode":105,"message":"Key already exists","cause":"/c/a","index":6}"#,
            ),
            (
                108,
                "/c/e",
                12,
                r#"{"errorCode":108,"message":"Directory not empty","cause":"/c/e","index":12}"#,
            ),
            (
                401,
                "the requested history has been cleared [1008/3]",
                2008,
                r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [1008/3]","index":2008}"#,
            ),
            (
                300,
                "",
                0,
                r#"{"errorCode":300,"message":"Raft Internal Error","index":0}"#,
            ),
        ] {
            let over_grpc = call_fail("http://x", &etcd(code, cause, index));
            let over_http = super::super::http::decode_keys_body(body, index).unwrap_err();
            assert_eq!(over_grpc.message, over_http.message, "code {code}");
            assert_eq!(over_grpc.code, exit::SERVER_ERROR);
            assert_eq!(over_http.code, exit::SERVER_ERROR);
        }
        assert_eq!(
            call_fail("http://x", &etcd(100, "/a", 3)).message,
            "Error:  100: Key not found (/a) [3]"
        );
    }

    #[test]
    fn other_statuses_are_request_failures_and_member_refusals() {
        let s = ClientError::from(tonic::Status::already_exists("Peer URLs already exists"));
        assert_eq!(s.etcd_code(), None);
        let f = call_fail("http://127.0.0.1:2379", &s);
        assert_eq!(f.code, exit::SERVER_ERROR);
        assert_eq!(
            f.message,
            "Error:  client: endpoint http://127.0.0.1:2379: Peer URLs already exists"
        );
        assert_eq!(refusal(&s).as_deref(), Some("Peer URLs already exists"));
        // etcd's errors are not membership refusals.
        assert_eq!(refusal(&etcd(100, "/a", 1)), None);
        // Transport failures (a status with a source) are failures, not refusals.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let transport = ClientError::from(tonic::Status::from_error(Box::new(io)));
        assert_eq!(refusal(&transport), None);
        assert_eq!(
            call_fail("http://e", &transport).message,
            "Error:  client: endpoint http://e: connection reset"
        );
        assert_eq!(member_id("8e9e05c52164694d"), Ok(0x8e9e_05c5_2164_694d));
        assert_eq!(member_id("node1"), Err("No such member: node1".into()));
    }

    #[test]
    fn limits_print_as_over_http() {
        let s = tonic::Status::resource_exhausted(
            "etcdserver: request is too large; the limit is 4096 bytes",
        );
        let over_grpc = call_fail("http://x", &ClientError::from(s));
        let body = r#"{"errorCode":300,"message":"Raft Internal Error","cause":"etcdserver: request is too large","index":0}"#;
        let over_http = super::super::http::decode_keys_body(body, 0).unwrap_err();
        assert_eq!(over_grpc.message, over_http.message);
        assert_eq!(
            over_grpc.message,
            "Error:  300: Raft Internal Error (etcdserver: request is too large) [0]"
        );
        assert_eq!(over_grpc.code, exit::SERVER_ERROR);
    }

    #[test]
    fn only_calls_that_could_not_connect_fail_over() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let connect = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(connect.code(), tonic::Code::Unavailable);
        assert!(unreachable(&ClientError::from(connect)));
        // A connection that broke during the call may have delivered the request.
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let broken = ClientError::from(tonic::Status::from_error(Box::new(reset)));
        assert!(!unreachable(&broken));
        assert!(watch_broken(&broken));
        // The server's own answers are neither.
        let no_quorum = etcd(300, "no leader", 0);
        assert!(!unreachable(&no_quorum) && !watch_broken(&no_quorum));
        let refusal = ClientError::from(tonic::Status::unavailable("member is removed"));
        assert!(!unreachable(&refusal));
    }

    #[test]
    fn nodes_read_as_the_http_api_writes_them() {
        let root = NodeView {
            key: "/".into(),
            value: None,
            dir: true,
            expiration: None,
            ttl: None,
            nodes: vec![
                NodeView {
                    key: "/d".into(),
                    value: None,
                    dir: true,
                    expiration: None,
                    ttl: None,
                    nodes: vec![],
                    created_index: 8,
                    modified_index: 8,
                },
                NodeView {
                    key: "/t".into(),
                    value: Some("v".into()),
                    dir: false,
                    expiration: Some(1_700_000_000_500),
                    ttl: Some(99),
                    nodes: vec![],
                    created_index: 9,
                    modified_index: 10,
                },
            ],
            created_index: 0,
            modified_index: 0,
        };
        let r = response(
            Event {
                action: kv_core::Action::Get,
                node: root,
                prev_node: None,
                index: 10,
                batch: None,
            },
            10,
        );
        assert_eq!(
            super::super::print_response(&r, "json"),
            "{\"action\":\"get\",\"node\":{\"key\":\"\",\"dir\":true,\"value\":\"\",\"nodes\":[\
             {\"key\":\"/d\",\"dir\":true,\"value\":\"\",\"nodes\":null,\"createdIndex\":8,\"modifiedIndex\":8},\
             {\"key\":\"/t\",\"value\":\"v\",\"nodes\":null,\"createdIndex\":9,\"modifiedIndex\":10,\
             \"expiration\":\"2023-11-14T22:13:20.5Z\",\"ttl\":99}],\
             \"createdIndex\":0,\"modifiedIndex\":0},\"prevNode\":null}\n"
        );
    }
}
