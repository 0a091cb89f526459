//! fleet's gRPC API, `fleet.v1` (`proto/fleet/v1/fleet.proto`): the `/fleet/v1` HTTP API's
//! resources with its rules and messages, over the same [`Registry`], plus
//! [`WatchUnits`](proto::fleet_v1::fleet_server::Fleet::watch_units), a stream of unit
//! changes.
//!
//! [`server`] is the tonic service; [`route`] (which
//! [`router_with_grpc`](crate::api::router_with_grpc) applies) hands it every request whose
//! `content-type` is `application/grpc`, so fleetd serves both APIs on its unix socket
//! and TCP address, as kvd serves `kv.v1` beside the etcd v2 API.
//!
//! Each call runs the HTTP handler's own logic: `SetUnit` is `PUT /units/<name>`'s decision
//! procedure with fleet's validation, units carry the current state the HTTP API derives,
//! `SetMachineMetadata` checks every operation before applying any. Listings are not
//! paged. A refusal is a status whose message is the HTTP API's message for it, with the
//! code [`convert::status_of`] gives the HTTP status:
//!
//! | HTTP | gRPC | for instance |
//! |------|------|--------------|
//! | 400 | `INVALID_ARGUMENT` | fleet's name and option validation, `cannot activate template` |
//! | 404 | `NOT_FOUND` | `unit does not exist`, `unit state does not exist` |
//! | 409 | `FAILED_PRECONDITION` | `unit does not exist and options field empty` |
//! | 503 | `UNAVAILABLE` | the store cannot be reached ([`UNAVAILABLE`](crate::api::UNAVAILABLE)) |
//! | 500 | `INTERNAL` | the registry failed otherwise |
//!
//! A unit name that cannot be a registry key (empty, `.`, `..`, with a `/`) is never looked
//! up: `NOT_FOUND`, as the HTTP API answers 404 for its path.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fleet::api::{self, ApiConfig};
//! use fleet::registry::Registry;
//! use fleet::store::etcd::EtcdStore;
//!
//! let registry = Arc::new(Registry::new(EtcdStore::new(&["http://127.0.0.1:2379".into()])?));
//! let router = api::router_with_grpc(registry, ApiConfig::default(), axum::Router::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! api::serve_tcp(listener, router, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod convert;
mod watch;

use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::Stream;
use proto::fleet_v1 as w;
use proto::fleet_v1::fleet_server::{Fleet, FleetServer};
use tonic::codegen::Service;
use tonic::{Status, async_trait};

use super::types::{self, Machine, UnitState};
use super::{ApiError, addressable, machines, state, units};
use crate::registry::Registry;
use crate::store::KvStore;
use convert::status_of;

/// A change of a unit, as `WatchUnits` streams it: the unit's API form and its published
/// states after the change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitEvent {
    /// The unit.
    pub name: String,
    /// Its API form (with its current state); `None` when it no longer exists.
    pub unit: Option<types::Unit>,
    /// Its published states, by machine.
    pub states: Vec<UnitState>,
    /// The store index the change was read at or after: the index of the first read for
    /// the events of a watch's start, greater for every later change.
    pub index: u64,
}

/// The `fleet.v1` service over a registry; wrap it in a [`FleetServer`] with [`server`].
pub struct FleetService<S> {
    registry: Arc<Registry<S>>,
}

impl<S> std::fmt::Debug for FleetService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetService").finish_non_exhaustive()
    }
}

/// The tonic service of `fleet.v1` over `registry`, decoding requests up to the HTTP API's
/// body limit.
pub fn server<S: KvStore>(registry: Arc<Registry<S>>) -> FleetServer<FleetService<S>> {
    FleetServer::new(FleetService { registry }).max_decoding_message_size(units::MAX_BODY)
}

/// Whether an HTTP request is a gRPC call (its `content-type` is `application/grpc`, with
/// or without a `+proto` suffix).
pub fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// `router` with `grpc` answering the gRPC calls ([`is_grpc`]) in front of it: one
/// listener serves both (HTTP/1.1 and cleartext HTTP/2 alike).
pub fn route<S: KvStore>(router: Router, grpc: FleetServer<FleetService<S>>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(grpc, dispatch::<S>))
}

/// `e` in `req`'s protocol: a status (by the table above) for a gRPC call, fleet's JSON
/// error otherwise. For layers that refuse requests before either API sees them (fleetd
/// answers 503 while its machine is not registered).
pub fn refusal(req: &Request, e: ApiError) -> Response {
    if is_grpc(req) {
        status_of(e).into_http()
    } else {
        axum::response::IntoResponse::into_response(e)
    }
}

