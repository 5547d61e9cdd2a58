//! The network monitor's records (probes/include/network.h) and the connection tuple
//! (probes/include/sock.h) the dns and kernel monitors share.

use crate::TapioHeader;

pub const NETWORK_CONNECT: u8 = 1;
pub const NETWORK_ACCEPT: u8 = 2;
pub const NETWORK_CLOSE: u8 = 3;
pub const NETWORK_STATE_CHANGE: u8 = 4;
/// tcp_connect() sent the SYN, seen in the connecting process (fexit or kprobe).
pub const NETWORK_CONNECT_ATTEMPT: u8 = 5;
/// inet_csk_accept() returned the new socket, seen in the accepting process (fexit or kretprobe).
pub const NETWORK_ACCEPT_RETURN: u8 = 6;
/// A UDP datagram to or from a DNS port, sent or received by the process (syscall tracepoints);
/// the first of its flow within the probe's window.
pub const NETWORK_UDP_FLOW: u8 = 7;

pub const NETWORK_F_BYTES: u32 = 0x1;
pub const NETWORK_F_OWNER: u32 = 0x2;
pub const NETWORK_F_SOCK_CGROUP: u32 = 0x4;
/// connect_attempt through the kprobe path: tcp_connect's return value was not seen.
pub const NETWORK_F_RESULT_UNKNOWN: u32 = 0x8;
/// udp_flow: the process sent the datagram (flow.s* -> flow.d*).
pub const NETWORK_F_SEND: u32 = 0x10;
/// udp_flow: the process received the datagram (flow.d* -> flow.s*).
pub const NETWORK_F_RECV: u32 = 0x20;

/// Mirror of `union tapio_addr`: 16 bytes, IPv4 in the first 4 in network byte order.
pub type TapioAddr = [u8; 16];

/// Mirror of `struct tapio_flow` (probes/include/sock.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TapioFlow {
    pub saddr: TapioAddr,
    pub daddr: TapioAddr,
    pub sport: u16,
    pub dport: u16,
    pub ip_version: u8,
    pub protocol: u8,
    pub _pad0: u16,
}

/// Mirror of `struct network_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NetworkEvent {
    pub hdr: TapioHeader,
    pub flow: TapioFlow,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub oldstate: u8,
    pub newstate: u8,
    pub _pad0: u16,
    pub flags: u32,
    pub result: i32,
    /// udp_flow: datagrams of the flow folded into its previous udp_flow event.
    pub repeats: u32,
}
