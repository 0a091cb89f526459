//! fleetctl's two drivers as [`FleetApi`]s: the `/fleet/v1` API through [`Client`]
//! (`--driver=API`) and the registry itself (`--driver=etcd`).

use super::api::{ApiError, FleetApi};
use crate::api::types::{Machine, Unit, UnitOption, UnitState};
use crate::client::{Client, StateFilter};
use crate::registry::{JobState, Registry, UnitContents};
use crate::store::KvStore;

fn err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(e.to_string())
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
                .map_err(err)?;
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
        Client::units(self).await.map_err(err)
    }

    async fn unit(&self, name: &str) -> Result<Option<Unit>, ApiError> {
        Client::unit(self, name).await.map_err(err)
    }

    async fn create_unit(&self, unit: &Unit) -> Result<(), ApiError> {
        Client::create_unit(self, unit).await.map_err(err)
    }

    async fn set_desired(&self, name: &str, state: JobState) -> Result<(), ApiError> {
        Client::set_desired(self, name, state).await.map_err(err)
    }

    async fn destroy(&self, name: &str) -> Result<bool, ApiError> {
        Client::destroy(self, name).await.map_err(err)
    }

    async fn states(&self) -> Result<Vec<UnitState>, ApiError> {
        Client::states(self, &StateFilter::default())
            .await
            .map_err(err)
    }

    async fn machines(&self) -> Result<Vec<Machine>, ApiError> {
        Client::machines(self).await.map_err(err)
    }
}