/// Hands a gRPC call to the service and anything else to the HTTP API.
async fn dispatch<S: KvStore>(
    State(mut grpc): State<FleetServer<FleetService<S>>>,
    req: Request,
    next: Next,
) -> Response {
    if !is_grpc(&req) {
        return next.run(req).await;
    }
    match grpc.call(req).await {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// The status of a registry failure, as the HTTP API words it.
fn registry_status(e: crate::registry::RegistryError) -> Status {
    status_of(ApiError::from(e))
}

/// `NOT_FOUND` with `message` for a name that cannot be looked up.
fn check_name(name: &str, message: &str) -> Result<(), Status> {
    if addressable(name) {
        Ok(())
    } else {
        Err(Status::not_found(message))
    }
}

const NO_UNIT: &str = "unit does not exist";
const NO_STATE: &str = "unit state does not exist";

/// The stream of `WatchUnits`.
type UnitEventStream = Pin<Box<dyn Stream<Item = Result<w::UnitEvent, Status>> + Send>>;

#[async_trait]
impl<S: KvStore> Fleet for FleetService<S> {
    async fn list_units(
        &self,
        _request: tonic::Request<w::ListUnitsRequest>,
    ) -> Result<tonic::Response<w::ListUnitsResponse>, Status> {
        let (units, _) = self.registry.units().await.map_err(registry_status)?;
        let units = units::with_states(&self.registry, &units)
            .await
            .map_err(registry_status)?;
        Ok(tonic::Response::new(w::ListUnitsResponse {
            units: units.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_unit(
        &self,
        request: tonic::Request<w::GetUnitRequest>,
    ) -> Result<tonic::Response<w::Unit>, Status> {
        let name = request.into_inner().name;
        check_name(&name, NO_UNIT)?;
        let unit = units::get_unit(&self.registry, &name)
            .await
            .map_err(status_of)?;
        Ok(tonic::Response::new(unit.into()))
    }

    async fn set_unit(
        &self,
        request: tonic::Request<w::SetUnitRequest>,
    ) -> Result<tonic::Response<w::SetUnitResponse>, Status> {
        let unit = types::Unit::try_from(request.into_inner().unit.unwrap_or_default())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let outcome = units::set_unit(&self.registry, unit)
            .await
            .map_err(status_of)?;
        Ok(tonic::Response::new(w::SetUnitResponse {
            created: outcome == units::SetOutcome::Stored,
        }))
    }

    async fn destroy_unit(
        &self,
        request: tonic::Request<w::DestroyUnitRequest>,
    ) -> Result<tonic::Response<w::DestroyUnitResponse>, Status> {
        let name = request.into_inner().name;
        check_name(&name, NO_UNIT)?;
        units::destroy_unit(&self.registry, &name)
            .await
            .map_err(status_of)?;
        Ok(tonic::Response::new(w::DestroyUnitResponse {}))
    }

    async fn list_unit_states(
        &self,
        request: tonic::Request<w::ListUnitStatesRequest>,
    ) -> Result<tonic::Response<w::ListUnitStatesResponse>, Status> {
        let r = request.into_inner();
        let states = state::filtered(&self.registry, &r.unit_name, &r.machine_id)
            .await
            .map_err(status_of)?;
        Ok(tonic::Response::new(w::ListUnitStatesResponse {
            states: states.iter().map(|s| UnitState::of(s).into()).collect(),
        }))
    }

    async fn get_unit_state(
        &self,
        request: tonic::Request<w::GetUnitStateRequest>,
    ) -> Result<tonic::Response<w::UnitState>, Status> {
        let name = request.into_inner().name;
        check_name(&name, NO_STATE)?;
        let state = state::one(&self.registry, &name).await.map_err(status_of)?;
        Ok(tonic::Response::new(state.into()))
    }

    async fn list_machines(
        &self,
        _request: tonic::Request<w::ListMachinesRequest>,
    ) -> Result<tonic::Response<w::ListMachinesResponse>, Status> {
        let (machines, _) = self.registry.machines().await.map_err(registry_status)?;
        Ok(tonic::Response::new(w::ListMachinesResponse {
            machines: machines.iter().map(|m| Machine::of(m).into()).collect(),
        }))
    }

    async fn set_machine_metadata(
        &self,
        request: tonic::Request<w::SetMachineMetadataRequest>,
    ) -> Result<tonic::Response<w::SetMachineMetadataResponse>, Status> {
        let ops: Vec<types::MachineMetadataOp> = request
            .into_inner()
            .ops
            .into_iter()
            .map(Into::into)
            .collect();
        machines::apply_metadata(&self.registry, &ops)
            .await
            .map_err(status_of)?;
        Ok(tonic::Response::new(w::SetMachineMetadataResponse {}))
    }

    type WatchUnitsStream = UnitEventStream;

    async fn watch_units(
        &self,
        request: tonic::Request<w::WatchUnitsRequest>,
    ) -> Result<tonic::Response<Self::WatchUnitsStream>, Status> {
        let initial = request.into_inner().initial;
        // The first read and the store watch are made before answering, so every change
        // made after this call returns is streamed.
        let follower = watch::Follower::start(self.registry.clone(), initial)
            .await
            .map_err(registry_status)?;
        Ok(tonic::Response::new(Box::pin(follower.into_stream())))
    }
}
