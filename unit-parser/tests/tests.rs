//! Integration tests of the unit-parser crate (one binary; each module is one topic).

// Round trips and edits of the lossless document (proptest).
mod roundtrip;
