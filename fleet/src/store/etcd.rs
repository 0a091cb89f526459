//! [`EtcdStore`]: any etcd v2 keys API over HTTP, as fleet 1.0's own registry spoke it.
//!
//! Writes are form-encoded `PUT`, `POST` and `DELETE` requests on `/v2/keys`, reads are
//! `GET`s with `recursive`, `sorted` and `quorum` spelled out, and a watch is a chain of
//! long polls (`wait=true&recursive=true&waitIndex=N`). Answers are etcd's JSON, which is
//! the serde form of kv-core's [`NodeView`] and [`kv_core::Error`], so nothing is
//! translated by hand. Several endpoints may be given: a request that cannot reach one
//! moves on to the next, and later requests start from the one that answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kv_core::{Action, Event, NodeView, Op};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{KvStore, Result, StoreError, Watch};

/// How many events a watch buffers before the long poll waits for the reader.
const WATCH_BUFFER: usize = 256;

/// An etcd v2 keys API reached over HTTP.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    endpoints: Vec<Url>,
    /// The endpoint that answered last; requests start there.
    current: AtomicUsize,
    /// The endpoints as given, for messages.
    label: String,
    request_timeout: Duration,
}

/// etcd's JSON answer to a keys request (the index comes in the `X-Etcd-Index` header).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    action: Action,
    node: NodeView,
    #[serde(default)]
    prev_node: Option<NodeView>,
}

impl EtcdStore {
    /// A store at these endpoints (`http://host:port` or `https://...`), with a plain
    /// HTTP client and a three-second timeout per request (fleetctl's default).
    ///
    /// # Errors
    /// [`StoreError::Protocol`] when an endpoint is not an http(s) URL or none is given.
    pub fn new(endpoints: &[String]) -> Result<EtcdStore> {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| StoreError::Protocol {
                endpoint: endpoints.join(","),
                detail: format!("cannot build an HTTP client: {e}"),
            })?;
        EtcdStore::with_client(endpoints, client, Duration::from_secs(3))
    }

    /// A store at these endpoints through a client the caller configured (TLS roots,
    /// client certificates), with a timeout for every request but watches.
    ///
    /// # Errors
    /// [`StoreError::Protocol`] when an endpoint is not an http(s) URL or none is given.
    pub fn with_client(
        endpoints: &[String],
        client: reqwest::Client,
        request_timeout: Duration,
    ) -> Result<EtcdStore> {
        let label = endpoints.join(",");
        let bad = |detail: String| StoreError::Protocol {
            endpoint: label.clone(),
            detail,
        };
        if endpoints.is_empty() {
            return Err(bad("no etcd endpoint given".into()));
        }
        let mut urls = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let url = Url::parse(e.trim()).map_err(|err| bad(format!("endpoint {e:?}: {err}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                return Err(bad(format!("endpoint {e:?} is not an http(s) URL")));
            }
            urls.push(url);
        }
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                client,
                endpoints: urls,
                current: AtomicUsize::new(0),
                label,
                request_timeout,
            }),
        })
    }
}

impl Inner {
    /// The URL of `key` on endpoint `i`: `/v2/keys` plus the key's components, each
    /// percent-encoded (unit names carry `@`, `\` and `:`).
    fn key_url(&self, i: usize, key: &str) -> Url {
        let mut url = self.endpoints[i].clone();
        {
            // A base URL always has path segments (checked in `with_client`).
            let mut segs = url.path_segments_mut().expect("base URL");
            segs.pop_if_empty().extend(["v2", "keys"]);
            for c in key.split('/').filter(|c| !c.is_empty()) {
                segs.push(c);
            }
        }
        url
    }

