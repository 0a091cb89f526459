//! fleet's integration tests: one binary, one module per subject.

mod registry;
mod util;
