//! kv-core replicated with Raft and made durable with RocksDB.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
