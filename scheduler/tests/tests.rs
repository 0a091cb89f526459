//! Integration tests for the scheduler's public API.

// Golden scenarios in `testdata/*.txt`: input -> expected decisions, including fleet's own.
mod golden;
// Property tests over random clusters: constraints, determinism, incremental == full.
mod props;
// Shared helpers: the text format of the golden files and a snapshot model.
mod util;
