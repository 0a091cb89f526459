//! Integration tests for lincheck.

mod differential; // random small histories against a brute-force search
mod handwritten; // small histories with known answers: stale reads, lost writes, CAS
mod jepsen; // every Porcupine/Jepsen file against its published verdict
mod properties; // generated histories from a real sequential register
mod util;
