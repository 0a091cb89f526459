//! `/machines` (fleet.md §5.2, §5.6): the present machines, and their dynamic metadata.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::json;
use super::types::{Machine, MachineMetadataOp, MachinePage};
use super::units::read_body;
use super::{Api, ApiError, page_token};
use crate::registry::Registry;
use crate::store::KvStore;

/// `/machines`: `GET` a page, `PATCH` metadata.
pub(super) async fn collection<S: KvStore>(
    State(api): State<Arc<Api<S>>>,
    method: Method,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Response {
    let result = match method {
        Method::GET => list(&api, &query).await,
        Method::PATCH => patch(&api, body).await,
        _ => Err(ApiError::method_not_allowed(
            "only GET and PATCH supported against this resource",
        )),
    };
    result.unwrap_or_else(|e| e.into_response())
}

async fn list<S: KvStore>(
    api: &Api<S>,
    query: &Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let token = page_token(query, api.limit)?;
    let (machines, _) = api.registry.machines().await?;
    let (machines, next) = token.slice(machines);
    let page = MachinePage {
        machines: machines.iter().map(Machine::of).collect(),
        next_page_token: next.map(|t| t.encode()),
    };
    Ok(json(StatusCode::OK, &page))
}

async fn patch<S: KvStore>(api: &Api<S>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body).await?;
    let ops = serde_json::Deserializer::from_slice(&body)
        .into_iter::<Vec<MachineMetadataOp>>()
        .next()
        .unwrap_or_else(|| Err(serde::de::Error::custom("EOF")))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    apply_metadata(&api.registry, &ops).await?;
    // fleet "sends" a JSON null, which a 204 cannot carry, so only its content type shows.
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Every operation is checked before any is applied; then they are applied in order.
/// `remove` writes fleet's empty-string tombstone, which also masks configured metadata.
pub(super) async fn apply_metadata<S: KvStore>(
    registry: &Registry<S>,
    ops: &[MachineMetadataOp],
) -> Result<(), ApiError> {
    let mut writes = Vec::with_capacity(ops.len());
    for op in ops {
        let remove = match op.op.as_str() {
            "remove" => true,
            "add" | "replace" => false,
            _ => {
                return Err(ApiError::bad_request(
                    "invalid op: expect add, remove, or replace",
                ));
            }
        };
        let Some((machine, key)) = metadata_path(&op.path) else {
            return Err(ApiError::bad_request("machine metadata path invalid"));
        };
        if !remove && op.value.value.is_empty() {
            return Err(ApiError::bad_request(
                "invalid value: add and replace require a value",
            ));
        }
        let value = if remove { "" } else { op.value.value.as_str() };
        writes.push((machine, key, value));
    }
    for (machine, key, value) in writes {
        registry.set_metadata(machine, key, value).await?;
        tracing::info!(machine, key, value, "machine metadata set");
    }
    Ok(())
}

/// fleet's `^/([^/]+)/metadata/([A-Za-z0-9_.-]+$)`: the machine and the key. A machine
/// `.` or `..` is refused too: it would address a key outside the machine's directory.
fn metadata_path(path: &str) -> Option<(&str, &str)> {
    let (machine, rest) = path.strip_prefix('/')?.split_once('/')?;
    let key = rest.strip_prefix("metadata/")?;
    let key_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let machine_ok = !machine.is_empty() && machine != "." && machine != "..";
    (key_ok && machine_ok).then_some((machine, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_paths_are_fleets() {
        assert_eq!(metadata_path("/XXX/metadata/ping"), Some(("XXX", "ping")));
        assert_eq!(
            metadata_path("/m1/metadata/a_b.c-D9"),
            Some(("m1", "a_b.c-D9"))
        );
        for bad in [
            "",
            "/",
            "XXX/metadata/ping",
            "//metadata/ping",
            "/XXX/metadata/",
            "/XXX/metadata/pi/ng",
            "/XXX/metadata/pi ng",
            "/XXX/metadat/ping",
            "/XXX/YYY/metadata/ping",
            "/../metadata/ping",
            "/./metadata/ping",
        ] {
            assert_eq!(metadata_path(bad), None, "{bad:?}");
        }
    }
}
