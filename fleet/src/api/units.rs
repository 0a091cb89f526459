//! `/units` and `/units/<name>` (fleet.md §5.2, §5.4): list, get, create or replace, set the
//! desired state, destroy.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State, rejection::PathRejection, rejection::QueryRejection};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use unit_parser::name::validate_fleet_name;

use super::error::json;
use super::types::{self, UnitOption, UnitPage};
use super::{Api, ApiError, page_token, unaddressable};
use crate::registry::{ContentsError, JobState, Registry, RegistryError, UnitContents};
use crate::store::KvStore;

/// The largest request body read (a unit file is a few kilobytes).
pub(super) const MAX_BODY: usize = 8 << 20;

/// `/units`.
pub(super) async fn collection<S: KvStore>(
    State(api): State<Arc<Api<S>>>,
    method: Method,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if method != Method::GET {
        return ApiError::method_not_allowed("only GET supported against this resource")
            .into_response();
    }
    list(&api, &query)
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// `/units/<name>`.
pub(super) async fn item<S: KvStore>(
    State(api): State<Arc<Api<S>>>,
    method: Method,
    uri: Uri,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A name that is not UTF-8 once decoded cannot be a unit's.
    let Ok(Path(name)) = name else {
        return ApiError::not_found().into_response();
    };
    if let Some(r) = unaddressable(&name, &method, &uri) {
        return r;
    }
    let result = match method {
        Method::GET => get(&api, &name).await,
        Method::DELETE => destroy(&api, &name).await,
        Method::PUT => set(&api, &name, &headers, body).await,
        _ => Err(ApiError::method_not_allowed(
            "only GET, PUT and DELETE supported against this resource",
        )),
    };
    result.unwrap_or_else(|e| e.into_response())
}

async fn list<S: KvStore>(
    api: &Api<S>,
    query: &Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let token = page_token(query, api.limit)?;
    let (units, _) = api.registry.units().await?;
    let (units, next) = token.slice(units);
    let units = with_states(&api.registry, &units).await?;
    let page = UnitPage {
        next_page_token: next.map(|t| t.encode()),
        units,
    };
    Ok(json(StatusCode::OK, &page))
}

async fn get<S: KvStore>(api: &Api<S>, name: &str) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &get_unit(&api.registry, name).await?))
}

/// One unit in the API's form; a 404 `unit does not exist`.
pub(super) async fn get_unit<S: KvStore>(
    registry: &Registry<S>,
    name: &str,
) -> Result<types::Unit, ApiError> {
    one_with_state(registry, name)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unit does not exist"))
}

/// The API's form of `units`, their current states derived from the published states
/// (read once, and only when a unit is scheduled).
pub(crate) async fn with_states<S: KvStore>(
    registry: &Registry<S>,
    units: &[crate::registry::Unit],
) -> Result<Vec<types::Unit>, RegistryError> {
    let on_target: HashSet<(String, String)> = if units.iter().any(|u| u.target.is_some()) {
        let (states, _) = registry.states().await?;
        states.into_iter().map(|s| (s.unit, s.machine_id)).collect()
    } else {
        HashSet::new()
    };
    Ok(units
        .iter()
        .map(|u| {
            let reported = u
                .target
                .as_ref()
                .is_some_and(|t| on_target.contains(&(u.name.clone(), t.clone())));
            types::Unit::of(u, reported)
        })
        .collect())
}

/// One unit in the API's form, if it exists.
pub(crate) async fn one_with_state<S: KvStore>(
    registry: &Registry<S>,
    name: &str,
) -> Result<Option<types::Unit>, RegistryError> {
    let Some(unit) = registry.unit(name).await? else {
        return Ok(None);
    };
    let reported = match &unit.target {
        Some(t) => registry
            .unit_states(name)
            .await?
            .iter()
            .any(|s| &s.machine_id == t),
        None => false,
    };
    Ok(Some(types::Unit::of(&unit, reported)))
}

