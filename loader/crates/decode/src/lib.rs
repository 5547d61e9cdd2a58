//! tapio-decode: pure decoding of what the probes write, from bytes to output records.
//! No kernel, no I/O beyond the attribution scan of a cgroup directory: every function can be
//! fed arbitrary bytes (and fuzzed).
//!
//! Owns: the decoding of the probes' records into output records ([`events`], one module per
//! monitor; the `#[repr(C)]` mirrors it reads are tapio-abi's), the DNS wire parser
//! ([`dns_wire`]), the DNS ordering stage and query/response correlator ([`dns`]) and container
//! attribution from cgroup paths ([`attribution`]).
//!
//! May import: tapio-abi. May not import: aya or aya-obj, object, tokio, any other tapio crate,
//! anyhow. The rules live in one table, `loader/tests/crate_rules.rs`.

pub mod attribution;
pub mod dns;
pub mod dns_wire;
pub mod events;
