//! `cargo xtask`: the verifier matrix harness.
fn main() {}
