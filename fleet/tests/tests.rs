//! fleet's integration tests: one binary, one module per subject.

mod ctl;
mod registry;
mod util;
