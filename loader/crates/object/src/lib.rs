//! tapio-object: offline tools for compiled eBPF objects. Nothing here touches the kernel.
//!
//! Owns: the architecture an object was built for ([`arch`]: its note and the register and
//! syscall-wrapper evidence in its code), the BTF reader ([`btf`]) and minimizer
//! ([`btf_minimize`]), the object inspector ([`inspect`]), the helper-id table ([`helpers`]), the
//! portability lint of objects against a kernel version ([`lint`], which judges a program that
//! is one path of a group by tapio-catalog's program groups) and the check that a Rust mirror of
//! a C struct has the layout the object's BTF records ([`layout`], [`mirror_layout!`]).
//!
//! May import: tapio-catalog (data only). May not import: aya (the runtime: `aya-obj` and
//! `object`, the parsers, are fine), tokio, any other tapio crate (the bundle only in tests),
//! anyhow. The rules live in one table, `loader/tests/crate_rules.rs`; docs/architecture.md
//! draws the picture.

pub mod arch;
pub mod btf;
pub mod btf_minimize;
pub mod helpers;
pub mod inspect;
pub mod layout;
pub mod lint;

#[cfg(test)]
use tapio_bundle as bundle;
