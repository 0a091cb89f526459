//! A linearizability checker for key/value histories (Porcupine-style search).
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
