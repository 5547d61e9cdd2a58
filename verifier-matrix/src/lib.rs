//! The verifier matrix: fetches real distribution kernels, boots each in QEMU with the
//! tapio-probes bundle inside, and reports what loaded, attached and decoded on each.
//!
//! Modules by role:
//! - [`kernels`]: which kernels (manifest, lock, package index, apt mirror);
//! - [`artifacts`]: the files a VM boots (fetch and cache, `.deb` extraction, kernel image,
//!   the guest agent);
//! - [`vm`]: one boot (initramfs, QEMU argv, the QEMU process, console scanning);
//! - [`report`]: what a boot means (results from the guest protocol, judge, render, snapshots);
//! - [`matrix`] runs them in order for every kernel, and [`ui`] shows the progress.

pub mod arch;
pub mod artifacts;
pub mod kernels;
pub mod matrix;
pub mod report;
pub mod ui;
pub mod vm;
