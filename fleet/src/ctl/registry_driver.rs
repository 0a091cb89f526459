//! fleetctl's two drivers as [`FleetApi`]s: the `/fleet/v1` API through [`Client`]
//! (`--driver=API`) and the registry itself (`--driver=etcd`).

use super::api::{ApiError, FleetApi};
use crate::api::types::{Machine, Unit, UnitOption, UnitState};
use crate::client::{Client, ClientError, StateFilter};
use crate::registry::{JobState, Registry, RegistryError, UnitContents};
use crate::store::{KvStore, StoreError};

/// A registry failure in the words fleet's etcd client used for an unreachable store.
fn err(e: impl Into<RegistryError>) -> ApiError {
    match e.into() {
        RegistryError::Store(StoreError::Unavailable { detail, .. }) => ApiError::new(format!(
            "client: etcd cluster is unavailable or misconfigured; error #0: {detail}\n"
        )),
        e => ApiError::new(e.to_string()),
    }
}

/// An API failure in the words of fleet's API client (`googleapi: Error 409: ...`).
fn api_err(e: ClientError) -> ApiError {
    ApiError::new(match e {
        ClientError::Api {
            status, message, ..
        } => format!("googleapi: Error {status}: {message}"),
        ClientError::Transport { detail, .. } | ClientError::Protocol { detail, .. } => detail,
        ClientError::Endpoint { reason, .. } => reason,
        // The gRPC API carries the HTTP API's message for the same refusal.
        ClientError::Grpc { message, .. } => message,
    })
}

impl<S: KvStore> FleetApi for Registry<S> {
    async fn units(&self) -> Result<Vec<Unit>, ApiError> {
        let (units, _) = Registry::units(self).await.map_err(err)?;
        crate::api::units::with_states(self, &units)
            .await
            .map_err(err)
    }

    async fn unit(&self, name: &str) -> Result<Option<Unit>, ApiError> {
        crate::api::units::one_with_state(self, name)
            .await
            .map_err(err)
    }

    async fn create_unit(&self, unit: &Unit) -> Result<(), ApiError> {
        let contents =
            UnitContents::from_options(unit.options.iter().map(UnitOption::to_go).collect())
                .map_err(|e| ApiError::new(e.to_string()))?;
        self.put_unit(
            &unit.name,
            contents,
            unit.desired_state.unwrap_or(JobState::Inactive),
        )
        .await
        .map_err(err)?;
        Ok(())
    }

    async fn set_desired(&self, name: &str, state: JobState) -> Result<(), ApiError> {
        // As fleet's API refuses it: a scheduled template wedged the agent that got it.
        if state != JobState::Inactive
            && unit_parser::name::UnitName::parse(name).is_ok_and(|n| n.is_template())
        {
            return Err(ApiError::new(format!(
                "cannot activate template {}",
                unit_parser::name::go_quote_str(name)
            )));
        }
        Registry::set_desired(self, name, state).await.map_err(err)
    }

    async fn destroy(&self, name: &str) -> Result<bool, ApiError> {
        self.destroy_unit(name).await.map_err(err)
    }

    async fn states(&self) -> Result<Vec<UnitState>, ApiError> {
        let (states, _) = Registry::states(self).await.map_err(err)?;
        Ok(states.iter().map(UnitState::of).collect())
    }

    async fn machines(&self) -> Result<Vec<Machine>, ApiError> {
        let (machines, _) = Registry::machines(self).await.map_err(err)?;
        Ok(machines.iter().map(Machine::of).collect())
    }
}

impl FleetApi for Client {
    async fn units(&self) -> Result<Vec<Unit>, ApiError> {
        Client::units(self).await.map_err(api_err)
    }

    async fn unit(&self, name: &str) -> Result<Option<Unit>, ApiError> {
        Client::unit(self, name).await.map_err(api_err)
    }

    async fn create_unit(&self, unit: &Unit) -> Result<(), ApiError> {
        Client::create_unit(self, unit).await.map_err(api_err)
    }

    async fn set_desired(&self, name: &str, state: JobState) -> Result<(), ApiError> {
        Client::set_desired(self, name, state)
            .await
            .map_err(api_err)
    }

    async fn destroy(&self, name: &str) -> Result<bool, ApiError> {
        Client::destroy(self, name).await.map_err(api_err)
    }

    async fn states(&self) -> Result<Vec<UnitState>, ApiError> {
        Client::states(self, &StateFilter::default())
            .await
            .map_err(api_err)
    }

    async fn machines(&self) -> Result<Vec<Machine>, ApiError> {
        Client::machines(self).await.map_err(api_err)
    }
}
