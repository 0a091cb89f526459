//! `/state` and `/state/<name>` (fleet.md §5.2): the unit states agents publish.

use std::sync::Arc;

use axum::extract::{Path, Query, State, rejection::PathRejection, rejection::QueryRejection};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::error::json;
use super::types::{UnitState, UnitStatePage};
use super::{Api, ApiError, page_token, query_values, unaddressable};
use crate::registry::{PublishedState, Registry};
use crate::store::KvStore;

const ONLY_GET: &str = "only GET supported against this resource";

/// `/state[?unitName=U][&machineID=M][&nextPageToken=T]`: filters are exact matches on the
/// first value of each parameter (an empty one does not filter) and apply before paging.
pub(super) async fn collection<S: KvStore>(
    State(api): State<Arc<Api<S>>>,
    method: Method,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed(ONLY_GET).into_response();
    }
    list(&api, &query)
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// `/state/<name>`.
pub(super) async fn item<S: KvStore>(
    State(api): State<Arc<Api<S>>>,
    method: Method,
    uri: Uri,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    // A name that is not UTF-8 once decoded cannot be a unit's.
    let Ok(Path(name)) = name else {
        return ApiError::not_found().into_response();
    };
    if let Some(r) = unaddressable(&name, &method, &uri) {
        return r;
    }
    if method != Method::GET {
        return ApiError::method_not_allowed(ONLY_GET).into_response();
    }
    get(&api, &name).await.unwrap_or_else(|e| e.into_response())
}

async fn list<S: KvStore>(
    api: &Api<S>,
    query: &Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let token = page_token(query, api.limit)?;
    let first = |key| {
        query
            .as_ref()
            .ok()
            .and_then(|q| query_values(&q.0, key).next())
            .unwrap_or_default()
            .to_owned()
    };
    let states = filtered(&api.registry, &first("unitName"), &first("machineID")).await?;
    let (states, next) = token.slice(states);
    let page = UnitStatePage {
        next_page_token: next.map(|t| t.encode()),
        states: states.iter().map(UnitState::of).collect(),
    };
    Ok(json(StatusCode::OK, &page))
}

/// Every published state of unit `unit` on machine `machine`, by unit then machine (an
/// empty filter does not filter).
pub(super) async fn filtered<S: KvStore>(
    registry: &Registry<S>,
    unit: &str,
    machine: &str,
) -> Result<Vec<PublishedState>, ApiError> {
    let (states, _) = registry.states().await?;
    Ok(states
        .into_iter()
        .filter(|s| machine.is_empty() || s.machine_id == machine)
        .filter(|s| unit.is_empty() || s.unit == unit)
        .collect())
}

async fn get<S: KvStore>(api: &Api<S>, name: &str) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &one(&api.registry, name).await?))
}

/// One state of the unit: the one its machine published when it is scheduled and that
/// machine did, else the first by machine ID (fleet took whichever it found first); a 404
/// `unit state does not exist`.
pub(super) async fn one<S: KvStore>(
    registry: &Registry<S>,
    name: &str,
) -> Result<UnitState, ApiError> {
    let states = registry.unit_states(name).await?;
    if states.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unit state does not exist",
        ));
    }
    let target = match states.len() {
        1 => None,
        _ => registry.unit(name).await?.and_then(|u| u.target),
    };
    let chosen = target
        .and_then(|t| states.iter().find(|s| s.machine_id == t))
        .unwrap_or(&states[0]);
    Ok(UnitState::of(chosen))
}
