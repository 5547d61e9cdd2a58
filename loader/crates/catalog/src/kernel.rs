//! The kernel monitor: per-cgroup TCP socket lifecycle and OOM kills (probes/kernel.bpf.c).
//!
//! `sock/inet_sock_set_state` exists since 4.16
//! (<https://github.com/torvalds/linux/blob/v4.16/include/trace/events/sock.h>); the raw
//! tracepoint `mark_victim` since 4.17 (raw tracepoints), its task-pointer prototype since 6.8
//! (<https://github.com/torvalds/linux/blob/v6.8/include/trace/events/oom.h>), which the probe
//! detects through CO-RE. Before 6.8 the victim's task comes from the raw tracepoint
//! `signal_generate` (4.17+; the tracepoint since 3.x,
//! <https://github.com/torvalds/linux/blob/v4.17/include/trace/events/signal.h>), which
//! `__oom_kill_process` fires with the victim right before `mark_oom_victim`
//! (<https://github.com/torvalds/linux/blob/v6.7/mm/oom_kill.c>). The socket's own cgroup is read
//! from `sk_cgrp_data`: a pointer since 5.15, a tagged word before.

use crate::{AttachPoint, MonitorSpec, ProgramSpec};

/// The kernel monitor's programs.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "kernel",
    programs: &[
        ProgramSpec {
            name: "kernel_sock_state",
            attach: AttachPoint::TracePoint { category: "sock", name: "inet_sock_set_state" },
        },
        ProgramSpec { name: "kernel_oom_victim", attach: AttachPoint::RawTracePoint { name: "mark_victim" } },
        ProgramSpec { name: "kernel_oom_signal", attach: AttachPoint::RawTracePoint { name: "signal_generate" } },
    ],
};
