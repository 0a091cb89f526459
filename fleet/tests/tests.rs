//! fleet's integration tests: one binary, one module per subject.

mod api;
mod registry;
mod util;
