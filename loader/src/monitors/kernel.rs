//! The kernel monitor: per-cgroup TCP socket lifecycle and OOM kills (probes/kernel.bpf.c).
//!
//! `sock/inet_sock_set_state` exists since 4.16
//! (<https://github.com/torvalds/linux/blob/v4.16/include/trace/events/sock.h>); the raw
//! tracepoint `mark_victim` since 4.17 (raw tracepoints), its task-pointer prototype since 6.8
//! (<https://github.com/torvalds/linux/blob/v6.8/include/trace/events/oom.h>), which the probe
//! detects through CO-RE. The socket's own cgroup (`sk_cgrp_data.cgroup`) is read on 5.15+.

use super::{AttachPoint, MonitorSpec, ProgramSpec};

/// The kernel monitor's programs.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "kernel",
    programs: &[
        ProgramSpec {
            name: "kernel_sock_state",
            attach: AttachPoint::TracePoint { category: "sock", name: "inet_sock_set_state" },
        },
        ProgramSpec { name: "kernel_oom_victim", attach: AttachPoint::RawTracePoint { name: "mark_victim" } },
    ],
};
