//! The advanced monitor: the high-volume path over every syscall entry, with a pre-filter,
//! per-type sampling, an LRU dedup cache and per-CPU batching (probes/advanced.bpf.c).
//!
//! Kernel requirements, all met by 5.10:
//! `raw_syscalls/sys_enter` exists since 2.6.32 with `CONFIG_HAVE_SYSCALL_TRACEPOINTS`
//! (<https://github.com/torvalds/linux/blob/v2.6.32/include/trace/events/syscalls.h>), raw
//! tracepoints (the event path on `sys_enter` and the `sched_switch` flusher) since 4.17, LRU hash maps since 4.10 and
//! `bpf_get_numa_node_id` since 4.10
//! (<https://github.com/torvalds/linux/commit/2d0e30c30f84d08dc16f0f2af41f1b8a85f0755e>).
//! `BPF_MAP_TYPE_BLOOM_FILTER` arrived in 5.16
//! (<https://github.com/torvalds/linux/commit/9330986c03006ab1d33d243b7cfe598a7a3c1baa>): a
//! separate object carries it and [`object()`] picks it only where the map type can be created.
//!
//! Every knob is a map, not global data, so one object serves every kernel: `advanced_config`
//! (batch size, flush bound, dedup window, tgid filters), `advanced_rates` (per syscall number)
//! and `advanced_filter` (the watched syscall numbers). The first two change at run time (SIGHUP);
//! the filter is fixed at load, because a bloom filter cannot forget a member.

use std::{collections::BTreeMap, os::fd::AsFd, time::Duration};

use aya::{
    maps::{Array, BloomFilter, Map, MapData, PerCpuArray},
    Ebpf,
};
use thiserror::Error;

pub use tapio_catalog::advanced::{SPEC, SYSCALL_GROUP};
use tapio_abi::advanced::{AdvancedBatch, ADVANCED_BATCH_MAX};

use crate::bundle::{self, EmbeddedObject, Transport};

/// The knobs (`struct advanced_config`), one slot.
pub const CONFIG_MAP: &str = "advanced_config";
/// Drop thresholds per syscall number.
pub const RATES_MAP: &str = "advanced_rates";
/// The watched syscall numbers: one byte per syscall number (1: watched), or a bloom filter in
/// the 5.16+ object that [`object()`] does not pick.
pub const FILTER_MAP: &str = "advanced_filter";
/// Per-CPU counters (`enum advanced_stat`).
pub const STATS_MAP: &str = "advanced_stats";
/// The per-CPU partial batches.
pub const BATCHES_MAP: &str = "advanced_batches";
/// Event types are syscall numbers below this (`ADVANCED_MAX_TYPES`).
pub const MAX_TYPES: u32 = 1024;
/// Most watched syscalls (`ADVANCED_FILTER_MAX`).
pub const FILTER_MAX: usize = 256;
/// The object file of the bloom-filter build.
pub const BLOOM_OBJECT: &str = "advanced.bloom.bpf.o";

/// Mirror of `struct advanced_config` (probes/include/advanced.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdvancedConfig {
    pub dedup_window_ns: u64,
    pub flush_ns: u64,
    pub batch_size: u32,
    pub target_tgid: u32,
    pub ignore_tgid: u32,
    pub use_filter: u32,
}

// SAFETY: repr(C), integers only, no padding (32 bytes, asserted in C and by the layout test).
unsafe impl aya::Pod for AdvancedConfig {}
/// [`AdvancedBatch`] (tapio-abi's mirror, which knows no aya) as aya reads it from a map.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodBatch(AdvancedBatch);
// SAFETY: repr(C) integers and byte arrays, no padding (asserted in C and by the layout test).
unsafe impl aya::Pod for PodBatch {}

/// The syscalls the advanced monitor watches from the configuration, by name (the names
/// `syscall_sampling` accepts): file I/O, a flood on any busy node, and what the old suite's
/// "advanced" path watched.
pub const WATCHED: &[(&str, u32)] = &[
    ("read", libc::SYS_read as u32),
    ("write", libc::SYS_write as u32),
    ("openat", libc::SYS_openat as u32),
    ("close", libc::SYS_close as u32),
];

/// The number of a watched syscall, by name.
pub fn watched_syscall(name: &str) -> Option<u32> {
    WATCHED.iter().find(|(n, _)| *n == name).map(|&(_, nr)| nr)
}

