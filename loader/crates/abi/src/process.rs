//! The process monitor's records (probes/include/process.h).

use crate::TapioHeader;

pub const PROCESS_EXEC: u8 = 1;
pub const PROCESS_FORK: u8 = 2;
pub const PROCESS_EXIT: u8 = 3;

pub const PROCESS_F_ARGS_TRUNCATED: u32 = 0x1;
pub const PROCESS_F_FILENAME_TRUNCATED: u32 = 0x2;

/// Mirror of `struct process_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEvent {
    pub hdr: TapioHeader,
    pub ppid: u32,
    pub child_tgid: u32,
    pub pid_ns: u32,
    pub exit_code: u32,
    pub duration_ns: u64,
    pub args_size: u32,
    pub flags: u32,
}

/// Bytes of `process_exec_event.args` (`PROCESS_ARGS_LEN`).
pub const PROCESS_ARGS_LEN: usize = 1024;
/// Mirror of `struct process_exec_event`. The probe sends it cut after `base.args_size` bytes of
/// `args`, so a record is `EXEC_ARGS_OFFSET + args_size` bytes long, not always this size.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcessExecEvent {
    pub base: ProcessEvent,
    pub filename: [u8; 256],
    pub args: [u8; PROCESS_ARGS_LEN],
}
