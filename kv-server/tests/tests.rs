//! kv-server's behaviour through its public API, served in-process on 127.0.0.1:0.
//! (Whole-binary tests of kvd and kvctl processes, Docker and etcd comparisons: bins'.)

mod grpc_api;
mod http_api;
