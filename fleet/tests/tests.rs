//! fleet's integration tests: one binary, one module per subject.

mod agent;
mod api;
mod ctl;
mod engine;
mod registry;
mod util;
