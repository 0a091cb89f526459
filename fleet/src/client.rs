//! A typed client of fleet's `/fleet/v1` API (fleet.md §5), over TCP (`http`, `https`) or
//! a unix socket (`unix:///var/run/fleet.sock`, fleetctl's default `--endpoint`), speaking
//! to this crate's [`api`](crate::api) or to fleet 1.0's own fleetd alike; and
//! [`grpc::GrpcClient`], the same calls over fleetd's gRPC API (`fleet.v1`), plus its
//! stream of unit changes.
//!
//! Listings follow `nextPageToken`s to the end; answers are [`api::types`](crate::api::types)
//! values; a refusal is a [`ClientError::Api`] with the status and fleet's message.
//!
//! ```no_run
//! # async fn demo() -> Result<(), fleet::client::ClientError> {
//! use fleet::client::Client;
//! use fleet::registry::JobState;
//!
//! let client = Client::new("unix:///var/run/fleet.sock")?;
//! for unit in client.units().await? {
//!     println!("{} {:?}", unit.name, unit.current_state);
//! }
//! client.set_desired("web@1.service", JobState::Launched).await?;
//! # Ok(())
//! # }
//! ```

pub mod grpc;

use std::path::PathBuf;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::types::{
    ErrorBody, Machine, MachineMetadataOp, MachinePage, Unit, UnitPage, UnitState, UnitStatePage,
};
use crate::registry::JobState;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint cannot be used; `reason` is worded as fleetctl words it (`URL scheme
    /// undefined`, `unable to connect to host "var" with scheme "unix"`).
    #[error("{reason}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API could not be reached, or the exchange broke off.
    #[error("fleet API at {endpoint} unreachable: {detail}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
    /// The API refused the request.
    #[error("fleet API at {endpoint} answered {status}: {message}")]
    Api {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// fleet's message (from its error body, else the body's text; may be empty).
        message: String,
    },
    /// The API answered something that is not fleet's JSON (or, over gRPC, not a
    /// `fleet.v1` message this client can read).
    #[error("fleet API at {endpoint} answered unexpectedly: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// The gRPC API ([`grpc::GrpcClient`]) refused the request; the codes are the HTTP
    /// statuses' ([`crate::api::grpc`] has the table).
    #[error("fleet gRPC API at {endpoint} answered {code:?}: {message}")]
    Grpc {
        /// The endpoint.
        endpoint: String,
        /// The status code.
        code: tonic::Code,
        /// fleet's message (the HTTP API's for the same refusal).
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The gRPC status code of a refusal over gRPC.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Grpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// fleet's message of a refusal.
    pub fn message(&self) -> Option<&str> {
        match self {
            ClientError::Api { message, .. } | ClientError::Grpc { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Whether the API answered 404 (`NOT_FOUND` over gRPC).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) || self.code() == Some(tonic::Code::NotFound)
    }
}

/// The result of a client call.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Over TCP: the URL under which `/fleet/v1` is served (`http://10.0.0.1:8080`).
    Http(Url),
    /// A unix socket's path.
    Unix(PathBuf),
}

impl Endpoint {
    /// Reads an endpoint as fleetctl's `--endpoint` does: the first of comma-separated
    /// URLs; `unix://` and `file://` name a socket by their path (a host part is refused);
    /// `http` and `https` URLs may carry a path prefix.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`].
    pub fn parse(endpoint: &str) -> Result<Endpoint> {
        let first = endpoint.split(',').next().unwrap_or_default();
        let refuse = |reason: String| ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        if !has_scheme(first) {
            return Err(refuse("URL scheme undefined".into()));
        }
        let url =
            Url::parse(first).map_err(|e| refuse(format!("invalid endpoint {first:?}: {e}")))?;
        match url.scheme() {
            "http" | "https" => Ok(Endpoint::Http(url)),
            scheme @ ("unix" | "file") => {
                let host = url.host_str().unwrap_or_default();
                if !host.is_empty() {
                    return Err(refuse(format!(
                        "unable to connect to host {} with scheme {}",
                        go_quote(host),
                        go_quote(scheme)
                    )));
                }
                let path = percent_encoding::percent_decode_str(url.path())
                    .decode_utf8_lossy()
                    .into_owned();
                if path.is_empty() {
                    return Err(refuse(format!("no socket path in {first:?}")));
                }
                Ok(Endpoint::Unix(PathBuf::from(path)))
            }
            scheme => Err(refuse(format!(
                "unsupported protocol scheme {}",
                go_quote(scheme)
            ))),
        }
    }
}

/// A client of one fleet API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `.../fleet/v1/`.
    base: Url,
    /// The endpoint as given, for messages.
    endpoint: String,
}

