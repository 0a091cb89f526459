//! fleetctl's `--driver=etcd`: [`FleetApi`] straight over the registry.

use std::collections::HashSet;

use super::api::{ApiError, FleetApi};
use crate::api::types::{Machine, Unit, UnitOption, UnitState};
use crate::registry::{self, JobState, Registry, UnitContents};
use crate::store::KvStore;

fn err(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(e.to_string())
}

impl<S: KvStore> Registry<S> {
    /// The API's form of every unit, with current states derived from the published
    /// states (fleet's `determineJobState`).
    ///
    /// # Errors
    /// When the store fails.
    pub async fn api_units(&self) -> registry::Result<Vec<Unit>> {
        let (units, _) = self.units().await?;
        let (states, _) = self.states().await?;
        let reported: HashSet<(&str, &str)> = states
            .iter()
            .map(|s| (s.unit.as_str(), s.machine_id.as_str()))
            .collect();
        Ok(units
            .iter()
            .map(|u| {
                let on_target = u
                    .target
                    .as_deref()
                    .is_some_and(|t| reported.contains(&(u.name.as_str(), t)));
                api_unit(u, on_target)
            })
            .collect())
    }
}

/// The API's form of one unit.
pub(crate) fn api_unit(u: &registry::Unit, state_on_target: bool) -> Unit {
    let global = u.is_global();
    Unit {
        current_state: u.current_state(state_on_target),
        desired_state: Some(u.desired),
        machine_id: if global { None } else { u.target.clone() },
        name: u.name.clone(),
        options: UnitOption::of(&u.contents),
    }
}

impl<S: KvStore> FleetApi for Registry<S> {
    async fn units(&self) -> Result<Vec<Unit>, ApiError> {
        self.api_units().await.map_err(err)
    }

    async fn unit(&self, name: &str) -> Result<Option<Unit>, ApiError> {
        let Some(u) = Registry::unit(self, name).await.map_err(err)? else {
            return Ok(None);
        };
        let on_target = match &u.target {
            Some(t) => {
                let key = self.keys().unit_state(name, t);
                match self.store().get(&key, false, false).await {
                    Ok(_) => true,
                    Err(e) if e.is_not_found() => false,
                    Err(e) => return Err(err(e)),
                }
            }
            None => false,
        };
        Ok(Some(api_unit(&u, on_target)))
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
