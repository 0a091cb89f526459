//! Whole-system tests for kvd and kvctl.
//!
//! The compatibility tests run the real etcd (Debian packages etcd-server and etcd-client,
//! installed by scripts/install-deps) next to kvd and fail, saying so, when it is missing.

mod cluster;
mod compat;
mod differential;
mod docker;
mod fleet_cluster;
mod fleet_util;
mod grpc_api;
mod http_api;
mod kvbench;
mod tls;
mod util;
