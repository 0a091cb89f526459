//! [`KvClient`]: typed calls of `kv.v1`, and [`Watch`] and [`TxnOutcome`], what two of them
//! return.

use std::time::Duration;

use kv_core::Event;
use proto::convert::kv::{ETCD_INDEX_KEY, WireError};
use proto::kv_v1 as wire;
use proto::kv_v1::kv_client::KvClient as Raw;
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;
use crate::tls::TlsConnector;

/// How long [`KvClient::connect`] and [`KvClient::connect_tls`] wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response accepted: a recursive listing of a big tree is one message.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// The outcome of a transaction or a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every comparison held (always true for a batch).
    pub succeeded: bool,
    /// The events of the branch that ran, in order.
    pub events: Vec<Event>,
    /// The store index after the transaction.
    pub index: u64,
}

/// A watch: the matching events, in order, from the requested index.
#[derive(Debug)]
pub struct Watch {
    stream: tonic::Streaming<wire::Event>,
    etcd_index: Option<u64>,
}

impl Watch {
    /// The store index when the server registered the watch (etcd's `X-Etcd-Index` of a
    /// watch, which `etcdctl -o extended` prints as `Index:`), from the response's
    /// metadata ([`proto::convert::kv::ETCD_INDEX_KEY`]); `None` from a server that does
    /// not send it.
    pub fn etcd_index(&self) -> Option<u64> {
        self.etcd_index
    }

    /// The next event; `None` when the stream ended without an error. When the server
    /// ends the watch (the watcher fell behind, the member stopped) this is an
    /// [`ClientError::Etcd`] with code 400: watch again from the last event's index (events
    /// of that index may repeat: a transaction's events share it).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        match self.stream.message().await {
            Ok(Some(e)) => Some(Event::try_from(e).map_err(ClientError::from)),
            Ok(None) => None,
            Err(s) => Some(Err(s.into())),
        }
    }
}

/// A `kv.v1` client. Cloning is cheap and clones share one HTTP/2 connection, on which
/// calls run concurrently.
#[derive(Debug, Clone)]
pub struct KvClient {
    raw: Raw<Channel>,
}

fn event_of(r: tonic::Response<wire::EventResponse>) -> Result<Event, ClientError> {
    let e = r.into_inner().event.ok_or(WireError::MissingNode)?;
    Ok(Event::try_from(e)?)
}

fn outcome_of(r: tonic::Response<wire::TxnResponse>) -> Result<TxnOutcome, ClientError> {
    let r = r.into_inner();
    Ok(TxnOutcome {
        succeeded: r.succeeded,
        events: r
            .events
            .into_iter()
            .map(Event::try_from)
            .collect::<Result<_, _>>()?,
        index: r.index,
    })
}