/// What the advanced monitor does, from the configuration file or a caller.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvancedOptions {
    /// Events per record; clamped to [`tapio_abi::advanced::ADVANCED_BATCH_MAX`].
    pub batch_size: u32,
    /// A partial batch older than this is flushed (see probes/advanced.bpf.c for what bounds it).
    pub flush_interval: Duration,
    /// Identical events within this window are suppressed and counted; zero disables.
    pub dedup_window: Duration,
    /// Fraction of events kept, for every type without its own rate.
    pub sampling: f64,
    /// Fraction kept per syscall number, overriding `sampling`.
    pub rates: BTreeMap<u32, f64>,
    /// Watched syscall numbers (the pre-filter); empty watches every syscall.
    pub syscalls: Vec<u32>,
    /// Only this process (0: all).
    pub target_tgid: u32,
}

impl Default for AdvancedOptions {
    fn default() -> Self {
        Self {
            batch_size: ADVANCED_BATCH_MAX as u32,
            flush_interval: Duration::from_millis(100),
            dedup_window: Duration::ZERO,
            sampling: 1.0,
            rates: BTreeMap::new(),
            syscalls: WATCHED.iter().map(|&(_, nr)| nr).collect(),
            target_tgid: 0,
        }
    }
}

impl AdvancedOptions {
    /// The `advanced_config` slot these options give, for a loader whose own process is `me`.
    pub fn kernel_config(&self, me: u32) -> AdvancedConfig {
        // crate::config refuses a batch_size above a record's capacity; a library caller's
        // larger value is held to it.
        let max = ADVANCED_BATCH_MAX as u32;
        AdvancedConfig {
            dedup_window_ns: self.dedup_window.as_nanos().min(u128::from(u64::MAX)) as u64,
            flush_ns: self.flush_interval.as_nanos().min(u128::from(u64::MAX)) as u64,
            batch_size: self.batch_size.clamp(1, max),
            target_tgid: self.target_tgid,
            // The loader's own writes would feed back into the flood; unless it watches itself.
            ignore_tgid: if self.target_tgid == me { 0 } else { me },
            use_filter: u32::from(!self.syscalls.is_empty()),
        }
    }
}

/// The value of `advanced_rates` for a kept fraction: how many of 2^32 random draws to drop.
pub fn drop_threshold(rate: f64) -> u64 {
    let keep = rate.clamp(0.0, 1.0);
    ((1.0 - keep) * 4_294_967_296.0).round() as u64
}

/// Why the advanced monitor's maps could not be read or written.
#[derive(Debug, Error)]
pub enum AdvancedError {
    #[error("monitor advanced: map {0}: missing from the object")]
    Missing(&'static str),
    #[error("monitor advanced: map {map}: {source}{}", crate::monitors::os_error_suffix(.source))]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("monitor advanced: map {map}: duplicate fd: {source}")]
    Fd {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor advanced: map {FILTER_MAP}: {count} syscalls, at most {FILTER_MAX}")]
    TooManySyscalls { count: usize },
}

/// The object to load: the array build on every kernel. The bloom-filter build (5.16+) stays in
/// the bundle but is not picked: a bloom lookup hashes the syscall number once per hash function,
/// about 60 ns on every syscall of the node (6.18, `kernel.bpf_stats_enabled`), where the array
/// lookup is inlined by the verifier.
pub fn object(transport: Transport) -> Option<&'static EmbeddedObject> {
    bundle::object(SPEC.name, transport)
}

/// An owned handle on one of `ebpf`'s maps (a duplicated fd), so a shared `&Ebpf`, as the run
/// loop holds after handing the objects to the metrics endpoint, can still write it.
fn owned(ebpf: &Ebpf, name: &'static str) -> Result<MapData, AdvancedError> {
    let map = ebpf.map(name).ok_or(AdvancedError::Missing(name))?;
    let data = match map {
        Map::Array(d) | Map::PerCpuArray(d) | Map::HashMap(d) | Map::BloomFilter(d) => d,
        _ => return Err(AdvancedError::Missing(name)),
    };
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|source| AdvancedError::Fd { map: name, source })?;
    MapData::from_fd(fd).map_err(|source| AdvancedError::Map { map: name, source })
}

