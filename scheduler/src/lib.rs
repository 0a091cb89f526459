//! Fleet-compatible unit placement: a pure function of a cluster snapshot.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