impl Client {
    /// A client of the API at `endpoint` (see [`Endpoint::parse`]).
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] when the endpoint cannot be used.
    pub fn new(endpoint: &str) -> Result<Client> {
        Client::with_builder(endpoint, reqwest::Client::builder())
    }

    /// A client of the API at `endpoint`, with HTTP settings (TLS roots and identity,
    /// timeouts) from `builder`.
    ///
    /// # Errors
    /// [`ClientError::Endpoint`] when the endpoint or the settings cannot be used.
    pub fn with_builder(endpoint: &str, builder: reqwest::ClientBuilder) -> Result<Client> {
        let (builder, mut base) = match Endpoint::parse(endpoint)? {
            Endpoint::Http(url) => (builder, url),
            Endpoint::Unix(path) => (
                builder.unix_socket(path),
                // The host is never dialled; fleetctl names it so in its logs.
                Url::parse("http://domain-sock/").expect("a valid URL"),
            ),
        };
        base.set_query(None);
        base.set_fragment(None);
        base.path_segments_mut()
            .map_err(|()| ClientError::Endpoint {
                endpoint: endpoint.to_owned(),
                reason: "endpoint URL cannot have a path".into(),
            })?
            .pop_if_empty()
            .extend(["fleet", "v1", ""]);
        let http = builder.build().map_err(|e| ClientError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason: format!("unable to build an HTTP client: {e}"),
        })?;
        Ok(Client {
            http,
            base,
            endpoint: endpoint.to_owned(),
        })
    }

    /// The endpoint as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every unit, by name.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn units(&self) -> Result<Vec<Unit>> {
        self.list(&["units"], &[], |p: UnitPage| (p.units, p.next_page_token))
            .await
    }

    /// One unit; `None` when it does not exist.
    ///
    /// # Errors
    /// Any [`ClientError`] but a 404.
    pub async fn unit(&self, name: &str) -> Result<Option<Unit>> {
        match self.get(&["units", name], &[]).await {
            Ok(u) => Ok(Some(u)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or replaces a unit (`options` must not be empty), with its desired state
    /// (`inactive` when `None`).
    ///
    /// # Errors
    /// Any [`ClientError`]; a 400 with fleet's message for an invalid unit.
    pub async fn create_unit(&self, unit: &Unit) -> Result<()> {
        self.put_unit(&unit.name, unit).await
    }

    /// Sets an existing unit's desired state.
    ///
    /// # Errors
    /// Any [`ClientError`]; a 409 when the unit does not exist.
    pub async fn set_desired(&self, name: &str, state: JobState) -> Result<()> {
        let body = Unit {
            name: name.to_owned(),
            desired_state: Some(state),
            ..Unit::default()
        };
        self.put_unit(name, &body).await
    }

    /// Destroys a unit; `false` when it did not exist.
    ///
    /// # Errors
    /// Any [`ClientError`] but a 404.
    pub async fn destroy(&self, name: &str) -> Result<bool> {
        let req = self
            .http
            .request(Method::DELETE, self.url(&["units", name], &[]));
        match self.send(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every published unit state matching `filter`, by unit then machine.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn states(&self, filter: &StateFilter) -> Result<Vec<UnitState>> {
        let mut query = Vec::new();
        if let Some(u) = &filter.unit_name {
            query.push(("unitName", u.as_str()));
        }
        if let Some(m) = &filter.machine_id {
            query.push(("machineID", m.as_str()));
        }
        self.list(&["state"], &query, |p: UnitStatePage| {
            (p.states, p.next_page_token)
        })
        .await
    }

    /// One published state of a unit; `None` when there is none.
    ///
    /// # Errors
    /// Any [`ClientError`] but a 404.
    pub async fn state(&self, name: &str) -> Result<Option<UnitState>> {
        match self.get(&["state", name], &[]).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every present machine, by ID.
    ///
    /// # Errors
    /// Any [`ClientError`].
    pub async fn machines(&self) -> Result<Vec<Machine>> {
        self.list(&["machines"], &[], |p: MachinePage| {
            (p.machines, p.next_page_token)
        })
        .await
    }

    /// Applies metadata operations (all are checked before any is applied).
    ///
    /// # Errors
    /// Any [`ClientError`]; a 400 with fleet's message for an invalid operation.
    pub async fn patch_machines(&self, ops: &[MachineMetadataOp]) -> Result<()> {
        let req = self
            .http
            .request(Method::PATCH, self.url(&["machines"], &[]))
            .json(ops);
        self.send(req).await.map(drop)
    }

    /// Sets one dynamic metadata key of a machine.
    ///
    /// # Errors
    /// As for [`Client::patch_machines`].
    pub async fn set_metadata(&self, machine: &str, key: &str, value: &str) -> Result<()> {
        self.patch_machines(&[MachineMetadataOp::set(machine, key, value)])
            .await
    }

    /// Removes one metadata key of a machine (configured ones too).
    ///
    /// # Errors
    /// As for [`Client::patch_machines`].
    pub async fn remove_metadata(&self, machine: &str, key: &str) -> Result<()> {
        self.patch_machines(&[MachineMetadataOp::remove(machine, key)])
            .await
    }

    /// `PUT /units/<name>`.
    async fn put_unit(&self, name: &str, body: &Unit) -> Result<()> {
        let req = self
            .http
            .request(Method::PUT, self.url(&["units", name], &[]))
            .json(body);
        self.send(req).await.map(drop)
    }

    /// `.../fleet/v1/<segments>?alt=json&<query>`, each segment percent-encoded. `alt=json`
    /// is what fleet's Go client sends; servers ignore it.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("alt", "json");
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// A `GET` decoded as `T`.
    async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T> {
        let resp = self.send(self.http.get(self.url(segments, query))).await?;
        self.decode(resp).await
    }

    /// Every page of a listing.
    async fn list<P, T>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        split: impl Fn(P) -> (Vec<T>, Option<String>),
    ) -> Result<Vec<T>>
    where
        P: DeserializeOwned,
    {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Tokens number pages with 16 bits: a server sending more is broken.
        for _ in 0..=u16::MAX {
            let mut q = query.to_vec();
            if let Some(t) = &token {
                q.push(("nextPageToken", t.as_str()));
            }
            let (items, next) = split(self.get(segments, &q).await?);
            out.extend(items);
            match next {
                Some(t) if !t.is_empty() && Some(&t) != token.as_ref() => token = Some(t),
                _ => return Ok(out),
            }
        }
        Err(self.protocol("the listing never ends".into()))
    }

    /// Sends a request; a non-2xx answer is a [`ClientError::Api`].
    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            detail: error_chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => e.error.message,
            Err(_) => String::from_utf8_lossy(&body).trim().to_owned(),
        };
        Err(ClientError::Api {
            endpoint: self.endpoint.clone(),
            status: status.as_u16(),
            message: if message.is_empty() {
                status.canonical_reason().unwrap_or_default().to_owned()
            } else {
                message
            },
        })
    }

    /// A successful answer's JSON body.
    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            detail: error_chain(&e),
        })?;
        if status == StatusCode::NO_CONTENT {
            return Err(self.protocol("no content where JSON was expected".into()));
        }
        serde_json::from_slice(&body).map_err(|e| self.protocol(format!("{e}")))
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }
}

