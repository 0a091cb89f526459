//! fleet's `/fleet/v1` HTTP API (fleet.md §5): the server over a [`Registry`], its JSON
//! shapes ([`types`]) and its page tokens ([`pagination`]).
//!
//! [`router`] answers what fleet 1.0's API answers, so fleet's own `fleetctl --endpoint`
//! works against it unchanged: every resource under `/fleet/v1` and the legacy
//! `/v1-alpha` (§5.1, §5.2), fleet's JSON byte for byte (§5.3), `PUT /units/<name>` by
//! fleet's decision procedure (§5.4), fleet's page tokens (§5.5), machine metadata
//! `PATCH` (§5.6), a discovery document (§5.7), fleet's error bodies and default handlers,
//! and `Server: fleetd/<version>` on every response. [`serve_tcp`] and [`serve_unix`]
//! serve it until a shutdown future completes. `tests/api.rs` replays fleet 1.0's
//! recorded answers (`testdata/oracle/api`) against it. [`router_with_grpc`] also answers
//! gRPC calls on the same listeners: `fleet.v1` ([`grpc`]), the same resources by the same
//! rules, as fleetd serves them.
//!
//! Where fleet had gaps, this server is stricter, on purpose:
//! * unit options are validated on every create **and** replace (fleet skipped replace),
//!   options whose text go-systemd or systemd's parser cannot read are refused (400, the
//!   parser's message), and a unit is stored as its text reads back (values trimmed), so
//!   what the API compares is what agents run;
//! * an unknown `desiredState` is a 400 (fleet answered 500 on create and stored it on
//!   update, after which the unit could no longer be read);
//! * a template cannot be created with an active desired state either (fleet refused it
//!   only on update);
//! * `GET /state/<name>` of a unit without states is a 404 `unit state does not exist`
//!   (fleet's handler crashed), and prefers the state of the unit's own machine;
//! * a global unit has no `currentState` in `GET /units` either (fleet listed it as
//!   `inactive` there, and left it out of `GET /units/<name>`);
//! * `PATCH /machines` also takes the plain-string value fleet's documentation shows;
//! * page offsets do not wrap around at 16 bits;
//! * a store that cannot be reached is a 503 naming it; other registry failures are 500s
//!   saying what failed (fleet's were empty);
//! * a body that is not JSON gets a 400 with serde's description, not Go's;
//! * names that would address another key (`.`, `..`, anything with `/`) are never looked
//!   up (fleet's `ServeMux` redirected or refused them too, by its path rules).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use fleet::api::{self, ApiConfig};
//! use fleet::registry::Registry;
//! use fleet::store::etcd::EtcdStore;
//!
//! let registry = Arc::new(Registry::new(EtcdStore::new(&["http://127.0.0.1:2379".into()])?));
//! let router = api::router(registry, ApiConfig::default());
//! let listener = api::bind_unix("/var/run/fleet.sock".as_ref())?;
//! api::serve_unix(listener, router, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod discovery;
mod error;
pub mod grpc;
mod machines;
pub mod pagination;
mod state;
pub mod types;
pub(crate) mod units;

use std::future::Future;
use std::io;
use std::num::NonZeroU16;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, rejection::QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tokio::net::{TcpListener, UnixListener};

pub use error::{ApiError, UNAVAILABLE};

use crate::registry::Registry;
use crate::store::KvStore;
use pagination::PageToken;

/// The prefixes every resource is served under: fleet's and its legacy one.
pub const PREFIXES: [&str; 2] = ["/fleet/v1", "/v1-alpha"];

/// How the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Items per page of a listing (fleetd's `token_limit`, 100 by default).
    pub token_limit: NonZeroU16,
    /// The version in the `Server: fleetd/<version>` header.
    pub version: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token_limit: NonZeroU16::new(100).expect("100 is not zero"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
struct Api<S> {
    registry: Arc<Registry<S>>,
    limit: u16,
}

/// The API's handlers under both prefixes, fleet's default handlers, and the `Server`
/// header.
pub fn router<S: KvStore>(registry: Arc<Registry<S>>, config: ApiConfig) -> Router {
    router_with(registry, config, Router::new())
}

/// [`router`] with `extra` routes (`/metrics`, say) merged in before fleet's default
/// handlers and the `Server` header are added, so they get both. `extra` must not have a
/// fallback of its own.
pub fn router_with<S: KvStore>(
    registry: Arc<Registry<S>>,
    config: ApiConfig,
    extra: Router,
) -> Router {
    let api = Arc::new(Api {
        registry,
        limit: config.token_limit.get(),
    });
    let mut routes = Router::new();
    for p in PREFIXES {
        routes = routes
            .route(&format!("{p}/discovery"), any(discovery::handle))
            .route(&format!("{p}/units"), any(units::collection::<S>))
            .route(&format!("{p}/units/{{name}}"), any(units::item::<S>))
            .route(&format!("{p}/state"), any(state::collection::<S>))
            .route(&format!("{p}/state/{{name}}"), any(state::item::<S>))
            .route(&format!("{p}/machines"), any(machines::collection::<S>))
            .route(p, any(method_not_allowed));
    }
    let server = HeaderValue::from_str(&format!("fleetd/{}", config.version))
        .unwrap_or_else(|_| HeaderValue::from_static("fleetd"));
    routes
        .route("/", any(method_not_allowed))
        .with_state(api)
        .merge(extra)
        .fallback(not_found)
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let server = server.clone();
            async move {
                r.headers_mut().insert(header::SERVER, server);
                r
            }
        }))
}

