//! The network monitor: TCP connect, accept, close with byte counts, and state changes, IPv4 and
//! IPv6 (probes/network.bpf.c).
//!
//! Needs one classic tracepoint, `sock/inet_sock_set_state`, added in 4.16
//! (<https://github.com/torvalds/linux/blob/v4.16/include/trace/events/sock.h>), plus an LRU hash
//! map (4.10+); no kprobes or fentry, so it runs where those are disabled.

use super::{AttachPoint, MonitorSpec, ProgramSpec};

/// The network monitor's programs.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "network",
    programs: &[ProgramSpec {
        name: "network_set_state",
        attach: AttachPoint::TracePoint { category: "sock", name: "inet_sock_set_state" },
    }],
};
