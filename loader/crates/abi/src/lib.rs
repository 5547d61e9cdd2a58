//! tapio-abi: the user-space half of the one event layout. Every record a probe writes is
//! declared once in C (`probes/include/<monitor>.h`, its size asserted there) and mirrored here
//! with `#[repr(C)]`, fixed-width fields and explicit padding.
//!
//! Owns: the mirrors of the records, one module per monitor named as its header
//! (`struct tapio_header` and the monitor ids at the root), and the C constants that give their
//! bytes meaning (event kinds, flags, array lengths).
//!
//! Why a crate of its own: the mirrors are the contract between the probes and every reader
//! (the decoder, the runtime, the benches, the layout test), and a contract should not drag in
//! what one reader needs. So this crate is plain data: no decoding (tapio-decode), no maps or
//! loading (tapio-runtime), and no dependency at all. `tests/layout.rs` compares every mirror,
//! field by field, with the struct of the same name in each compiled object's BTF, so a drift
//! fails the tests, not production.
//!
//! The mirrors of what user space writes into a probe's maps (its configuration: the source
//! filter's flags, `security_config`, `advanced_config`, the xdp filter's config) stay beside the
//! runtime code that writes them: aya's map API needs them to implement `aya::Pod`, a trait of a
//! crate this one may not import, and only the runtime writes them.
//!
//! May not import: anything (no aya, aya-obj, object, tokio, serde, anyhow, nor any tapio crate);
//! its tests use tapio-object and tapio-bundle. The rules live in one table,
//! `loader/tests/crate_rules.rs`.

pub mod advanced;
pub mod cgroup_watch;
pub mod dns;
pub mod kernel;
pub mod network;
pub mod process;
pub mod security;

/// Mirror of `struct tapio_header` (probes/include/common.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TapioHeader {
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub cgroup_id: u64,
    pub uid: u32,
    pub monitor: u8,
    pub kind: u8,
    pub _pad0: u16,
    pub comm: [u8; 16],
}

/// Monitor ids carried in `tapio_header.monitor` (`enum tapio_monitor`).
pub const MONITOR_PROCESS: u8 = 1;
pub const MONITOR_DNS: u8 = 2;
pub const MONITOR_NETWORK: u8 = 3;
pub const MONITOR_KERNEL: u8 = 4;
pub const MONITOR_SECURITY: u8 = 5;
pub const MONITOR_ADVANCED: u8 = 7;