/// [`router_with`], also answering `fleet.v1` gRPC calls ([`grpc`]), told apart by their
/// `content-type: application/grpc` as kvd tells its gRPC and HTTP APIs apart: fleet's
/// HTTP API and its gRPC API on the same listeners.
pub fn router_with_grpc<S: KvStore>(
    registry: Arc<Registry<S>>,
    config: ApiConfig,
    extra: Router,
) -> Router {
    let grpc = grpc::server(registry.clone());
    grpc::route(router_with(registry, config, extra), grpc)
}

/// fleet's answer to `/` and to a bare prefix.
async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed("")
}

/// fleet's answer to any other path: Go's `ServeMux` redirects a path that is not clean
/// (`//`, `.` or `..` segments) to its clean form, and fleet answers 404 to the rest.
async fn not_found(method: Method, uri: Uri) -> Response {
    redirect_unclean(&method, &uri).unwrap_or_else(|| ApiError::not_found().into_response())
}

/// A 301 to the clean form of the request's (decoded) path, as Go's `ServeMux` answers;
/// `None` when the path is clean.
fn redirect_unclean(method: &Method, uri: &Uri) -> Option<Response> {
    let path = percent_decode_str(uri.path()).decode_utf8_lossy();
    let clean = go_clean_path(&path);
    if clean == path {
        return None;
    }
    let mut location = utf8_percent_encode(&clean, PATH).to_string();
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
    let headers = r.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/")),
    );
    // Go's http.Redirect: an HTML body for GET, its content type for GET and HEAD.
    if method == Method::GET || method == Method::HEAD {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
    }
    if method == Method::GET {
        *r.body_mut() = format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&location)
        )
        .into();
    }
    Some(r)
}

/// Go's `ServeMux` `cleanPath`: rooted, `.`, `..` and empty segments resolved, a trailing
/// slash kept.
fn go_clean_path(p: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    for segment in p.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => stack.push(s),
        }
    }
    let mut clean = format!("/{}", stack.join("/"));
    if p.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// What Go escapes in a URL path (besides non-ASCII bytes).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Go's `html.EscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

/// The page a listing request asks for.
fn page_token(
    query: &Result<Query<Vec<(String, String)>>, QueryRejection>,
    limit: u16,
) -> Result<PageToken, ApiError> {
    let pairs = query
        .as_ref()
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    PageToken::from_query(query_values(&pairs.0, "nextPageToken"), limit)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The values of one query parameter, in order.
fn query_values<'a>(pairs: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
    pairs
        .iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// What an item path whose name cannot be a registry key component gets: Go's redirect
/// for a dot segment (which the store's URLs would resolve to another key), a 404 for a
/// name with a `/`. `None` for a name that can be looked up.
fn unaddressable(name: &str, method: &Method, uri: &Uri) -> Option<Response> {
    if name == "." || name == ".." {
        return Some(
            redirect_unclean(method, uri).unwrap_or_else(|| ApiError::not_found().into_response()),
        );
    }
    (!addressable(name)).then(|| ApiError::not_found().into_response())
}

/// Whether `name` can be a registry key component: not empty, `.` or `..`, and without a
/// `/` (such a name would address another key).
fn addressable(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains('/'))
}

/// Serves `router` on a TCP listener until `shutdown` completes (then finishes the
/// requests in flight).
///
/// # Errors
/// When accepting fails fatally.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds a unix socket at `path` for the API: a stale socket file left by a previous run
/// is removed (a socket something still listens on is not: that is `AddrInUse`), and the
/// socket is made readable and writable by its owner and group only (mode 0660), as
/// fleet's documentation recommends for `/var/run/fleet.sock`: the API has no
/// authentication, so access to the socket is access to the cluster. Call it inside a
/// tokio runtime (the listener registers with it).
///
/// # Errors
/// When the path is taken by a live socket or another file, or binding fails.
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by a running process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves `router` on a unix socket until `shutdown` completes (then finishes the
/// requests in flight).
///
/// # Errors
/// When accepting fails fatally.
pub async fn serve_unix(
    listener: UnixListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's ServeMux cleanPath, as fleet's routing applies it.
    #[test]
    fn paths_are_cleaned_as_gos_servemux() {
        for (path, clean) in [
            ("/", "/"),
            ("/fleet/v1/units", "/fleet/v1/units"),
            ("/fleet/v1//units", "/fleet/v1/units"),
            ("/fleet/v1/units/", "/fleet/v1/units/"),
            ("/fleet/v1/units/..", "/fleet/v1"),
            ("/fleet/v1/units/.", "/fleet/v1/units"),
            ("/fleet/v1/./units/../state/", "/fleet/v1/state/"),
            ("/../..", "/"),
            ("//", "/"),
        ] {
            assert_eq!(go_clean_path(path), clean, "{path}");
        }
        assert_eq!(html_escape(r#"/a?b=<'&">"#), "/a?b=&lt;&#39;&amp;&#34;&gt;");
    }
}