/// Which unit states [`Client::states`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateFilter {
    /// Only this unit's.
    pub unit_name: Option<String>,
    /// Only this machine's.
    pub machine_id: Option<String>,
}

/// An error with its causes, `a: b: c` (reqwest's own message hides the cause).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Go's `%q`, as fleetctl quotes in its messages.
fn go_quote(s: &str) -> String {
    unit_parser::name::go_quote_str(s)
}

/// Whether `s` starts with a URL scheme (`[A-Za-z][A-Za-z0-9+.-]*:`), as Go's URL parser
/// finds one.
fn has_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_as_fleetctl_reads_them() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/fleet.sock"),
            Ok(Endpoint::Unix("/var/run/fleet.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("file:///tmp/a%20b.sock"),
            Ok(Endpoint::Unix("/tmp/a b.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("unix://var/run/fleet.sock")
                .unwrap_err()
                .to_string(),
            r#"unable to connect to host "var" with scheme "unix""#
        );
        assert_eq!(
            Endpoint::parse("/var/run/fleet.sock")
                .unwrap_err()
                .to_string(),
            "URL scheme undefined"
        );
        assert!(matches!(
            Endpoint::parse("http://10.0.0.1:8080,http://10.0.0.2:8080"),
            Ok(Endpoint::Http(u)) if u.as_str() == "http://10.0.0.1:8080/"
        ));
        assert!(Endpoint::parse("ftp://x").is_err());
    }

    #[test]
    fn urls_are_fleets() {
        let c = Client::new("http://10.0.0.1:8080/prefix").unwrap();
        assert_eq!(
            c.url(&["units", "web@1.service"], &[]).as_str(),
            "http://10.0.0.1:8080/prefix/fleet/v1/units/web@1.service?alt=json"
        );
        assert_eq!(
            c.url(&["units", "a/b?.service"], &[("nextPageToken", "AgACAA==")])
                .as_str(),
            "http://10.0.0.1:8080/prefix/fleet/v1/units/a%2Fb%3F.service?alt=json&nextPageToken=AgACAA%3D%3D"
        );
        let c = Client::new("unix:///var/run/fleet.sock").unwrap();
        assert_eq!(
            c.url(&["machines"], &[]).as_str(),
            "http://domain-sock/fleet/v1/machines?alt=json"
        );
    }
}
