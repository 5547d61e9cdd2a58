//! `--pin-path DIR`: programs and maps that outlive the loader, and a loader that adopts them.
//!
//! Without pins every program, link and map lives only as long as the loader's file
//! descriptors: SIGTERM or SIGKILL, and the kernel frees them all. With `--pin-path`, after
//! attaching, each monitor's links are pinned at `DIR/<monitor>/links/<program>` and its maps at
//! `DIR/<monitor>/maps/<map>`. A pinned link keeps its program attached with no process holding
//! it, so a restart (an upgrade, a crash) leaves the programs running with the same ids. The next
//! loader started with the same `DIR` adopts them: it opens the pinned `events` map and streams
//! from it without loading anything. A ring buffer keeps what the programs wrote meanwhile (up to
//! its size), so nothing is lost between the two processes; a perf event array has no reader
//! between them, and those records are lost (counted in `stats`). `tapio-load unpin` removes the
//! pins, which detaches and frees everything.
//!
//! Pinning a link needs `bpf_link`: tracepoints and kprobes are attached through one from 5.15
//! (`BPF_LINK_CREATE` on a perf event,
//! <https://github.com/torvalds/linux/commit/b89fbfbb854c9afc3047e8273cc3a694650b802e>), raw
//! tracepoints from 5.7 and fexit from 5.5. Where a link is a bare perf event attachment, the
//! loader refuses `--pin-path` with the program's name rather than pinning half a monitor.

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, MapType},
    programs::{links::FdLink, FExit, KProbe, RawTracePoint, TracePoint},
    Ebpf,
};
use thiserror::Error;

use crate::{
    bundle::Transport,
    monitors::{LinkId, LoadedMonitor, MonitorSpec},
    transport::{ring::RingReader, Delivery, EventSource},
};

