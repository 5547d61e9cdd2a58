//! cgroup_watch: not a monitor of its own. One tracepoint program (probes/cgroup_watch.bpf.c) that
//! reports every cgroup made in the v2 hierarchy, so container attribution (crate::attribution)
//! knows a container's cgroup before the container's first event. `run` loads it beside the
//! monitors asked for; it is not in [`super::MONITORS`].
//!
//! `cgroup/cgroup_mkdir` exists since 4.13
//! (<https://github.com/torvalds/linux/blob/v4.13/include/trace/events/cgroup.h>); its `id` is the
//! cgroup's kernfs id, the one `bpf_get_current_cgroup_id()` returns, since 5.5
//! (<https://github.com/torvalds/linux/blob/v5.5/include/trace/events/cgroup.h>). Before 5.5 the
//! program emits nothing and attribution has only the scan at start.

use super::{AttachPoint, MonitorSpec, ProgramSpec};
use crate::events::{c_string, read_record, DecodeError, TapioHeader};

/// The watcher's one program.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "cgroup_watch",
    programs: &[ProgramSpec {
        name: "cgroup_watch_mkdir",
        attach: AttachPoint::TracePoint { category: "cgroup", name: "cgroup_mkdir" },
    }],
};

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

/// A cgroup made in the v2 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mkdir {
    pub cgroup_id: u64,
    /// From the hierarchy's root, `/a/b`.
    pub path: String,
    /// The kernel's path was longer than the record holds: `path` is its beginning.
    pub truncated: bool,
}

/// The cgroup a record announces, when it is a cgroup_watch record; None for any other monitor's.
pub fn decode(bytes: &[u8]) -> Option<Result<Mkdir, DecodeError>> {
    let header: TapioHeader = read_record(bytes, "tapio_header").ok()?;
    if header.monitor != MONITOR_ID {
        return None;
    }
    if header.kind != CGROUP_WATCH_MKDIR {
        return Some(Err(DecodeError::UnknownKind { monitor: "cgroup_watch", kind: header.kind }));
    }
    Some(read_record::<CgroupWatchEvent>(bytes, "cgroup_watch_event").map(|e| Mkdir {
        cgroup_id: e.cgroup_id,
        path: c_string(&e.path),
        truncated: e.flags & F_PATH_TRUNCATED != 0,
    }))
}
