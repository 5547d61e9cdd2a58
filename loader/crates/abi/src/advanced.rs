//! The advanced monitor's batch records (probes/include/advanced.h): one ring record carries up
//! to `ADVANCED_BATCH_MAX` entries, sent cut to its `count`.

use crate::TapioHeader;

/// `tapio_header.kind` of a batch record (`enum advanced_kind`).
pub const ADVANCED_BATCH: u8 = 1;
/// Events one record can hold (`ADVANCED_BATCH_MAX`).
pub const ADVANCED_BATCH_MAX: usize = 64;
/// Bytes before the first entry (`ADVANCED_BATCH_HDR_SIZE`).
pub const ADVANCED_BATCH_HDR_SIZE: usize = 64;

/// Mirror of `struct advanced_entry`: one event inside a batch.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AdvancedEntry {
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub uid: u32,
    pub nr: u32,
    pub arg0: u64,
    pub suppressed: u32,
    pub numa_node: u16,
    pub cpu: u16,
    pub comm: [u8; 16],
}

/// Mirror of the fixed part of `struct advanced_batch` (the entries follow it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AdvancedBatchHeader {
    pub hdr: TapioHeader,
    pub count: u32,
    pub cpu: u32,
    pub first_ts_ns: u64,
}

/// Mirror of `struct advanced_batch` in full, for the layout check.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct AdvancedBatch {
    pub hdr: TapioHeader,
    pub count: u32,
    pub cpu: u32,
    pub first_ts_ns: u64,
    pub events: [AdvancedEntry; ADVANCED_BATCH_MAX],
}