/// Where bpffs is mounted on every distribution; pins must live on a bpffs.
pub const BPFFS: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` (include/uapi/linux/magic.h): what statfs says for a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Subdirectory of `DIR/<monitor>` holding the pinned links, one per program.
const LINKS: &str = "links";
/// Subdirectory of `DIR/<monitor>` holding the pinned programs: an adopting loader reads their
/// ids and statistics there.
///
/// aya 0.14 names a link's program (`FdLink::info()` and `LinkInfo::program_id`), so the links
/// alone could lead to the programs, but the directory stays, for two reasons. The pins are an
/// interface between loader versions: a loader rolled back to an earlier version adopts what
/// this one pinned, and that version reads `programs/`. And a link's info by fd
/// (`BPF_OBJ_GET_INFO_BY_FD` on a link) came in 5.8, while pinnable links came in 5.7 (raw
/// tracepoints, fexit): on 5.7 the link cannot name its program.
const PROGRAMS: &str = "programs";
/// Subdirectory of `DIR/<monitor>` holding the pinned maps, by map name.
const MAPS: &str = "maps";
/// The map every monitor's programs write their records to.
const EVENTS: &str = "events";

/// Why pinning, adopting or unpinning failed.
#[derive(Debug, Error)]
pub enum PinError {
    #[error("pin path {path}: not on a bpffs (pins live on a bpf filesystem, e.g. under {BPFFS})")]
    NotBpffs { path: PathBuf },
    #[error("pin path: bpffs not mounted at {BPFFS} and mounting it failed: {source}; mount it (mount -t bpf bpf {BPFFS}) or run as root")]
    Mount {
        #[source]
        source: io::Error,
    },
    #[error("pin path {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("monitor {monitor}: program {program}: link cannot be pinned: it is a perf event attachment without bpf_link (tracepoints and kprobes have one from 5.15); run without --pin-path on this kernel")]
    Unpinnable { monitor: &'static str, program: &'static str },
    #[error("monitor {monitor}: program {program}: missing from the object")]
    MissingProgram { monitor: &'static str, program: &'static str },
    #[error("monitor {monitor}: program {program}: take link: {source}{}", crate::monitors::os_error_suffix(.source))]
    TakeLink {
        monitor: &'static str,
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("monitor {monitor}: pin {path}: bpf_obj_pin: {source}")]
    PinLink {
        monitor: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor {monitor}: pin {path}: {source}{}", crate::monitors::os_error_suffix(.source))]
    Pin {
        monitor: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("monitor {monitor}: program {program}: id: {source}{}", crate::monitors::os_error_suffix(.source))]
    ProgramInfo {
        monitor: &'static str,
        program: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("monitor {monitor}: map id {id}: {source}{}", crate::monitors::os_error_suffix(.source))]
    MapById {
        monitor: &'static str,
        id: u32,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pin path {dir}: holds pins for {found:?} but {asked:?} were asked for; run with the same monitors, or `tapio-load unpin --pin-path {dir}` first")]
    Mismatch { dir: PathBuf, found: Vec<&'static str>, asked: Vec<&'static str> },
    #[error("monitor {monitor}: adopt {path}: {detail}")]
    Adopt { monitor: &'static str, path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinError + '_ {
    move |source| PinError::Io { path: path.to_owned(), source }
}

/// statfs's filesystem magic of `path`.
fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: zeroed is a valid statfs for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated and st a valid out pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast, reason = "f_type is i64 on x86_64 and u32/i32 elsewhere")]
    Ok(st.f_type as i64)
}

/// Makes sure a bpffs is mounted at [`BPFFS`] (as tracefs.rs does for tracefs: minimal hosts
/// and initramfs boots lack it), then that `dir` (created if missing) is on a bpffs: a pin
/// anywhere else fails with a bare EPERM, which says nothing to an operator.
pub fn ensure_bpffs(dir: &Path) -> Result<(), PinError> {
    if fs_magic(Path::new(BPFFS)).ok() != Some(BPF_FS_MAGIC) {
        let fstype = CString::new("bpf").expect("no NUL");
        let target = CString::new(BPFFS).expect("no NUL");
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(PinError::Mount { source: io::Error::last_os_error() });
        }
        tracing::info!("mounted bpffs at {BPFFS}");
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if fs_magic(dir).map_err(io_err(dir))? != BPF_FS_MAGIC {
        return Err(PinError::NotBpffs { path: dir.to_owned() });
    }
    Ok(())
}

/// `DIR/<monitor>`.
pub fn monitor_dir(dir: &Path, monitor: &str) -> PathBuf {
    dir.join(monitor)
}

/// The monitors of [`crate::monitors::MONITORS`] that have pins under `dir`.
pub fn pinned_monitors(dir: &Path) -> Vec<&'static str> {
    crate::monitors::MONITORS
        .iter()
        .map(|m| m.name)
        .filter(|m| monitor_dir(dir, m).join(MAPS).join(EVENTS).exists())
        .collect()
}

/// Pins every link and map of `loaded` under `dir`. Each link leaves its object: once pinned,
/// the pin alone keeps its program attached, whatever happens to this process. On failure the
/// pins made so far are removed, so an aborted start leaves nothing attached.
pub fn pin_all(dir: &Path, loaded: &mut [LoadedMonitor]) -> Result<(), PinError> {
    ensure_bpffs(dir)?;
    for m in loaded.iter_mut() {
        if let Err(e) = pin_monitor(dir, m) {
            for m in loaded.iter() {
                let _ = std::fs::remove_dir_all(monitor_dir(dir, m.spec.name));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Takes one link out of its program as a pinnable [`FdLink`].
fn take_fd_link(ebpf: &mut Ebpf, monitor: &'static str, program: &'static str, id: LinkId) -> Result<FdLink, PinError> {
    let take = |source| PinError::TakeLink { monitor, program, source };
    let prog = ebpf.program_mut(program).ok_or(PinError::MissingProgram { monitor, program })?;
    let unpinnable = |_| PinError::Unpinnable { monitor, program };
    Ok(match id {
        LinkId::TracePoint(id) => {
            let p: &mut TracePoint = prog.try_into().map_err(take)?;
            FdLink::try_from(p.take_link(id).map_err(take)?).map_err(unpinnable)?
        }
        LinkId::Kprobe(id) => {
            let p: &mut KProbe = prog.try_into().map_err(take)?;
            FdLink::try_from(p.take_link(id).map_err(take)?).map_err(unpinnable)?
        }
        LinkId::RawTracePoint(id) => {
            let p: &mut RawTracePoint = prog.try_into().map_err(take)?;
            p.take_link(id).map_err(take)?.into()
        }
        LinkId::Fexit(id) => {
            let p: &mut FExit = prog.try_into().map_err(take)?;
            p.take_link(id).map_err(take)?.into()
        }
        // Attached by BPF_PROG_ATTACH (before 5.7): nothing to pin.
        LinkId::CgroupSkb(_) | LinkId::CgroupSock(_) => return Err(PinError::Unpinnable { monitor, program }),
        LinkId::Cgroup(_) => unreachable!("pin_monitor pins cgroup links itself"),
    })
}

fn pin_monitor(dir: &Path, m: &mut LoadedMonitor) -> Result<(), PinError> {
    let monitor = m.spec.name;
    let links_dir = monitor_dir(dir, monitor).join(LINKS);
    let maps_dir = monitor_dir(dir, monitor).join(MAPS);
    std::fs::create_dir_all(&links_dir).map_err(io_err(&links_dir))?;
    std::fs::create_dir_all(&maps_dir).map_err(io_err(&maps_dir))?;
    for (program, id) in std::mem::take(&mut m.links) {
        let path = links_dir.join(program);
        if let LinkId::Cgroup(link) = id {
            // Our own bpf_link (crate::cgroup_link): pinned directly; dropping our fd after that
            // leaves the pin holding it.
            link.pin(&path).map_err(|source| PinError::PinLink { monitor, path: path.clone(), source })?;
            continue;
        }
        let link = take_fd_link(&mut m.ebpf, monitor, program, id)?;
        // The returned handle only closes our fd when dropped: the pin keeps the link.
        link.pin(&path).map_err(|source| PinError::Pin { monitor, path: path.clone(), source })?;
        tracing::debug!(monitor, program, path = %path.display(), "link pinned");
    }
    let programs_dir = monitor_dir(dir, monitor).join(PROGRAMS);
    std::fs::create_dir_all(&programs_dir).map_err(io_err(&programs_dir))?;
    for (name, program) in m.ebpf.programs_mut() {
        if program.fd().is_err() {
            continue; // left unloaded: this kernel lacks its attach point
        }
        let path = programs_dir.join(name);
        program.pin(&path).map_err(|source| PinError::Pin { monitor, path: path.clone(), source })?;
    }
    // The maps the object still holds, by their full names (the kernel keeps 15 characters).
    let mut pinned_ids = Vec::new();
    for (name, map) in m.ebpf.maps() {
        if is_global_data(name) {
            continue;
        }
        let path = maps_dir.join(name);
        map.pin(&path).map_err(|source| PinError::Pin { monitor, path: path.clone(), source })?;
        if let Ok(info) = MapData::from_pin(&path).and_then(|d| d.info()) {
            pinned_ids.push(info.id());
        }
    }
    // `events` left the object for the event source: find it through the programs' map ids.
    for (name, program) in m.ebpf.programs() {
        if program.fd().is_err() {
            continue; // left unloaded: this kernel lacks its attach point
        }
        let info = program.info().map_err(|source| PinError::ProgramInfo { monitor, program: name.to_owned(), source })?;
        let ids = info.map_ids().map_err(|source| PinError::ProgramInfo { monitor, program: name.to_owned(), source })?;
        for id in ids.unwrap_or_default() {
            if pinned_ids.contains(&id) {
                continue;
            }
            let data = MapData::from_id(id).map_err(|source| PinError::MapById { monitor, id, source })?;
            let info = data.info().map_err(|source| PinError::MapById { monitor, id, source })?;
            let name = info.name_as_str().unwrap_or("unnamed").to_owned();
            if is_global_data(&name) {
                continue;
            }
            let path = maps_dir.join(&name);
            data.pin(&path).map_err(|source| PinError::Pin { monitor, path: path.clone(), source })?;
            pinned_ids.push(id);
        }
    }
    tracing::info!(monitor, dir = %monitor_dir(dir, monitor).display(), "pinned links and maps");
    Ok(())
}

/// Whether a map is the object's global data (`.rodata`: the ring build's delivery knob). It is
/// not pinned: it is frozen and read by the programs alone, an adopting loader never opens it,
/// and bpffs refuses names that start with a dot (EPERM).
fn is_global_data(name: &str) -> bool {
    name.starts_with('.')
}

/// A monitor taken over from a previous loader's pins.
pub struct Adopted {
    pub monitor: &'static str,
    pub events: EventSource,
    /// How many pinned links (attached programs) the monitor has.
    pub links: usize,
    /// Its pinned programs, for the metrics endpoint.
    pub programs: Vec<PinnedProgram>,
}

/// A program an adopting loader did not load: the metrics endpoint reads it through its pin.
#[derive(Debug, Clone)]
pub struct PinnedProgram {
    pub monitor: &'static str,
    pub program: String,
    /// `DIR/<monitor>/programs/<program>`.
    pub path: PathBuf,
    /// `DIR/<monitor>/links/<program>`: while it exists, the program is attached.
    pub link: PathBuf,
}

impl PinnedProgram {
    /// The program's kernel info, or None once it is gone (unpinned by someone else).
    pub fn info(&self) -> Option<aya::programs::ProgramInfo> {
        aya::programs::ProgramInfo::from_pin(&self.path).ok()
    }

    /// Whether its link is still pinned and its program still loaded.
    pub fn attached(&self) -> bool {
        self.link.exists() && self.info().is_some()
    }
}

/// Adopts the monitors pinned under `dir`, if any: None when `dir` holds no pins (load and pin
/// as usual). The pins must be requested monitors: a pinned monitor that was not asked for is
/// refused rather than guessed at. Requested monitors without pins (a previous run that ran
/// degraded, see crate::run) are left to the caller to load and pin beside the adopted ones.
pub fn adopt(dir: &Path, monitors: &[&'static MonitorSpec], delivery: &Delivery) -> Result<Option<Vec<Adopted>>, PinError> {
    ensure_bpffs(dir)?;
    let found = pinned_monitors(dir);
    if found.is_empty() {
        return Ok(None);
    }
    let mut asked: Vec<&'static str> = monitors.iter().map(|m| m.name).collect();
    asked.sort_unstable();
    if !found.iter().all(|f| asked.contains(f)) {
        return Err(PinError::Mismatch { dir: dir.to_owned(), found, asked });
    }
    found.iter().map(|&monitor| adopt_monitor(dir, monitor, delivery)).collect::<Result<Vec<_>, _>>().map(Some)
}

fn adopt_monitor(dir: &Path, monitor: &'static str, delivery: &Delivery) -> Result<Adopted, PinError> {
    let adopt_err = |path: &Path, detail: String| PinError::Adopt { monitor, path: path.to_owned(), detail };
    // A monitor whose links are gone streams nothing: check they are still pinned.
    let links_dir = monitor_dir(dir, monitor).join(LINKS);
    let mut links = 0;
    for entry in std::fs::read_dir(&links_dir).map_err(io_err(&links_dir))? {
        let path = entry.map_err(io_err(&links_dir))?.path();
        aya::programs::links::PinnedLink::from_pin(&path).map_err(|e| adopt_err(&path, e.to_string()))?;
        links += 1;
    }
    if links == 0 {
        return Err(adopt_err(&links_dir, "no pinned link: nothing is attached".to_owned()));
    }
    if monitor == crate::monitors::advanced::SPEC.name {
        ignore_self(dir)?;
    }
    let path = monitor_dir(dir, monitor).join(MAPS).join(EVENTS);
    let data = MapData::from_pin(&path).map_err(|e| adopt_err(&path, e.to_string()))?;
    let kind = data.info().and_then(|i| i.map_type()).map_err(|e| adopt_err(&path, e.to_string()))?;
    let events = match kind {
        // The ring's wake-ups are the adopted programs' own (set when they were loaded); the reader
        // follows `delivery`.
        MapType::RingBuf => RingReader::new(data)
            .map_err(|e| adopt_err(&path, e.to_string()))
            .and_then(|ring| EventSource::from_ring(ring).map_err(|e| adopt_err(&path, e.to_string())))?,
        MapType::PerfEventArray => EventSource::open(Map::PerfEventArray(data), Transport::Perf, delivery)
            .map_err(|e| adopt_err(&path, e.to_string()))?,
        other => return Err(adopt_err(&path, format!("a {other:?} map, expected a ring buffer or perf event array"))),
    };
    let transport = events.transport;
    let programs_dir = monitor_dir(dir, monitor).join(PROGRAMS);
    let mut programs = Vec::new();
    for entry in std::fs::read_dir(&programs_dir).map_err(io_err(&programs_dir))? {
        let entry = entry.map_err(io_err(&programs_dir))?;
        let program = entry.file_name().to_string_lossy().into_owned();
        let link = links_dir.join(&program);
        if link.exists() {
            programs.push(PinnedProgram { monitor, program, path: entry.path(), link });
        }
    }
    programs.sort_by(|a, b| a.program.cmp(&b.program));
    tracing::info!(monitor, links, %transport, dir = %monitor_dir(dir, monitor).display(), "adopted pinned monitor");
    Ok(Adopted { monitor, events, links, programs })
}

/// The advanced monitor skips the loader's own syscalls (`ignore_tgid`), or its output writes
/// would feed its input. The pinned config still names the previous loader: name this one.
fn ignore_self(dir: &Path) -> Result<(), PinError> {
    use crate::monitors::advanced::{AdvancedConfig, CONFIG_MAP, SPEC};
    let monitor = SPEC.name;
    let path = monitor_dir(dir, monitor).join(MAPS).join(CONFIG_MAP);
    let adopt_err = |detail: String| PinError::Adopt { monitor, path: path.clone(), detail };
    let data = MapData::from_pin(&path).map_err(|e| adopt_err(e.to_string()))?;
    let mut config = aya::maps::Array::<_, AdvancedConfig>::try_from(Map::Array(data)).map_err(|e| adopt_err(e.to_string()))?;
    let mut value = config.get(&0, 0).map_err(|e| adopt_err(e.to_string()))?;
    let me = std::process::id();
    value.ignore_tgid = if value.target_tgid == me { 0 } else { me };
    config.set(0, value, 0).map_err(|e| adopt_err(e.to_string()))
}

/// Removes every monitor's pins under `dir`, which detaches and frees what they held (once no
/// loader has them open). Returns the directories removed.
pub fn unpin(dir: &Path) -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    for monitor in crate::monitors::MONITORS.iter().map(|m| m.name) {
        let path = monitor_dir(dir, monitor);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PinError::Io { path, source }),
        }
    }
    Ok(removed)
}

/// Logs, at shutdown, that the pins stay and how to remove them.
pub fn report_kept(dir: &Path) {
    tracing::info!(
        dir = %dir.display(),
        "pinned programs, links and maps stay attached under the pin path; `tapio-load unpin --pin-path {}` removes them",
        dir.display()
    );
}
