//! The API's responses: JSON bodies written as fleet's Go encoder writes them, and errors
//! as fleet's `{"error":{"code":N,"message":"..."}}` (fleet.md §5.3).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::registry::RegistryError;
use crate::store::StoreError;

use super::types::{ErrorBody, ErrorDetail};

/// The message of a 503, as fleet words it, when the store cannot be reached.
pub const UNAVAILABLE: &str = "fleet server unable to communicate with etcd";

/// A refused or failed request: its status and fleet's message (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message of the error body.
    pub message: String,
}

impl ApiError {
    /// An error with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 404 with fleet's empty message (unknown paths).
    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "")
    }

    /// A 405 with `message` (empty for fleet's default handlers).
    pub fn method_not_allowed(message: &str) -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message)
    }
}

impl From<RegistryError> for ApiError {
    /// An unreachable or leaderless store is a 503 naming the store; anything else the
    /// registry cannot do is a 500 saying what (fleet sent 500s with empty messages).
    fn from(e: RegistryError) -> ApiError {
        match &e {
            RegistryError::Store(s @ StoreError::Unavailable { .. }) => {
                tracing::warn!(error = %s, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{UNAVAILABLE} ({s})"),
                )
            }
            RegistryError::Store(s) if s.is_transient() => {
                tracing::warn!(error = %s, "store busy");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{UNAVAILABLE} ({s})"),
                )
            }
            _ => {
                tracing::error!(error = %e, "registry operation failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("registry error: {e}"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.status.as_u16(),
                message: self.message,
            },
        };
        json(self.status, &body)
    }
}

/// A JSON response, encoded byte for byte as Go's `json.Marshal` would (HTML-sensitive
/// characters and the JavaScript line separators escaped), with fleet's content type.
pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = match serde_json::to_string(value) {
        Ok(s) => go_escape(&s),
        Err(e) => {
            // Our own types always serialise; say so rather than panic if one does not.
            tracing::error!(error = %e, "encoding a response failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
        }
    };
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Escapes `<`, `>`, `&`, U+2028 and U+2029 as Go's encoder does. In JSON text those
/// characters only occur inside strings, where `\uXXXX` means the same.
fn go_escape(json: &str) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // fleet's TestSendError.
    #[tokio::test]
    async fn error_json_is_fleets() {
        let r = ApiError::bad_request("sentinel").into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"error":{"code":400,"message":"sentinel"}}"#);
    }

    #[test]
    fn go_escapes_html_characters() {
        assert_eq!(
            go_escape(r#"{"value":"a && b <c> \u2028"}"#),
            r#"{"value":"a \u0026\u0026 b \u003cc\u003e \u2028"}"#
        );
        assert_eq!(go_escape("x\u{2028}y"), "x\\u2028y");
        let back: String = serde_json::from_str(&go_escape("\"<&>\u{2029}\"")).unwrap();
        assert_eq!(back, "<&>\u{2029}");
    }

    #[test]
    fn unavailable_store_is_503_naming_it() {
        let e: ApiError = RegistryError::Store(StoreError::Unavailable {
            endpoint: "http://10.0.0.1:2379".into(),
            detail: "connection refused".into(),
        })
        .into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.message.starts_with(UNAVAILABLE), "{}", e.message);
        assert!(e.message.contains("http://10.0.0.1:2379"), "{}", e.message);
    }
}