/// Writes the knobs and the sampling rates: at load and again on SIGHUP.
pub fn apply(ebpf: &Ebpf, options: &AdvancedOptions) -> Result<(), AdvancedError> {
    let map_err = |map| move |source| AdvancedError::Map { map, source };
    let mut config = Array::<_, AdvancedConfig>::try_from(Map::Array(owned(ebpf, CONFIG_MAP)?)).map_err(map_err(CONFIG_MAP))?;
    let mut rates = Array::<_, u64>::try_from(Map::Array(owned(ebpf, RATES_MAP)?)).map_err(map_err(RATES_MAP))?;
    let default = drop_threshold(options.sampling);
    for nr in 0..MAX_TYPES {
        let value = options.rates.get(&nr).map_or(default, |&r| drop_threshold(r));
        rates.set(nr, value, 0).map_err(map_err(RATES_MAP))?;
    }
    config.set(0, options.kernel_config(std::process::id()), 0).map_err(map_err(CONFIG_MAP))?;
    Ok(())
}

/// Sets one syscall's kept fraction at run time.
pub fn set_rate(ebpf: &Ebpf, nr: u32, rate: f64) -> Result<(), AdvancedError> {
    let mut rates =
        Array::<_, u64>::try_from(Map::Array(owned(ebpf, RATES_MAP)?)).map_err(|source| AdvancedError::Map { map: RATES_MAP, source })?;
    rates.set(nr, drop_threshold(rate), 0).map_err(|source| AdvancedError::Map { map: RATES_MAP, source })
}

/// Fills the pre-filter (once, before attach) and applies the options.
pub fn configure(ebpf: &mut Ebpf, options: &AdvancedOptions) -> Result<(), AdvancedError> {
    if options.syscalls.len() > FILTER_MAX {
        return Err(AdvancedError::TooManySyscalls { count: options.syscalls.len() });
    }
    let map_err = |source| AdvancedError::Map { map: FILTER_MAP, source };
    match ebpf.map_mut(FILTER_MAP).ok_or(AdvancedError::Missing(FILTER_MAP))? {
        map @ Map::BloomFilter(_) => {
            let mut bloom = BloomFilter::<_, u32>::try_from(map).map_err(map_err)?;
            for &nr in &options.syscalls {
                bloom.insert(nr, 0).map_err(map_err)?;
            }
        }
        map => {
            let mut array = Array::<_, u8>::try_from(map).map_err(map_err)?;
            for &nr in options.syscalls.iter().filter(|&&nr| nr < MAX_TYPES) {
                array.set(nr, 1, 0).map_err(map_err)?;
            }
        }
    }
    apply(ebpf, options)
}

/// The advanced monitor's counters summed over CPUs. `seen = sent + sampled + deduped + dropped
/// + buffered` at any quiet moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdvancedStats {
    pub seen: u64,
    pub sent: u64,
    pub sampled: u64,
    pub deduped: u64,
    pub dropped: u64,
    /// Rejected by the pre-filter (not in `seen`).
    pub filtered: u64,
    /// Batch records the ring accepted.
    pub records: u64,
    /// Records flushed by the time bound rather than by size.
    pub timed: u64,
    /// Events waiting in partial batches.
    pub buffered: u64,
}

/// Reads [`AdvancedStats`].
pub fn stats(ebpf: &Ebpf) -> Result<AdvancedStats, AdvancedError> {
    let map = ebpf.map(STATS_MAP).ok_or(AdvancedError::Missing(STATS_MAP))?;
    let array = PerCpuArray::<_, u64>::try_from(map).map_err(|source| AdvancedError::Map { map: STATS_MAP, source })?;
    let sum = |i: u32| -> Result<u64, AdvancedError> {
        Ok(array.get(&i, 0).map_err(|source| AdvancedError::Map { map: STATS_MAP, source })?.iter().sum())
    };
    let batches = ebpf.map(BATCHES_MAP).ok_or(AdvancedError::Missing(BATCHES_MAP))?;
    let batches = PerCpuArray::<_, PodBatch>::try_from(batches)
        .map_err(|source| AdvancedError::Map { map: BATCHES_MAP, source })?;
    let buffered = batches
        .get(&0, 0)
        .map_err(|source| AdvancedError::Map { map: BATCHES_MAP, source })?
        .iter()
        .map(|b| u64::from(b.0.count.min(ADVANCED_BATCH_MAX as u32)))
        .sum();
    Ok(AdvancedStats {
        seen: sum(0)?,
        sent: sum(1)?,
        sampled: sum(2)?,
        deduped: sum(3)?,
        dropped: sum(4)?,
        filtered: sum(5)?,
        records: sum(6)?,
        timed: sum(7)?,
        buffered,
    })
}
