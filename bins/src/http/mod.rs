//! kvd's etcd v2 HTTP API on axum: the keys API, members, stats, machines, version, health
//! and Prometheus metrics, over any [`KvBackend`]; gRPC calls on the same listener go to
//! [`crate::grpc`].
//!
//! [`router`] builds the axum `Router` (tests call it directly and serve it on
//! `127.0.0.1:0`); [`serve`] runs it on a listener until a shutdown future completes.

mod admin;
pub(crate) mod json;
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

use crate::store::KvBackend;

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

/// A listener whose connections gather each flush's writes into one write.
///
/// h2 writes a DATA payload of 256 bytes or more by reference when the connection writes
/// vectored, and then flushes before it queues any further frame. A unary gRPC response
/// with such a payload (a get of a 256-byte value) so went out in two `writev` calls: its
/// HEADERS and DATA frames, then its trailers. A [`FlatIo`] says it does not write
/// vectored, so h2 copies payloads of up to 1 KiB into its own buffer and the response
/// leaves in one write, as an HTTP/1.1 response does. Larger payloads h2 still hands over
/// separately; `FlatIo` holds what precedes them and sends both in one write, so those
/// responses take as many writes as before.
struct FlatListener<L>(L);

impl<L: axum::serve::Listener> axum::serve::Listener for FlatListener<L> {
    type Io = FlatIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (FlatIo::new(io), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection of a [`FlatListener`]: writes of up to [`FlatIo::HOLD`] bytes in all are
/// held until the next flush (or a larger write) and then sent together.
struct FlatIo<T> {
    io: T,
    /// Bytes accepted from the writer, not yet written to `io`.
    held: Vec<u8>,
}

impl<T> FlatIo<T> {
    /// The most bytes held before a flush. Allocated as needed, and only [`FlatIo::KEEP`]
    /// bytes of it kept between flushes: idle connections (watchers) cost little.
    const HOLD: usize = 16 << 10;
    /// The most buffer capacity kept between flushes (enough for a typical response).
    const KEEP: usize = 1 << 10;

    fn new(io: T) -> Self {
        FlatIo {
            io,
            held: Vec::new(),
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FlatIo<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FlatIo<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let me = self.get_mut();
        if me.held.len() + buf.len() <= Self::HOLD {
            me.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // Too much to hold: write what is held and `buf` together.
        while !me.held.is_empty() {
            let bufs = [std::io::IoSlice::new(&me.held), std::io::IoSlice::new(buf)];
            let n =
                std::task::ready!(std::pin::Pin::new(&mut me.io).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            if n >= me.held.len() {
                let from_buf = n - me.held.len();
                me.held = Vec::new();
                if from_buf > 0 {
                    return Poll::Ready(Ok(from_buf));
                }
            } else {
                me.held.drain(..n);
            }
        }
        std::pin::Pin::new(&mut me.io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = self.get_mut();
        while !me.held.is_empty() {
            let n = std::task::ready!(std::pin::Pin::new(&mut me.io).poll_write(cx, &me.held))?;
            if n == 0 {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            me.held.drain(..n);
        }
        if me.held.capacity() > Self::KEEP {
            me.held = Vec::new();
        }
        std::pin::Pin::new(&mut me.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;

    use super::*;
    use crate::client::KvClient;
    use crate::store::memory::{MemoryBackend, MemoryConfig};

    /// A TCP connection that counts the writes made on it.
    struct Counting {
        tcp: TcpStream,
        writes: Arc<AtomicUsize>,
    }

    impl Counting {
        fn count<T>(&self, p: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
            if let Poll::Ready(Ok(_)) = &p {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            p
        }
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let p = Pin::new(&mut self.tcp).poll_write(cx, buf);
            self.count(p)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let p = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
            self.count(p)
        }

        fn is_write_vectored(&self) -> bool {
            self.tcp.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.tcp).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    /// Hands axum one connection, then never another.
    struct OneConn(Option<(Counting, SocketAddr)>);

    impl axum::serve::Listener for OneConn {
        type Io = Counting;
        type Addr = SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            match self.0.take() {
                Some(c) => c,
                None => std::future::pending().await,
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(SocketAddr::from(([127, 0, 0, 1], 0)))
        }
    }

    /// The writes the server makes for one gRPC get of a `size`-byte value, on a connection
    /// already in use, served through [`FlatListener`] or not.
    async fn writes_per_grpc_get(size: usize, flat: bool) -> usize {
        let backend = Arc::new(MemoryBackend::ephemeral(MemoryConfig {
            id: 1,
            cluster_id: 2,
            name: "t".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec![],
            data_dir: Default::default(),
        }));
        let app = router(backend, Limits::default()).into_make_service();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = tokio::spawn(async move {
            let kv = KvClient::connect(&url).await.unwrap();
            kv.put("/k", &"v".repeat(size)).await.unwrap();
            // The connection's own frames (settings and their acknowledgements) are done
            // once a call has completed.
            kv.get("/k").await.unwrap();
            kv
        });
        let (tcp, addr) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let conn = OneConn(Some((
            Counting {
                tcp,
                writes: writes.clone(),
            },
            addr,
        )));
        let server = if flat {
            tokio::spawn(axum::serve(FlatListener(conn), app).into_future())
        } else {
            tokio::spawn(axum::serve(conn, app).into_future())
        };
        let kv = client.await.unwrap();
        let before = writes.load(Ordering::SeqCst);
        let got = kv.get("/k").await.unwrap();
        assert_eq!(got.node.value.map(|v| v.len()), Some(size));
        let n = writes.load(Ordering::SeqCst) - before;
        server.abort();
        n
    }

    #[tokio::test]
    async fn flat_io_delivers_every_byte_in_order_through_partial_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A 100-byte pipe: most writes are partial and many wait for the reader.
        let (a, mut b) = tokio::io::duplex(100);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut w = FlatIo::new(a);
        let mut expected = Vec::new();
        let mut next = 0u8;
        // Sizes under, at and over what FlatIo holds, alone and after held bytes.
        for (i, size) in [1, 300, 17 << 10, 5, 40 << 10, 1000, 16 << 10, 3, 16 << 10]
            .into_iter()
            .enumerate()
        {
            let chunk: Vec<u8> = (0..size)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            w.write_all(&chunk).await.unwrap();
            expected.extend_from_slice(&chunk);
            if i % 3 == 2 {
                w.flush().await.unwrap();
            }
        }
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_small_grpc_response_leaves_in_one_write() {
        assert_eq!(writes_per_grpc_get(256, true).await, 1);
        // What FlatListener is for: on a connection that writes vectored, h2 sends the
        // response's trailers in a write of their own. If this starts failing, h2 no longer
        // does, and FlatListener may go.
        assert_eq!(writes_per_grpc_get(256, false).await, 2);
    }

    #[tokio::test]
    async fn a_larger_grpc_response_takes_no_more_writes_than_without_flat_io() {
        // Payloads over 1 KiB, which h2 hands over apart from the frames before them, and
        // over FlatIo::HOLD and h2's 16 KiB frames.
        for size in [2 << 10, 17 << 10, 64 << 10] {
            let plain = writes_per_grpc_get(size, false).await;
            let flat = writes_per_grpc_get(size, true).await;
            assert!(
                flat <= plain,
                "{size}-byte value: {flat} writes, {plain} without FlatIo"
            );
        }
    }
}
