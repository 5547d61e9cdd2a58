//! tapio-testkit: what the loader's tests and the verifier matrix's guest share.
//!
//! Owns: the snapshot normaliser ([`snapshot`]) and the deterministic workloads ([`workload`])
//! that the tests, the `tapio-scenario` driver and the guest run.
//!
//! May import: tapio-features (cgroup2 discovery). May not import: aya, the runtime, the agent,
//! anyhow. The rules live in one table, `loader/tests/crate_rules.rs`.

pub mod snapshot;
pub mod workload;

use tapio_features::cgroup2;
