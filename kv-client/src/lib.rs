//! A Rust client of kvd's gRPC API (`kv.v1`), and the TLS it dials with. It links neither
//! RocksDB nor raft: its dependencies are kv-core (pure), proto, tonic and rustls.
//!
//! * [`KvClient`]: typed calls (get, put, delete, compare-and-swap, transactions, batches,
//!   watches, members, status, snapshots). Events come back as kv-core's
//!   [`kv_core::Event`] (whose serde form is etcd's v2 JSON), errors of the key space as
//!   [`ClientError::Etcd`] with etcd's code. The request messages of the less common
//!   options are the wire types themselves, re-exported as [`wire`].
//! * [`tls`]: client configurations from etcd's flags (CA file, client certificate
//!   re-read when renewed, cipher suites) and [`tls::TlsConnector`], which dials tonic
//!   channels over TLS; raft-store's peer transport and kvd's own TLS build on it.
//!
//! kv-server's crate example runs a store and talks to it with this client. On its own,
//! the client reports etcd's errors by their code and a connection it could not make:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kv_client::{ClientError, KvClient};
//! use kv_client::tls::{ServerVerification, client_config};
//!
//! // What kvd answers for a missing key, as the client sees it.
//! let missing = kv_core::Error::KeyNotFound { cause: "/greeting".into(), index: 7 };
//! let err = ClientError::from(proto::convert::kv::error_status(&missing));
//! assert_eq!(err.etcd_code(), Some(100));
//! assert_eq!(err.grpc_code(), Some(tonic::Code::NotFound));
//!
//! // Nothing listens on port 1: the connection fails, and no call was made.
//! let tls = client_config(&ServerVerification::System, None, &[b"h2"])?;
//! let err = KvClient::connect_with("https://127.0.0.1:1", Some(tls.into()), Duration::from_secs(1))
//!     .await
//!     .unwrap_err();
//! assert!(matches!(err, ClientError::Connect { .. }) && err.grpc_code().is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }
//! ```

mod client;
mod error;
pub mod tls;

pub use client::{KvClient, TxnOutcome, Watch};
pub use error::ClientError;
/// The `kv.v1` messages (requests with every option, members, status).
pub use proto::kv_v1 as wire;
