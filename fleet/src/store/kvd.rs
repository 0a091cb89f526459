//! [`KvdStore`]: a remote kvd cluster over its gRPC API (`kv.v1`, through kv-client), with
//! transactions, so the registry fences schedules by comparing the engine's lease in the
//! same write.
//!
//! Operations travel as `kv.v1` requests made by proto's conversions (`op_request`,
//! `txn_request`) and come back as kv-core's events; a transaction's answer becomes the
//! summary event a kv-server backend returns (`txn_event`), whose `batch` says whether its
//! comparisons held. etcd's refusals keep their code ([`StoreError::Kv`]).
//!
//! Several members may be given: a call goes to the member that answered last (the first
//! one at the start), and when that member cannot be reached, or does not answer within
//! the request timeout, to the next. As with [`super::etcd::EtcdStore`], a write whose
//! connection broke after it was sent may have been applied before it is tried on the next
//! member. A watch stays on the member it was set up on; when that member ends it (etcd's
//! 400: the watch fell behind, or the member stops) or the connection drops, the stream
//! ends with that error and the follower reads and watches again.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kv_client::tls::{ServerVerification, client_config};
use kv_client::{ClientError, KvClient, wire};
use kv_core::{Event, Op};
use proto::convert::kv::{Unrepresentable, limit_cause, op_request, txn_event, txn_request};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Uri;

use super::{KvStore, Result, StoreError, Watch};

/// How many events a watch buffers before the forwarder waits for the reader.
const WATCH_BUFFER: usize = 256;

/// The port of a `kvd://` member given without one (etcd's client port).
const DEFAULT_PORT: u16 = 2379;

/// The scheme of a list of kvd members: `kvd://host[:port][,host[:port]...]`.
pub const KVD_SCHEME: &str = "kvd://";

/// A kvd cluster reached over `kv.v1`.
#[derive(Debug, Clone)]
pub struct KvdStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The members' client URLs (`http://` or `https://`).
    endpoints: Vec<String>,
    /// How `https://` members are dialled.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The longest a connection or a call (other than a watch's stream) may take.
    timeout: Duration,
    /// The endpoints, for messages.
    label: String,
    current: Mutex<Current>,
}

/// The member calls go to first, and its connection once made.
#[derive(Debug, Default)]
struct Current {
    index: usize,
    client: Option<KvClient>,
}

/// A failed call: refused by the member (final), or the member could not be reached (the
/// next one is tried).
enum Failure {
    Refused(StoreError),
    Unreachable(StoreError),
}

impl Failure {
    fn into_error(self) -> StoreError {
        match self {
            Failure::Refused(e) | Failure::Unreachable(e) => e,
        }
    }
}

impl KvdStore {
    /// A store at these members, in cleartext (`https://` members are verified against the
    /// system's CAs), with a three-second timeout per connection and per call.
    ///
    /// Each string is one member or several separated by commas: an `http://` or `https://`
    /// client URL, or `kvd://host[:port]` (or a bare `host[:port]`), whose port defaults to
    /// 2379; so `["kvd://a:2379,b:2379"]` and `["kvd://a", "b"]` are the same two members.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] when a member is not one of those forms, or none is given.
    pub fn new(endpoints: &[String]) -> Result<KvdStore> {
        KvdStore::with_tls(endpoints, None, Duration::from_secs(3))
    }

