//! The dns monitor: DNS queries and responses (probes/dns.bpf.c), matched and timed in user
//! space by tapio-decode's `dns::Correlator`.
//!
//! Two paths, tried in this order ([`MESSAGES`]):
//! - `packet`: cgroup_skb programs on the cgroup v2 root read each message from the packet, and a
//!   cgroup/sock_create program remembers each socket's owner by its cookie
//!   (probes/include/skb.bpf.h). Nothing runs on a syscall, so the node's unrelated reads and
//!   writes pay nothing; TCP messages are framed by their stream position. Needs cgroup v2 (mounted
//!   by the loader where the node has none, tapio-features' `cgroup2`), cgroup_skb and
//!   cgroup/sock_create (4.10), and `bpf_get_socket_cookie` in both.
//! - `syscalls`, the fallback: the messages read from the buffers of send and receive syscalls.
//!   It puts every syscall of the node on the tracing slow path while attached.
//!
//! The syscall path needs only syscall tracepoints: `syscalls/sys_enter_*` and `sys_exit_*` exist since 2.6.37
//! (<https://github.com/torvalds/linux/blob/v2.6.37/include/trace/events/syscalls.h>, with
//! `CONFIG_FTRACE_SYSCALLS`). The object uses no loops and no global data; its reads of user
//! buffers use `bpf_probe_read_user` (5.5,
//! <https://github.com/torvalds/linux/commit/6ae08ae3dea2cfa03dd3665a3c8475c2d429ef47>).
//! The loader fills the `dns_ports` map after load (tapio-runtime's `monitors::dns`).

use crate::{syscall, Alternatives, AttachPoint, MonitorSpec, ProgramSet, ProgramSpec};

/// The two ways to DNS messages, best first.
pub const MESSAGES: Alternatives = Alternatives {
    monitor: "dns",
    name: "dns_messages",
    sets: &[
        ProgramSet { label: "packet", programs: &["dns_sock_create", "dns_skb_egress", "dns_skb_ingress"] },
        ProgramSet {
            label: "syscalls",
            programs: &[
                "dns_sendto",
                "dns_sendmsg",
                "dns_sendmmsg",
                "dns_write",
                "dns_writev",
                "dns_recvfrom_enter",
                "dns_recvfrom_exit",
                "dns_recvmsg_enter",
                "dns_recvmsg_exit",
                "dns_read_enter",
                "dns_read_exit",
            ],
        },
    ],
};

/// The dns monitor's programs. Packet path: the owner program first, so a socket created while
/// the packet programs attach is already remembered. Syscall path: sends are read at entry,
/// receives at exit.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "dns",
    programs: &[
        ProgramSpec { name: "dns_sock_create", attach: AttachPoint::CgroupSockCreate },
        ProgramSpec { name: "dns_skb_egress", attach: AttachPoint::CgroupSkb { egress: true } },
        ProgramSpec { name: "dns_skb_ingress", attach: AttachPoint::CgroupSkb { egress: false } },
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
