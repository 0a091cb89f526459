//! Parse throughput (placeholder replaced below).
fn main() {}
