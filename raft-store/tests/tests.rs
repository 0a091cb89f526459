//! Integration tests of raft-store (one binary, see Cargo.toml).

// In-process clusters on the in-memory transport: elections, replication, faults.
mod cluster;
// Crash-and-restart at failpoints (feature `failpoints`).
#[cfg(feature = "failpoints")]
mod failpoints;
// Membership changes, leader transfer, catch-up by snapshot.
mod membership;
// Linearizability of histories recorded under faults (checked by lincheck).
mod linear;
// The gRPC transport over mutual TLS.
mod tls;
// The gRPC transport's bounds on what it sends at once.
mod grpc;
// Shared harness: a small key/value state machine and a cluster builder.
mod util;
