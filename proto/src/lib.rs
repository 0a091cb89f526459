//! Protocol buffer definitions and generated gRPC code for Flotilla's wire protocols.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
