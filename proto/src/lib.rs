//! Protocol buffer definitions and generated gRPC code for Flotilla's wire protocols.
//!
//! Every `.proto` file of the project lives under `proto/` in this crate, one directory per
//! versioned package. The generated prost messages and tonic services are exposed in one
//! module per package (`raft_v1` for `raft.v1`), and [`convert`] holds the conversions between
//! wire types and domain types, so clients can talk to a store without linking RocksDB or raft.
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
