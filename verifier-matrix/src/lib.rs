//! The verifier matrix: fetches real distribution kernels, boots each in QEMU with the
//! tapio-probes bundle inside, and reports what loaded, attached and decoded on each.

pub mod apt;
pub mod console;
pub mod deb;
pub mod debindex;
pub mod fetch;
pub mod initramfs;
pub mod manifest;
pub mod qemu;
pub mod runner;
pub mod guest;
pub mod matrix;
pub mod report;
pub mod results;
pub mod ui;
pub mod snapshots;
