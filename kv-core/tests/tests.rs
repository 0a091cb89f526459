//! Integration tests of kv-core's public API.

mod etcd_diff;
mod model;
mod snapshot;
