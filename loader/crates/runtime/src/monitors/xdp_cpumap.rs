//! The XDP filter's CPU map, made by the loader with a 4-byte value (a queue size only) instead
//! of by aya.
//!
//! A CPU map entry may also carry an XDP program to run on the target CPU (5.9+, an 8-byte
//! `struct bpf_cpumap_val`), and aya gives every CPU map that 8-byte value wherever the kernel
//! supports it. From 5.9 to 5.14 the kernel refuses to attach in generic (skb) mode a program
//! that uses a CPU map whose entries may carry programs (the kernel's own selftest
//! `xdp_cpumap_attach` checks that refusal), so `xdp attach` failed on every interface without a
//! native XDP driver (veth, most virtual NICs) on those kernels. The filter only queues frames
//! for other CPUs and never puts a program in an entry, so the 4-byte value is all it needs on
//! every kernel that has CPU maps (4.15+).
//!
//! aya 0.14 has no way to size an object's map value, but it takes a map already pinned at the
//! path given for that name (`EbpfLoader::map_pin_path`). So the map is made here, pinned under a
//! name of this process's own on the bpffs for the length of the load, and unpinned once aya
//! holds it. Its entries are written through this handle, whose sizes are the map's real ones
//! (aya's `CpuMap` would take the map for the 8-byte kind).

use std::{
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use aya::maps::{Array, Map, MapData, MapError};
use aya_obj::{
    generated::bpf_map_type::BPF_MAP_TYPE_CPUMAP,
    maps::{bpf_map_def, LegacyMap},
    EbpfSectionKind,
};
use thiserror::Error;

use crate::pin;

/// Why the loader's own CPU map could not be made (aya then makes it, as before this module).
#[derive(Debug, Error)]
pub enum CpuMapError {
    #[error("create: {0}")]
    Create(#[source] MapError),
    #[error("bpffs: {0}")]
    Bpffs(#[source] pin::PinError),
    #[error("pin at {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("handle: {0}")]
    Handle(#[source] MapError),
}

/// The CPU map, pinned until [`OwnCpuMap::unpin`] (or drop).
pub struct OwnCpuMap {
    entries: Array<MapData, u32>,
    pin: Option<PathBuf>,
}

impl OwnCpuMap {
    /// A CPU map of `max_entries` CPUs with 4-byte values, pinned where [`OwnCpuMap::pin_path`]
    /// says.
    pub fn create(name: &str, max_entries: u32) -> Result<Self, CpuMapError> {
        let def = bpf_map_def {
            map_type: BPF_MAP_TYPE_CPUMAP as u32,
            key_size: size_of::<u32>() as u32,
            value_size: size_of::<u32>() as u32,
            max_entries,
            ..Default::default()
        };
        let obj = aya_obj::Map::Legacy(LegacyMap {
            def,
            inner_def: None,
            section_index: 0,
            section_kind: EbpfSectionKind::Maps,
            symbol_index: None,
            data: Vec::new(),
        });
        let data = MapData::create(obj, name, None).map_err(CpuMapError::Create)?;
        let dir = Path::new(pin::BPFFS);
        pin::ensure_bpffs(dir).map_err(CpuMapError::Bpffs)?;
        let path = dir.join(unique_name());
        data.pin(&path).map_err(|source| CpuMapError::Pin { path: path.clone(), source })?;
        // Array is the one typed view of aya's that writes a u32 under a u32 key and checks only
        // those sizes, which are this map's.
        let entries = Array::try_from(Map::Array(data)).map_err(CpuMapError::Handle);
        match entries {
            Ok(entries) => Ok(Self { entries, pin: Some(path) }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Where the map is pinned while aya loads the object.
    pub fn pin_path(&self) -> Option<&Path> {
        self.pin.as_deref()
    }

    /// Removes the pin: the map lives on in the loaded object and in this handle.
    pub fn unpin(&mut self) -> io::Result<()> {
        match self.pin.take() {
            Some(path) => std::fs::remove_file(path),
            None => Ok(()),
        }
    }

    /// Queues up to `queue_size` frames for `cpu`.
    pub fn set(&mut self, cpu: u32, queue_size: u32) -> Result<(), MapError> {
        self.entries.set(cpu, queue_size, 0)
    }
}

impl Drop for OwnCpuMap {
    fn drop(&mut self) {
        let _ = self.unpin();
    }
}

/// A pin name no other process or load uses: the pid and a count.
fn unique_name() -> String {
    static LOADS: AtomicU32 = AtomicU32::new(0);
    format!("tapio-xdpf-cpumap-{}-{}", std::process::id(), LOADS.fetch_add(1, Ordering::Relaxed))
}
