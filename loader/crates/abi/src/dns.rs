//! The dns monitor's records (probes/include/dns.h). A record is the full `dns_msg_event`, or
//! the header-only `dns_event` when the probe could not capture the message bytes.

use crate::{network::TapioFlow, TapioHeader};

pub const DNS_QUERY: u8 = 1;
pub const DNS_RESPONSE: u8 = 2;

pub const DNS_DIR_SEND: u8 = 1;
pub const DNS_DIR_RECV: u8 = 2;

pub const DNS_F_NO_SCRATCH: u32 = 0x1;
pub const DNS_F_READ_FAILED: u32 = 0x2;
/// A UDP message shorter than the 12-byte DNS header: no field of it can be trusted.
pub const DNS_F_RUNT: u32 = 0x8;
/// perf build, packet path: the message bytes are in the packet bytes that follow the record,
/// from `tail_off` on (`probes/include/dns.h`).
pub const DNS_F_SKB_TAIL: u32 = 0x40;
pub const DNS_F_TCP_PREFIX: u32 = 0x4;
/// Bytes of message in a full record (`DNS_MSG_MAX`).
pub const DNS_MSG_MAX: usize = 512;

/// Mirror of `struct dns_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DnsEvent {
    pub hdr: TapioHeader,
    pub flow: TapioFlow,
    pub dns_id: u16,
    pub dns_flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub msg_len: u32,
    pub cap_len: u32,
    pub direction: u8,
    pub _pad0: u8,
    pub tail_off: u16,
    pub flags: u32,
}

/// Mirror of `struct dns_msg_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DnsMsgEvent {
    pub base: DnsEvent,
    pub msg: [u8; DNS_MSG_MAX],
}
