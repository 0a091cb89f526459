//! kvd's server as a library: an etcd v2-compatible key/value store, replicated with raft,
//! that a program embeds or runs as `kvd`.
//!
//! * [`backend`]: the [`backend::KvBackend`] seam between the front ends and the store,
//!   with [`backend::raft::RaftBackend`] (kv-core replicated by raft-store and durable in
//!   RocksDB; the default) and [`backend::memory::MemoryBackend`] (one in-memory member).
//! * [`http`]: the etcd v2 HTTP API (keys, members, stats, machines, version, health,
//!   metrics) as an axum `Router` over any backend; [`grpc`]: `kv.v1` over any backend,
//!   served on the same listener (clients: the `kv-client` crate).
//! * [`tls`]: the server half of etcd's TLS flags (the client half is `kv_client::tls`).
//! * [`Config`]: etcd 3.4's flags and `ETCD_*` variables; [`run`] serves a configuration
//!   until a shutdown future completes, [`run_with`] does so on sockets bound by the caller.
//!
//! A replicated 3-member store in one program, written through one member and read
//! through another with kv-client:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kv_client::KvClient;
//! use kv_server::{Config, Listeners};
//! use tokio::net::TcpListener;
//!
//! let dir = tempfile::tempdir()?;
//! // Each member's client and peer sockets, bound first so that every URL is known.
//! let mut sockets = Vec::new();
//! for _ in 0..3 {
//!     let (client, peer) = (TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?);
//!     let urls = (format!("http://{}", client.local_addr()?), format!("http://{}", peer.local_addr()?));
//!     sockets.push((client, peer, urls));
//! }
//! let cluster: Vec<String> =
//!     sockets.iter().enumerate().map(|(i, (_, _, (_, peer)))| format!("m{i}={peer}")).collect();
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! let (mut members, mut urls) = (Vec::new(), Vec::new());
//! for (i, (client, peer, (client_url, peer_url))) in sockets.into_iter().enumerate() {
//!     let mut config = Config::default();
//!     config.name = format!("m{i}");
//!     config.data_dir = Some(dir.path().join(&config.name));
//!     (config.listen_client_urls, config.advertise_client_urls) = (client_url.clone(), client_url.clone());
//!     (config.listen_peer_urls, config.initial_advertise_peer_urls) = (peer_url.clone(), peer_url);
//!     config.initial_cluster = Some(cluster.join(","));
//!     let mut stopped = stopped.clone();
//!     let shutdown = async move { let _ = stopped.wait_for(|s| *s).await; };
//!     let listeners = Listeners { client: vec![client], peer: Some(peer) };
//!     members.push(tokio::spawn(kv_server::run_with(config, listeners, shutdown)));
//!     urls.push(client_url);
//! }
//!
//! // Write through the first member, retrying while the first leader is elected (etcd's 300).
//! let first = KvClient::connect(&urls[0]).await?;
//! let set = loop {
//!     match first.put("/greeting", "hello").await {
//!         Ok(event) => break event,
//!         Err(e) if e.etcd_code() == Some(300) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
//!         Err(e) => return Err(e.into()),
//!     }
//! };
//! // A linearizable read through the third sees it.
//! let third = KvClient::connect(&urls[2]).await?;
//! let got = third.get("/greeting").await?;
//! assert_eq!((got.node.value.as_deref(), got.node.modified_index), (Some("hello"), set.index));
//! assert_eq!(third.members().await?.len(), 3);
//!
//! stop.send(true)?;
//! for member in members {
//!     member.await??;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }
//! ```

pub mod backend;
mod config;
mod error;
pub mod grpc;
pub mod http;
mod server;
pub mod tls;

pub use config::{Config, InitialMember, parse_initial_cluster, parse_urls};
pub use error::{Error, Result};
pub use server::{ClientListener, Listeners, run, run_embedded, run_with, serve_backend};
