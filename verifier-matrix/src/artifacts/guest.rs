//! Builds the guest agent: a static musl `tapio-guest` that is `/init` in every VM.
//!
//! Static because the initramfs holds no libc; musl because glibc's static binaries still try to
//! load NSS modules. Built through cargo so the same lockfile and bundle are used.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use thiserror::Error;

/// The target triple of the guest agent.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";

#[derive(Debug, Error)]
pub enum GuestBuildError {
    #[error("guest build: run cargo: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("guest build: cargo build -p tapio-guest --target {GUEST_TARGET} failed ({0}); is the target installed? (ci/setup.sh adds it)")]
    Failed(std::process::ExitStatus),
}

/// Builds `tapio-guest` for musl in release mode and returns the binary's path.
pub fn build(workspace: &Path) -> Result<PathBuf, GuestBuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "-p", "tapio-guest", "--target", GUEST_TARGET])
        .status()
        .map_err(GuestBuildError::Spawn)?;
    if !status.success() {
        return Err(GuestBuildError::Failed(status));
    }
    Ok(workspace.join("target").join(GUEST_TARGET).join("release").join("tapio-guest"))
}
