//! `/discovery` (fleet.md §5.7): a Google API discovery document describing this API, in
//! the structure of fleet's `schema/v1.json` (resources, methods, schemas), with the
//! machine metadata `PATCH` described too. Like fleet's, its URLs carry the `$ENDPOINT`
//! placeholder for clients to substitute.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The document, served as it is.
pub(super) const DOCUMENT: &str = include_str!("discovery.json");

/// `GET /discovery`; fleet answers any other method with a 400.
pub(super) async fn handle(method: Method) -> Response {
    if method != Method::GET {
        return ApiError::bad_request("only HTTP GET supported against this resource")
            .into_response();
    }
    let mut r = (StatusCode::OK, DOCUMENT).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value;

    /// Every method's path is one the router serves, every `$ref` names a schema, and the
    /// schemas have the JSON names of `api::types`.
    #[test]
    fn document_describes_the_api() {
        let doc: Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(doc["kind"], "discovery#restDescription");
        assert_eq!(doc["id"], "fleet:v1");
        assert_eq!(doc["basePath"], "/fleet/v1/");
        let schemas = doc["schemas"].as_object().unwrap();
        let mut methods = Vec::new();
        for (resource, r) in doc["resources"].as_object().unwrap() {
            for (name, m) in r["methods"].as_object().unwrap() {
                for key in ["request", "response"] {
                    if let Some(r) = m.get(key) {
                        let target = r["$ref"].as_str().unwrap();
                        assert!(schemas.contains_key(target), "{resource}.{name}: {target}");
                    }
                }
                methods.push(format!(
                    "{} {}",
                    m["httpMethod"].as_str().unwrap(),
                    m["path"].as_str().unwrap()
                ));
            }
        }
        methods.sort();
        assert_eq!(
            methods,
            [
                "DELETE units/{unitName}",
                "GET machines",
                "GET state",
                "GET state/{unitName}",
                "GET units",
                "GET units/{unitName}",
                "PATCH machines",
                "PUT units/{unitName}",
            ]
        );
        let props = |s: &str| {
            let mut p: Vec<String> = schemas[s]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            p.sort();
            p
        };
        let unit = serde_json::to_value(crate::api::types::Unit {
            current_state: Some(crate::registry::JobState::Loaded),
            desired_state: Some(crate::registry::JobState::Loaded),
            machine_id: Some("m".into()),
            name: "a.service".into(),
            options: vec![crate::api::types::UnitOption::new("a", "b", "c")],
        })
        .unwrap();
        let keys = |v: &Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(props("Unit"), keys(&unit));
        assert_eq!(props("UnitOption"), keys(&unit["options"][0]));
        let state = crate::api::types::UnitState {
            hash: "h".into(),
            machine_id: "m".into(),
            name: "n".into(),
            systemd_active_state: "a".into(),
            systemd_load_state: "l".into(),
            systemd_sub_state: "s".into(),
        };
        assert_eq!(
            props("UnitState"),
            keys(&serde_json::to_value(state).unwrap())
        );
        let machine = crate::api::types::Machine {
            id: "m".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
            primary_ip: "1.2.3.4".into(),
        };
        assert_eq!(
            props("Machine"),
            keys(&serde_json::to_value(machine).unwrap())
        );
        assert_eq!(props("MachineMetadataOp"), ["op", "path", "value"]);
        for page in ["UnitPage", "UnitStatePage", "MachinePage"] {
            assert!(props(page).contains(&"nextPageToken".to_string()), "{page}");
        }
    }
}
