//! cgroup_watch records (probes/cgroup_watch.bpf.c): a cgroup made in the v2 hierarchy, which
//! container attribution (crate::attribution) reads. Not an output event: the monitor's catalog
//! entry is tapio-runtime's `monitors::cgroup_watch`.

use super::{c_string, read_record, DecodeError, TapioHeader};

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
