//! kvd's gRPC API, `kv.v1`, over any [`KvBackend`]: the same store operations as the v2
//! HTTP API, plus transactions, batches, members, status and snapshots.
//!
//! kvd serves it on its client URLs next to the HTTP API, as etcd serves gRPC and HTTP on
//! one port: [`crate::http::router`] hands every request whose `content-type` is
//! `application/grpc` to [`serve_request`]. Requests are converted to kv-core operations by
//! [`proto::convert::kv`] and applied through [`KvBackend::apply`], so both front ends reach
//! the store through the same seam.
//!
//! Errors are statuses carrying etcd's code in `kv-error-code` metadata (see `kv.proto`).
//! Limits give `RESOURCE_EXHAUSTED`: a request larger than `max_request_bytes` (checked
//! before it is decoded), a key longer than `max_key_bytes`, more watches on one
//! connection than `max_watchers_per_conn` or on the server than `max_watchers` (gRPC
//! watches are counted apart from HTTP long polls). Its message starts with the cause of
//! the etcd error (300) the HTTP API answers for the same limit, then `; ` and details
//! ([`conv::limit_status`]; [`conv::limit_cause`] reads it back), so a client can print
//! what an HTTP client prints.
//!
//! A watch's response metadata `kv-etcd-index` ([`conv::ETCD_INDEX_KEY`]) is the store index
//! when it was registered, the HTTP API's `X-Etcd-Index` of a long poll.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use futures::Stream;
use parking_lot::Mutex;
use proto::convert::kv::{self as conv, limit_status};
use proto::kv_v1 as w;
use proto::kv_v1::kv_server::{Kv, KvServer};
use tonic::codegen::Service;
use tonic::{Status, async_trait};

use crate::backend::{
    CAUSE_TOO_LARGE, KvBackend, MemberError, RaftPosition, ReadRequest, WatchRequest,
    too_many_watchers_cause,
};
use crate::http::Limits;

/// Largest chunk of a `Snapshot` stream.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// gRPC frame header: a compression flag and a 4-byte length before each message.
const FRAME_HEADER: usize = 5;

/// The `kv.v1` service over a backend; wrap it in a [`KvServer`] with [`server`].
pub struct KvService<B> {
    backend: Arc<B>,
    limits: Limits,
    cluster_id: u64,
    member_id: u64,
    watches: Arc<WatchCounts>,
}

impl<B> std::fmt::Debug for KvService<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvService")
            .field("limits", &self.limits)
            .field("member_id", &self.member_id)
            .finish_non_exhaustive()
    }
}

/// The tonic service kvd mounts: `kv.v1` over `backend` with the decoding limit of `limits`.
pub fn server<B: KvBackend>(backend: Arc<B>, limits: Limits) -> KvServer<KvService<B>> {
    let st = backend.status();
    KvServer::new(KvService {
        backend,
        limits,
        cluster_id: st.cluster_id,
        member_id: st.id,
        watches: Arc::new(WatchCounts::default()),
    })
    .max_decoding_message_size(limits.max_request_bytes)
}

/// Whether an HTTP request is a gRPC call (etcd routes on the same test).
pub fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Serves one gRPC call. The request (every `kv.v1` call sends one message) is read up to
/// the size limit first, so an oversized one is refused with `RESOURCE_EXHAUSTED` (tonic
/// itself would answer `OUT_OF_RANGE`) without being buffered whole.
pub async fn serve_request<B: KvBackend>(
    svc: &KvServer<KvService<B>>,
    limits: Limits,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let limit = limits.max_request_bytes.saturating_add(FRAME_HEADER);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return limit_status(
                CAUSE_TOO_LARGE,
                &format!("the limit is {} bytes", limits.max_request_bytes),
            )
            .into_http();
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match svc.clone().call(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    }
}

/// Watches open over gRPC, on the server and per client connection.
#[derive(Debug, Default)]
struct WatchCounts {
    total: AtomicUsize,
    per_conn: Mutex<HashMap<SocketAddr, usize>>,
}

