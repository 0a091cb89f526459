//! systemd unit files: lossless parsing, values, names, specifiers, drop-ins, typed views.
//!
//! This crate is being built; see its issue in the tracker for what it will hold.