async fn destroy<S: KvStore>(api: &Api<S>, name: &str) -> Result<Response, ApiError> {
    destroy_unit(&api.registry, name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Destroys a unit; a 404 `unit does not exist`.
pub(super) async fn destroy_unit<S: KvStore>(
    registry: &Registry<S>,
    name: &str,
) -> Result<(), ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "unit does not exist");
    // fleet destroys only units that exist (a job directory without an object is not one).
    if registry.unit(name).await?.is_none() {
        return Err(not_found());
    }
    if !registry.destroy_unit(name).await? {
        return Err(not_found());
    }
    tracing::info!(unit = name, "unit destroyed");
    Ok(())
}

/// `PUT /units/<name>`: fleet's decision procedure (§5.4), validating on replace too.
async fn set<S: KvStore>(
    api: &Api<S>,
    item: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_content_type(headers)?;
    let body = read_body(body).await?;
    let mut su = decode_unit(&body)?;
    if su.name.is_empty() {
        su.name = item.to_owned();
    }
    if su.name != item {
        return Err(ApiError::bad_request(format!(
            "name in URL {} differs from unit name in request body {}",
            go_quote(item),
            go_quote(&su.name)
        )));
    }
    Ok(match set_unit(&api.registry, su).await? {
        SetOutcome::Stored => StatusCode::CREATED,
        SetOutcome::DesiredStateSet => StatusCode::NO_CONTENT,
    }
    .into_response())
}

/// What [`set_unit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SetOutcome {
    /// The unit was created, or its options replaced (HTTP's 201).
    Stored,
    /// Only its desired state was set (HTTP's 204).
    DesiredStateSet,
}

/// fleet's decision procedure (§5.4) for a unit named `su.name`, validating its name, and
/// its options on create and replace.
pub(super) async fn set_unit<S: KvStore>(
    registry: &Registry<S>,
    su: types::Unit,
) -> Result<SetOutcome, ApiError> {
    validate_fleet_name(&su.name).map_err(|e| ApiError::bad_request(e.to_string()))?;

    let existing = registry.unit(&su.name).await?;
    let contents = if su.options.is_empty() {
        None
    } else {
        Some(contents_of(&su.options)?)
    };
    let replace = match (&existing, &contents) {
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "unit does not exist and options field empty",
            ));
        }
        (None, Some(_)) => true,
        (Some(eu), Some(c)) => eu.contents.hash() != c.hash(),
        (Some(_), None) => false,
    };
    if let (true, Some(contents)) = (replace, contents) {
        unit_parser::xfleet::validate(contents.file())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let desired = su.desired_state.unwrap_or(JobState::Inactive);
        check_template(&su.name, desired)?;
        registry.put_unit(&su.name, contents, desired).await?;
        tracing::info!(
            unit = %su.name,
            desired = %desired,
            replaced = existing.is_some(),
            "unit stored"
        );
        return Ok(SetOutcome::Stored);
    }

    let Some(desired) = su.desired_state else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "must provide DesiredState to update existing unit",
        ));
    };
    check_template(&su.name, desired)?;
    registry.set_desired(&su.name, desired).await?;
    tracing::info!(unit = %su.name, desired = %desired, "desired state set");
    Ok(SetOutcome::DesiredStateSet)
}

/// Exactly one `Content-Type`, of media type `application/json` (parameters allowed).
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let values: Vec<_> = headers.get_all(header::CONTENT_TYPE).iter().collect();
    let unsupported = |m: String| ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m);
    let [value] = values.as_slice() else {
        return Err(unsupported(format!(
            "expected 1 Content-Type, got {}",
            values.len()
        )));
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if media != "application/json" {
        return Err(unsupported(
            "only acceptable Content-Type is application/json".into(),
        ));
    }
    Ok(())
}

/// The request body, up to [`MAX_BODY`].
pub(super) async fn read_body(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("unable to read body: {e}"),
        )
    })
}