/// One counted watch; dropping it (the stream ended or the client went away) releases it.
struct WatchGuard {
    counts: Arc<WatchCounts>,
    conn: Option<SocketAddr>,
}

impl WatchGuard {
    fn acquire(
        counts: &Arc<WatchCounts>,
        conn: Option<SocketAddr>,
        limits: &Limits,
    ) -> Option<Self> {
        if counts.total.fetch_add(1, Ordering::AcqRel) >= limits.max_watchers {
            counts.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Some(addr) = conn {
            let mut m = counts.per_conn.lock();
            let n = m.entry(addr).or_insert(0);
            if *n >= limits.max_watchers_per_conn {
                drop(m);
                counts.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
        }
        Some(WatchGuard {
            counts: Arc::clone(counts),
            conn,
        })
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(addr) = self.conn {
            let mut m = self.counts.per_conn.lock();
            if let Some(n) = m.get_mut(&addr) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&addr);
                }
            }
        }
    }
}

/// The status of the watch limits (`limits`'s per connection and in all).
fn too_many_watches(limits: &Limits) -> Status {
    limit_status(
        &too_many_watchers_cause(limits.max_watchers_per_conn),
        &format!(
            "the limits are {} per connection and {} in all",
            limits.max_watchers_per_conn, limits.max_watchers
        ),
    )
}

fn member_status(e: MemberError) -> Status {
    let msg = e.to_string();
    match e {
        MemberError::NotFound(_) => Status::not_found(msg),
        MemberError::Removed(_) => Status::failed_precondition(msg),
        MemberError::Conflict(_) => Status::already_exists(msg),
        MemberError::Unsupported(_) => Status::unimplemented(msg),
        _ => Status::unavailable(msg),
    }
}

impl<B: KvBackend> KvService<B> {
    fn header(&self, raft: RaftPosition) -> Option<w::Header> {
        Some(w::Header {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            raft_index: raft.index,
            raft_term: raft.term,
        })
    }

    fn current_header(&self) -> Option<w::Header> {
        self.header(self.backend.status().raft)
    }

    fn check_key(&self, key: &str) -> Result<(), Status> {
        if key.len() > self.limits.max_key_bytes {
            return Err(limit_status(
                CAUSE_TOO_LARGE,
                &format!(
                    "a key of {} bytes is longer than the limit of {} bytes",
                    key.len(),
                    self.limits.max_key_bytes
                ),
            ));
        }
        Ok(())
    }

    fn check_op_keys(&self, op: &kv_core::Op) -> Result<(), Status> {
        match op {
            kv_core::Op::Txn(t) => {
                for c in &t.compare {
                    self.check_key(&c.key)?;
                }
                t.success
                    .iter()
                    .chain(&t.failure)
                    .try_for_each(|op| self.check_op_keys(op))
            }
            op => self.check_key(op.key()),
        }
    }

    /// Applies one single-key operation and answers with its event.
    async fn single(
        &self,
        op: Result<kv_core::Op, kv_core::Error>,
    ) -> Result<tonic::Response<w::EventResponse>, Status> {
        let op = op.map_err(|e| conv::error_status(&e))?;
        self.check_op_keys(&op)?;
        let a = self
            .backend
            .apply(op)
            .await
            .map_err(|e| conv::error_status(&e))?;
        Ok(tonic::Response::new(w::EventResponse {
            header: self.header(a.raft),
            event: Some(a.event.into()),
        }))
    }

