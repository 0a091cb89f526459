//! [`GrpcClient`]: fleetd's gRPC API (`fleet.v1`, [`crate::api::grpc`]) with the HTTP
//! [`Client`](super::Client)'s calls and answers, over TCP (`http://`) or a unix socket
//! (`unix:///var/run/fleet.sock`), plus [`GrpcClient::watch_units`].
//!
//! A refusal is a [`ClientError::Grpc`] with fleet's message; [`ClientError::is_not_found`]
//! holds for `NOT_FOUND` as for a 404.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleet::client::ClientError> {
//! use fleet::client::grpc::GrpcClient;
//!
//! let client = GrpcClient::connect("unix:///var/run/fleet.sock").await?;
//! let mut watch = client.watch_units(true).await?;
//! while let Some(event) = watch.next().await {
//!     let event = event?;
//!     let state = event.unit.as_ref().and_then(|u| u.current_state);
//!     println!("{} {state:?}", event.name);
//! }
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use proto::fleet_v1 as w;
use proto::fleet_v1::fleet_client::FleetClient;
use tokio::net::UnixStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint as Tonic};

use super::{ClientError, Endpoint, Result, StateFilter, error_chain};
use crate::api::grpc::UnitEvent;
use crate::api::grpc::convert::WireError;
use crate::api::types::{Machine, MachineMetadataOp, Unit, UnitState};
use crate::ctl::api::{ApiError, FleetApi};
use crate::registry::JobState;

/// How long [`GrpcClient::connect`] waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `fleet.v1` client. Cloning is cheap and clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    raw: FleetClient<Channel>,
    endpoint: String,
}

impl GrpcClient {
    /// Connects to fleetd at `endpoint` (read as fleetctl reads `--endpoint`, see
    /// [`Endpoint::parse`]; `http` or a unix socket), giving up after 5 s.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] for an endpoint that cannot be used (`https`: this client
    /// speaks cleartext HTTP/2 only), [`ClientError::Transport`] when it cannot connect.
    pub async fn connect(endpoint: &str) -> Result<GrpcClient> {
        GrpcClient::connect_with(endpoint, CONNECT_TIMEOUT, None).await
    }

