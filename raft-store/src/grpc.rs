//! The gRPC peer [`Transport`] (`raft.v1` in the `proto` crate).
//!
//! Each peer gets a sender task holding one long-lived client stream of [`MessageBatch`]es:
//! messages queued while a batch is in flight go out together in the next one. A broken
//! stream is reopened with exponential backoff (50 ms doubling to 2 s) and the member is told
//! the peer is disconnected: raft slows down probing it, and a follower that loses its
//! leader's connection (the leader's process died) campaigns without waiting out a whole
//! election timeout. Snapshots travel on their own streaming call in 1 MiB chunks so a
//! large one never blocks heartbeats.
//!
//! With [`GrpcTransport::with_tls`] the peer listener serves TLS and `https://` peers are
//! reached over TLS (see [`crate::tls`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_client::tls::TlsConnector;
use parking_lot::Mutex;
use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::raft_server::{Raft, RaftServer};
use proto::raft_v1::{MessageBatch, SendAck, SnapshotAck, SnapshotChunk};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

use crate::tls::TransportTls;
use crate::transport::{Inbox, Transport};

const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Messages per batch on the wire (raft's own batching keeps most batches small).
const MAX_BATCH: usize = 512;
/// The largest message a member decodes from a peer.
const MAX_DECODE: usize = 16 << 20;
// An append carrying the largest command alone must decode, and so must a follower's
// forwarded proposal of it behind a batch of smaller ones (the raft loop's batch bound).
const _: () = assert!(crate::node::MAX_COMMAND_BYTES + crate::node::MAX_MSG_BYTES <= MAX_DECODE);
/// Bytes per batch on the wire, well under what a peer decodes: a follower catching up
/// receives appends of up to 1 MiB each, and a batch of many of them must not be refused
/// whole, again and again.
const MAX_BATCH_BYTES: usize = MAX_DECODE / 2;
/// Largest snapshot accepted (a corrupt length must not make us allocate without bound).
const MAX_SNAPSHOT: u64 = 4 << 30;

/// The gRPC transport of one member. Serve [`GrpcTransport::service`] on the member's peer
/// URL; peers' URLs come from the member list ([`Transport::set_peer`]).
#[derive(Clone)]
pub struct GrpcTransport {
    inner: Arc<Inner>,
}

struct Inner {
    cluster_id: u64,
    tls: Option<TransportTls>,
    me: Mutex<Option<(u64, Inbox)>>,
    peers: Mutex<HashMap<u64, Peer>>,
}

struct Peer {
    url: String,
    queue: mpsc::UnboundedSender<Message>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("cluster_id", &self.inner.cluster_id)
            .field("tls", &self.inner.tls.is_some())
            .finish()
    }
}

impl GrpcTransport {
    /// A transport for members of cluster `cluster_id` (batches from other clusters are
    /// refused).
    pub fn new(cluster_id: u64) -> Self {
        Self::build(cluster_id, None)
    }

    /// Like [`GrpcTransport::new`], with TLS: [`GrpcTransport::serve`] serves TLS, and peers
    /// whose URL is `https://` are reached over TLS (`http://` peers still in the clear).
    pub fn with_tls(cluster_id: u64, tls: TransportTls) -> Self {
        Self::build(cluster_id, Some(tls))
    }