    /// Applies a transaction and answers with the events of the branch that ran.
    async fn run_txn(
        &self,
        txn: Result<kv_core::Txn, kv_core::Error>,
    ) -> Result<tonic::Response<w::TxnResponse>, Status> {
        let op = kv_core::Op::Txn(txn.map_err(|e| conv::error_status(&e))?);
        self.check_op_keys(&op)?;
        let a = self
            .backend
            .apply(op)
            .await
            .map_err(|e| conv::error_status(&e))?;
        let index = a.event.index;
        let (succeeded, events) = match a.event.batch {
            Some(b) => (b.succeeded, b.events.into_iter().map(Into::into).collect()),
            None => (true, Vec::new()),
        };
        Ok(tonic::Response::new(w::TxnResponse {
            header: self.header(a.raft),
            succeeded,
            events,
            index,
        }))
    }
}

/// The stream of a watch: events until the backend ends the watch, then an `ABORTED`
/// status with etcd's 400 (the watcher fell too far behind, the store was recovered from
/// a snapshot, or the member is stopping), so a client knows to watch again from the
/// index after its last event.
type EventStream = Pin<Box<dyn Stream<Item = Result<w::Event, Status>> + Send>>;

/// The stream of a snapshot: its bytes in chunks.
type ChunkStream = Pin<Box<dyn Stream<Item = Result<w::SnapshotChunk, Status>> + Send>>;

#[async_trait]
impl<B: KvBackend> Kv for KvService<B> {
    async fn get(
        &self,
        request: tonic::Request<w::GetRequest>,
    ) -> Result<tonic::Response<w::EventResponse>, Status> {
        let r = request.into_inner();
        self.check_key(&r.key)?;
        let quorum = r.consistency() == w::Consistency::Linearizable;
        let a = self
            .backend
            .read(ReadRequest {
                key: r.key,
                recursive: r.recursive,
                sorted: r.sorted,
                quorum,
            })
            .await
            .map_err(|e| conv::error_status(&e))?;
        Ok(tonic::Response::new(w::EventResponse {
            header: self.header(a.raft),
            event: Some(a.event.into()),
        }))
    }

    async fn put(
        &self,
        request: tonic::Request<w::PutRequest>,
    ) -> Result<tonic::Response<w::EventResponse>, Status> {
        self.single(conv::put_op(request.into_inner())).await
    }

    async fn delete(
        &self,
        request: tonic::Request<w::DeleteRequest>,
    ) -> Result<tonic::Response<w::EventResponse>, Status> {
        self.single(conv::delete_op(request.into_inner())).await
    }

    async fn compare_and_swap(
        &self,
        request: tonic::Request<w::CompareAndSwapRequest>,
    ) -> Result<tonic::Response<w::EventResponse>, Status> {
        self.single(conv::cas_op(request.into_inner())).await
    }

    async fn txn(
        &self,
        request: tonic::Request<w::TxnRequest>,
    ) -> Result<tonic::Response<w::TxnResponse>, Status> {
        self.run_txn(conv::txn(request.into_inner())).await
    }

    async fn batch_put(
        &self,
        request: tonic::Request<w::BatchPutRequest>,
    ) -> Result<tonic::Response<w::TxnResponse>, Status> {
        self.run_txn(conv::batch_put(request.into_inner())).await
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: tonic::Request<w::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let conn = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let r = request.into_inner();
        self.check_key(&r.key)?;
        let Some(guard) = WatchGuard::acquire(&self.watches, conn, &self.limits) else {
            return Err(too_many_watches(&self.limits));
        };
        let w = self
            .backend
            .watch(WatchRequest {
                key: r.key,
                recursive: r.recursive,
                stream: true,
                since: (r.start_index > 0).then_some(r.start_index),
                all_history: true,
            })
            .await
            .map_err(|e| conv::error_status(&e))?;
        // The guard lives as long as the stream: tonic drops the stream when the client
        // resets it or the connection closes, which also closes the backend's channel.
        let stream =
            futures::stream::unfold((w.events, Some(guard)), |(mut rx, guard)| async move {
                let guard = guard?;
                match rx.recv().await {
                    Some(ev) => Some((Ok(ev.into()), (rx, Some(guard)))),
                    None => Some((
                        Err(conv::etcd_status(400, "watch ended by the server", 0)),
                        (rx, None),
                    )),
                }
            });
        let stream: EventStream = Box::pin(stream);
        let mut response = tonic::Response::new(stream);
        response.metadata_mut().insert(
            conv::ETCD_INDEX_KEY,
            tonic::metadata::MetadataValue::from(w.start_index),
        );
        Ok(response)
    }

