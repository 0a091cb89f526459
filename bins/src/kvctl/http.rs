//! kvctl's v2 HTTP [`Api`]: etcd's `/v2/keys` and `/v2/members` APIs (kvd and etcd).

use std::cell::OnceCell;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use super::{
    Api, CError, CMember, CResponse, Fail, KeysRequest, Put, Settings, error, exit, fail,
    root_cause,
};

/// The v2 HTTP client: tries the endpoints in order until one answers.
pub(super) struct HttpApi {
    endpoints: Vec<String>,
    http: reqwest::blocking::Client,
    watch_http: reqwest::blocking::Client,
    /// The client of `cluster-health`'s `/health` checks (5 s), built when first needed.
    health_http: OnceCell<reqwest::blocking::Client>,
    /// The TLS of `--ca-file`/`--cert-file`/`--key-file`/`--insecure-skip-tls-verify`.
    tls: Option<rustls::ClientConfig>,
    debug: bool,
}

/// An HTTP client builder with the TLS of the flags, if any.
fn http_builder(tls: Option<&rustls::ClientConfig>) -> reqwest::blocking::ClientBuilder {
    let b = reqwest::blocking::Client::builder();
    match tls {
        Some(t) => b.use_preconfigured_tls(t.clone()),
        None => b,
    }
}

enum Body<'a> {
    None,
    Form(Vec<(&'a str, String)>),
    Json(String),
}

impl HttpApi {
    /// A client of `settings`' endpoints with `tls` (ALPN `http/1.1`).
    pub(super) fn new(
        settings: &Settings,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<HttpApi, Fail> {
        let build = |t: Option<Duration>| {
            http_builder(tls.as_ref())
                .connect_timeout(settings.timeout)
                .timeout(t)
                .build()
                .map_err(|e| error(exit::BAD_CONNECTION, e))
        };
        Ok(HttpApi {
            endpoints: settings.endpoints.clone(),
            http: build(Some(settings.total_timeout))?,
            watch_http: build(None)?,
            health_http: OnceCell::new(),
            tls,
            debug: settings.debug,
        })
    }

    /// Sends a request to the first endpoint that accepts the connection.
    fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Body<'_>,
        watch: bool,
    ) -> Result<reqwest::blocking::Response, Fail> {
        let mut errors = Vec::new();
        for ep in &self.endpoints {
            let url = format!("{ep}{path_and_query}");
            if self.debug {
                eprintln!("cURL Command: curl -X {method} {url}");
            }
            let http = if watch { &self.watch_http } else { &self.http };
            let mut req = http.request(method.clone(), &url);
            match &body {
                Body::None => {}
                Body::Form(f) => req = req.form(f),
                Body::Json(j) => {
                    req = req
                        .header("Content-Type", "application/json")
                        .body(j.clone());
                }
            }
            match req.send() {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() => errors.push(format!("{url}: {}", root_cause(&e))),
                // A long poll whose connection broke before its answer (the member went away
                // with the request in flight): it only reads, so the next endpoint is asked.
                Err(e) if watch && e.is_request() && !e.is_timeout() => {
                    if self.debug {
                        eprintln!("the long poll broke: {}", root_cause(&e));
                    }
                    errors.push(format!("{url}: {}", root_cause(&e)));
                }
                Err(e) => {
                    return Err(error(
                        exit::SERVER_ERROR,
                        format!("client: endpoint {ep}: {}", root_cause(&e)),
                    ));
                }
            }
        }
        Err(super::unavailable(&errors))
    }

    /// A keys request; decodes the event or the etcd error.
    fn send_keys(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, String)],
        form: Vec<(&str, String)>,
    ) -> Result<CResponse, Fail> {
        let path = keys_path(key, query);
        let body = if form.is_empty() {
            Body::None
        } else {
            Body::Form(form)
        };
        let resp = self.send(method, &path, body, false)?;
        decode_keys(resp)
    }
}

/// `name=true` for each set flag.
fn flags<'a>(pairs: &[(&'a str, bool)]) -> Vec<(&'a str, String)> {
    pairs
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| (*name, "true".to_string()))
        .collect()
}

