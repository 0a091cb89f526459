//! fleet's integration tests: one binary, one module per subject.

mod agent;
mod ctl;
mod engine;
mod registry;
mod util;
