//! Loading and attaching monitors: one module per monitor says which programs it has and where
//! each attaches; this module does the loading, attaching and reporting for all of them.

pub mod advanced;
pub mod attach_path;
pub mod cgroup_watch;
pub mod dns;
pub mod security;
pub mod target_btf;
pub mod xdp_cpumap;
pub mod xdp_filter;

use std::time::Duration;

use aya::{
    programs::{
        cgroup_skb::CgroupSkbLinkId, cgroup_sock::CgroupSockLinkId, fexit::FExitLinkId, kprobe::KProbeLinkId,
        raw_trace_point::RawTracePointLinkId, trace_point::TracePointLinkId, CgroupAttachMode, CgroupSkb,
        CgroupSkbAttachType, CgroupSock, FExit, KProbe, ProgramError, RawTracePoint, TracePoint,
    },
    Btf, Ebpf, EbpfError,
};
use serde::Serialize;
use thiserror::Error;

use std::os::fd::AsFd;

use crate::{
    bundle::{self, Transport},
    cgroup_link::{CgroupAttach, CgroupLink},
};

pub use target_btf::{FexitTypes, TargetBtf};

// The catalog (what each monitor's programs are, where they attach, which are alternatives or
// optional) is data, in tapio-catalog; it is re-exported here, where it is loaded, so a caller
// names a monitor and loads it through one module.
pub use tapio_catalog::{
    alternatives_of, group_of, kernel, monitor, needs_of, network, optional_unavailable, process, syscall, Alternatives,
    AttachPoint, MonitorSpec, OptionalPrograms, ProgramGroup, ProgramSet, ProgramSpec, ALTERNATIVES, GROUPS, MONITORS,
    OPTIONAL,
};


/// The last lines of a verifier log: where the verifier stopped is at the end.
pub fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The OS error under `e`, as `: Permission denied (os error 13, EACCES)`, for messages whose
/// text stops short of it: aya's `SyscallError` displays as "`bpf_link_create` failed" and keeps
/// the errno in its source. Empty when the chain has no OS error or the text already shows it.
pub fn os_error_suffix(e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(code) = err.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            if text.contains(&format!("os error {code}")) {
                return String::new();
            }
            let io = std::io::Error::from_raw_os_error(code).to_string();
            return match errno_name(code) {
                // "Permission denied (os error 13)" -> "Permission denied (os error 13, EACCES)"
                Some(name) => format!(": {}, {name})", io.strip_suffix(')').unwrap_or(&io)),
                None => format!(": {io}"),
            };
        }
        cur = err.source();
    }
    String::new()
}

/// `e` followed by its OS error ([`os_error_suffix`]).
pub fn with_os_error(e: &(dyn std::error::Error + 'static)) -> String {
    format!("{e}{}", os_error_suffix(e))
}

/// The symbolic names of the errnos the bpf(2) and perf_event_open(2) calls return, which
/// kernel sources and their documentation use (`bpf_link_create` returns EACCES when ...).
fn errno_name(code: i32) -> Option<&'static str> {
    Some(match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        // The kernel's internal ENOTSUPP, which bpf(2) leaks to user space.
        524 => "ENOTSUPP",
        _ => return None,
    })
}