impl Api for HttpApi {
    fn keys(&self, req: &KeysRequest) -> Result<CResponse, Fail> {
        match req {
            KeysRequest::Get {
                key,
                recursive,
                sorted,
                quorum,
            } => {
                let q = flags(&[
                    ("recursive", *recursive),
                    ("sorted", *sorted),
                    ("quorum", *quorum),
                ]);
                self.send_keys(Method::GET, key, &q, vec![])
            }
            KeysRequest::Put(Put {
                key,
                value,
                dir,
                ttl,
                prev_exist,
                prev_value,
                prev_index,
                in_order,
            }) => {
                let mut q = flags(&[("dir", *dir)]);
                if let Some(e) = prev_exist {
                    q.push(("prevExist", e.to_string()));
                }
                let mut f = Vec::new();
                if let Some(v) = value {
                    f.push(("value", v.clone()));
                }
                if *ttl > 0 {
                    f.push(("ttl", ttl.to_string()));
                }
                if let Some(pv) = prev_value {
                    f.push(("prevValue", pv.clone()));
                }
                if *prev_index > 0 {
                    f.push(("prevIndex", prev_index.to_string()));
                }
                let method = if *in_order { Method::POST } else { Method::PUT };
                self.send_keys(method, key, &q, f)
            }
            KeysRequest::Delete {
                key,
                dir,
                recursive,
                prev_value,
                prev_index,
            } => {
                let mut q = Vec::new();
                if let Some(v) = prev_value {
                    q.push(("prevValue", v.clone()));
                }
                if *prev_index > 0 {
                    q.push(("prevIndex", prev_index.to_string()));
                }
                q.extend(flags(&[("dir", *dir), ("recursive", *recursive)]));
                self.send_keys(Method::DELETE, key, &q, vec![])
            }
        }
    }

    fn wait(
        &self,
        key: &str,
        wait_index: Option<u64>,
        recursive: bool,
    ) -> Result<Option<CResponse>, Fail> {
        let mut q = vec![("wait", "true".to_string())];
        if let Some(i) = wait_index {
            q.push(("waitIndex", i.to_string()));
        }
        if recursive {
            q.push(("recursive", "true".into()));
        }
        let resp = self.send(Method::GET, &keys_path(key, &q), Body::None, true)?;
        let index = etcd_index(&resp);
        let mut reader = BufReader::new(resp);
        let mut line = String::new();
        if let Err(e) = reader.read_line(&mut line) {
            // The connection broke during the long poll (its member went away, as etcdctl's
            // client sees it too): wait again, which skips an endpoint that no longer
            // accepts connections.
            if self.debug {
                eprintln!("the long poll broke: {}", root_cause(&e));
            }
            return Ok(None);
        }
        if line.trim().is_empty() {
            // An empty body ends a long poll without an event (server shutdown): retry.
            return Ok(None);
        }
        decode_keys_body(&line, index).map(Some)
    }

    fn members(&self) -> Result<Vec<CMember>, Fail> {
        #[derive(Deserialize)]
        struct List {
            members: Vec<CMember>,
        }
        let r = self.send(Method::GET, "/v2/members", Body::None, false)?;
        let text = r.text().map_err(|e| fail(exit::BAD_ARGS, e.to_string()))?;
        let l: List =
            serde_json::from_str(&text).map_err(|e| fail(exit::BAD_ARGS, e.to_string()))?;
        Ok(l.members)
    }

    fn leader(&self) -> Result<Option<String>, Fail> {
        let r = self.send(Method::GET, "/v2/members/leader", Body::None, false)?;
        let leader: Option<CMember> = r.json().ok();
        Ok(leader.map(|l| l.id))
    }

    fn add_member(&self, peer_url: &str) -> Result<Result<CMember, String>, Fail> {
        let body = serde_json::json!({ "peerURLs": [peer_url] }).to_string();
        let r = self.send(Method::POST, "/v2/members", Body::Json(body), false)?;
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        if status != 201 {
            return Ok(Err(members_error(status, &text)));
        }
        serde_json::from_str(&text)
            .map(Ok)
            .map_err(|e| fail(exit::BAD_ARGS, e.to_string()))
    }