/// The body's first JSON value as a unit (anything after it is ignored, as Go's decoder
/// ignores it).
fn decode_unit(body: &[u8]) -> Result<types::Unit, ApiError> {
    let decode_error =
        |e: serde_json::Error| ApiError::bad_request(format!("unable to decode body: {e}"));
    serde_json::Deserializer::from_slice(body)
        .into_iter::<types::Unit>()
        .next()
        .unwrap_or_else(|| Err(serde::de::Error::custom("EOF")))
        .map_err(decode_error)
}

/// The contents the options make, as they will be read back: what is stored is their
/// text, which go-systemd (so every fleet agent, and the registry) reads with values
/// trimmed and continued lines joined. Text go-systemd cannot read is refused with its
/// message, as fleet refused it on create (a value with a newline, an over-long line);
/// options systemd's parser refuses get a 400 with the parser's message.
fn contents_of(options: &[UnitOption]) -> Result<UnitContents, ApiError> {
    let given = UnitContents::from_options(options.iter().map(UnitOption::to_go).collect())
        .map_err(|e| ApiError::bad_request(format!("invalid unit options: {e}")))?;
    UnitContents::from_text(given.raw()).map_err(|e| match e {
        ContentsError::Fleet(e) => ApiError::bad_request(e.to_string()),
        e => ApiError::bad_request(format!("invalid unit options: {e}")),
    })
}

/// A template (`foo@.service`) cannot be loaded or launched.
fn check_template(name: &str, desired: JobState) -> Result<(), ApiError> {
    if is_template(name) && desired != JobState::Inactive {
        return Err(ApiError::bad_request(format!(
            "cannot activate template {}",
            go_quote(name)
        )));
    }
    Ok(())
}

/// fleet's `UnitNameInfo.IsTemplate`: the instance between the first `@` and the last `.`
/// is empty.
fn is_template(name: &str) -> bool {
    match (name.find('@'), name.rfind('.')) {
        (Some(at), Some(dot)) => at + 1 == dot,
        _ => false,
    }
}

/// Go's `%q` of a string, as fleet's messages quote names.
fn go_quote(s: &str) -> String {
    unit_parser::name::go_quote_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    // fleet's content-type validation table.
    #[test]
    fn content_type_is_fleets() {
        let check = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_TYPE, v.parse().unwrap());
            }
            check_content_type(&h).map_err(|e| (e.status, e.message))
        };
        assert!(check(&["application/json"]).is_ok());
        assert!(check(&["application/json; charset=utf-8"]).is_ok());
        assert_eq!(
            check(&["application/xml"]),
            Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "only acceptable Content-Type is application/json".into()
            ))
        );
        assert_eq!(
            check(&["application/json", "application/json"]),
            Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected 1 Content-Type, got 2".into()
            ))
        );
        assert!(check(&["application/json", "application/xml"]).is_err());
        assert_eq!(
            check(&[]),
            Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected 1 Content-Type, got 0".into()
            ))
        );
    }

    // fleet's TestNamedUnit (templates).
    #[test]
    fn templates_are_fleets() {
        assert!(is_template("foo@.service"));
        assert!(!is_template("foo@bar.service"));
        assert!(!is_template("foo@bar@.service"));
        assert!(!is_template("foo.service"));
        assert!(is_template("foo.1@.service"));
    }

    #[test]
    fn bodies_decode_as_gos() {
        let u = decode_unit(br#"{"desiredState":"launched"} trailing"#).unwrap();
        assert_eq!(u.desired_state, Some(JobState::Launched));
        let u = decode_unit(br#"{"name":null,"options":null,"desiredState":""}"#).unwrap();
        assert_eq!(u, types::Unit::default());
        let e = decode_unit(b"").unwrap_err();
        assert!(e.message.starts_with("unable to decode body: "), "{e:?}");
        let e = decode_unit(br#"{"desiredState":"running"}"#).unwrap_err();
        assert!(
            e.message.contains(r#"unknown desired state "running""#),
            "{e:?}"
        );
    }
}
