//! A replicated, durable state machine: raft (tikv's `raft` crate) driven on tokio, with the
//! log in RocksDB and a gRPC peer transport.
//!
//! A [`Node`] is one member of a cluster. It owns a [`StateMachine`] (kv-server's
//! `StoreMachine`, kv-core's store, in Flotilla; anything deterministic in general), a data directory holding its raft log,
//! hard state and snapshots ([`storage::RocksLogStore`]), and a [`Transport`] to reach the
//! other members ([`GrpcTransport`] in production, `MemNetwork` in tests). Clients call
//! [`Node::write`] on any member (followers forward to the leader), [`Node::read`] with a
//! [`ReadConsistency`], and [`Node::watch`] for a stream of applied outputs.
//!
//! # Embedding a 3-member cluster in one program
//!
//! Each member listens for its peers on its own address. Bind the listeners first, so every
//! member's URL is known when the cluster is bootstrapped:
//!
//! ```
//! use std::collections::BTreeMap;
//! use raft_store::{Config, GrpcTransport, Member, Node, ReadConsistency, StateMachine};
//!
//! // A deterministic state machine: a map of counters.
//! #[derive(Default)]
//! struct Counters(BTreeMap<String, i64>);
//!
//! impl StateMachine for Counters {
//!     type Command = (String, i64); // add `.1` to counter `.0`
//!     type Output = i64;            // the counter's new value
//!     fn apply(&mut self, _index: u64, (name, delta): (String, i64)) -> i64 {
//!         let v = self.0.entry(name).or_default();
//!         *v += delta;
//!         *v
//!     }
//!     fn snapshot(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
//!         serde_json::to_writer(w, &self.0).map_err(std::io::Error::other)
//!     }
//!     fn restore(&mut self, r: &mut dyn std::io::Read) -> Result<(), String> {
//!         self.0 = serde_json::from_reader(r).map_err(|e| e.to_string())?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dirs = tempfile::tempdir()?;
//! // 1. A listener and a transport per member; the URLs go into the member list.
//! let mut members = Vec::new();
//! let mut listeners = Vec::new();
//! for id in 1..=3 {
//!     let (listener, url) = raft_store::grpc::bind("127.0.0.1:0".parse()?).await?;
//!     let mut m = Member::new(id, format!("member-{id}"));
//!     m.peer_urls.push(url);
//!     members.push(m);
//!     listeners.push(listener);
//! }
//! // 2. Open the members: a fresh data directory plus `initial_members` bootstraps the
//! //    cluster. Restarting later with the same directory resumes where it stopped.
//! let mut nodes = Vec::new();
//! let (stop, stopped) = tokio::sync::watch::channel(false);
//! for (id, listener) in (1..=3).zip(listeners) {
//!     let transport = GrpcTransport::new(0xf107);
//!     let mut config = Config::new(id, dirs.path().join(format!("m{id}")));
//!     config.initial_members = members.clone();
//!     let node = Node::open(config, Counters::default(), transport.clone()).await?;
//!     let mut stopped = stopped.clone();
//!     tokio::spawn(async move {
//!         transport.serve(listener, async move { let _ = stopped.wait_for(|s| *s).await; }).await
//!     });
//!     nodes.push(node);
//! }
//! // 3. Write through any member; retry while the first election is under way.
//! let (index, value) = loop {
//!     match nodes[2].write(&("visits".to_string(), 5)).await {
//!         Ok(r) => break r,
//!         Err(raft_store::Error::NoLeader) => {
//!             tokio::time::sleep(std::time::Duration::from_millis(50)).await
//!         }
//!         Err(e) => return Err(e.into()),
//!     }
//! };
//! assert_eq!(*value, 5);
//! // 4. A linearizable read on another member sees it.
//! let seen = nodes[0]
//!     .read(ReadConsistency::Linearizable, |c| c.0.get("visits").copied())
//!     .await?;
//! assert_eq!(seen, Some(5));
//! let status = nodes[0].status();
//! assert!(status.leader.is_some() && status.applied >= index);
//! assert_eq!(nodes[1].members().len(), 3);
//! // 5. Shut down: each member stops its raft loop and closes its data directory.
//! for n in &nodes {
//!     n.shutdown().await;
//! }
//! stop.send(true)?;
//! # Ok(())
//! # }
//! ```
//!
//! # TLS between members
//!
//! Build each member's transport with [`GrpcTransport::with_tls`] and a [`TransportTls`]
//! (two rustls configurations: what the peer listener presents and whom it accepts, and how
//! this member verifies peers and which client certificate it presents), and give members
//! `https://` peer URLs. [`GrpcTransport::serve`] then serves TLS, and `https://` peers are
//! dialled over TLS (ALPN `h2`). [`tls::accept`] and kv-client's
//! [`TlsConnector`](kv_client::tls::TlsConnector) are the two halves, public for embedders
//! serving their own services over TLS. rustls is re-exported
//! as [`tls::rustls`] (ring provider; no aws-lc-rs).
//!
//! # Design
//!
//! * **The loop.** One tokio task per member owns raft's `RawNode`. It ticks, steps
//!   incoming messages, and takes every queued proposal before handling the next `Ready`,
//!   so all proposals that arrived together share one RocksDB write batch and one fsync
//!   (group commit). A `Ready` is handled in raft's order: send the leader's messages,
//!   install a snapshot, apply committed entries, persist entries and hard state (synced),
//!   send the messages that had to wait for persistence, advance. `check_quorum` and
//!   `pre_vote` are on, and reads use `ReadOnlyOption::Safe` (never a lease).
//! * **Durability.** A write is acknowledged after it is applied on the member that
//!   proposed it, which implies it was committed, i.e. fsynced on a quorum. The state
//!   machine lives in memory; on restart it is restored from the newest snapshot and the
//!   log after it is replayed (raft hands the committed entries back). The configuration
//!   stored with the snapshot is the one as of its index, so replayed membership changes
//!   apply exactly once.
//! * **Bootstrap.** A new cluster's log starts with one committed membership change per
//!   initial member, identical on every initial member (as etcd does), so a member added
//!   later learns the whole configuration from the log or a snapshot.
//! * **Requests.** Entries carry their proposer and a request id whose high bits are
//!   random per run, so an entry replayed after a restart is never mistaken for the answer
//!   to a new request (etcd #20418 was this mistake for ReadIndex).
//! * **Snapshots** are taken every [`Config::snapshot_entries`] applied entries; the log is
//!   compacted behind them keeping [`Config::catchup_entries`] for slow followers. The
//!   snapshot data holds the member list and the state machine's bytes, with a checksum.
//! * **Data directory.** A version file (format 1), an OS lock on a lock file, and
//!   `db/`. Foreign, newer, corrupt and locked directories are refused with a
//!   [`StorageError`] naming the problem; stored records carry CRCs.

mod config;
mod error;
pub mod grpc;
#[cfg(any(test, feature = "test-util"))]
mod memory;
mod node;
mod persist;
mod state_machine;
pub mod storage;
pub mod tls;
mod transport;

pub use config::{Config, Member};
pub use error::{Error, Result, StorageError};
pub use grpc::GrpcTransport;
#[cfg(any(test, feature = "test-util"))]
pub use memory::{MemNetwork, MemTransport};
pub use node::{MAX_COMMAND_BYTES, Node, ReadConsistency, Role, Status, Watch};
pub use state_machine::StateMachine;
pub use tls::TransportTls;
pub use transport::{Inbox, Transport};
