//! Flotilla's servers and command-line tools as libraries, with thin mains in `src/bin/`.
//!
//! * [`store`]: the [`store::KvBackend`] seam between kvd's front ends and the store, with
//!   [`store::raft::RaftBackend`] (replicated and durable, kvd's default) and
//!   [`store::memory::MemoryBackend`] (one in-memory member).
//! * [`http`]: the etcd v2 HTTP API (keys, members, stats, machines, version, health,
//!   metrics) as an axum `Router` over any backend.
//! * [`grpc`]: kvd's gRPC API (`kv.v1`) over any backend, served on the same listener.
//! * [`client`]: a Rust client of `kv.v1` ([`client::KvClient`]).
//! * [`kvd`]: kvd's etcd-compatible configuration and its `run` function.
//! * [`kvctl`]: etcdctl v2's commands and output formats over the v2 HTTP API, or over
//!   `kv.v1` with `--api grpc`.
//! * [`mod@bench`]: kvbench, a v2 HTTP load generator comparing kvd with etcd in one run;
//!   [`bench_grpc`] is its `--api grpc` mode (kvd's kv.v1 against etcd's v3 API).
//!
//! Serving the v2 API on an ephemeral port and talking to it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use bins::store::memory::{MemoryBackend, MemoryConfig};
//!
//! let backend = Arc::new(MemoryBackend::ephemeral(MemoryConfig {
//!     id: 1,
//!     cluster_id: 2,
//!     name: "doc".into(),
//!     peer_urls: vec!["http://127.0.0.1:2380".into()],
//!     client_urls: vec![],
//!     data_dir: Default::default(),
//! }));
//! let router = bins::http::router(backend, bins::http::Limits::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(bins::http::serve(listener, router, std::future::pending()));
//!
//! let body = reqwest::Client::new()
//!     .put(format!("http://{addr}/v2/keys/greeting"))
//!     .form(&[("value", "hello")])
//!     .send()
//!     .await?
//!     .text()
//!     .await?;
//! assert!(body.starts_with(r#"{"action":"set","node":{"key":"/greeting","value":"hello""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }
//! ```

pub mod bench;
pub mod bench_grpc;
mod bench_http;
pub mod client;
pub mod grpc;
pub mod http;
pub mod kvctl;
pub mod kvd;
pub mod store;
pub mod tls;
