//! tapio-decode: pure decoding of what the probes write, from bytes to output records.
//! No kernel, no I/O beyond the attribution scan of a cgroup directory: every function can be
//! fed arbitrary bytes (and fuzzed).
//!
//! Owns: the `#[repr(C)]` mirrors of the C event structs and their decoding ([`events`]), the DNS
//! wire parser ([`dns_wire`]), the DNS ordering stage and query/response correlator ([`dns`])
//! and container attribution from cgroup paths ([`attribution`]).
//!
//! May not import: aya or aya-obj, tokio, any other tapio crate, anyhow. The rules live in one
//! table, `loader/tests/crate_rules.rs`.

pub mod attribution;
pub mod dns;
pub mod dns_wire;
pub mod events;
