//! kvd's etcd v2 HTTP API on axum: the keys API, members, stats, machines, version, health
//! and Prometheus metrics, over any [`KvBackend`]; gRPC calls on the same listener go to
//! [`crate::grpc`].
//!
//! [`router`] builds the axum `Router` (tests call it directly and serve it on
//! `127.0.0.1:0`); [`serve`] runs it on a listener until a shutdown future completes.

mod admin;
mod flat_io;
mod keys;
mod params;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::backend::KvBackend;
use flat_io::FlatListener;

/// Resource limits of the HTTP front end. Exceeding one gives an etcd error, never an
/// unbounded buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body (and so value) accepted, in bytes.
    pub max_request_bytes: usize,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Concurrent watches on one client connection.
    pub max_watchers_per_conn: usize,
    /// Concurrent watches on the whole server.
    pub max_watchers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 4 * 1024 * 1024,
            max_key_bytes: 64 * 1024,
            max_watchers_per_conn: 1024,
            max_watchers: 100_000,
        }
    }
}

/// The counters of `/v2/stats/store` kept by this member.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    gets_success: AtomicU64,
    gets_fail: AtomicU64,
    /// `[success, fail]` per write kind, in `keys::OpKind` order.
    writes: [[AtomicU64; 2]; 6],
}

impl StoreStats {
    fn count_write(&self, kind: keys::OpKind, ok: bool) {
        self.writes[kind as usize][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }
    fn write(&self, kind: keys::OpKind, ok: bool) -> u64 {
        self.writes[kind as usize][usize::from(!ok)].load(Ordering::Relaxed)
    }
}

/// Shared state of every handler.
pub(crate) struct AppState<B> {
    backend: Arc<B>,
    /// `X-Etcd-Cluster-Id`, fixed for the life of the server.
    cluster_id: HeaderValue,
    limits: Limits,
    stats: StoreStats,
    watchers_total: AtomicUsize,
    watchers_per_conn: Mutex<HashMap<SocketAddr, usize>>,
    requests: AtomicU64,
    grpc: proto::kv_v1::kv_server::KvServer<crate::grpc::KvService<B>>,
}

impl<B: KvBackend> AppState<B> {
    fn cluster_header(&self, h: &mut HeaderMap) {
        h.insert("X-Etcd-Cluster-Id", self.cluster_id.clone());
    }
}

/// Counts one watch against the per-connection and global limits for as long as it lives.
pub(crate) struct ConnWatchGuard {
    release: Box<dyn FnOnce() + Send>,
}

impl ConnWatchGuard {
    fn acquire<B: KvBackend>(state: &Arc<AppState<B>>, conn: Option<SocketAddr>) -> Option<Self> {
        let total = state.watchers_total.fetch_add(1, Ordering::AcqRel);
        if total >= state.limits.max_watchers {
            state.watchers_total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(addr) = conn {
            let mut m = state.watchers_per_conn.lock();
            let n = m.entry(addr).or_insert(0);
            if *n >= state.limits.max_watchers_per_conn {
                drop(m);
                state.watchers_total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
        }
        let st = Arc::clone(state);
        Some(ConnWatchGuard {
            release: Box::new(move || {
                st.watchers_total.fetch_sub(1, Ordering::AcqRel);
                if let Some(addr) = conn {
                    let mut m = st.watchers_per_conn.lock();
                    if let Some(n) = m.get_mut(&addr) {
                        *n -= 1;
                        if *n == 0 {
                            m.remove(&addr);
                        }
                    }
                }
            }),
        })
    }
}

impl Drop for ConnWatchGuard {
    fn drop(&mut self) {
        let release = std::mem::replace(&mut self.release, Box::new(|| {}));
        release();
    }
}

/// Builds the v2 API router over `backend`, which also serves `kv.v1` gRPC calls (told
/// apart by their content type, as etcd does). Serve it with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>()`, as [`serve`] does) so the
/// per-connection watch limit applies.
pub fn router<B: KvBackend>(backend: Arc<B>, limits: Limits) -> Router {
    let cluster_id = HeaderValue::from_str(&format!("{:x}", backend.status().cluster_id))
        .unwrap_or(HeaderValue::from_static("0"));
    let grpc = crate::grpc::server(Arc::clone(&backend), limits);
    let state = Arc::new(AppState {
        backend,
        grpc,
        cluster_id,
        limits,
        stats: StoreStats::default(),
        watchers_total: AtomicUsize::new(0),
        watchers_per_conn: Mutex::new(HashMap::new()),
        requests: AtomicU64::new(0),
    });
    Router::new().fallback(dispatch::<B>).with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (open watches end when the backend shuts down). HTTP/1.1 and HTTP/2 (gRPC's
/// cleartext prior-knowledge form) share the listener.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // An HTTP/2 response can be several writes (headers, data, trailers); with Nagle on, the
    // last one waits for the client's delayed ACK, 40 ms per gRPC call.
    let listener = FlatListener(listener).tap_io(|io| {
        if let Err(e) = io.io.set_nodelay(true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY on a client connection");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Like [`serve`], over TLS with `config` (give it ALPN `h2` and `http/1.1`: HTTP/1.1
/// clients and gRPC share the listener as in cleartext). Handshakes run concurrently and a
/// failed one (say, no client certificate when `config` requires one) drops only that
/// connection.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let listener = FlatListener(TlsListener(raft_store::tls::accept(listener, config)));
    // The no-op tap is what gives this listener axum's `ConnectInfo<SocketAddr>` (axum
    // implements it for TcpListener and for tapped listeners only), which the
    // per-connection watch limit keys on.
    axum::serve(
        listener.tap_io(|_| {}),
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Connections whose TLS handshake completed, as an axum listener.
struct TlsListener(raft_store::tls::TlsIncoming);

impl axum::serve::Listener for TlsListener {
    type Io = raft_store::tls::ServerStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.accept().await {
            Some(c) => c,
            // The accept loop only ends with the runtime; never hand axum a connection again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Routes by path prefix like etcd's mux (so `/v2/keys/<anything>` reaches the keys handler
/// unchanged, including `//` paths that must be redirected).
async fn dispatch<B: KvBackend>(State(state): State<Arc<AppState<B>>>, req: Request) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if crate::grpc::is_grpc(&req) {
        return crate::grpc::serve_request(&state.grpc, state.limits, req).await;
    }
    let conn = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let mut resp = if parts.method == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else if path == "/v2/keys" || path.starts_with("/v2/keys/") {
        keys::handle(state, conn, parts.method, parts.uri, parts.headers, body).await
    } else {
        admin::handle(state, &parts.method, &path, &parts.headers, body).await
    };
    let h = resp.headers_mut();
    h.insert("Access-Control-Allow-Origin", HeaderValue::from_static("*"));
    h.insert(
        "Access-Control-Allow-Methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        "Access-Control-Allow-Headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
