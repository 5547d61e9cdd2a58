//! The network monitor: TCP connect, accept, close with byte counts, and state changes, and UDP
//! flows to and from the DNS ports, IPv4 and IPv6 (probes/network.bpf.c).
//!
//! Its TCP events need one classic tracepoint, `sock/inet_sock_set_state`, added in 4.16
//! (<https://github.com/torvalds/linux/blob/v4.16/include/trace/events/sock.h>), plus an LRU hash
//! map (4.10+); no kprobes or fentry, so they run where those are disabled. `udp_flow` events
//! also need the syscall tracepoints (below); on a kernel without them they are reported
//! unavailable ([`UDP_FLOW`]) and the rest runs.
//!
//! Where the kernel allows more, two events come from kernel functions that have no tracepoint,
//! each with alternative paths tried best first (see [`crate::ProgramGroup`]):
//! - `connect_attempt` ([`CONNECT_ATTEMPT_GROUP`]): `tcp_connect()` sending the SYN, in the
//!   connecting process, with the full tuple (`tcp_v4_connect` binds the source port through
//!   `inet_hash_connect` before it calls `tcp_connect`,
//!   <https://github.com/torvalds/linux/blob/v5.10/net/ipv4/tcp_ipv4.c>). fexit (5.5+,
//!   <https://github.com/torvalds/linux/commit/fec56f5890d93fc2ed74166c397dc186b1c25951>) also
//!   gives its return value; the kprobe fallback does not, and flags the record so.
//! - `accept_return` ([`ACCEPT_RETURN_GROUP`]): `inet_csk_accept()` returning the new socket, in
//!   the accepting process: fexit, else a kretprobe. Its arguments changed in 6.10
//!   from `(sk, flags, err, kern)`
//!   (<https://github.com/torvalds/linux/blob/v6.9/net/ipv4/inet_connection_sock.c>) to
//!   `(sk, arg)` (<https://github.com/torvalds/linux/blob/v6.10/net/ipv4/inet_connection_sock.c>), which
//!   moves the return value in the fexit context; the probe picks the slot by whether the kernel's
//!   BTF has `struct proto_accept_arg`. A kretprobe holds one instance per call in flight, and a
//!   blocking accept() stays in flight while it waits: a server with more threads blocked in
//!   accept() than the kretprobe's instances (aya asks for the kernel's default) loses those
//!   returns, which the kernel counts as missed. fexit has no such limit, hence its place first.
//!
//! Both remember the calling process as the socket's owner, so an accepted socket's later state
//! changes carry the acceptor. On a kernel with neither fentry nor kprobes (this project's CI
//! host: no `CONFIG_KPROBES`, fentry refused with EPERM) both events are reported unavailable
//! with each path's reason, and the tracepoint programs run alone.
//!
//! `udp_flow` events come from the packets where the kernel allows it ([`UDP_FLOW`]: cgroup_skb on
//! the cgroup v2 root, the socket's owner remembered at its creation, see
//! probes/include/skb.bpf.h), which costs unrelated syscalls nothing. The fallback is syscall
//! tracepoints (`syscalls/sys_enter_*` and `sys_exit_*`, since
//! 2.6.37 with `CONFIG_FTRACE_SYSCALLS`,
//! <https://github.com/torvalds/linux/blob/v2.6.37/include/trace/events/syscalls.h>), as the dns
//! monitor's do: sends at the entry of `sendto`, `sendmsg` and `sendmmsg` (at their exit when the
//! socket has no local port yet: the kernel binds one inside the send), receives at the exit of
//! `recvfrom` and `recvmsg`. Their ports are the dns monitor's, in the object's own
//! `dns_ports` map (tapio-runtime's `monitors::dns::set_ports` fills both). Repeats of a flow within a second are
//! counted in an LRU hash (4.10+) and reported with its next event.

use crate::{syscall, Alternatives, AttachPoint, MonitorSpec, ProgramGroup, ProgramSet, ProgramSpec};

/// The alternative paths to `connect_attempt` events, best first.
pub const CONNECT_ATTEMPT_GROUP: ProgramGroup = ProgramGroup {
    monitor: "network",
    name: "connect_attempt",
    programs: &["network_connect_fexit", "network_connect_kprobe"],
};

/// The alternative paths to `accept_return` events, best first.
pub const ACCEPT_RETURN_GROUP: ProgramGroup = ProgramGroup {
    monitor: "network",
    name: "accept_return",
    programs: &["network_accept_fexit", "network_accept_kretprobe"],
};

/// The two ways to `udp_flow` events, best first: from the packets (cgroup_skb on the cgroup v2
/// root, owners remembered at socket creation, as the dns monitor's packet path), else from send
/// and receive syscall tracepoints, which a kernel built without `CONFIG_FTRACE_SYSCALLS` lacks;
/// the TCP programs run without either.
pub const UDP_FLOW: Alternatives = Alternatives {
    monitor: "network",
    name: "udp_flow",
    sets: &[
        ProgramSet { label: "packet", programs: &["network_sock_create", "network_skb_egress", "network_skb_ingress"] },
        ProgramSet {
            label: "syscalls",
            programs: &[
                "network_udp_sendto_exit",
                "network_udp_sendmsg_exit",
                "network_udp_sendmmsg_exit",
                "network_udp_sendto",
                "network_udp_sendmsg",
                "network_udp_sendmmsg",
                "network_udp_recvfrom_enter",
                "network_udp_recvfrom_exit",
                "network_udp_recvmsg_enter",
                "network_udp_recvmsg_exit",
            ],
        },
    ],
};

/// The network monitor's programs. The send exits come before their entries, so that a send an
/// entry parks always has its exit attached.
pub const SPEC: MonitorSpec = MonitorSpec {
    name: "network",
    programs: &[
        ProgramSpec {
            name: "network_set_state",
            attach: AttachPoint::TracePoint { category: "sock", name: "inet_sock_set_state" },
        },
        ProgramSpec { name: "network_connect_fexit", attach: AttachPoint::Fexit { function: "tcp_connect" } },
        ProgramSpec { name: "network_connect_kprobe", attach: AttachPoint::Kprobe { function: "tcp_connect" } },
        ProgramSpec { name: "network_accept_fexit", attach: AttachPoint::Fexit { function: "inet_csk_accept" } },
        ProgramSpec { name: "network_accept_kretprobe", attach: AttachPoint::Kretprobe { function: "inet_csk_accept" } },
        ProgramSpec { name: "network_sock_create", attach: AttachPoint::CgroupSockCreate },
        ProgramSpec { name: "network_skb_egress", attach: AttachPoint::CgroupSkb { egress: true } },
        ProgramSpec { name: "network_skb_ingress", attach: AttachPoint::CgroupSkb { egress: false } },
        syscall("network_udp_sendto_exit", "sys_exit_sendto"),
        syscall("network_udp_sendmsg_exit", "sys_exit_sendmsg"),
        syscall("network_udp_sendmmsg_exit", "sys_exit_sendmmsg"),
        syscall("network_udp_sendto", "sys_enter_sendto"),
        syscall("network_udp_sendmsg", "sys_enter_sendmsg"),
        syscall("network_udp_sendmmsg", "sys_enter_sendmmsg"),
        syscall("network_udp_recvfrom_enter", "sys_enter_recvfrom"),
        syscall("network_udp_recvfrom_exit", "sys_exit_recvfrom"),
        syscall("network_udp_recvmsg_enter", "sys_enter_recvmsg"),
        syscall("network_udp_recvmsg_exit", "sys_exit_recvmsg"),
    ],
};
