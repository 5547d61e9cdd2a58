//! The process monitor: exec, fork and exit with true parent lineage (probes/process.bpf.c).
//!
//! Needs only tracepoints, so it runs on kernels without kprobes or fentry:
//! `sched_process_exec` exists since 3.4
//! (<https://github.com/torvalds/linux/blob/v3.4/include/trace/events/sched.h>), raw tracepoints
//! since 4.17, and the object uses no global data or loops, so 4.19 can verify it.

use crate::{AttachPoint, MonitorSpec, ProgramSpec};

/// The process monitor's programs.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "process",
    programs: &[
        ProgramSpec {
            name: "process_exec",
            attach: AttachPoint::TracePoint { category: "sched", name: "sched_process_exec" },
        },
        ProgramSpec { name: "process_fork", attach: AttachPoint::RawTracePoint { name: "sched_process_fork" } },
        ProgramSpec {
            name: "process_exit",
            attach: AttachPoint::TracePoint { category: "sched", name: "sched_process_exit" },
        },
    ],
};
