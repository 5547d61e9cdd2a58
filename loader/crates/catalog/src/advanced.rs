//! The advanced monitor's programs (probes/advanced.bpf.c): the event path on every syscall
//! entry, with two alternatives ([`SYSCALL_GROUP`]), and the time-bound flusher. Its kernel
//! requirements and knobs are described with its loading, in tapio-runtime's `monitors::advanced`.

use crate::{AttachPoint, MonitorSpec, ProgramSpec};

/// The alternative paths to the syscall events, best first: the raw tracepoint (4.17+; a
/// filtered-out syscall costs only the pre-filter), then the classic tracepoint, which fills a
/// perf trace record with every syscall's arguments before the program runs.
pub const SYSCALL_GROUP: crate::ProgramGroup = crate::ProgramGroup {
    monitor: "advanced",
    name: "syscall_events",
    programs: &["advanced_sys_enter", "advanced_sys_enter_tp"],
};

/// The advanced monitor's programs: the event path (two alternatives, [`SYSCALL_GROUP`]) and the
/// time-bound flusher.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "advanced",
    programs: &[
        ProgramSpec { name: "advanced_sys_enter", attach: AttachPoint::RawTracePoint { name: "sys_enter" } },
        ProgramSpec {
            name: "advanced_sys_enter_tp",
            attach: AttachPoint::TracePoint { category: "raw_syscalls", name: "sys_enter" },
        },
        ProgramSpec { name: "advanced_flush", attach: AttachPoint::RawTracePoint { name: "sched_switch" } },
    ],
};
