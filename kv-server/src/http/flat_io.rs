//! [`FlatListener`]: client connections that gather each flush's writes into one write.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
pub(super) struct FlatListener<L>(pub(super) L);

impl<L: Listener> Listener for FlatListener<L> {
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
pub(super) struct FlatIo<T> {
    pub(super) io: T,
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

impl<T: AsyncRead + Unpin> AsyncRead for FlatIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FlatIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        if me.held.len() + buf.len() <= Self::HOLD {
            me.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        // Too much to hold: write what is held and `buf` together.
        while !me.held.is_empty() {
            let bufs = [IoSlice::new(&me.held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut me.io).poll_write_vectored(cx, &bufs))?;
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
        Pin::new(&mut me.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        while !me.held.is_empty() {
            let n = ready!(Pin::new(&mut me.io).poll_write(cx, &me.held))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            me.held.drain(..n);
        }
        if me.held.capacity() > Self::KEEP {
            me.held = Vec::new();
        }
        Pin::new(&mut me.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpStream;

    use super::*;
    use crate::backend::memory::{MemoryBackend, MemoryConfig};
    use crate::http::{Limits, router};
    use kv_client::KvClient;

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

    impl Listener for OneConn {
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
