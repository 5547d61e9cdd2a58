//! cgroup_watch: not a monitor of its own. One tracepoint program (probes/cgroup_watch.bpf.c) that
//! reports every cgroup made in the v2 hierarchy, so container attribution (tapio-decode's `attribution`)
//! knows a container's cgroup before the container's first event. `run` loads it beside the
//! monitors asked for; it is not in [`crate::MONITORS`].
//!
//! `cgroup/cgroup_mkdir` exists since 4.13
//! (<https://github.com/torvalds/linux/blob/v4.13/include/trace/events/cgroup.h>); its `id` is the
//! cgroup's kernfs id, the one `bpf_get_current_cgroup_id()` returns, since 5.5
//! (<https://github.com/torvalds/linux/blob/v5.5/include/trace/events/cgroup.h>). Before 5.5 the
//! program emits nothing and attribution has only the scan at start.


use crate::{AttachPoint, MonitorSpec, ProgramSpec};

/// The watcher's one program.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "cgroup_watch",
    programs: &[ProgramSpec {
        name: "cgroup_watch_mkdir",
        attach: AttachPoint::TracePoint { category: "cgroup", name: "cgroup_mkdir" },
    }],
};
