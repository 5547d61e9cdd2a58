//! The run's start: the kernel half of the filters, then the monitors, loaded here or adopted
//! from a previous run's pins (crate::pin), then the heap that loading used is given back.

use std::path::PathBuf;

use aya::Btf;
use tracing::{error, info};

use super::{RunError, RunOptions};
use crate::{
    attribution::Attributor,
    filter,
    monitors::{self, LoadedMonitor, MonitorError, MonitorFailure, TargetBtf},
    pin::{self, Adopted},
    privileges,
};

/// What [`load_all`] started: the monitors that loaded and why the others did not.
#[derive(Default)]
pub struct Started {
    pub loaded: Vec<LoadedMonitor>,
    pub failed: Vec<MonitorFailure>,
}

/// Every monitor the run streams from: loaded by this process, or adopted from pins.
pub(super) struct Monitors {
    pub(super) loaded: Vec<LoadedMonitor>,
    pub(super) failed: Vec<MonitorFailure>,
    /// Monitors a previous run pinned under `--pin-path`: they stream from their pinned buffers
    /// and nothing of theirs was loaded.
    pub(super) adopted: Vec<Adopted>,
}

/// The filters as the run holds them. With any filter on, the kernel half goes into the load
/// options, so the objects carry it from their first event; the cgroup sets are resolved over
/// a scan made now, and the run's own scan and the watcher's records refine them once running.
pub(super) fn install_filters(options: &mut RunOptions) -> filter::Active {
    let filtering = filter::Active {
        filters: options.filters.clone(),
        drops: std::sync::Arc::new(filter::AgentDrops::new()),
        kernel_on: options.filters.any(),
        dirty: false,
    };
    if filtering.kernel_on {
        let mut early = options.attribution.map(Attributor::new);
        if let (Some(a), true) = (early.as_mut(), filtering.filters.by_cgroup()) {
            if let Ok(Some(root)) = crate::cgroup2::mounted_root() {
                a.scan(&root);
            }
        }
        options.load.filter = Some(filtering.kernel(early.as_ref()));
        info!(filters = ?filtering.filters, "filters: on in the kernel and in the agent");
    }
    filtering
}

/// Adopts what a previous run pinned under `--pin-path`, loads the other monitors and pins
/// them there. Fails when nothing that was asked for runs.
pub(super) fn load_or_adopt(options: &RunOptions) -> Result<Monitors, RunError> {
    let adopted = match &options.pin_path {
        Some(dir) => pin::adopt(dir, &options.monitors, &options.load.delivery)?.unwrap_or_default(),
        None => Vec::new(),
    };
    let to_load = RunOptions {
        monitors: options.monitors.iter().copied().filter(|m| !adopted.iter().any(|a| a.monitor == m.name)).collect(),
        ..options.clone()
    };
    let Started { mut loaded, failed } =
        if to_load.monitors.is_empty() { Started::default() } else { load_all(&to_load)? };
    if loaded.is_empty() && adopted.is_empty() {
        return Err(RunError::NothingRunning { failed });
    }
    if let Some(dir) = &options.pin_path {
        pin::pin_all(dir, &mut loaded)?;
    }
    Ok(Monitors { loaded, failed, adopted })
}

/// Gives the heap that loading freed back to the kernel. Relocating against the kernel's BTF
/// parses all of it (tens of MB on a 6.x kernel) and frees it once every monitor has loaded;
/// glibc keeps freed memory for reuse, so the agent sat at its load-time peak for the whole run
/// (49 MB resident after start with every monitor, 17 MB once trimmed; the static musl build
/// that the image ships already returns it: 12 MB).
pub(super) fn return_startup_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of and inside glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Makes glibc map every large allocation on its own and unmap it when freed, for the whole run.
///
/// Start-up parses the kernel's BTF once per object (a 9-13 MB type vector, the 5.5 MB file read
/// whole), each freed before the next. By default glibc raises its mmap threshold to the size of
/// the first such block freed, so every later parse lands in the brk heap instead, where it
/// fragments and stays: measured here with every monitor, the start-up peak was 34.7 MiB with
/// the threshold left dynamic and 31.5 MiB with it fixed at glibc's initial 128 KiB. The static
/// musl build the image ships maps large blocks on its own anyway.
pub(super) fn unmap_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tunable of glibc's allocator; it is safe at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Reads the BTF the loader relocates against: the given file, or the kernel's own.
pub fn load_btf(path: Option<&PathBuf>) -> Result<Btf, RunError> {
    match path {
        Some(path) => Btf::parse_file(path, aya::Endianness::default())
            .map_err(|source| RunError::BtfFile { path: path.clone(), source }),
        None => Btf::from_sys_fs().map_err(RunError::NoKernelBtf),
    }
}

/// The BTF the run relocates against, with the errors of [`load_btf`]: the given file, parsed
/// here once and lent to every load (Some); or the kernel's own (None: `TargetBtf::Kernel`).
///
/// The kernel's BTF is parsed here only to be checked, and dropped before any object loads:
/// every object's loader parses it again anyway (aya's `EbpfLoader::new`), and holding this
/// copy across those loads made two parsed copies the agent's start-up peak (48 MiB with every
/// monitor; monitors::target_btf). The check stays because aya's loader treats a kernel BTF it
/// cannot parse as none and would load without relocating, reading fields at the offsets the
/// probes were compiled with; here a missing or corrupt BTF stops the run with its cause.
pub(super) fn external_btf(path: Option<&PathBuf>) -> Result<Option<Btf>, RunError> {
    match path {
        Some(_) => load_btf(path).map(Some),
        None => load_btf(None).map(|kernel| {
            drop(kernel);
            None
        }),
    }
}

/// `external`'s types, or the kernel's own when there is no file.
pub(super) fn target(external: Option<&Btf>) -> TargetBtf<'_> {
    external.map_or(TargetBtf::Kernel, TargetBtf::Parsed)
}

/// Loads and attaches every requested monitor. A monitor that fails is reported and left out,
/// unless `options.strict`: then the first failure is returned and what was attached is dropped.
/// Failing the privilege check or reading the BTF stops everything (no monitor could load).
pub fn load_all(options: &RunOptions) -> Result<Started, RunError> {
    privileges::check()?;
    privileges::raise_memlock();
    let external = external_btf(options.btf.as_ref())?;
    let mut started = Started::default();
    for spec in &options.monitors {
        let loaded = monitors::load(spec, target(external.as_ref()), &options.load).and_then(|mut m| {
            monitors::dns::set_ports(&mut m.ebpf, &options.dns_ports)
                .map(|_| m)
                .map_err(|source| MonitorError::Map { monitor: spec.name, map: monitors::dns::DNS_PORTS_MAP, source })
        });
        match loaded {
            Ok(m) => started.loaded.push(m),
            Err(e) if options.strict => {
                return Err(if e.is_permission() { RunError::Permission { source: e } } else { RunError::Monitor(e) });
            }
            Err(e) => {
                let failure = MonitorFailure::new(spec.name, &e);
                error!(monitor = spec.name, errno = failure.errno, "monitor not running: {}", failure.reason);
                started.failed.push(failure);
            }
        }
    }
    Ok(started)
}

