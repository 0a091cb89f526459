//! fleet's `/fleet/v1` HTTP API: its JSON shapes ([`types`]).

pub mod types;