    /// A store at these members (as for [`KvdStore::new`]) dialling `https://` members with
    /// `tls` (its trusted CAs, a client certificate when kvd asks for one; its ALPN must
    /// offer `h2`, as [`kv_client::tls::client_config`] is told), and `kvd://` members over
    /// TLS too when `tls` is given. `timeout` bounds every connection and every call but a
    /// watch's stream.
    ///
    /// # Errors
    /// As for [`KvdStore::new`].
    pub fn with_tls(
        endpoints: &[String],
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<KvdStore> {
        let given = endpoints.join(",");
        let bad = |detail: String| StoreError::Protocol {
            endpoint: given.clone(),
            detail,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut urls = Vec::new();
        for e in endpoints.iter().flat_map(|e| e.split(',')) {
            let e = e.trim();
            if e.is_empty() {
                continue;
            }
            urls.push(member_url(e, scheme).map_err(|d| bad(format!("endpoint {e:?}: {d}")))?);
        }
        if urls.is_empty() {
            return Err(bad("no kvd endpoint given".into()));
        }
        let tls = match tls {
            Some(tls) => Some(tls),
            None if urls.iter().any(|u| u.starts_with("https://")) => Some(Arc::new(
                client_config(&ServerVerification::System, None, &[b"h2"])
                    .map_err(|e| bad(format!("TLS with the system's CAs: {e}")))?,
            )),
            None => None,
        };
        Ok(KvdStore {
            inner: Arc::new(Inner {
                label: urls.join(","),
                endpoints: urls,
                tls,
                timeout,
                current: Mutex::new(Current::default()),
            }),
        })
    }

    /// The members' client URLs, in the order they are tried.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }
}

/// The client URL of one member: an `http(s)://` URL as it is (without a path: `kv.v1`
/// is served at the root), a `kvd://` or bare `host[:port]` with `scheme` and port 2379
/// when none is given.
fn member_url(e: &str, scheme: &str) -> std::result::Result<String, String> {
    let kvd = match e.split_once("://") {
        _ if e.starts_with(KVD_SCHEME) => Some(&e[KVD_SCHEME.len()..]),
        Some(("http" | "https", _)) => None,
        Some((other, _)) => return Err(format!("{other}:// is not http, https or kvd")),
        None => Some(e),
    };
    let url = match kvd {
        Some(hostport) => format!("{scheme}://{hostport}"),
        None => e.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|err| format!("{err}"))?;
    let Some(authority) = uri.authority() else {
        return Err("no host".into());
    };
    // The URI grammar lets any characters through as a port; a connection would not.
    let a = authority.as_str();
    let host_end = a.rfind(']').map_or(0, |i| i + 1);
    if a[host_end..].contains(':') && authority.port_u16().is_none() {
        return Err("the port is not a number".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("kvd serves kv.v1 at the root: no path".into());
    }
    let scheme = uri.scheme_str().unwrap_or(scheme);
    Ok(match (kvd, authority.port_u16()) {
        (Some(_), None) => format!("{scheme}://{}:{DEFAULT_PORT}", authority.as_str()),
        _ => format!("{scheme}://{}", authority.as_str()),
    })
}

/// An error with its sources, which say what actually failed (refused, timed out); a
/// source that only repeats the message before it (tonic's do) is said once.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.ends_with(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

impl Inner {
    fn current(&self) -> MutexGuard<'_, Current> {
        // The state is two plain fields: a panic elsewhere leaves it usable.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Member `i` answered: calls go there from now on.
    fn answered(&self, i: usize, client: KvClient) {
        *self.current() = Current {
            index: i,
            client: Some(client),
        };
    }

    /// Member `i` could not be reached: calls start at the next one.
    fn failed(&self, i: usize) {
        let mut c = self.current();
        if c.index == i {
            *c = Current {
                index: (i + 1) % self.endpoints.len(),
                client: None,
            };
        }
    }

    fn unavailable(&self, i: usize, detail: String) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.endpoints[i].clone(),
            detail,
        }
    }

    /// What a failed call of member `i` means for the store.
    fn failure(&self, i: usize, e: ClientError) -> Failure {
        let endpoint = || self.endpoints[i].clone();
        match e {
            ClientError::Etcd { error, .. } => Failure::Refused(StoreError::Kv(error)),
            ClientError::Status(s) => {
                // A limit (request or key size) is etcd's 300 over HTTP: say the same.
                if let Some(error) =
                    limit_cause(&s).and_then(|cause| kv_core::Error::from_code(300, cause, 0))
                {
                    return Failure::Refused(StoreError::Kv(error));
                }
                let detail = format!("{}: {}", s.code(), s.message());
                let detail = match std::error::Error::source(&s) {
                    Some(src) => format!("{detail}: {}", error_chain(src)),
                    None => detail,
                };
                match s.code() {
                    // How tonic reports a connection that failed or broke during the call.
                    Code::Unavailable
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
                    | Code::DeadlineExceeded => Failure::Unreachable(self.unavailable(i, detail)),
                    _ => Failure::Refused(StoreError::Protocol {
                        endpoint: endpoint(),
                        detail,
                    }),
                }
            }
            // The endpoint is in the store's error already: the source says the rest.
            ClientError::Connect { source, .. } => {
                Failure::Unreachable(self.unavailable(i, error_chain(&source)))
            }
            e => Failure::Refused(StoreError::Protocol {
                endpoint: endpoint(),
                detail: error_chain(&e),
            }),
        }
    }

    async fn connect(&self, i: usize) -> std::result::Result<KvClient, Failure> {
        let url = &self.endpoints[i];
        let tls = if url.starts_with("https://") {
            self.tls.clone()
        } else {
            None
        };
        KvClient::connect_with(url, tls, self.timeout)
            .await
            .map_err(|e| self.failure(i, e))
    }

    /// Runs `call` on the member that answered last, then on the next ones while a member
    /// cannot be reached; returns which member answered.
    async fn call<T, F, Fut>(&self, call: F) -> Result<(usize, T)>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, ClientError>>,
    {
        let n = self.endpoints.len();
        let (start, cached) = {
            let c = self.current();
            (c.index, c.client.clone())
        };
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let client = match cached.as_ref().filter(|_| k == 0) {
                Some(c) => c.clone(),
                None => match self.connect(i).await {
                    Ok(c) => c,
                    Err(Failure::Unreachable(e)) => {
                        self.failed(i);
                        last = Some(e);
                        continue;
                    }
                    Err(Failure::Refused(e)) => return Err(e),
                },
            };
            match tokio::time::timeout(self.timeout, call(client.clone())).await {
                Ok(Ok(v)) => {
                    self.answered(i, client);
                    return Ok((i, v));
                }
                Ok(Err(e)) => match self.failure(i, e) {
                    Failure::Refused(e) => {
                        self.answered(i, client);
                        return Err(e);
                    }
                    Failure::Unreachable(e) => {
                        self.failed(i);
                        last = Some(e);
                    }
                },
                Err(_) => {
                    self.failed(i);
                    last = Some(self.unavailable(i, format!("no answer in {:?}", self.timeout)));
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    fn unsupported(&self, e: Unrepresentable) -> StoreError {
        StoreError::Unsupported {
            endpoint: self.label.clone(),
            what: e.what,
        }
    }
}

impl KvStore for KvdStore {
    async fn apply(&self, op: Op) -> Result<Event> {
        let inner = &self.inner;
        if let Op::Txn(t) = op {
            let req = txn_request(t).map_err(|e| inner.unsupported(e))?;
            let (_, o) = inner
                .call(|c| {
                    let req = req.clone();
                    async move { c.txn(req).await }
                })
                .await?;
            return Ok(txn_event(o.succeeded, o.events, o.index));
        }
        let req = op_request(op).map_err(|e| inner.unsupported(e))?;
        let (_, event) = inner
            .call(|c| {
                let req = req.clone();
                async move {
                    match req {
                        wire::op::Op::Put(p) => c.put_with(p).await,
                        wire::op::Op::Delete(d) => c.delete_with(d).await,
                        wire::op::Op::CompareAndSwap(x) => c.compare_and_swap_with(x).await,
                    }
                }
            })
            .await?;
        Ok(event)
    }

    async fn get(&self, key: &str, recursive: bool, quorum: bool) -> Result<Event> {
        let consistency = if quorum {
            wire::Consistency::Linearizable
        } else {
            wire::Consistency::Serializable
        };
        let req = wire::GetRequest {
            key: key.to_owned(),
            recursive,
            sorted: true,
            consistency: consistency.into(),
        };
        let (_, event) = self
            .inner
            .call(|c| {
                let req = req.clone();
                async move { c.get_with(req).await }
            })
            .await?;
        Ok(event)
    }

    async fn watch(&self, prefix: &str, since: u64) -> Result<Watch> {
        let (i, mut w) = self
            .inner
            .call(|c| async move { c.watch(prefix, true, since).await })
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = w.next() => next,
                    () = tx.closed() => return,
                };
                let item = match next {
                    Some(Ok(event)) => Ok(event),
                    Some(Err(e)) => Err(match inner.failure(i, e) {
                        Failure::Unreachable(e) => {
                            inner.failed(i);
                            e
                        }
                        refused => refused.into_error(),
                    }),
                    None => Err(inner.unavailable(i, "the store ended the watch".into())),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Watch { events: rx })
    }

    fn supports_txn(&self) -> bool {
        true
    }

    fn endpoint(&self) -> &str {
        &self.inner.label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(given: &[&str]) -> Vec<String> {
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        KvdStore::new(&given).unwrap().endpoints().to_vec()
    }

    #[test]
    fn members_are_kvd_lists_or_client_urls() {
        assert_eq!(
            urls(&["kvd://a:2379,b:2380"]),
            ["http://a:2379", "http://b:2380"]
        );
        assert_eq!(
            urls(&["kvd://a", " b "]),
            ["http://a:2379", "http://b:2379"]
        );
        assert_eq!(
            urls(&["http://127.0.0.1:4001/", "https://[::1]:2379"]),
            ["http://127.0.0.1:4001", "https://[::1]:2379"]
        );
        assert_eq!(urls(&["kvd://[::1]"]), ["http://[::1]:2379"]);
        let tls = client_config(&ServerVerification::None, None, &[b"h2"]).unwrap();
        let s = KvdStore::with_tls(
            &["kvd://a,http://b:1".into()],
            Some(Arc::new(tls)),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(s.endpoints(), ["https://a:2379", "http://b:1"]);
        assert_eq!(s.endpoint(), "https://a:2379,http://b:1");
    }

    #[test]
    fn bad_members_are_refused_naming_them() {
        for bad in [
            "unix:///run/kvd.sock",
            "http://a:1/v2",
            "kvd://",
            "http://a:x",
        ] {
            let e = KvdStore::new(&[bad.into()]).unwrap_err();
            assert!(
                matches!(e, StoreError::Protocol { .. }) && e.to_string().contains(bad),
                "{bad}: {e}"
            );
        }
        assert!(KvdStore::new(&[]).is_err());
        assert!(KvdStore::new(&[" , ".into()]).is_err());
    }
}
