//! kv-client's integration tests. The client's calls against a running store are
//! kv-server's tests (kv-server/tests), which serve one; here, what kv-client itself
//! promises.

mod dependencies;
