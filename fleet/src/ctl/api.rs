//! What fleetctl needs from a cluster ([`FleetApi`]), in the `/fleet/v1` API's types: the
//! HTTP API (`--driver=API`, the default) and the registry itself (`--driver=etcd`) both
//! provide it, as in fleet.

use std::future::Future;

use crate::api::types::{Machine, Unit, UnitState};
use crate::registry::JobState;

/// A failed request, with the message fleetctl prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What went wrong (fleet's message when the server sent one).
    pub message: String,
}

impl ApiError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ApiError {
        ApiError {
            message: message.into(),
        }
    }
}

/// The cluster operations fleetctl is built on.
pub trait FleetApi: Send + Sync {
    /// Every unit, by name, with its derived current state.
    fn units(&self) -> impl Future<Output = Result<Vec<Unit>, ApiError>> + Send;

    /// One unit, if it exists.
    fn unit(&self, name: &str) -> impl Future<Output = Result<Option<Unit>, ApiError>> + Send;

    /// Creates (or replaces) a unit from its name, options and desired state.
    fn create_unit(&self, unit: &Unit) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Sets the desired state of an existing unit.
    fn set_desired(
        &self,
        name: &str,
        state: JobState,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Destroys a unit; `false` when it did not exist.
    fn destroy(&self, name: &str) -> impl Future<Output = Result<bool, ApiError>> + Send;

    /// Every published unit state, by unit then machine.
    fn states(&self) -> impl Future<Output = Result<Vec<UnitState>, ApiError>> + Send;

    /// Every present machine, by ID.
    fn machines(&self) -> impl Future<Output = Result<Vec<Machine>, ApiError>> + Send;
}