    async fn member_list(
        &self,
        _request: tonic::Request<w::MemberListRequest>,
    ) -> Result<tonic::Response<w::MemberListResponse>, Status> {
        let st = self.backend.status();
        let members = self
            .backend
            .members()
            .into_iter()
            .map(|m| w::Member {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_leader: st.leader == Some(m.id),
            })
            .collect();
        Ok(tonic::Response::new(w::MemberListResponse {
            header: self.header(st.raft),
            members,
        }))
    }

    async fn member_add(
        &self,
        request: tonic::Request<w::MemberAddRequest>,
    ) -> Result<tonic::Response<w::Member>, Status> {
        let urls = request.into_inner().peer_urls;
        if urls.is_empty() {
            return Err(Status::invalid_argument("a member needs peer URLs"));
        }
        let m = self.backend.add_member(urls).await.map_err(member_status)?;
        Ok(tonic::Response::new(w::Member {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_leader: false,
        }))
    }

    async fn member_remove(
        &self,
        request: tonic::Request<w::MemberRemoveRequest>,
    ) -> Result<tonic::Response<w::MemberRemoveResponse>, Status> {
        self.backend
            .remove_member(request.into_inner().id)
            .await
            .map_err(member_status)?;
        Ok(tonic::Response::new(w::MemberRemoveResponse {
            header: self.current_header(),
        }))
    }

    async fn member_update(
        &self,
        request: tonic::Request<w::MemberUpdateRequest>,
    ) -> Result<tonic::Response<w::MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        if r.peer_urls.is_empty() {
            return Err(Status::invalid_argument("a member needs peer URLs"));
        }
        self.backend
            .update_member(r.id, r.peer_urls)
            .await
            .map_err(member_status)?;
        Ok(tonic::Response::new(w::MemberUpdateResponse {
            header: self.current_header(),
        }))
    }

    async fn status(
        &self,
        _request: tonic::Request<w::StatusRequest>,
    ) -> Result<tonic::Response<w::StatusResponse>, Status> {
        let st = self.backend.status();
        Ok(tonic::Response::new(w::StatusResponse {
            header: self.header(st.raft),
            name: st.name,
            leader: st.leader.unwrap_or(0),
            etcd_index: st.etcd_index,
            watchers: st.watchers,
            start_time_ms: st.start_time_ms,
            expire_count: st.expire_count,
        }))
    }

    type SnapshotStream = ChunkStream;

    async fn snapshot(
        &self,
        _request: tonic::Request<w::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        let bytes = self.backend.snapshot().await.map_err(|e| match e {
            kv_core::Error::RaftInternal { cause, .. } => Status::internal(cause),
            e => conv::error_status(&e),
        })?;
        let chunks: Vec<_> = bytes
            .chunks(SNAPSHOT_CHUNK_BYTES)
            .map(|c| Ok(w::SnapshotChunk { data: c.to_vec() }))
            .collect();
        let stream: ChunkStream = Box::pin(futures::stream::iter(chunks));
        Ok(tonic::Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_watchers_is_a_limit_with_the_http_apis_cause() {
        let watchers = too_many_watches(&Limits {
            max_watchers_per_conn: 3,
            ..Limits::default()
        });
        assert_eq!(watchers.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            conv::limit_cause(&watchers),
            Some("etcdserver: too many watchers (limit 3)")
        );
        let too_large = limit_status(CAUSE_TOO_LARGE, "the limit is 4096 bytes");
        assert_eq!(conv::limit_cause(&too_large), Some(CAUSE_TOO_LARGE));
    }
}