impl KvClient {
    /// Connects to a kvd client URL (`http://127.0.0.1:2379`); gives up after 5 s.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] or [`ClientError::Connect`].
    pub async fn connect(endpoint: &str) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, None, CONNECT_TIMEOUT).await
    }

    /// Connects to an `https://` kvd client URL over TLS with `tls` (its trusted CAs, and
    /// a client certificate when kvd requires one; see [`crate::tls::client_config`]).
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] or [`ClientError::Connect`] (including a failed handshake).
    pub async fn connect_tls(
        endpoint: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, Some(tls), CONNECT_TIMEOUT).await
    }

    /// Connects over TLS when `tls` is given (an `https://` URL), in cleartext HTTP/2
    /// otherwise, giving up after `connect_timeout`.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] or [`ClientError::Connect`] (including a failed handshake).
    pub async fn connect_with(
        endpoint: &str,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let ep = Self::endpoint(endpoint)?.connect_timeout(connect_timeout);
        let channel = match tls {
            Some(tls) => ep.connect_with_connector(TlsConnector::new(tls)).await,
            None => ep.connect().await,
        }
        .map_err(Self::connect_error(endpoint))?;
        Ok(Self::from_channel(channel))
    }

    /// The endpoint both connections start from (the TLS connector sets no-delay itself).
    fn endpoint(endpoint: &str) -> Result<Endpoint, ClientError> {
        Ok(Endpoint::from_shared(endpoint.to_owned())
            .map_err(|source| ClientError::Endpoint {
                endpoint: endpoint.to_owned(),
                source,
            })?
            .tcp_nodelay(true))
    }

    fn connect_error(endpoint: &str) -> impl FnOnce(tonic::transport::Error) -> ClientError {
        let endpoint = endpoint.to_owned();
        move |source| ClientError::Connect { endpoint, source }
    }

    /// A client on an existing channel (to set TLS, timeouts or load balancing there).
    pub fn from_channel(channel: Channel) -> Self {
        KvClient {
            raw: Raw::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES),
        }
    }

    /// The generated client underneath, for calls this wrapper does not cover.
    pub fn raw(&self) -> Raw<Channel> {
        self.raw.clone()
    }

    /// Reads a key linearizably (a directory lists its children).
    ///
    /// # Errors
    /// [`ClientError::Etcd`] 100 when the key does not exist.
    pub async fn get(&self, key: &str) -> Result<Event, ClientError> {
        self.get_with(wire::GetRequest {
            key: key.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Reads with every option (recursive, sorted, serializable).
    ///
    /// # Errors
    /// See [`KvClient::get`].
    pub async fn get_with(&self, req: wire::GetRequest) -> Result<Event, ClientError> {
        event_of(self.raw.clone().get(req).await?)
    }

    /// Sets a file (etcd's unconditional PUT).
    ///
    /// # Errors
    /// [`ClientError::Etcd`] 102 when the key is a directory.
    pub async fn put(&self, key: &str, value: &str) -> Result<Event, ClientError> {
        self.put_with(wire::PutRequest {
            key: key.to_owned(),
            value: value.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Puts with every option: directories, TTLs and refreshes, create-only
    /// (`prev_exist = Some(false)`), update-only, in-order keys.
    ///
    /// # Errors
    /// etcd's errors for the chosen operation (105 exists, 100 not found, ...).
    pub async fn put_with(&self, req: wire::PutRequest) -> Result<Event, ClientError> {
        event_of(self.raw.clone().put(req).await?)
    }

    /// Deletes a file.
    ///
    /// # Errors
    /// [`ClientError::Etcd`] 100 when it does not exist, 102 for a directory.
    pub async fn delete(&self, key: &str) -> Result<Event, ClientError> {
        self.delete_with(wire::DeleteRequest {
            key: key.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// Deletes with every option (directories, recursive, compare-and-delete).
    ///
    /// # Errors
    /// etcd's errors (101 when a condition fails, 108 for a non-empty directory, ...).
    pub async fn delete_with(&self, req: wire::DeleteRequest) -> Result<Event, ClientError> {
        event_of(self.raw.clone().delete(req).await?)
    }

    /// Replaces a file's value only if it currently is `prev_value`.
    ///
    /// # Errors
    /// [`ClientError::Etcd`] 101 when the value differs, 100 when the key is missing.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        prev_value: &str,
        value: &str,
    ) -> Result<Event, ClientError> {
        self.compare_and_swap_with(wire::CompareAndSwapRequest {
            key: key.to_owned(),
            value: value.to_owned(),
            prev_value: Some(prev_value.to_owned()),
            ..Default::default()
        })
        .await
    }

    /// Compare-and-swap with every option (on the modified index, with a TTL).
    ///
    /// # Errors
    /// See [`KvClient::compare_and_swap`]; 207 without any condition.
    pub async fn compare_and_swap_with(
        &self,
        req: wire::CompareAndSwapRequest,
    ) -> Result<Event, ClientError> {
        event_of(self.raw.clone().compare_and_swap(req).await?)
    }

    /// Runs a transaction: `success` if every comparison holds, `failure` otherwise,
    /// atomically and at one index.
    ///
    /// # Errors
    /// The error of the first operation of the chosen branch that failed (then nothing
    /// changed).
    pub async fn txn(&self, req: wire::TxnRequest) -> Result<TxnOutcome, ClientError> {
        outcome_of(self.raw.clone().txn(req).await?)
    }

    /// Sets many files in one log entry, all or nothing.
    ///
    /// # Errors
    /// The first put that failed (then nothing changed).
    pub async fn batch_put<K: Into<String>, V: Into<String>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<TxnOutcome, ClientError> {
        let puts = pairs
            .into_iter()
            .map(|(k, v)| wire::PutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
            .collect();
        outcome_of(
            self.raw
                .clone()
                .batch_put(wire::BatchPutRequest { puts })
                .await?,
        )
    }

    /// Watches a key (with `recursive`, everything below it) from `start_index`, or from
    /// the next event when it is 0.
    ///
    /// # Errors
    /// [`ClientError::Etcd`] 401 when `start_index` is older than the history kvd keeps;
    /// `RESOURCE_EXHAUSTED` when too many watches are open.
    pub async fn watch(
        &self,
        key: &str,
        recursive: bool,
        start_index: u64,
    ) -> Result<Watch, ClientError> {
        let response = self
            .raw
            .clone()
            .watch(wire::WatchRequest {
                key: key.to_owned(),
                recursive,
                start_index,
            })
            .await?;
        let etcd_index = response
            .metadata()
            .get(ETCD_INDEX_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Watch {
            stream: response.into_inner(),
            etcd_index,
        })
    }

    /// The cluster members, the leader marked.
    ///
    /// # Errors
    /// A failed call.
    pub async fn members(&self) -> Result<Vec<wire::Member>, ClientError> {
        Ok(self
            .raw
            .clone()
            .member_list(wire::MemberListRequest {})
            .await?
            .into_inner()
            .members)
    }

    /// Adds a member by its peer URLs and returns it (with the id it will have).
    ///
    /// # Errors
    /// `ALREADY_EXISTS` when the id or a URL is taken; `UNIMPLEMENTED` on a backend without
    /// membership.
    pub async fn add_member(&self, peer_urls: Vec<String>) -> Result<wire::Member, ClientError> {
        Ok(self
            .raw
            .clone()
            .member_add(wire::MemberAddRequest { peer_urls })
            .await?
            .into_inner())
    }

    /// Removes a member.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown id.
    pub async fn remove_member(&self, id: u64) -> Result<(), ClientError> {
        self.raw
            .clone()
            .member_remove(wire::MemberRemoveRequest { id })
            .await?;
        Ok(())
    }

    /// Changes a member's peer URLs.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown id; `UNIMPLEMENTED` when the backend cannot.
    pub async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), ClientError> {
        self.raw
            .clone()
            .member_update(wire::MemberUpdateRequest { id, peer_urls })
            .await?;
        Ok(())
    }

    /// This member's status (name, leader, indexes, watchers).
    ///
    /// # Errors
    /// A failed call.
    pub async fn status(&self) -> Result<wire::StatusResponse, ClientError> {
        Ok(self
            .raw
            .clone()
            .status(wire::StatusRequest {})
            .await?
            .into_inner())
    }

    /// A consistent snapshot of the store, in kv-core's format (what
    /// `kv_core::Store::restore` and `kvctl snapshot restore` read).
    ///
    /// # Errors
    /// `INTERNAL` when kvd cannot take it; a failed call.
    pub async fn snapshot(&self) -> Result<Vec<u8>, ClientError> {
        let mut stream = self
            .raw
            .clone()
            .snapshot(wire::SnapshotRequest {})
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}
