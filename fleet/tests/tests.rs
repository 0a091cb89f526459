//! fleet's integration tests: one binary, one module per subject.

mod agent;
mod api;
mod ctl;
mod ctl_golden;
mod engine;
mod grpc_api;
mod kvd_store;
mod registry;
mod util;
