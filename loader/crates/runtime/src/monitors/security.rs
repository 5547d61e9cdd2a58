//! The security monitor's configuration: the initial mount namespace, written into
//! [`CONFIG_MAP`] after load (see [`initial_mount_ns`]); the probe compares each caller's against
//! it to flag `in_container`. Its programs, their alternative paths and optional sets are the
//! catalog's (`tapio_catalog::security`, re-exported here).

use std::{os::unix::fs::MetadataExt, path::Path};

use thiserror::Error;

pub use tapio_catalog::security::{CAPABILITY_GROUP, FINIT_MODULE, INIT_MODULE, NEW_MOUNT_API, OPEN_TREE_ATTR, SPEC};

/// The one-slot array holding `struct security_config`.
pub const CONFIG_MAP: &str = "security_config";

/// Mirror of `struct security_config` (probes/include/security.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityConfig {
    pub init_mnt_ns: u32,
    pub _pad0: u32,
}

// SAFETY: repr(C), two u32 fields, no padding: every bit pattern is valid.
unsafe impl aya::Pod for SecurityConfig {}

/// Why the initial mount namespace could not be read.
#[derive(Debug, Error)]
#[error("security: initial mount namespace: {path}: {source}")]
pub struct NamespaceError {
    path: &'static str,
    #[source]
    source: std::io::Error,
}

/// The initial mount namespace's inode number from 6.18 on: the kernel gives the initial
/// namespaces fixed numbers (`MNT_NS_INIT_INO` in include/uapi/linux/nsfs.h,
/// <https://github.com/torvalds/linux/blob/v6.18/include/uapi/linux/nsfs.h>).
pub const MNT_NS_INIT_INO: u32 = 0xEFFF_FFF8;

/// The first kernel with [`MNT_NS_INIT_INO`].
pub const FIXED_NS_INODES_SINCE: tapio_object::lint::KernelVersion = tapio_object::lint::KernelVersion::new(6, 18);

/// Where the initial mount namespace is read before 6.18: pid 1's, when the loader sees the
/// host's pid namespace. Reading it needs ptrace access to pid 1 (CAP_SYS_PTRACE in a container).
const PID1_MNT_NS: &str = "/proc/1/ns/mnt";

/// The inode number of the initial mount namespace and where it came from: the kernel's fixed
/// number on 6.18+, else pid 1's namespace. The loader's own namespace is never taken instead:
/// inside a container it is the container's, and every host process would be reported
/// `in_container: true`. Unreadable, the probe decides by the pid namespace alone (see
/// [`CONFIG_MAP`]) and the caller says so.
pub fn initial_mount_ns() -> Result<(u32, &'static str), NamespaceError> {
    initial_mount_ns_for(&tapio_features::kernel::release())
}

fn initial_mount_ns_for(release: &str) -> Result<(u32, &'static str), NamespaceError> {
    if tapio_object::lint::KernelVersion::parse(release).is_ok_and(|v| v >= FIXED_NS_INODES_SINCE) {
        return Ok((MNT_NS_INIT_INO, "MNT_NS_INIT_INO (6.18+)"));
    }
    std::fs::metadata(Path::new(PID1_MNT_NS))
        // nsfs inode numbers are 32-bit (`ns_common.inum` is an unsigned int).
        .map(|m| (m.ino() as u32, PID1_MNT_NS))
        .map_err(|source| NamespaceError { path: PID1_MNT_NS, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6.18+ takes the kernel's fixed number; an older kernel reads pid 1's namespace or fails,
    /// and never falls back to the loader's own (a container's) namespace.
    #[test]
    fn the_initial_mount_namespace_is_never_the_loaders_own() {
        assert_eq!(initial_mount_ns_for("6.18.44-fc").map(|(ino, _)| ino).ok(), Some(MNT_NS_INIT_INO));
        match initial_mount_ns_for("6.1.0-18-amd64") {
            Ok((_, from)) => assert_eq!(from, PID1_MNT_NS),
            Err(e) => assert_eq!(e.path, PID1_MNT_NS),
        }
        // On a 6.18+ host whose tests run in the initial mount namespace, the constant is that
        // namespace's number.
        let release = tapio_features::kernel::release();
        let own = std::fs::metadata("/proc/self/ns/mnt").map(|m| m.ino() as u32).ok();
        if tapio_object::lint::KernelVersion::parse(&release).is_ok_and(|v| v >= FIXED_NS_INODES_SINCE) && own == Some(MNT_NS_INIT_INO) {
            assert_eq!(initial_mount_ns().map(|(ino, _)| ino).ok(), own);
        }
    }
}
