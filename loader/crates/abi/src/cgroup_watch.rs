//! cgroup_watch records (probes/include/cgroup_watch.h): a cgroup made in the v2 hierarchy.

use crate::TapioHeader;

/// `tapio_header.monitor` of its records (`TAPIO_MONITOR_CGROUP_WATCH`).
pub const MONITOR_ID: u8 = 8;
/// `enum cgroup_watch_kind`.
pub const CGROUP_WATCH_MKDIR: u8 = 1;
/// `CGROUP_WATCH_PATH_MAX`.
pub const PATH_MAX: usize = 512;
pub const F_PATH_TRUNCATED: u32 = 0x1;

/// Mirror of `struct cgroup_watch_event` (probes/include/cgroup_watch.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CgroupWatchEvent {
    pub hdr: TapioHeader,
    pub cgroup_id: u64,
    pub level: u32,
    pub flags: u32,
    pub path: [u8; PATH_MAX],
}
