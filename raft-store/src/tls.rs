//! TLS for the gRPC peer transport (rustls with the ring provider, through tokio-rustls).
//!
//! A [`GrpcTransport`](crate::GrpcTransport) built with
//! [`GrpcTransport::with_tls`](crate::GrpcTransport::with_tls) serves its peer listener over
//! TLS and reaches peers whose URL is `https://` over TLS; `http://` peers are still reached
//! in the clear. The embedder builds the two rustls configurations (certificate, key, which
//! CAs to trust, whether peers must present client certificates) and hands them over as a
//! [`TransportTls`]; the same rustls is re-exported as [`rustls`] so both sides agree on
//! its version.
//!
//! [`accept`] and kv-client's [`TlsConnector`](kv_client::tls::TlsConnector) are the two halves the transport uses; they
//! are public because an embedder serving its own tonic or hyper services over TLS needs the
//! same.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

pub use rustls;

/// A TLS stream accepted by [`accept`].
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How long a peer gets to finish its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS configuration of a [`GrpcTransport`](crate::GrpcTransport).
///
/// `server` decides what the peer listener presents and whether it requires and verifies
/// client certificates (rustls' `WebPkiClientVerifier`); `client` decides how peers'
/// certificates are verified and which certificate this member presents to them (members
/// usually present their peer certificate both ways, as etcd does). ALPN `h2` is set on
/// both when the configuration names no protocol.
#[derive(Clone)]
pub struct TransportTls {
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TransportTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportTls").finish_non_exhaustive()
    }
}

impl TransportTls {
    /// The transport's TLS from a server and a client configuration.
    pub fn new(server: rustls::ServerConfig, client: rustls::ClientConfig) -> Self {
        let mut server = server;
        let mut client = client;
        // gRPC is HTTP/2 only; without ALPN the peers still agree (prior knowledge), but
        // advertising it lets generic TLS tooling and proxies see what this port speaks.
        if server.alpn_protocols.is_empty() {
            server.alpn_protocols = vec![b"h2".to_vec()];
        }
        if client.alpn_protocols.is_empty() {
            client.alpn_protocols = vec![b"h2".to_vec()];
        }
        TransportTls {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    /// The server configuration (for [`accept`]).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The client configuration (for kv-client's
    /// [`TlsConnector`](kv_client::tls::TlsConnector)).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.client)
    }
}

/// Connections accepted by [`accept`] whose handshake completed, in completion order.
///
/// It is a `Stream` of `io::Result<ServerStream>` (what tonic's
/// `serve_with_incoming*` takes) and has [`TlsIncoming::accept`] for servers that want the
/// peer address too. Dropping it stops the accept loop.
#[derive(Debug)]
pub struct TlsIncoming {
    rx: mpsc::Receiver<(ServerStream, SocketAddr)>,
    local: Option<SocketAddr>,
}

impl TlsIncoming {
    /// The next connection with its peer address; `None` once the accept loop ended (the
    /// listener failed for good).
    pub async fn accept(&mut self) -> Option<(ServerStream, SocketAddr)> {
        self.rx.recv().await
    }

    /// The listener's local address.
    ///
    /// # Errors
    ///
    /// The listener's address could not be read when [`accept`] started.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| std::io::Error::other("the listener has no local address"))
    }
}

impl futures::Stream for TlsIncoming {
    type Item = std::io::Result<ServerStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|o| o.map(|(s, _)| Ok(s)))
    }
}

/// Accepts TLS connections on `listener` with `config`: handshakes run concurrently (a slow
/// or silent client cannot hold up the others) and each gets 10 seconds; failed
/// handshakes (no or an untrusted client certificate, plain HTTP on a TLS port) are logged
/// and dropped. Must be called inside a tokio runtime.
pub fn accept(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsIncoming {
    let local = listener.local_addr().ok();
    let shown = local.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(local = %shown, error = %e, "accepting a TLS connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            // An HTTP/2 response is several writes; with Nagle on, the last one waits for
            // the client's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let shown = shown.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, addr)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(local = %shown, remote = %addr, error = %e, "rejected TLS connection");
                    }
                    Err(_) => {
                        tracing::warn!(local = %shown, remote = %addr, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    TlsIncoming { rx, local }
}
