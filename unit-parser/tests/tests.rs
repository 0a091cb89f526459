//! Integration tests of the unit-parser crate (one binary; each module is one topic).

// Shared helpers: the systemd oracle and our output in its shape.
mod util;

// Recorded systemd output for every tokenizer rule (testdata/edge).
mod golden;
// Live comparison with systemd's config_parse() over this machine's unit files.
mod differential;
// Round trips and edits of the lossless document (proptest).
mod roundtrip;
// Drop-in search order and merging.
mod dropins;
// Linear time on huge continued lines.
mod linear;
// Unit names and systemd-escape (differential against the real tool; proptest).
mod names;
// Booleans, time spans, Exec lines, environment (proptest round trips, no panics).
mod values;
// Typed [Unit]/[Service]/[Install]/[X-Fleet] views and fleet's hash (golden files).
mod typed;
