//! Builds the guest agent: a static musl `tapio-guest` that is `/init` in every VM.
//!
//! Static because the initramfs holds no libc; musl because glibc's static binaries still try to
//! load NSS modules. Built through cargo so the same lockfile and bundle are used, once per
//! architecture the run boots (the bundle inside follows the target: arm64 objects for arm64).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use thiserror::Error;

use crate::arch::{Arch, ArchExt as _};

/// The target triple of the x86_64 guest agent (the host row runs it too).
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Debug, Error)]
pub enum GuestBuildError {
    #[error("guest build: run cargo: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("guest build: cargo build -p tapio-guest --target {target} failed ({status}); is the target installed? (ci/setup.sh adds it)")]
    Failed { target: &'static str, status: std::process::ExitStatus },
}

/// Builds `tapio-guest` for `arch`'s musl target in release mode and returns the binary's path.
pub fn build(workspace: &Path, arch: Arch) -> Result<PathBuf, GuestBuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = arch.guest_target();
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "-p", "tapio-guest", "--target", target])
        .status()
        .map_err(GuestBuildError::Spawn)?;
    if !status.success() {
        return Err(GuestBuildError::Failed { target, status });
    }
    Ok(workspace.join("target").join(target).join("release").join("tapio-guest"))
}
