//! The dns monitor: DNS queries and responses read from send and receive syscalls
//! (probes/dns.bpf.c), matched and timed in user space by [`crate::dns::Correlator`].
//!
//! Needs only syscall tracepoints: `syscalls/sys_enter_*` and `sys_exit_*` exist since 2.6.37
//! (<https://github.com/torvalds/linux/blob/v2.6.37/include/trace/events/syscalls.h>, with
//! `CONFIG_FTRACE_SYSCALLS`). The object uses no loops and no global data; its reads of user
//! buffers use `bpf_probe_read_user` (5.5,
//! <https://github.com/torvalds/linux/commit/6ae08ae3dea2cfa03dd3665a3c8475c2d429ef47>).
//! The loader fills the `dns_ports` map after load (see [`DNS_PORTS_MAP`]).

use super::{AttachPoint, MonitorSpec, ProgramSpec};

/// The map of ports that mark DNS traffic; slot 0 gets [`DEFAULT_DNS_PORT`] at load.
pub const DNS_PORTS_MAP: &str = "dns_ports";
/// The port written to `dns_ports[0]` at load.
pub const DEFAULT_DNS_PORT: u32 = 53;

const fn syscall(program: &'static str, name: &'static str) -> ProgramSpec {
    ProgramSpec { name: program, attach: AttachPoint::TracePoint { category: "syscalls", name } }
}

/// The dns monitor's programs: sends are read at entry, receives at exit.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "dns",
    programs: &[
        syscall("dns_sendto", "sys_enter_sendto"),
        syscall("dns_sendmsg", "sys_enter_sendmsg"),
        syscall("dns_sendmmsg", "sys_enter_sendmmsg"),
        syscall("dns_write", "sys_enter_write"),
        syscall("dns_writev", "sys_enter_writev"),
        syscall("dns_recvfrom_enter", "sys_enter_recvfrom"),
        syscall("dns_recvfrom_exit", "sys_exit_recvfrom"),
        syscall("dns_recvmsg_enter", "sys_enter_recvmsg"),
        syscall("dns_recvmsg_exit", "sys_exit_recvmsg"),
        syscall("dns_read_enter", "sys_enter_read"),
        syscall("dns_read_exit", "sys_exit_read"),
    ],
};
