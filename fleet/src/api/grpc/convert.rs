//! `fleet.v1` <-> the API's types ([`crate::api::types`], [`UnitEvent`]), both ways, and
//! the API's errors as gRPC statuses: the one place the wire and the API's types meet.

use proto::fleet_v1 as w;
use tonic::Status;

use super::UnitEvent;
use crate::api::ApiError;
use crate::api::types::{Machine, MachineMetadataOp, MetadataValue, Unit, UnitOption, UnitState};
use crate::registry::JobState;

/// A message that does not make an API value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A `JobState` number this side does not know.
    #[error("unknown {field} {value}")]
    UnknownState {
        /// `desired state` or `current state`.
        field: &'static str,
        /// The number sent.
        value: i32,
    },
}

/// The status of an API error, by its HTTP status: the message is the HTTP API's.
///
/// | HTTP | gRPC |
/// |------|------|
/// | 400 | `INVALID_ARGUMENT` |
/// | 404 | `NOT_FOUND` |
/// | 409 | `FAILED_PRECONDITION` |
/// | 413 | `RESOURCE_EXHAUSTED` |
/// | 503 | `UNAVAILABLE` |
/// | 500, any other | `INTERNAL` |
pub fn status_of(e: ApiError) -> Status {
    let code = match e.status.as_u16() {
        400 => tonic::Code::InvalidArgument,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::FailedPrecondition,
        413 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    };
    Status::new(code, e.message)
}

/// A state on the wire; `None` is `UNSPECIFIED`.
pub fn job_state_to_wire(s: Option<JobState>) -> w::JobState {
    match s {
        None => w::JobState::Unspecified,
        Some(JobState::Inactive) => w::JobState::Inactive,
        Some(JobState::Loaded) => w::JobState::Loaded,
        Some(JobState::Launched) => w::JobState::Launched,
    }
}

/// A state from the wire (`field` names it in the error).
///
/// # Errors
/// [`WireError::UnknownState`] for a number that is not a `JobState`.
pub fn job_state_of(value: i32, field: &'static str) -> Result<Option<JobState>, WireError> {
    match w::JobState::try_from(value) {
        Ok(w::JobState::Unspecified) => Ok(None),
        Ok(w::JobState::Inactive) => Ok(Some(JobState::Inactive)),
        Ok(w::JobState::Loaded) => Ok(Some(JobState::Loaded)),
        Ok(w::JobState::Launched) => Ok(Some(JobState::Launched)),
        Err(_) => Err(WireError::UnknownState { field, value }),
    }
}

impl From<UnitOption> for w::UnitOption {
    fn from(o: UnitOption) -> Self {
        w::UnitOption {
            section: o.section,
            name: o.name,
            value: o.value,
        }
    }
}

impl From<w::UnitOption> for UnitOption {
    fn from(o: w::UnitOption) -> Self {
        UnitOption {
            name: o.name,
            section: o.section,
            value: o.value,
        }
    }
}

impl From<Unit> for w::Unit {
    fn from(u: Unit) -> Self {
        w::Unit {
            name: u.name,
            options: u.options.into_iter().map(Into::into).collect(),
            desired_state: job_state_to_wire(u.desired_state).into(),
            current_state: job_state_to_wire(u.current_state).into(),
            machine_id: u.machine_id.unwrap_or_default(),
        }
    }
}

impl TryFrom<w::Unit> for Unit {
    type Error = WireError;

