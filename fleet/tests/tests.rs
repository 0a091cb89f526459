//! fleet's integration tests: one binary, one module per subject.

mod agent;
mod registry;
mod util;