    /// Sends a keys request to the first endpoint that answers and decodes the answer.
    async fn request(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, String)],
        form: &[(&str, String)],
        timeout: Option<Duration>,
    ) -> Result<Option<Event>> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            let mut req = self
                .client
                .request(method.clone(), self.key_url(i, key))
                .query(query);
            if !form.is_empty() {
                req = req.form(form);
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            match req.send().await {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    return self.decode(i, resp).await;
                }
                Err(e) => {
                    last = Some(StoreError::Unavailable {
                        endpoint: self.endpoints[i].to_string(),
                        detail: error_chain(&e),
                    })
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    /// etcd's answer as an event; `None` for the empty body etcd sends when it ends a
    /// long poll without an event.
    async fn decode(&self, i: usize, resp: reqwest::Response) -> Result<Option<Event>> {
        let endpoint = || self.endpoints[i].to_string();
        let status = resp.status();
        let index = resp
            .headers()
            .get("x-etcd-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = resp.bytes().await.map_err(|e| StoreError::Unavailable {
            endpoint: endpoint(),
            detail: error_chain(&e),
        })?;
        if status.is_success() {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            let a: Answer = serde_json::from_slice(&body).map_err(|e| StoreError::Protocol {
                endpoint: endpoint(),
                detail: format!("{status} with a body that is not an etcd event: {e}"),
            })?;
            // Watch answers carry the index of the whole store; the event's own index is
            // its node's modifiedIndex, which is what a follower resumes from.
            let index = match a.action {
                Action::Get => index.unwrap_or(0),
                _ => a.node.modified_index.max(index.unwrap_or(0)),
            };
            return Ok(Some(Event {
                action: a.action,
                node: a.node,
                prev_node: a.prev_node,
                index,
                batch: None,
            }));
        }
        match serde_json::from_slice::<kv_core::Error>(&body) {
            Ok(e) => Err(StoreError::Kv(e)),
            Err(_) if status == StatusCode::SERVICE_UNAVAILABLE => Err(StoreError::Unavailable {
                endpoint: endpoint(),
                detail: status.to_string(),
            }),
            Err(_) => Err(StoreError::Protocol {
                endpoint: endpoint(),
                detail: format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            }),
        }
    }

    fn expect_event(&self, e: Option<Event>) -> Result<Event> {
        e.ok_or_else(|| StoreError::Protocol {
            endpoint: self.label.clone(),
            detail: "an empty answer to a write".into(),
        })
    }
}

