//! The etcd v2 store as a pure, deterministic state machine.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
