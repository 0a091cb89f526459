//! Flotilla's servers and command-line tools: kvd, kvctl, fleetd, fleetctl, as libraries with thin mains.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
