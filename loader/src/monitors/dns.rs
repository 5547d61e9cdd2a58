//! The dns monitor: DNS queries and responses read from send and receive syscalls
//! (probes/dns.bpf.c), matched and timed in user space by [`crate::dns::Correlator`].
//!
//! Needs only syscall tracepoints: `syscalls/sys_enter_*` and `sys_exit_*` exist since 2.6.37
//! (<https://github.com/torvalds/linux/blob/v2.6.37/include/trace/events/syscalls.h>, with
//! `CONFIG_FTRACE_SYSCALLS`). The object uses no loops and no global data; its reads of user
//! buffers use `bpf_probe_read_user` (5.5,
//! <https://github.com/torvalds/linux/commit/6ae08ae3dea2cfa03dd3665a3c8475c2d429ef47>).
//! The loader fills the `dns_ports` map after load (see [`DNS_PORTS_MAP`] and [`set_ports`]).

use aya::{maps::MapError, Ebpf};

use super::{syscall, MonitorSpec};

/// The map of ports that mark DNS traffic (probes/include/dns_ports.bpf.h). The dns object and
/// the network object (its `udp_flow` events) each have one; [`set_ports`] fills both from the
/// one `dns_ports` setting, so the two monitors always agree on what DNS traffic is.
pub const DNS_PORTS_MAP: &str = "dns_ports";
/// The port written to `dns_ports[0]` at load.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// Slots of the map (`DNS_PORTS_MAX` in probes/include/dns_ports.bpf.h); 0 marks an unused one.
pub const DNS_PORTS_MAX: u32 = 4;

/// Writes `ports` into `ebpf`'s [`DNS_PORTS_MAP`], the slots past them 0 (unused), if the object
/// has that map. Returns whether it had. At most [`DNS_PORTS_MAX`] ports are taken (the
/// configuration refuses more).
pub fn set_ports(ebpf: &mut Ebpf, ports: &[u16]) -> Result<bool, MapError> {
    let Some(map) = ebpf.map_mut(DNS_PORTS_MAP) else { return Ok(false) };
    let mut array = aya::maps::Array::<_, u32>::try_from(map)?;
    for slot in 0..DNS_PORTS_MAX {
        let port = ports.get(slot as usize).copied().unwrap_or(0);
        array.set(slot, u32::from(port), 0)?;
    }
    Ok(true)
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
