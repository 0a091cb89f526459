//! Protocol buffer definitions and generated gRPC code for Flotilla's wire protocols.
//!
//! Every `.proto` file of the project lives under `proto/` in this crate, one directory per
//! versioned package. The generated prost messages and tonic services are exposed in one
//! module per package (`raft_v1` for `raft.v1`, `kv_v1` for `kv.v1`, `fleet_v1` for
//! `fleet.v1`), and [`convert`] holds the conversions between wire types and kv-core's domain types, so
//! clients can talk to a store without linking RocksDB or raft. `fleet.v1`'s conversions
//! live in the fleet crate, next to the types they convert (this crate does not depend on
//! fleet).
//!
//! ```
//! use proto::raft_v1::MessageBatch;
//!
//! let batch = MessageBatch { cluster_id: 1, from: 2, to: 3, messages: vec![b"raw".to_vec().into()] };
//! assert_eq!(batch.messages.len(), 1);
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod convert;

/// `raft.v1`: the peer protocol between raft-store members.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod raft_v1 {
    tonic::include_proto!("raft.v1");
}

/// `kv.v1`: kvd's client API (the etcd v2 key space over gRPC, plus transactions,
/// batches, members and status).
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod kv_v1 {
    tonic::include_proto!("kv.v1");
}

/// `etcdserverpb`: the subset of etcd v3's KV service (Range, Put) that kvbench uses to
/// drive a real etcd over its native gRPC API. Only the client is meant to be used.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `fleet.v1`: fleetd's gRPC API, the `/fleet/v1` HTTP API's resources (units, unit
/// states, machines) plus a stream of unit changes.
#[allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]
pub mod fleet_v1 {
    tonic::include_proto!("fleet.v1");
}
