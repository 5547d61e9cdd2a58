//! One guest boot. [`initramfs`] packs what the guest needs; [`qemu`] builds QEMU's argv and
//! nothing else (pure, unit-tested); [`runner`] owns the process: spawn, stream the console,
//! enforce the wall-clock limit, kill the process group, and choose KVM or TCG once per run;
//! [`console`] finds kernel splats, panics and power-offs in the console text.
//!
//! Argv building stays apart from process lifecycle: `qemu` never spawns, `runner` never decides
//! a QEMU option.

pub mod console;
pub mod initramfs;
pub mod qemu;
pub mod runner;