    fn try_from(u: w::Unit) -> Result<Self, WireError> {
        Ok(Unit {
            current_state: job_state_of(u.current_state, "current state")?,
            desired_state: job_state_of(u.desired_state, "desired state")?,
            machine_id: (!u.machine_id.is_empty()).then_some(u.machine_id),
            name: u.name,
            options: u.options.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<UnitState> for w::UnitState {
    fn from(s: UnitState) -> Self {
        w::UnitState {
            name: s.name,
            machine_id: s.machine_id,
            hash: s.hash,
            systemd_load_state: s.systemd_load_state,
            systemd_active_state: s.systemd_active_state,
            systemd_sub_state: s.systemd_sub_state,
        }
    }
}

impl From<w::UnitState> for UnitState {
    fn from(s: w::UnitState) -> Self {
        UnitState {
            hash: s.hash,
            machine_id: s.machine_id,
            name: s.name,
            systemd_active_state: s.systemd_active_state,
            systemd_load_state: s.systemd_load_state,
            systemd_sub_state: s.systemd_sub_state,
        }
    }
}

impl From<Machine> for w::Machine {
    fn from(m: Machine) -> Self {
        w::Machine {
            id: m.id,
            primary_ip: m.primary_ip,
            metadata: m.metadata,
        }
    }
}

impl From<w::Machine> for Machine {
    fn from(m: w::Machine) -> Self {
        Machine {
            id: m.id,
            metadata: m.metadata,
            primary_ip: m.primary_ip,
        }
    }
}

impl From<MachineMetadataOp> for w::MachineMetadataOp {
    fn from(o: MachineMetadataOp) -> Self {
        w::MachineMetadataOp {
            op: o.op,
            path: o.path,
            value: o.value.value,
        }
    }
}

impl From<w::MachineMetadataOp> for MachineMetadataOp {
    fn from(o: w::MachineMetadataOp) -> Self {
        MachineMetadataOp {
            op: o.op,
            path: o.path,
            value: MetadataValue { value: o.value },
        }
    }
}

impl From<UnitEvent> for w::UnitEvent {
    fn from(e: UnitEvent) -> Self {
        w::UnitEvent {
            name: e.name,
            unit: e.unit.map(Into::into),
            states: e.states.into_iter().map(Into::into).collect(),
            index: e.index,
        }
    }
}

impl TryFrom<w::UnitEvent> for UnitEvent {
    type Error = WireError;

    fn try_from(e: w::UnitEvent) -> Result<Self, WireError> {
        Ok(UnitEvent {
            name: e.name,
            unit: e.unit.map(Unit::try_from).transpose()?,
            states: e.states.into_iter().map(Into::into).collect(),
            index: e.index,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn units_round_trip() {
        let u = Unit {
            current_state: None,
            desired_state: Some(JobState::Loaded),
            machine_id: Some("m1".into()),
            name: "web.service".into(),
            options: vec![UnitOption::new("Service", "ExecStart", "/bin/true")],
        };
        let wire = w::Unit::from(u.clone());
        assert_eq!(wire.desired_state, w::JobState::Loaded as i32);
        assert_eq!(wire.current_state, w::JobState::Unspecified as i32);
        assert_eq!(Unit::try_from(wire).unwrap(), u);
        let unscheduled = Unit {
            machine_id: None,
            ..u
        };
        assert_eq!(
            Unit::try_from(w::Unit::from(unscheduled.clone())).unwrap(),
            unscheduled
        );
        let bad = w::Unit {
            desired_state: 7,
            ..w::Unit::default()
        };
        assert_eq!(
            Unit::try_from(bad).unwrap_err().to_string(),
            "unknown desired state 7"
        );
    }

    #[test]
    fn machines_states_and_ops_round_trip() {
        let m = Machine {
            id: "m1".into(),
            metadata: [("zone".to_string(), "a".to_string())].into(),
            primary_ip: "10.0.0.1".into(),
        };
        assert_eq!(Machine::from(w::Machine::from(m.clone())), m);
        let s = UnitState {
            hash: "h".into(),
            machine_id: "m1".into(),
            name: "a.service".into(),
            systemd_active_state: "active".into(),
            systemd_load_state: "loaded".into(),
            systemd_sub_state: "running".into(),
        };
        assert_eq!(UnitState::from(w::UnitState::from(s.clone())), s);
        let op = MachineMetadataOp::set("m1", "zone", "b");
        assert_eq!(
            MachineMetadataOp::from(w::MachineMetadataOp::from(op.clone())),
            op
        );
    }

    #[test]
    fn statuses_follow_the_table() {
        for (status, code) in [
            (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            (StatusCode::NOT_FOUND, tonic::Code::NotFound),
            (StatusCode::CONFLICT, tonic::Code::FailedPrecondition),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                tonic::Code::ResourceExhausted,
            ),
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
            (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
            (StatusCode::METHOD_NOT_ALLOWED, tonic::Code::Internal),
        ] {
            let s = status_of(ApiError::new(status, "why"));
            assert_eq!((s.code(), s.message()), (code, "why"), "{status}");
        }
    }
}
