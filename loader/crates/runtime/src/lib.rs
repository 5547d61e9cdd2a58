//! tapio-runtime: loads the bundle on the running kernel, attaches what it can run and hands
//! the records to the caller.
//!
//! Owns: the loading and attaching of tapio-catalog's monitors ([`monitors`], which re-exports
//! the catalog where it is loaded, with one module per monitor for what its loading needs beyond
//! the catalog: maps to fill, its configuration, the advanced monitor's choice of object), the
//! transports (ring buffer, perf buffer, pinned rings: [`transport`]), pinning ([`pin`]), the
//! plan of what a kernel can run ([`plan`]), the verifier check ([`check`]), the kernel half of
//! the source filters ([`filter`]), cgroup links ([`cgroup_link`]), socket owners
//! ([`sock_owners`]), error-chain helpers ([`errors`]) and the bundle's half of the lint
//! ([`lint`]: which embedded objects a kernel version gets; the lint itself is
//! `tapio_object::lint`).
//!
//! May import: tapio-abi, tapio-catalog, tapio-bundle, tapio-object, tapio-features,
//! tapio-decode, tapio-kernel-gates. May not import: the agent (tapio-load), the test kit,
//! anyhow. The rules live in one table, `loader/tests/crate_rules.rs`.

pub mod cgroup_link;
pub mod check;
pub mod errors;
pub mod filter;
pub mod lint;
pub mod monitors;
pub mod pin;
pub mod plan;
pub mod sock_owners;
pub mod transport;

// What this crate takes from the crates below, under the names its modules use.
use tapio_bundle as bundle;
use tapio_decode::events;
use tapio_features::{cgroup2, features, tracefs};
