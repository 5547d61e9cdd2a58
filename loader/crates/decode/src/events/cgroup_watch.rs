//! cgroup_watch records (probes/cgroup_watch.bpf.c): a cgroup made in the v2 hierarchy, which
//! container attribution (crate::attribution) reads. Not an output event: the monitor's catalog
//! entry is tapio-runtime's `monitors::cgroup_watch`.

use super::{c_string, read_record, DecodeError, TapioHeader};
// The record mirrors and their C constants (probes/include/cgroup_watch.h).
use tapio_abi::cgroup_watch::*;


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