/// A reqwest error with its sources, which say what actually failed (refused, timed out).
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn ttl_field(form: &mut Vec<(&'static str, String)>, ttl: Option<u64>, refresh: bool) {
    if let Some(t) = ttl {
        form.push(("ttl", t.to_string()));
    }
    if refresh {
        form.push(("refresh", "true".into()));
    }
}

impl KvStore for EtcdStore {
    async fn apply(&self, op: Op) -> Result<Event> {
        let inner = &self.inner;
        let t = Some(inner.request_timeout);
        let mut form: Vec<(&str, String)> = Vec::new();
        let mut query: Vec<(&str, String)> = Vec::new();
        let (method, key) = match op {
            Op::Set {
                key,
                value,
                dir,
                ttl,
                refresh,
            } => {
                if dir {
                    form.push(("dir", "true".into()));
                } else if !refresh {
                    form.push(("value", value));
                }
                ttl_field(&mut form, ttl, refresh);
                (Method::PUT, key)
            }
            Op::Create {
                key,
                value,
                dir,
                ttl,
                unique,
            } => {
                if dir {
                    form.push(("dir", "true".into()));
                } else {
                    form.push(("value", value));
                }
                ttl_field(&mut form, ttl, false);
                if unique {
                    (Method::POST, key)
                } else {
                    form.push(("prevExist", "false".into()));
                    (Method::PUT, key)
                }
            }
            Op::Update {
                key,
                value,
                ttl,
                refresh,
            } => {
                if !refresh {
                    form.push(("value", value));
                }
                ttl_field(&mut form, ttl, refresh);
                form.push(("prevExist", "true".into()));
                (Method::PUT, key)
            }
            Op::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh,
            } => {
                if !refresh {
                    form.push(("value", value));
                }
                ttl_field(&mut form, ttl, refresh);
                if let Some(v) = prev_value {
                    form.push(("prevValue", v));
                }
                if let Some(i) = prev_index {
                    form.push(("prevIndex", i.to_string()));
                }
                (Method::PUT, key)
            }
            Op::Delete {
                key,
                dir,
                recursive,
            } => {
                if dir || recursive {
                    query.push(("dir", "true".into()));
                }
                if recursive {
                    query.push(("recursive", "true".into()));
                }
                (Method::DELETE, key)
            }
            Op::CompareAndDelete {
                key,
                prev_value,
                prev_index,
            } => {
                if let Some(v) = prev_value {
                    query.push(("prevValue", v));
                }
                if let Some(i) = prev_index {
                    query.push(("prevIndex", i.to_string()));
                }
                (Method::DELETE, key)
            }
            Op::Expire => {
                return Err(StoreError::Unsupported {
                    endpoint: inner.label.clone(),
                    what: "expiry sweeps (the store runs its own)",
                });
            }
            Op::Txn(_) => {
                return Err(StoreError::Unsupported {
                    endpoint: inner.label.clone(),
                    what: "transactions",
                });
            }
            _ => {
                return Err(StoreError::Unsupported {
                    endpoint: inner.label.clone(),
                    what: "this operation",
                });
            }
        };
        let e = inner.request(method, &key, &query, &form, t).await?;
        inner.expect_event(e)
    }

    async fn get(&self, key: &str, recursive: bool, quorum: bool) -> Result<Event> {
        let query = [
            ("recursive", recursive.to_string()),
            ("sorted", "true".to_string()),
            ("quorum", quorum.to_string()),
        ];
        let inner = &self.inner;
        let e = inner
            .request(Method::GET, key, &query, &[], Some(inner.request_timeout))
            .await?;
        inner.expect_event(e)
    }

    async fn watch(&self, prefix: &str, since: u64) -> Result<Watch> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let inner = self.inner.clone();
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let mut next = since;
            loop {
                let query = [
                    ("wait", "true".to_string()),
                    ("recursive", "true".to_string()),
                    ("waitIndex", next.to_string()),
                ];
                let answer = tokio::select! {
                    a = inner.request(Method::GET, &prefix, &query, &[], None) => a,
                    () = tx.closed() => return,
                };
                match answer {
                    Ok(None) => continue,
                    Ok(Some(event)) => {
                        // Resume after this event, not after the store's index: etcd's
                        // X-Etcd-Index on a watch answer is the index when the long poll
                        // started, which may be past events still to be delivered.
                        next = event.node.modified_index.max(next) + 1;
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(Watch { events: rx })
    }

    fn supports_txn(&self) -> bool {
        false
    }

    fn endpoint(&self) -> &str {
        &self.inner.label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_component() {
        let s = EtcdStore::new(&["http://127.0.0.1:2379".into()]).unwrap();
        let url = s
            .inner
            .key_url(0, "/_coreos.com/fleet/job/a@b\\x%y.service/object");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:2379/v2/keys/_coreos.com/fleet/job/a@b%5Cx%25y.service/object"
        );
        let s = EtcdStore::new(&["https://h:1/prefix/".into()]).unwrap();
        assert_eq!(
            s.inner.key_url(0, "/a").as_str(),
            "https://h:1/prefix/v2/keys/a"
        );
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_endpoint() {
        let e = EtcdStore::new(&["unix:///run/x.sock".into()]).unwrap_err();
        assert!(e.to_string().contains("unix:///run/x.sock"), "{e}");
        let e = EtcdStore::new(&["127.0.0.1:2379".into()]).unwrap_err();
        assert!(e.to_string().contains("127.0.0.1:2379"), "{e}");
        assert!(EtcdStore::new(&[]).is_err());
    }
}
