//! Throughput of decode + merge + output over a recorded stream.
fn main() {}
