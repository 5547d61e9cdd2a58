//! The kernel monitor's records (probes/include/kernel.h).

use crate::{network::TapioFlow, TapioHeader};

pub const KERNEL_CONNECT: u8 = 1;
pub const KERNEL_ACCEPT: u8 = 2;
pub const KERNEL_CLOSE: u8 = 3;
pub const KERNEL_OOM_KILL: u8 = 4;

pub const KERNEL_F_SOCK_CGROUP: u32 = 0x1;
pub const KERNEL_F_VICTIM_TASK: u32 = 0x1;
pub const KERNEL_F_VICTIM_UID: u32 = 0x2;

/// Mirror of `struct kernel_sock_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelSockEvent {
    pub hdr: TapioHeader,
    pub flow: TapioFlow,
    pub oldstate: u8,
    pub newstate: u8,
    pub _pad0: u16,
    pub flags: u32,
}

/// Mirror of `struct kernel_oom_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelOomEvent {
    pub hdr: TapioHeader,
    pub victim_cgroup_id: u64,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_uid: u32,
    pub flags: u32,
    pub victim_comm: [u8; 16],
}
