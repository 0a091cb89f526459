//! Running units on a machine: systemd over D-Bus, a native process supervisor, and a fake.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