    fn build(cluster_id: u64, tls: Option<TransportTls>) -> Self {
        GrpcTransport {
            inner: Arc::new(Inner {
                cluster_id,
                tls,
                me: Mutex::new(None),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The `raft.v1.Raft` service receiving this member's messages, to mount on a tonic
    /// server (alongside other services if wanted).
    pub fn service(&self) -> RaftServer<RaftService> {
        RaftServer::new(RaftService {
            inner: self.inner.clone(),
        })
        .max_decoding_message_size(MAX_DECODE)
    }

    /// Serves the peer service on `listener` until `shutdown` completes, over TLS when the
    /// transport was built [`with_tls`](GrpcTransport::with_tls).
    ///
    /// # Errors
    ///
    /// The server's transport error.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let server = tonic::transport::Server::builder().add_service(self.service());
        match &self.inner.tls {
            Some(tls) => {
                let incoming = crate::tls::accept(listener, tls.server_config());
                server
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            None => {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                server
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        }
    }

    /// Opens a channel to a peer URL: TLS for `https://` (which needs
    /// [`with_tls`](GrpcTransport::with_tls)), cleartext HTTP/2 for `http://`.
    async fn connect(&self, url: &str) -> Result<Channel, BoxError> {
        let endpoint = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true);
        if url.starts_with("https://") {
            let Some(tls) = &self.inner.tls else {
                return Err("an https:// peer URL needs a transport built with TLS".into());
            };
            Ok(endpoint
                .connect_with_connector(TlsConnector::new(tls.client_config()))
                .await?)
        } else {
            Ok(endpoint.connect().await?)
        }
    }

    fn inbox(&self) -> Option<Inbox> {
        self.inner.me.lock().as_ref().map(|(_, i)| i.clone())
    }
}

impl Transport for GrpcTransport {
    fn attach(&self, id: u64, inbox: Inbox) {
        *self.inner.me.lock() = Some((id, inbox));
    }

    fn detach(&self, _id: u64) {
        *self.inner.me.lock() = None;
        self.inner.peers.lock().clear();
    }

    fn send(&self, messages: Vec<Message>) {
        let peers = self.inner.peers.lock();
        for m in messages {
            let to = m.to;
            let sent = peers.get(&to).is_some_and(|p| p.queue.send(m).is_ok());
            if !sent && let Some(inbox) = self.inbox() {
                inbox.report_unreachable(to);
            }
        }
    }

    fn set_peer(&self, id: u64, peer_urls: &[String]) {
        let Some(url) = peer_urls.first().cloned() else {
            return;
        };
        let me = self.inner.me.lock().as_ref().map(|(i, _)| *i);
        if me == Some(id) {
            return;
        }
        let mut peers = self.inner.peers.lock();
        if peers.get(&id).is_some_and(|p| p.url == url) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = handle.spawn(peer_loop(
            self.clone(),
            me.unwrap_or(0),
            id,
            url.clone(),
            rx,
        ));
        peers.insert(
            id,
            Peer {
                url,
                queue: tx,
                task,
            },
        );
    }

    fn remove_peer(&self, id: u64) {
        self.inner.peers.lock().remove(&id);
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a peer stream ended because the peer is gone (its connection broke or it is not
/// running), rather than because the peer refused something we sent.
fn lost_peer(r: &Result<Result<Response<SendAck>, Status>, tokio::task::JoinError>) -> bool {
    match r {
        Ok(Ok(_)) | Err(_) => true,
        Ok(Err(s)) => matches!(
            s.code(),
            tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
    }
}

/// Encodes a raft message with raft's own codec; messages are small protobufs without
/// required fields, so this does not fail.
fn encode(m: &Message) -> Bytes {
    Bytes::from(m.write_to_bytes().unwrap_or_default())
}

/// Takes `first` and the messages queued behind it into one batch of at most [`MAX_BATCH`]
/// messages and `max_bytes` bytes (a larger message goes alone). Returns the encoded batch,
/// the snapshots among them (they travel on a call of their own), and the message that
/// starts the next batch if the byte bound ended this one.
fn take_batch(
    first: Message,
    queue: &mut mpsc::UnboundedReceiver<Message>,
    max_bytes: usize,
) -> (Vec<Bytes>, Vec<Message>, Option<Message>) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut snapshots = Vec::new();
    let mut bytes = 0;
    let mut pending = Some(first);
    while let Some(m) = pending.take() {
        if m.get_msg_type() == MessageType::MsgSnapshot {
            snapshots.push(m);
        } else {
            let size = m.compute_size() as usize;
            if !batch.is_empty() && bytes + size > max_bytes {
                return (batch, snapshots, Some(m));
            }
            bytes += size;
            batch.push(encode(&m));
        }
        if batch.len() < MAX_BATCH {
            pending = queue.try_recv().ok();
        }
    }
    (batch, snapshots, None)
}

async fn peer_loop(
    t: GrpcTransport,
    me: u64,
    to: u64,
    url: String,
    mut queue: mpsc::UnboundedReceiver<Message>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut carry: Option<Message> = None;
    loop {
        let client = match t.connect(&url).await {
            Ok(c) => RaftClient::new(c).max_decoding_message_size(MAX_DECODE),
            Err(e) => {
                tracing::debug!(to, %url, error = %e, "peer connect failed");
                if let Some(inbox) = t.inbox() {
                    inbox.report_disconnected(to);
                }
                // Drop what queued up meanwhile: raft resends what matters.
                while queue.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (btx, brx) = mpsc::channel::<MessageBatch>(16);
        let mut call_client = client.clone();
        let mut call =
            tokio::spawn(async move { call_client.send(ReceiverStream::new(brx)).await });
        // When this loop is aborted (the peer was removed or the member stopped), the call
        // must end too: its open stream would otherwise keep the peer's server from
        // finishing a graceful shutdown.
        let _end_call = AbortOnDrop(call.abort_handle());
        let broken = loop {
            let first = match carry.take() {
                Some(m) => m,
                None => tokio::select! {
                    m = queue.recv() => match m { Some(m) => m, None => return },
                    r = &mut call => break (format!("stream ended: {r:?}"), lost_peer(&r)),
                },
            };
            // Peers may be learned before the member attaches (a joining member is seeded
            // with the cluster's peers), so the sender id is read when sending.
            let me = t.inner.me.lock().as_ref().map_or(me, |(i, _)| *i);
            let (batch, snapshots, next) = take_batch(first, &mut queue, MAX_BATCH_BYTES);
            carry = next;
            for m in snapshots {
                tokio::spawn(send_snapshot(t.clone(), client.clone(), me, m));
            }
            if batch.is_empty() {
                continue;
            }
            let mb = MessageBatch {
                cluster_id: t.inner.cluster_id,
                from: me,
                to,
                messages: batch,
            };
            if btx.send(mb).await.is_err() {
                break ("stream closed".to_string(), true);
            }
            backoff = Duration::from_millis(50);
        };
        let (reason, lost) = broken;
        tracing::debug!(to, %url, %reason, "peer stream broken; reconnecting");
        if let Some(inbox) = t.inbox() {
            if lost {
                inbox.report_disconnected(to);
            } else {
                inbox.report_unreachable(to);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn send_snapshot(t: GrpcTransport, mut client: RaftClient<Channel>, me: u64, mut m: Message) {
    let to = m.to;
    let data = std::mem::take(&mut m.mut_snapshot().data);
    let total = data.len() as u64;
    let mut chunks = Vec::new();
    chunks.push(SnapshotChunk {
        cluster_id: t.inner.cluster_id,
        from: me,
        to,
        message: encode(&m),
        data: Bytes::new(),
        total_len: total,
    });
    let mut off = 0;
    while off < data.len() {
        let end = (off + SNAPSHOT_CHUNK).min(data.len());
        chunks.push(SnapshotChunk {
            data: data.slice(off..end),
            ..Default::default()
        });
        off = end;
    }
    let ok = match client.snapshot(futures::stream::iter(chunks)).await {
        Ok(ack) => ack.get_ref().received == total,
        Err(e) => {
            tracing::warn!(to, error = %e, "sending snapshot failed");
            false
        }
    };
    if let Some(inbox) = t.inbox() {
        inbox.report_snapshot(to, ok);
    }
}

/// Reports the sender of an incoming stream disconnected unless disarmed (`.0 = None`).
struct PeerGone(Option<(u64, Inbox)>);

impl Drop for PeerGone {
    fn drop(&mut self) {
        if let Some((from, inbox)) = self.0.take() {
            inbox.report_disconnected(from);
        }
    }
}

/// The server side of [`GrpcTransport`]: delivers incoming messages to the member.
pub struct RaftService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RaftService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftService").finish_non_exhaustive()
    }
}

impl RaftService {
    fn me(&self) -> Result<(u64, Inbox), Status> {
        self.inner
            .me
            .lock()
            .clone()
            .ok_or_else(|| Status::unavailable("member is not running"))
    }
}

impl RaftService {
    /// Checks one batch and delivers its messages; returns the member's inbox.
    fn deliver(&self, batch: &MessageBatch) -> Result<Inbox, Status> {
        let (me, inbox) = self.me()?;
        proto::convert::check_envelope(batch, self.inner.cluster_id, me)?;
        for raw in &batch.messages {
            let m = decode(raw)?;
            // A follower forwards a leadership transfer to its leader with the transferee
            // as the sender, as raft builds it.
            let forwarded = m.get_msg_type() == MessageType::MsgTransferLeader;
            if m.to != me || (m.from != batch.from && !forwarded) {
                return Err(Status::invalid_argument(format!(
                    "raft message {}->{} inside a batch {}->{}",
                    m.from, m.to, batch.from, me
                )));
            }
            inbox.deliver(m);
        }
        Ok(inbox)
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Status> {
    Message::parse_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn send(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<SendAck>, Status> {
        let mut stream = request.into_inner();
        let mut batches = 0;
        // If this stream breaks, the peer's process most likely died. Our own stream to it
        // may not notice yet (it may be between reconnection attempts), so report it here
        // too. hyper drops this handler when the connection dies, hence a guard.
        let mut gone = PeerGone(None);
        // A transport error (`?` here) leaves the guard armed: the peer is gone.
        while let Some(batch) = stream.message().await? {
            // A batch we refuse means the peer is alive and sent something wrong: disarm.
            let inbox = self.deliver(&batch).inspect_err(|_| gone.0 = None)?;
            if gone.0.is_none() {
                gone.0 = Some((batch.from, inbox));
            }
            batches += 1;
        }
        // The peer closed its stream itself.
        gone.0 = None;
        Ok(Response::new(SendAck { batches }))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (me, inbox) = self.me()?;
        let envelope = MessageBatch {
            cluster_id: first.cluster_id,
            from: first.from,
            to: first.to,
            messages: Vec::new(),
        };
        proto::convert::check_envelope(&envelope, self.inner.cluster_id, me)?;
        if first.total_len > MAX_SNAPSHOT {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {} bytes exceeds the {MAX_SNAPSHOT} byte limit",
                first.total_len
            )));
        }
        let mut m = decode(&first.message)?;
        if m.get_msg_type() != MessageType::MsgSnapshot || m.to != me {
            return Err(Status::invalid_argument(
                "first chunk is not a snapshot message for this member",
            ));
        }
        let mut data = Vec::with_capacity(first.total_len as usize);
        data.extend_from_slice(&first.data);
        while let Some(c) = stream.message().await? {
            data.extend_from_slice(&c.data);
            if data.len() as u64 > first.total_len {
                return Err(Status::invalid_argument("snapshot longer than announced"));
            }
        }
        let received = data.len() as u64;
        if received != first.total_len {
            return Err(Status::invalid_argument(format!(
                "snapshot truncated: {received} of {} bytes",
                first.total_len
            )));
        }
        m.mut_snapshot().data = Bytes::from(data);
        inbox.deliver(m);
        Ok(Response::new(SnapshotAck { received }))
    }
}

/// Binds `addr` and returns the listener and its URL (`http://ip:port`), for members and
/// tests that listen on port 0. A transport built with TLS is reached on the same address
/// as `https://ip:port`.
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}", l.local_addr()?);
    Ok((l, url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::Entry;

    fn append(index: u64, bytes: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.index = index;
        m.mut_entries().push(Entry {
            data: vec![b'x'; bytes].into(),
            ..Default::default()
        });
        m
    }

    #[test]
    fn batches_stay_under_the_byte_bound_and_keep_every_message_in_order() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 1..20 {
            tx.send(append(i, 1 << 20)).unwrap();
        }
        // A message over the bound on its own, then small ones.
        tx.send(append(20, 3 << 20)).unwrap();
        for i in 21..30 {
            tx.send(append(i, 10)).unwrap();
        }
        let mut snap = Message::default();
        snap.set_msg_type(MessageType::MsgSnapshot);
        tx.send(snap).unwrap();
        drop(tx);
        let mut next = Some(append(0, 10));
        let (mut seen, mut batches, mut snapshots) = (Vec::new(), Vec::new(), 0);
        while let Some(first) = next.take().or_else(|| rx.try_recv().ok()) {
            let (batch, snaps, carry) = take_batch(first, &mut rx, 2 << 20);
            snapshots += snaps.len();
            let size: usize = batch.iter().map(Bytes::len).sum();
            assert!(batch.len() == 1 || size <= 2 << 20, "{size} bytes");
            for b in &batch {
                seen.push(Message::parse_from_bytes(b).unwrap().index);
            }
            batches.push(batch.len());
            next = carry;
        }
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        assert_eq!(snapshots, 1);
        assert!(batches.len() >= 10, "{batches:?}");
    }
}
