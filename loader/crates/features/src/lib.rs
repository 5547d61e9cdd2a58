//! tapio-features: what the running kernel and this process can do, asked of the kernel itself.
//!
//! Owns: the named kernel feature probes with the first kernel version of each ([`features`]),
//! tracefs discovery and mounting ([`tracefs`]), the privilege check and `RLIMIT_MEMLOCK`
//! ([`privileges`]), cgroup2 discovery ([`cgroup2`]) and the kernel's release ([`kernel`]).
//!
//! May import: tapio-object (BTF to build probe programs' types) and aya for its feature probes
//! alone (`aya::sys::is_map_supported`, `is_program_supported`, `is_helper_supported`: nothing
//! here loads an object or attaches a program through aya). May not import: the decode or
//! runtime crates, tokio, anyhow. The rules live in one table,
//! `loader/tests/crate_rules.rs`.

pub mod cgroup2;
pub mod features;
pub mod kernel;
pub mod privileges;
pub mod tracefs;

use tapio_object::btf;
