//! Integration tests of kv-core's public API.

mod snapshot;