    /// Like [`GrpcClient::connect`], waiting `connect_timeout` for the connection and, with
    /// `request_timeout`, at most that long for each answer (a watch's first only).
    ///
    /// # Errors
    /// As for [`GrpcClient::connect`].
    pub async fn connect_with(
        endpoint: &str,
        connect_timeout: Duration,
        request_timeout: Option<Duration>,
    ) -> Result<GrpcClient> {
        let refuse = |reason: String| ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let parsed = Endpoint::parse(endpoint)?;
        let uri = match &parsed {
            Endpoint::Http(url) if url.scheme() == "http" => url.as_str().to_owned(),
            Endpoint::Http(_) => {
                return Err(refuse(
                    "the gRPC client speaks cleartext HTTP/2 only (http:// or unix://)".into(),
                ));
            }
            // The host is never dialled.
            Endpoint::Unix(_) => "http://domain-sock".to_owned(),
        };
        let mut ep = Tonic::from_shared(uri)
            .map_err(|e| refuse(format!("invalid endpoint: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if let Some(t) = request_timeout {
            ep = ep.timeout(t);
        }
        let transport = |e: tonic::transport::Error| ClientError::Transport {
            endpoint: endpoint.to_owned(),
            detail: error_chain(&e),
        };
        let channel = match parsed {
            Endpoint::Unix(path) => {
                // A connector has no timeout of its own.
                let connect = ep.connect_with_connector(UnixConnector(Arc::new(path)));
                tokio::time::timeout(connect_timeout, connect)
                    .await
                    .map_err(|_| ClientError::Transport {
                        endpoint: endpoint.to_owned(),
                        detail: format!("no connection within {connect_timeout:?}"),
                    })?
                    .map_err(transport)?
            }
            Endpoint::Http(_) => ep.connect().await.map_err(transport)?,
        };
        Ok(GrpcClient::from_channel(channel, endpoint))
    }

    /// A client on an existing channel; `endpoint` names it in errors.
    pub fn from_channel(channel: Channel, endpoint: &str) -> GrpcClient {
        GrpcClient {
            raw: FleetClient::new(channel).max_decoding_message_size(usize::MAX),
            endpoint: endpoint.to_owned(),
        }
    }

    /// The generated client underneath.
    pub fn raw(&self) -> FleetClient<Channel> {
        self.raw.clone()
    }

    /// The endpoint as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every unit, by name.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn units(&self) -> Result<Vec<Unit>> {
        let r = self.call(self.raw().list_units(w::ListUnitsRequest {}).await)?;
        r.units
            .into_iter()
            .map(|u| Unit::try_from(u).map_err(|e| self.protocol(e)))
            .collect()
    }

    /// One unit; `None` when it does not exist.
    ///
    /// # Errors
    /// Any [`ClientError`] but `NOT_FOUND`.
    pub async fn unit(&self, name: &str) -> Result<Option<Unit>> {
        let r = self
            .raw()
            .get_unit(w::GetUnitRequest { name: name.into() })
            .await;
        match self.call(r) {
            Ok(u) => Ok(Some(Unit::try_from(u).map_err(|e| self.protocol(e))?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /units/<name>`'s decision procedure for `unit`: `true` when the unit was
    /// created or its options replaced, `false` when only its desired state was set.
    ///
    /// # Errors
    /// Any [`ClientError`]; `INVALID_ARGUMENT` with fleet's message for an invalid unit,
    /// `FAILED_PRECONDITION` when the unit cannot be created or updated so.
    pub async fn set_unit(&self, unit: &Unit) -> Result<bool> {
        let req = w::SetUnitRequest {
            unit: Some(unit.clone().into()),
        };
        Ok(self.call(self.raw().set_unit(req).await)?.created)
    }

    /// Creates or replaces a unit (`options` must not be empty), with its desired state
    /// (`inactive` when `None`).
    ///
    /// # Errors
    /// As for [`GrpcClient::set_unit`].
    pub async fn create_unit(&self, unit: &Unit) -> Result<()> {
        self.set_unit(unit).await.map(drop)
    }

    /// Sets an existing unit's desired state.
    ///
    /// # Errors
    /// Any [`ClientError`]; `FAILED_PRECONDITION` when the unit does not exist.
    pub async fn set_desired(&self, name: &str, state: JobState) -> Result<()> {
        let unit = Unit {
            name: name.to_owned(),
            desired_state: Some(state),
            ..Unit::default()
        };
        self.set_unit(&unit).await.map(drop)
    }

    /// Destroys a unit; `false` when it did not exist.
    ///
    /// # Errors
    /// Any [`ClientError`] but `NOT_FOUND`.
    pub async fn destroy(&self, name: &str) -> Result<bool> {
        let r = self
            .raw()
            .destroy_unit(w::DestroyUnitRequest { name: name.into() })
            .await;
        match self.call(r) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every published unit state matching `filter`, by unit then machine.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn states(&self, filter: &StateFilter) -> Result<Vec<UnitState>> {
        let req = w::ListUnitStatesRequest {
            unit_name: filter.unit_name.clone().unwrap_or_default(),
            machine_id: filter.machine_id.clone().unwrap_or_default(),
        };
        let r = self.call(self.raw().list_unit_states(req).await)?;
        Ok(r.states.into_iter().map(Into::into).collect())
    }

    /// One published state of a unit; `None` when there is none.
    ///
    /// # Errors
    /// Any [`ClientError`] but `NOT_FOUND`.
    pub async fn state(&self, name: &str) -> Result<Option<UnitState>> {
        let r = self
            .raw()
            .get_unit_state(w::GetUnitStateRequest { name: name.into() })
            .await;
        match self.call(r) {
            Ok(s) => Ok(Some(s.into())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every present machine, by ID.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn machines(&self) -> Result<Vec<Machine>> {
        let r = self.call(self.raw().list_machines(w::ListMachinesRequest {}).await)?;
        Ok(r.machines.into_iter().map(Into::into).collect())
    }

    /// Applies metadata operations (all are checked before any is applied).
    ///
    /// # Errors
    /// Any [`ClientError`]; `INVALID_ARGUMENT` with fleet's message for an invalid
    /// operation.
    pub async fn patch_machines(&self, ops: &[MachineMetadataOp]) -> Result<()> {
        let req = w::SetMachineMetadataRequest {
            ops: ops.iter().cloned().map(Into::into).collect(),
        };
        self.call(self.raw().set_machine_metadata(req).await)
            .map(drop)
    }

    /// Sets one dynamic metadata key of a machine.
    ///
    /// # Errors
    /// As for [`GrpcClient::patch_machines`].
    pub async fn set_metadata(&self, machine: &str, key: &str, value: &str) -> Result<()> {
        self.patch_machines(&[MachineMetadataOp::set(machine, key, value)])
            .await
    }

    /// Removes one metadata key of a machine (configured ones too).
    ///
    /// # Errors
    /// As for [`GrpcClient::patch_machines`].
    pub async fn remove_metadata(&self, machine: &str, key: &str) -> Result<()> {
        self.patch_machines(&[MachineMetadataOp::remove(machine, key)])
            .await
    }

    /// Follows the units' changes: every change made after this returns is seen. With
    /// `initial`, the first events are every existing unit (all with the same index).
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn watch_units(&self, initial: bool) -> Result<UnitWatch> {
        let r = self
            .raw()
            .watch_units(w::WatchUnitsRequest { initial })
            .await;
        Ok(UnitWatch {
            stream: self.call(r)?,
            endpoint: self.endpoint.clone(),
        })
    }

    /// The message of an answer, or the error of a refusal.
    fn call<T>(&self, r: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
        r.map(tonic::Response::into_inner)
            .map_err(|s| error_of(&self.endpoint, &s))
    }

    fn protocol(&self, e: WireError) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            detail: e.to_string(),
        }
    }
}

/// A client error from a status: the server's refusal, or a failure to reach it (a status
/// with a source is the channel's own).
fn error_of(endpoint: &str, s: &tonic::Status) -> ClientError {
    if std::error::Error::source(s).is_some() {
        ClientError::Transport {
            endpoint: endpoint.to_owned(),
            detail: error_chain(s),
        }
    } else {
        ClientError::Grpc {
            endpoint: endpoint.to_owned(),
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

/// The stream of [`GrpcClient::watch_units`].
#[derive(Debug)]
pub struct UnitWatch {
    stream: tonic::Streaming<w::UnitEvent>,
    endpoint: String,
}

impl UnitWatch {
    /// The next change; `None` when the stream ended. When the server can no longer follow
    /// the registry this is a [`ClientError::Grpc`] `UNAVAILABLE`: watch again with
    /// `initial` to catch up.
    pub async fn next(&mut self) -> Option<Result<UnitEvent>> {
        match self.stream.message().await {
            Ok(Some(e)) => Some(UnitEvent::try_from(e).map_err(|e| ClientError::Protocol {
                endpoint: self.endpoint.clone(),
                detail: e.to_string(),
            })),
            Ok(None) => None,
            Err(s) => Some(Err(error_of(&self.endpoint, &s))),
        }
    }
}

/// Dials a unix socket for tonic's channel.
#[derive(Debug, Clone)]
struct UnixConnector(Arc<PathBuf>);

impl tonic::codegen::Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = Arc::clone(&self.0);
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(&*path).await?)) })
    }
}

fn err(e: ClientError) -> ApiError {
    ApiError::new(e.to_string())
}

/// fleetctl's `--driver=grpc`.
impl FleetApi for GrpcClient {
    async fn units(&self) -> std::result::Result<Vec<Unit>, ApiError> {
        GrpcClient::units(self).await.map_err(err)
    }

    async fn unit(&self, name: &str) -> std::result::Result<Option<Unit>, ApiError> {
        GrpcClient::unit(self, name).await.map_err(err)
    }

    async fn create_unit(&self, unit: &Unit) -> std::result::Result<(), ApiError> {
        GrpcClient::create_unit(self, unit).await.map_err(err)
    }

    async fn set_desired(&self, name: &str, state: JobState) -> std::result::Result<(), ApiError> {
        GrpcClient::set_desired(self, name, state)
            .await
            .map_err(err)
    }

    async fn destroy(&self, name: &str) -> std::result::Result<bool, ApiError> {
        GrpcClient::destroy(self, name).await.map_err(err)
    }

    async fn states(&self) -> std::result::Result<Vec<UnitState>, ApiError> {
        GrpcClient::states(self, &StateFilter::default())
            .await
            .map_err(err)
    }

    async fn machines(&self) -> std::result::Result<Vec<Machine>, ApiError> {
        GrpcClient::machines(self).await.map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_and_bad_endpoints_are_refused() {
        for endpoint in ["https://10.0.0.1:8080", "/var/run/fleet.sock", "ftp://x"] {
            let e = GrpcClient::connect(endpoint).await.unwrap_err();
            assert!(matches!(e, ClientError::Endpoint { .. }), "{endpoint}: {e}");
        }
    }

    #[test]
    fn statuses_are_refusals_with_fleets_message() {
        let e = error_of("x", &tonic::Status::not_found("unit does not exist"));
        assert!(e.is_not_found());
        assert_eq!(e.message(), Some("unit does not exist"));
        assert_eq!(e.code(), Some(tonic::Code::NotFound));
        assert_eq!(e.status(), None);
    }
}