/// Why a monitor could not be loaded or one of its programs attached.
#[derive(Debug, Error)]
pub enum MonitorError {
    #[error("monitor {monitor}: no embedded object for transport {transport}")]
    NoObject { monitor: &'static str, transport: Transport },
    #[error("monitor {monitor}: load object: {source}{}", os_error_suffix(.source))]
    Object {
        monitor: &'static str,
        #[source]
        source: EbpfError,
    },
    #[error("monitor {monitor}: program {program}: needs the kernel's own BTF (fentry/fexit cannot use an external BTF file)")]
    NeedsKernelBtf { monitor: &'static str, program: &'static str },
    /// The kernel's BTF, which an fentry/fexit program is resolved in, could not be read
    /// (see [`target_btf`]: with the kernel's own BTF it is parsed when such a program loads).
    #[error("monitor {monitor}: program {program}: kernel BTF: {source}")]
    KernelBtf {
        monitor: &'static str,
        program: &'static str,
        #[source]
        source: aya::BtfError,
    },
    #[error("monitor {monitor}: program {program}: missing from the object")]
    MissingProgram { monitor: &'static str, program: &'static str },
    /// The verifier refused the program; `log` is its whole log (the message shows the tail,
    /// where the verifier stopped; `tapio-load check --json` carries it all).
    #[error("monitor {monitor}: program {program}: verifier rejected it: {io_error}\nverifier log (tail):\n{}", log_tail(log, VERIFIER_LOG_TAIL))]
    Verifier {
        monitor: &'static str,
        program: &'static str,
        #[source]
        io_error: std::io::Error,
        log: String,
    },
    /// aya's `ProgramError` is boxed: at 120-odd bytes it made every `Result` of this error (on
    /// every load and attach) that large, and it is built only when a program fails.
    #[error("monitor {monitor}: program {program}: {stage}: {source}{}", os_error_suffix(.source))]
    Program {
        monitor: &'static str,
        program: &'static str,
        stage: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("monitor {monitor}: map events: missing from the object")]
    NoEvents { monitor: &'static str },
    #[error("monitor {monitor}: map events: {source}")]
    Events {
        monitor: &'static str,
        #[source]
        source: crate::transport::TransportError,
    },
    #[error("monitor {monitor}: map {map}: {source}")]
    Map {
        monitor: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("monitor {monitor}: {source}")]
    Filter {
        monitor: &'static str,
        #[source]
        source: crate::filter::FilterError,
    },
    #[error("monitor {monitor}: {source}")]
    Advanced {
        monitor: &'static str,
        #[source]
        source: advanced::AdvancedError,
    },
    #[error("monitor {monitor}: in_container has no reference mount namespace (grant CAP_SYS_PTRACE, or set in_container_fallback = true to decide by the pid namespace alone): {source}")]
    MountNsReference {
        monitor: &'static str,
        #[source]
        source: security::NamespaceError,
    },
    #[error("monitor {monitor}: program {program}: attach: {source}")]
    Cgroup {
        monitor: &'static str,
        program: &'static str,
        #[source]
        source: CgroupAttachError,
    },
    #[error("monitor {monitor}: {source}")]
    Tracefs {
        monitor: &'static str,
        #[source]
        source: crate::tracefs::TracefsError,
    },
}

/// Lines of the verifier log an error message shows: its end, where the verifier stopped.
pub const VERIFIER_LOG_TAIL: usize = 12;

/// Why a cgroup program could not be attached to the cgroup v2 root.
#[derive(Debug, Error)]
pub enum CgroupAttachError {
    #[error(transparent)]
    Root(#[from] crate::cgroup2::Cgroup2Error),
    #[error("bpf_link_create on {kind}: {source}")]
    Link {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl MonitorError {
    /// Whether the kernel refused for lack of privilege (EPERM/EACCES anywhere in the chain).
    pub fn is_permission(&self) -> bool {
        crate::errors::is_permission(self)
    }

    /// The OS error number the kernel answered with, wherever it is in the chain.
    pub fn errno(&self) -> Option<i32> {
        crate::errors::errno(self)
    }

    /// The whole verifier log, for a verifier rejection.
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            Self::Verifier { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// How one program ended up.
#[derive(Debug, Clone, Serialize)]
pub struct AttachReport {
    pub monitor: &'static str,
    pub program: &'static str,
    /// The attach path taken, e.g. `tracepoint:sched/sched_process_exec`.
    pub path: String,
    pub load_time: Duration,
}

/// A loaded monitor: owns its programs and links; dropping it detaches everything.
pub struct LoadedMonitor {
    pub spec: &'static MonitorSpec,
    pub transport: Transport,
    pub ebpf: Ebpf,
    pub events: crate::transport::EventSource,
    pub reports: Vec<AttachReport>,
    /// Programs left out because this kernel lacks what they attach to: (program, reason).
    pub unavailable: Vec<(&'static str, String)>,
    /// Capabilities running on a fallback set: (capability, set taken, why the better ones were not).
    pub fallbacks: Vec<(&'static str, &'static str, String)>,
    /// Each attached program's link id; the links stay owned by `ebpf` until [`crate::pin`]
    /// takes them out to pin them.
    pub links: Vec<(&'static str, LinkId)>,
}

/// The id of a link `ebpf` owns, by program type: what `take_link` needs to hand the link over
/// (to be pinned). Dropping an id detaches nothing.
#[derive(Debug)]
pub enum LinkId {
    TracePoint(TracePointLinkId),
    RawTracePoint(RawTracePointLinkId),
    Fexit(FExitLinkId),
    Kprobe(KProbeLinkId),
    /// A cgroup program's bpf_link (5.7+), owned here: dropping it detaches, unless pinned.
    Cgroup(crate::cgroup_link::CgroupLink),
    /// A cgroup program attached by BPF_PROG_ATTACH (before 5.7): cannot be pinned.
    CgroupSkb(CgroupSkbLinkId),
    CgroupSock(CgroupSockLinkId),
}

/// Options that shape how objects are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, multiple of the page size); None keeps the default.
    pub ring_size: Option<u32>,
    /// The advanced monitor's batching, dedup, sampling and pre-filter.
    pub advanced: advanced::AdvancedOptions,
    /// The event transport; None picks the ring buffer where the kernel has it (5.8), else perf.
    pub transport: Option<Transport>,
    /// When records wake the reader, and the reader's latency bound (crate::transport).
    pub delivery: crate::transport::Delivery,
    /// security: decide `in_container` by the pid namespace alone when the mount namespace
    /// reference is unreadable (config `in_container_fallback`), instead of failing the monitor.
    pub in_container_fallback: bool,
    /// The source filter (crate::filter): Some turns it on in objects that carry it and fills its
    /// maps before any program is attached; None leaves it off (one branch per event in the ring
    /// build). Its content can change later ([`crate::filter::apply`]); whether it is on cannot.
    pub filter: Option<crate::filter::KernelFilter>,
}

impl LoadOptions {
    /// The transport to load: the one asked for, or the best this kernel has (probed once).
    pub fn transport(&self) -> Transport {
        static AUTO: std::sync::OnceLock<Transport> = std::sync::OnceLock::new();
        self.transport.unwrap_or_else(|| {
            *AUTO.get_or_init(|| match crate::features::probe("ring buffer").map(|f| f.status) {
                Some(crate::features::FeatureStatus::Present) => Transport::Ringbuf,
                _ => Transport::Perf,
            })
        })
    }
}

/// The ring build's `const volatile` delivery knob (probes/include/transport.bpf.h).
pub const WAKEUP_BYTES: &str = "tapio_wakeup_bytes";

fn program_error(monitor: &'static str, program: &'static str, stage: &'static str, e: ProgramError) -> MonitorError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            MonitorError::Verifier { monitor, program, io_error, log: verifier_log.to_string() }
        }
        source => MonitorError::Program { monitor, program, stage, source: Box::new(source) },
    }
}

/// Creates a monitor's maps from its object (relocated against `btf`) and fills its config maps.
/// No program is loaded yet: [`load_program`] and [`attach_program`] do that one at a time. The
/// loader, and the copy of the kernel's BTF it parsed, is dropped on return ([`target_btf`]).
pub fn open<'a>(spec: &'static MonitorSpec, btf: impl Into<TargetBtf<'a>>, options: &LoadOptions) -> Result<Ebpf, MonitorError> {
    let monitor = spec.name;
    let transport = options.transport();
    // advanced: the bloom-filter build where the kernel has bloom maps (advanced::object).
    let object = if monitor == advanced::SPEC.name { advanced::object(transport) } else { bundle::object(monitor, transport) }
        .ok_or(MonitorError::NoObject { monitor, transport })?;
    // The ring build's delivery knob (probes/include/transport.bpf.h): global data, which only the
    // ring build has (5.8+); the perf build's wake-ups are set where its buffers are opened.
    let wakeup_bytes = options.delivery.ring_wakeup_bytes(options.ring_size.unwrap_or(crate::transport::DEFAULT_RING_SIZE));
    let filter_on: u32 = options.filter.is_some().into();
    let mut loader = btf.into().loader();
    if transport == Transport::Ringbuf {
        if let Some(size) = options.ring_size {
            loader.map_max_entries("events", size);
        }
        loader.override_global(WAKEUP_BYTES, &wakeup_bytes, true);
        crate::filter::set_global(&mut loader, &filter_on);
    }
    let mut ebpf = loader.load(object.bytes).map_err(|source| MonitorError::Object { monitor, source })?;
    // dns and network: the ports that mark DNS traffic are a map, not global data (4.19 has
    // none); it gets the default port before any program runs (`run` then sets the configured ones).
    dns::set_ports(&mut ebpf, &[dns::DEFAULT_DNS_PORT])
        .map_err(|source| MonitorError::Map { monitor, map: dns::DNS_PORTS_MAP, source })?;
    // security: `in_container` compares each caller's mount namespace with the initial one, which
    // has no fixed inode number before 6.18. Unreadable, it stays 0 and the probe flags that.
    if let Some(map) = ebpf.map_mut(security::CONFIG_MAP) {
        let map_error = |source: aya::maps::MapError| MonitorError::Map { monitor, map: security::CONFIG_MAP, source };
        let mut config = aya::maps::Array::<_, security::SecurityConfig>::try_from(map).map_err(map_error)?;
        match security::initial_mount_ns() {
            Ok((inum, from)) => {
                tracing::info!(inum, from, "security: initial mount namespace (the reference of in_container)");
                config.set(0, security::SecurityConfig { init_mnt_ns: inum, _pad0: 0 }, 0).map_err(map_error)?;
            }
            Err(e) if options.in_container_fallback => {
                tracing::warn!("{e}; in_container is decided by the pid namespace alone (in_container_fallback = true)")
            }
            // Without the reference every host process in another mount namespace than the
            // loader's would look containerised: an error, not a silent degradation.
            Err(source) => return Err(MonitorError::MountNsReference { monitor, source }),
        }
    }
    // The source filter's key sets and flags, before any program runs (active from the first event).
    if let Some(filter) = options.filter.as_ref().filter(|_| crate::filter::carried(&ebpf)) {
        crate::filter::apply(&ebpf, filter).map_err(|source| MonitorError::Filter { monitor, source })?;
    }
    // advanced: knobs, sampling rates and the pre-filter set are maps the loader fills (no global
    // data), before any program runs.
    if ebpf.map(advanced::CONFIG_MAP).is_some() {
        advanced::configure(&mut ebpf, &options.advanced)
            .map_err(|source| MonitorError::Advanced { monitor, source })?;
    }
    Ok(ebpf)
}

/// Loads one program into the kernel's verifier (no attach). Returns the time the load took.
pub fn load_program(ebpf: &mut Ebpf, monitor: &'static str, p: &ProgramSpec, btf: Option<&Btf>) -> Result<Duration, MonitorError> {
    let started = std::time::Instant::now();
    let program = ebpf.program_mut(p.name).ok_or(MonitorError::MissingProgram { monitor, program: p.name })?;
    match p.attach {
        AttachPoint::TracePoint { .. } => {
            let tp: &mut TracePoint =
                program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            tp.load().map_err(|e| program_error(monitor, p.name, "load", e))?;
        }
        AttachPoint::RawTracePoint { .. } => {
            let tp: &mut RawTracePoint =
                program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            tp.load().map_err(|e| program_error(monitor, p.name, "load", e))?;
        }
        AttachPoint::Fexit { function } => {
            let btf = btf.ok_or(MonitorError::NeedsKernelBtf { monitor, program: p.name })?;
            let prog: &mut FExit = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            prog.load(function, btf).map_err(|e| program_error(monitor, p.name, "load", e))?;
        }
        // The object's section (`kprobe/` or `kretprobe/`) says which: aya reads it into the
        // program's kind, and attach uses it.
        AttachPoint::Kprobe { .. } | AttachPoint::Kretprobe { .. } => {
            let prog: &mut KProbe = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            prog.load().map_err(|e| program_error(monitor, p.name, "load", e))?;
        }
        AttachPoint::CgroupSkb { .. } => {
            let prog: &mut CgroupSkb = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            prog.load().map_err(|e| program_error(monitor, p.name, "load", e))?;
        }
        AttachPoint::CgroupSockCreate => {
            let prog: &mut CgroupSock = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            prog.load().map_err(|e| program_error(monitor, p.name, "load", e))?;
        }
    }
    Ok(started.elapsed())
}

/// Attaches a program [`load_program`] loaded. The link stays owned by `ebpf` (dropping it
/// detaches); the returned id lets [`crate::pin`] take it out.
pub fn attach_program(ebpf: &mut Ebpf, monitor: &'static str, p: &ProgramSpec) -> Result<LinkId, MonitorError> {
    let program = ebpf.program_mut(p.name).ok_or(MonitorError::MissingProgram { monitor, program: p.name })?;
    match p.attach {
        AttachPoint::TracePoint { category, name } => {
            let tp: &mut TracePoint =
                program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            tp.attach(category, name).map(LinkId::TracePoint).map_err(|e| program_error(monitor, p.name, "attach", e))
        }
        AttachPoint::RawTracePoint { name } => {
            let tp: &mut RawTracePoint =
                program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            tp.attach(name).map(LinkId::RawTracePoint).map_err(|e| program_error(monitor, p.name, "attach", e))
        }
        AttachPoint::Fexit { .. } => {
            let prog: &mut FExit = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            prog.attach().map(LinkId::Fexit).map_err(|e| program_error(monitor, p.name, "attach", e))
        }
        AttachPoint::Kprobe { function } | AttachPoint::Kretprobe { function } => {
            let prog: &mut KProbe = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
            prog.attach(function, 0).map(LinkId::Kprobe).map_err(|e| program_error(monitor, p.name, "attach", e))
        }
        // A bpf_link of our own where the kernel has them (pinnable), else aya's prog_attach.
        // Multi mode either way: other agents' programs on the root (systemd's, a CNI's) keep running.
        AttachPoint::CgroupSkb { .. } | AttachPoint::CgroupSockCreate => {
            let cgroup_err = |source: CgroupAttachError| MonitorError::Cgroup { monitor, program: p.name, source };
            let root = crate::cgroup2::open_root().map_err(|e| cgroup_err(e.into()))?;
            let kind = match p.attach {
                AttachPoint::CgroupSkb { egress: true } => CgroupAttach::InetEgress,
                AttachPoint::CgroupSkb { egress: false } => CgroupAttach::InetIngress,
                _ => CgroupAttach::InetSockCreate,
            };
            let prog_fd = program.fd().map_err(|e| program_error(monitor, p.name, "attach", e))?;
            match CgroupLink::attach(prog_fd.as_fd(), root.as_fd(), kind) {
                Ok(link) => return Ok(LinkId::Cgroup(link)),
                // No cgroup bpf_link on this kernel (before 5.7): the older attach below.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL)) => {
                    tracing::debug!(program = p.name, "cgroup bpf_link refused ({e}); BPF_PROG_ATTACH instead")
                }
                Err(source) => return Err(cgroup_err(CgroupAttachError::Link { kind: kind_name(kind), source })),
            }
            if let AttachPoint::CgroupSkb { egress } = p.attach {
                let prog: &mut CgroupSkb = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
                let kind = if egress { CgroupSkbAttachType::Egress } else { CgroupSkbAttachType::Ingress };
                prog.attach(root, kind, CgroupAttachMode::AllowMultiple)
                    .map(LinkId::CgroupSkb)
                    .map_err(|e| program_error(monitor, p.name, "attach", e))
            } else {
                let prog: &mut CgroupSock = program.try_into().map_err(|e| program_error(monitor, p.name, "program type", e))?;
                prog.attach(root, CgroupAttachMode::AllowMultiple)
                    .map(LinkId::CgroupSock)
                    .map_err(|e| program_error(monitor, p.name, "attach", e))
            }
        }
    }
}

fn kind_name(kind: CgroupAttach) -> &'static str {
    match kind {
        CgroupAttach::InetIngress => "cgroup_inet_ingress",
        CgroupAttach::InetEgress => "cgroup_inet_egress",
        CgroupAttach::InetSockCreate => "cgroup_inet_sock_create",
    }
}

/// Unloads a program, detaching every link it has: a set that failed half-way leaves nothing.
pub fn unload_program(ebpf: &mut Ebpf, p: &ProgramSpec) {
    let Some(program) = ebpf.program_mut(p.name) else { return };
    let result = match p.attach {
        AttachPoint::TracePoint { .. } => <&mut TracePoint>::try_from(program).and_then(|x| x.unload()),
        AttachPoint::RawTracePoint { .. } => <&mut RawTracePoint>::try_from(program).and_then(|x| x.unload()),
        AttachPoint::Fexit { .. } => <&mut FExit>::try_from(program).and_then(|x| x.unload()),
        AttachPoint::Kprobe { .. } | AttachPoint::Kretprobe { .. } => <&mut KProbe>::try_from(program).and_then(|x| x.unload()),
        AttachPoint::CgroupSkb { .. } => <&mut CgroupSkb>::try_from(program).and_then(|x| x.unload()),
        AttachPoint::CgroupSockCreate => <&mut CgroupSock>::try_from(program).and_then(|x| x.unload()),
    };
    if let Err(e) = result {
        tracing::debug!(program = p.name, "unload after a failed set: {e}");
    }
}

/// Loads and attaches every program of `set`, or none: on the first failure the ones done are
/// unloaded. Returns each program's report and link.
fn try_set(
    ebpf: &mut Ebpf,
    spec: &'static MonitorSpec,
    set: &ProgramSet,
    types: &mut FexitTypes<'_>,
) -> Result<Vec<(AttachReport, LinkId)>, PathError> {
    let monitor = spec.name;
    let mut done: Vec<(AttachReport, LinkId)> = Vec::new();
    let mut touched: Vec<&ProgramSpec> = Vec::new();
    for name in set.programs {
        let p = spec.programs.iter().find(|p| p.name == *name).ok_or(PathError::Bug(MonitorError::MissingProgram { monitor, program: name }))?;
        touched.push(p);
        match try_path(ebpf, monitor, p, types) {
            Ok((load_time, link)) => done.push((AttachReport { monitor, program: p.name, path: p.attach.describe(), load_time }, link)),
            Err(e) => {
                drop(done);
                for p in touched {
                    unload_program(ebpf, p);
                }
                return Err(match e {
                    PathError::Unavailable(why) => PathError::Unavailable(format!("{}: {why}", p.name)),
                    bug => bug,
                });
            }
        }
    }
    Ok(done)
}

/// Mounts tracefs when `spec` has a classic tracepoint: they are attached by the id tracefs
/// publishes, and both classic and raw ones are looked up there (crate::plan). A failure is an
/// error only for a monitor with a tracepoint outside any alternative (it could not run without
/// it); elsewhere the paths that need tracefs report themselves unavailable.
fn ensure_tracefs(spec: &'static MonitorSpec) -> Result<(), MonitorError> {
    let uses = |p: &&ProgramSpec| matches!(p.attach, AttachPoint::TracePoint { .. } | AttachPoint::RawTracePoint { .. });
    if !spec.programs.iter().any(|p| uses(&p)) {
        return Ok(());
    }
    match crate::tracefs::ensure_mounted() {
        Ok(()) => Ok(()),
        Err(source) => {
            let required = spec.programs.iter().filter(uses).any(|p| {
                matches!(p.attach, AttachPoint::TracePoint { .. })
                    && group_of(spec.name, p.name).is_none()
                    && alternatives_of(spec.name, p.name).is_none()
                    && !OPTIONAL.iter().any(|o| o.monitor == spec.name && o.programs.contains(&p.name))
            });
            if required {
                return Err(MonitorError::Tracefs { monitor: spec.name, source });
            }
            tracing::warn!("monitor {}: {source}", spec.name);
            Ok(())
        }
    }
}

/// Loads a monitor's object with `btf`, then loads and attaches each of its programs. Mounts
/// tracefs first when the monitor attaches tracepoints and it is not mounted.
pub fn load<'a>(spec: &'static MonitorSpec, btf: impl Into<TargetBtf<'a>>, options: &LoadOptions) -> Result<LoadedMonitor, MonitorError> {
    let monitor = spec.name;
    ensure_tracefs(spec)?;
    let btf = btf.into();
    let mut ebpf = open(spec, btf, options)?;
    // After `open`, whose loader has dropped its copy of the kernel's types (target_btf).
    let mut types = FexitTypes::new(btf);
    let mut reports = Vec::new();
    let mut unavailable = Vec::new();
    let mut links = Vec::new();
    // Per group: whether a path attached, and why each earlier path did not.
    let mut groups: Vec<(&'static ProgramGroup, bool, Vec<String>)> = Vec::new();
    // Optional programs whose tracepoints this kernel lacks: left out, the rest runs.
    let mut left_out: Vec<&'static str> = Vec::new();
    for set in OPTIONAL.iter().filter(|s| s.monitor == monitor) {
        if let Some(why) = optional_unavailable(spec, set, |category, name| attach_path::tracepoint_exists(Some(category), name)) {
            tracing::warn!("monitor {monitor}: {}: unavailable: {why}", set.name);
            unavailable.push((set.name, why));
            left_out.extend(set.programs);
        }
    }
    let mut fallbacks = Vec::new();
    for alt in ALTERNATIVES.iter().filter(|a| a.monitor == monitor) {
        left_out.extend(alt.sets.iter().flat_map(|s| s.programs.iter().copied()));
        let mut reasons = Vec::new();
        let mut taken = None;
        for set in alt.sets {
            match try_set(&mut ebpf, spec, set, &mut types) {
                Ok(done) => {
                    for (report, link) in done {
                        links.push((report.program, link));
                        reports.push(report);
                    }
                    taken = Some(set.label);
                    break;
                }
                Err(PathError::Bug(e)) => return Err(e),
                Err(PathError::Unavailable(why)) => reasons.push(format!("{} path: {why}", set.label)),
            }
        }
        if taken == Some("packet") {
            // Sockets opened before the attach: their owners from /proc (crate::sock_owners).
            let seeded = crate::sock_owners::seed(&mut [&mut ebpf]);
            tracing::info!(monitor, recorded = seeded.recorded, unreadable = seeded.unreadable, "owners of the sockets already open");
        }
        match taken {
            Some(label) if !reasons.is_empty() => {
                let why = reasons.join("; ");
                tracing::warn!("monitor {monitor}: {}: fallback to the {label} path: {why}", alt.name);
                fallbacks.push((alt.name, label, why));
            }
            Some(_) => {}
            None => {
                let why = reasons.join("; ");
                tracing::warn!("monitor {monitor}: {}: unavailable: {why}", alt.name);
                unavailable.push((alt.name, why));
            }
        }
    }
    for p in spec.programs {
        if left_out.contains(&p.name) {
            continue;
        }
        let Some(group) = group_of(monitor, p.name) else {
            let load_time = load_program(&mut ebpf, monitor, p, fexit_btf(&mut types, monitor, p)?)?;
            links.push((p.name, attach_program(&mut ebpf, monitor, p)?));
            reports.push(AttachReport { monitor, program: p.name, path: p.attach.describe(), load_time });
            continue;
        };
        let entry = match groups.iter().position(|(g, ..)| g.name == group.name) {
            Some(i) => i,
            None => {
                groups.push((group, false, Vec::new()));
                groups.len() - 1
            }
        };
        if groups[entry].1 {
            continue; // a better path of this group is attached already
        }
        match try_path(&mut ebpf, monitor, p, &mut types) {
            Ok((load_time, link)) => {
                groups[entry].1 = true;
                links.push((p.name, link));
                reports.push(AttachReport { monitor, program: p.name, path: p.attach.describe(), load_time });
            }
            Err(PathError::Bug(e)) => return Err(e),
            Err(PathError::Unavailable(why)) => groups[entry].2.push(format!("{}: {why}", p.attach.describe())),
        }
    }
    for (group, attached, reasons) in groups {
        if !attached {
            let why = reasons.join("; ");
            tracing::warn!("monitor {monitor}: {}: unavailable: {why}", group.name);
            unavailable.push((group.name, why));
        }
    }
    let map = ebpf
        .take_map("events")
        .ok_or(MonitorError::NoEvents { monitor })?;
    let transport = options.transport();
    let events = crate::transport::EventSource::open(map, transport, &options.delivery)
        .map_err(|source| MonitorError::Events { monitor, source })?;
    Ok(LoadedMonitor { spec, transport, ebpf, events, reports, unavailable, fallbacks, links })
}

/// Why one alternative path did not attach.
pub enum PathError {
    /// The kernel lacks it or refuses it (a kernel fact): try the next path.
    Unavailable(String),
    /// The verifier rejected our program: a bug of ours, never hidden behind a fallback.
    Bug(MonitorError),
}

/// The BTF `p` is loaded with: fentry/fexit programs resolve their target in it (parsed on the
/// first one, [`FexitTypes`]); no other program reads it.
fn fexit_btf<'t>(types: &'t mut FexitTypes<'_>, monitor: &'static str, p: &ProgramSpec) -> Result<Option<&'t Btf>, MonitorError> {
    if !matches!(p.attach, AttachPoint::Fexit { .. }) {
        return Ok(None);
    }
    types.get().map_err(|source| MonitorError::KernelBtf { monitor, program: p.name, source })
}

/// Tries one alternative path: the feature gate first, then load and attach. Returns the load
/// time and the link's id.
pub fn try_path(ebpf: &mut Ebpf, monitor: &'static str, p: &ProgramSpec, types: &mut FexitTypes<'_>) -> Result<(Duration, LinkId), PathError> {
    attach_path::attach_path(&p.attach).map_err(PathError::Unavailable)?;
    let btf = fexit_btf(types, monitor, p).map_err(|e| PathError::Unavailable(crate::errors::chain(&e)))?;
    let classify = |e: MonitorError| match &e {
        MonitorError::Verifier { io_error, log, .. }
            if !log.trim().is_empty() && io_error.raw_os_error() != Some(libc::EPERM) =>
        {
            PathError::Bug(e)
        }
        _ => PathError::Unavailable(crate::errors::chain(&e)),
    };
    let took = load_program(ebpf, monitor, p, btf).map_err(classify)?;
    let link = attach_program(ebpf, monitor, p).map_err(|e| PathError::Unavailable(crate::errors::chain(&e)))?;
    Ok((took, link))
}

/// Sums a per-CPU counter of the `stats` map (see probes/include/common.h `enum tapio_stat`).
pub fn stat(ebpf: &Ebpf, index: u32) -> Option<u64> {
    let map = ebpf.map("stats")?;
    let array = aya::maps::PerCpuArray::<_, u64>::try_from(map).ok()?;
    let values = array.get(&index, 0).ok()?;
    Some(values.iter().sum())
}

/// A monitor that was asked for and is not running, with the kernel's reason.
#[derive(Debug, Clone)]
pub struct MonitorFailure {
    pub monitor: &'static str,
    /// The error and its whole cause chain (the OS error included).
    pub reason: String,
    /// The OS error number the kernel answered with, when there is one.
    pub errno: Option<i32>,
    /// Whether that answer was EPERM or EACCES.
    pub permission: bool,
}

impl MonitorFailure {
    /// The failure `e` of `monitor`, with its whole cause chain.
    pub fn new(monitor: &'static str, e: &MonitorError) -> Self {
        Self { monitor, reason: crate::errors::chain(e), errno: e.errno(), permission: e.is_permission() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every program's attach point agrees with its object's section: aya takes a kprobe's kind
    /// (entry or return) from the section, so a `Kretprobe` spec on a `kprobe/` section would
    /// attach to the wrong end of the function without any error.
    #[test]
    fn attach_points_match_the_object_sections() {
        for spec in MONITORS {
            let object = if spec.name == advanced::SPEC.name {
                advanced::object(Transport::Ringbuf)
            } else {
                bundle::object(spec.name, Transport::Ringbuf)
            }
            .unwrap_or_else(|| panic!("no object for {}", spec.name));
            let info = tapio_object::inspect::inspect(object.file, object.bytes).expect("inspect the embedded object");
            for p in spec.programs {
                let section = &info.programs.iter().find(|i| i.name == p.name).unwrap_or_else(|| panic!("{} missing", p.name)).section;
                let want = p.attach.section();
                assert_eq!(section, &want, "{}/{}", spec.name, p.name);
            }
        }
    }

    /// A map or event-buffer error keeps the kernel's answer as its source: a permission
    /// refusal is recognisable as one, and the report names the errno.
    #[test]
    fn map_and_events_errors_keep_the_os_error() {
        let eperm = || aya::sys::SyscallError { call: "bpf_map_update_elem", io_error: std::io::Error::from_raw_os_error(libc::EPERM) };
        let map = MonitorError::Map { monitor: "dns", map: dns::DNS_PORTS_MAP, source: aya::maps::MapError::SyscallError(eperm()) };
        assert!(map.is_permission(), "{map}");
        assert_eq!(map.errno(), Some(libc::EPERM));
        assert!(crate::errors::chain(&map).ends_with("Operation not permitted (os error 1)"), "{}", crate::errors::chain(&map));
        let ring = crate::transport::ring::RingError::Info(aya::maps::MapError::SyscallError(eperm()));
        let events = MonitorError::Events { monitor: "process", source: crate::transport::TransportError::Ring(ring) };
        assert!(events.is_permission(), "{events}");
        let verifier = MonitorError::Verifier {
            monitor: "m",
            program: "p",
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            log: (0..40).map(|i| format!("{i}: (b7) r0 = 0\n")).collect(),
        };
        assert!(verifier.is_permission());
        assert_eq!(verifier.verifier_log().map(|l| l.lines().count()), Some(40), "the whole log is kept");
        assert_eq!(verifier.to_string().lines().count(), 2 + VERIFIER_LOG_TAIL, "the message shows the tail:\n{verifier}");
    }

    /// issue 15: "attach: `bpf_link_create` failed" told nobody why; the errno is in the message.
    #[test]
    fn attach_error_carries_the_os_error() {
        let source = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: std::io::Error::from_raw_os_error(libc::EACCES),
        });
        let e = program_error("security", "sec_exit_setuid", "attach", source);
        assert_eq!(
            e.to_string(),
            "monitor security: program sec_exit_setuid: attach: `bpf_link_create` failed: Permission denied (os error 13, EACCES)"
        );
        assert!(e.is_permission());
        // Text that shows the errno already is left alone.
        let io = std::io::Error::from_raw_os_error(libc::EINVAL);
        assert_eq!(os_error_suffix(&io), "");
        assert_eq!(with_os_error(&io), "Invalid argument (os error 22)");
    }
}