    fn remove_member(&self, id: &str) -> Result<Result<(), String>, Fail> {
        let r = self.send(
            Method::DELETE,
            &format!("/v2/members/{id}"),
            Body::None,
            false,
        )?;
        Ok(no_content(r))
    }

    fn update_member(&self, id: &str, peer_urls: &[&str]) -> Result<Result<(), String>, Fail> {
        let body = serde_json::json!({ "peerURLs": peer_urls }).to_string();
        let r = self.send(
            Method::PUT,
            &format!("/v2/members/{id}"),
            Body::Json(body),
            false,
        )?;
        Ok(no_content(r))
    }

    fn health(&self, client_url: &str) -> Result<bool, String> {
        let http = match self.health_http.get() {
            Some(h) => h,
            None => {
                let h = http_builder(self.tls.as_ref())
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| root_cause(&e))?;
                self.health_http.get_or_init(|| h)
            }
        };
        let body = http
            .get(format!("{client_url}/health"))
            .send()
            .and_then(|r| r.text())
            .map_err(|e| root_cause(&e))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|_| "invalid JSON".to_string())?;
        let h = v.get("health");
        Ok(
            h == Some(&serde_json::Value::from("true"))
                || h == Some(&serde_json::Value::Bool(true)),
        )
    }

    fn snapshot(&self) -> Result<Vec<u8>, Fail> {
        let r = self.send(Method::GET, "/kvd/v1/snapshot", Body::None, true)?;
        if !r.status().is_success() {
            let status = r.status();
            let text = r.text().unwrap_or_default();
            return Err(error(
                exit::SERVER_ERROR,
                format!("snapshot failed ({status}): {}", text.trim()),
            ));
        }
        let bytes = r.bytes().map_err(|e| error(exit::SERVER_ERROR, e))?;
        Ok(bytes.to_vec())
    }
}

/// `Ok` for `204 No Content`, else the members API's error message.
fn no_content(r: reqwest::blocking::Response) -> Result<(), String> {
    let status = r.status().as_u16();
    if status == 204 {
        return Ok(());
    }
    let text = r.text().unwrap_or_default();
    Err(members_error(status, &text))
}

/// The message of a members API error body (`{"message": ...}`).
fn members_error(status: u16, body: &str) -> String {
    #[derive(Deserialize)]
    struct M {
        message: String,
    }
    match serde_json::from_str::<M>(body) {
        Ok(m) => m.message,
        Err(_) => format!("unexpected status {status}: {}", body.trim()),
    }
}

/// Percent-encodes a key path for the URL (keeping `/`).
pub(super) fn keys_path(key: &str, query: &[(&str, String)]) -> String {
    let mut p = String::from("/v2/keys");
    if !key.starts_with('/') {
        p.push('/');
    }
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            p.push(b as char);
        } else {
            p.push_str(&format!("%{b:02X}"));
        }
    }
    let mut first = true;
    for (k, v) in query {
        p.push(if first { '?' } else { '&' });
        first = false;
        p.push_str(k);
        p.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                p.push(b as char);
            } else {
                p.push_str(&format!("%{b:02X}"));
            }
        }
    }
    p
}

/// The `X-Etcd-Index` of a response (0 when absent).
fn etcd_index(resp: &reqwest::blocking::Response) -> u64 {
    resp.headers()
        .get("X-Etcd-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn decode_keys(resp: reqwest::blocking::Response) -> Result<CResponse, Fail> {
    let index = etcd_index(&resp);
    let text = resp.text().map_err(|e| error(exit::SERVER_ERROR, e))?;
    decode_keys_body(&text, index)
}

/// A keys body: the event, or etcd's error printed as etcdctl prints it.
pub(super) fn decode_keys_body(text: &str, index: u64) -> Result<CResponse, Fail> {
    if let Ok(e) = serde_json::from_str::<CError>(text) {
        return Err(error(exit::SERVER_ERROR, e));
    }
    let mut r: CResponse = serde_json::from_str(text).map_err(|e| {
        error(
            exit::SERVER_ERROR,
            format!("unexpected response {text:?}: {e}"),
        )
    })?;
    r.index = index;
    Ok(r)
}
