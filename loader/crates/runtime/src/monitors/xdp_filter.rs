//! xdp_filter: an IPv4/IPv6 prefix blocklist at the driver's receive hook, with per-CPU verdict
//! counters and optional steering to other CPUs through a CPU map (probes/xdp_filter.bpf.c).
//!
//! Not in [`super::MONITORS`]: it attaches to a network interface, not a tracepoint, and it emits
//! no per-packet events (the output contract asks for periodic `stats` records), so it shares
//! neither the attach points nor the event ring of the tracing monitors. `tapio-load xdp attach`
//! drives it; [`check_load`] lets `check` and the verifier matrix verify it like the others.
//!
//! Kernel floor: XDP 4.8, LPM trie 4.11 and generic (skb) XDP 4.12
//! (<https://github.com/torvalds/linux/blob/v4.12/net/core/dev.c>), `bpf_redirect_map` 4.14 and
//! CPUMAP 4.15 (<https://github.com/torvalds/linux/blob/v4.15/kernel/bpf/cpumap.c>). The object
//! has no loops and no global data, so a 4.19 verifier takes it.

use std::{
    fmt,
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    str::FromStr,
    time::Duration,
};

use aya::{
    maps::{lpm_trie::Key, xdp::XdpMapError, Array, CpuMap, LpmTrie, MapError, PerCpuArray},
    programs::{xdp::XdpLinkId, ProgramError, Xdp, XdpMode},
    Btf, Ebpf, EbpfError, EbpfLoader, Pod,
};
use serde::Serialize;
use thiserror::Error;

use super::xdp_cpumap::OwnCpuMap;
use crate::bundle::{self, Transport};

/// The object's name in the bundle.
pub const MONITOR: &str = "xdp_filter";
/// The monitor name records carry (`"monitor":"xdp"` in the output contract).
pub const OUTPUT_MONITOR: &str = "xdp";
/// The XDP program in the object.
pub const PROGRAM: &str = "xdp_filter";
/// Map names (kernel map names stop at 15 characters, hence the `xdpf_` prefix).
pub const MAP_BLOCK_V4: &str = "xdpf_block_v4";
pub const MAP_BLOCK_V6: &str = "xdpf_block_v6";
pub const MAP_VERDICTS: &str = "xdpf_verdicts";
pub const MAP_CONFIG: &str = "xdpf_config";
pub const MAP_CPU_SLOTS: &str = "xdpf_cpu_slots";
pub const MAP_CPUMAP: &str = "xdpf_cpumap";
/// Steering slots the object has room for (`XDP_FILTER_MAX_CPUS`).
pub const MAX_STEER_CPUS: u32 = 64;
/// Frames a CPU-map entry queues for its CPU: the size the kernel's own samples use, enough to
/// absorb a burst while the target CPU's kthread is scheduled.
pub const CPUMAP_QUEUE_SIZE: u32 = 2048;

/// `xdp_filter_config.match_mode` bits.
const MATCH_SRC: u32 = 0x1;
const MATCH_DST: u32 = 0x2;

/// Mirror of `struct xdp_filter_config` (probes/include/xdp_filter.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpFilterConfig {
    pub match_mode: u32,
    pub steer: u32,
    pub nslots: u32,
    pub _pad0: u32,
}
// SAFETY: repr(C) integers only, no padding (16 bytes, asserted in C and by the layout test).
unsafe impl Pod for XdpFilterConfig {}

/// Mirror of `struct xdp_filter_cpu_slot`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpFilterCpuSlot {
    pub cpu: u32,
    pub valid: u32,
}
// SAFETY: repr(C) integers only, no padding.
unsafe impl Pod for XdpFilterCpuSlot {}

/// Indexes of the per-CPU verdict counters (`enum xdp_filter_verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
    Redirect = 2,
    Malformed = 3,
    Aborted = 4,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [Self::Pass, Self::Drop, Self::Redirect, Self::Malformed, Self::Aborted];
}

/// Which packet addresses are looked up in the blocklists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Source address only (traffic from a blocked prefix).
    Src,
    /// Destination address only (traffic to a blocked prefix).
    Dst,
    /// Either address: a blocklisted prefix is cut off in both directions.
    #[default]
    Both,
}

impl MatchMode {
    fn bits(self) -> u32 {
        match self {
            Self::Src => MATCH_SRC,
            Self::Dst => MATCH_DST,
            Self::Both => MATCH_SRC | MATCH_DST,
        }
    }
}

/// Why a prefix given on the command line is not one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("prefix `{0}`: not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix `{text}`: length must be a number from 0 to {max}")]
    Length { text: String, max: u8 },
    #[error("prefix `{0}`: bits set past the prefix length (did you mean the network address?)")]
    HostBits(String),
}

/// An IPv4 or IPv6 network prefix (`10.0.0.0/8`, `fd00::/8`; a bare address is a host prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Self, PrefixError> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| PrefixError::Address(text.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(PrefixError::Length { text: text.to_owned(), max }),
            },
        };
        // A trie key with host bits set would still match its network; refusing it catches typos
        // such as 10.1.2.3/8 meant as 10.1.2.3/32.
        let host_bits = match addr {
            IpAddr::V4(a) => len < 32 && u32::from(a) & (u32::MAX >> len) != 0,
            IpAddr::V6(a) => len < 128 && u128::from(a) & (u128::MAX >> len) != 0,
        };
        if host_bits {
            return Err(PrefixError::HostBits(text.to_owned()));
        }
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver's receive path (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// After the skb is built (`XDP_FLAGS_SKB_MODE`): any interface, slower.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// Why the filter could not be set up, attached or read.
#[derive(Debug, Error)]
pub enum XdpFilterError {
    #[error("monitor xdp_filter: no embedded object")]
    NoObject,
    #[error("monitor xdp_filter: load object: {0}{suffix}", suffix = crate::monitors::os_error_suffix(.0))]
    Object(#[source] EbpfError),
    #[error("monitor xdp_filter: {what} {name}: missing from the object")]
    Missing { what: &'static str, name: &'static str },
    /// `log` is the verifier's whole log; the message shows its tail.
    #[error("monitor xdp_filter: program xdp_filter: verifier rejected it: {io_error}\nverifier log (tail):\n{}", super::log_tail(log, super::VERIFIER_LOG_TAIL))]
    Verifier {
        #[source]
        io_error: io::Error,
        log: String,
    },
    /// aya's `ProgramError` boxed, as in the monitors' `MonitorError::Program`: it is large and
    /// built only when the program fails.
    #[error("monitor xdp_filter: program xdp_filter: {stage}: {source}{}", crate::monitors::os_error_suffix(.source))]
    Program {
        stage: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("monitor xdp_filter: map {map}: {source}{}", crate::monitors::os_error_suffix(.source))]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("monitor xdp_filter: map xdpf_cpumap: cpu {cpu}: {source}{}", crate::monitors::os_error_suffix(.source))]
    CpuMap {
        cpu: u32,
        #[source]
        source: XdpMapError,
    },
    #[error("monitor xdp_filter: read {path}: {source}")]
    Cpus {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("monitor xdp_filter: steering to {requested} cpus: {why}")]
    Steering { requested: u32, why: String },
    #[error("monitor xdp_filter: attach to {iface}: native mode: {native}; generic mode: {generic}")]
    /// Both of aya's `ProgramError`s boxed, as in [`XdpFilterError::Program`]: two of them inline
    /// made every `Result` of this error over 180 bytes.
    Attach { iface: String, native: Box<ProgramError>, generic: Box<ProgramError> },
    #[error("monitor xdp_filter: BPF_PROG_TEST_RUN: {0}")]
    TestRun(#[source] io::Error),
    #[error("monitor xdp_filter: write stats: {0}")]
    Output(#[source] io::Error),
    #[error("monitor xdp_filter: signal handler: {0}")]
    Signal(#[source] io::Error),
}

fn program_error(stage: &'static str, e: ProgramError) -> XdpFilterError {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            XdpFilterError::Verifier { io_error, log: verifier_log.to_string() }
        }
        source => XdpFilterError::Program { stage, source: Box::new(source) },
    }
}

/// What to set up before the program runs.
#[derive(Debug, Clone, Default)]
pub struct FilterOptions {
    pub blocks: Vec<Prefix>,
    pub match_mode: MatchMode,
    /// Steer passed IP packets across this many CPUs (the first N online ones); None: no steering.
    pub steer_cpus: Option<u32>,
}

/// Per-verdict packet counts, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub pass: u64,
    pub drop: u64,
    pub redirect: u64,
    pub malformed: u64,
    pub aborted: u64,
}

impl Counters {
    /// Every packet the program saw (each counts under exactly one verdict).
    pub fn total(&self) -> u64 {
        self.pass + self.drop + self.redirect + self.malformed + self.aborted
    }
}

/// The loaded filter: owns the object, its maps and (once attached) the link; dropping it
/// detaches the program.
pub struct XdpFilter {
    ebpf: Ebpf,
    link: Option<(String, AttachMode, XdpLinkId)>,
    /// The CPU map as the loader made it (4-byte values, see super::xdp_cpumap); None where
    /// that failed and aya made it.
    cpumap: Option<OwnCpuMap>,
}

impl XdpFilter {
    /// Creates the maps, writes the config and the blocklists, fills the steering slots and
    /// loads the program through the verifier. Nothing is attached yet.
    ///
    /// `btf` is accepted for symmetry with the other monitors; the object reads no kernel types,
    /// so it has no CO-RE relocations and loads without kernel BTF.
    pub fn load(btf: Option<&Btf>, options: &FilterOptions) -> Result<Self, XdpFilterError> {
        let object = bundle::object(MONITOR, Transport::Ringbuf).ok_or(XdpFilterError::NoObject)?;
        let steer_cpus = match options.steer_cpus {
            Some(n) => Some(steering_cpus(n)?),
            None => None,
        };
        let mut loader = EbpfLoader::new();
        loader.btf(btf);
        // The kernel refuses a CPU map larger than NR_CPUS; size it to the possible CPUs so every
        // CPU id (not only the first 64) can be a target.
        let cpus = aya::util::nr_cpus().ok().map(|n| n as u32);
        if let Some(n) = cpus {
            loader.map_max_entries(MAP_CPUMAP, n);
        }
        // The CPU map with the 4-byte value generic XDP takes on 5.9-5.14 (super::xdp_cpumap).
        let mut cpumap = match OwnCpuMap::create(MAP_CPUMAP, cpus.unwrap_or(MAX_STEER_CPUS)) {
            Ok(map) => Some(map),
            Err(e) => {
                tracing::warn!("xdp_filter: {MAP_CPUMAP}: {e}; aya makes it, and generic XDP may refuse the filter on 5.9 to 5.14");
                None
            }
        };
        if let Some(path) = cpumap.as_ref().and_then(OwnCpuMap::pin_path) {
            loader.map_pin_path(MAP_CPUMAP, path.to_owned());
        }
        let ebpf = loader.load(object.bytes).map_err(XdpFilterError::Object)?;
        if let Some(map) = cpumap.as_mut() {
            if let Err(e) = map.unpin() {
                tracing::warn!("xdp_filter: {MAP_CPUMAP}: removing its load-time pin: {e}");
            }
        }
        let mut filter = Self { ebpf, link: None, cpumap };
        for prefix in &options.blocks {
            filter.block(*prefix)?;
        }
        let mut config =
            XdpFilterConfig { match_mode: options.match_mode.bits(), steer: 0, nslots: 0, _pad0: 0 };
        if let Some(cpus) = steer_cpus {
            filter.fill_steering(&cpus)?;
            config.steer = 1;
            config.nslots = cpus.len() as u32;
        }
        filter.set_config(config)?;
        filter.program_mut()?.load().map_err(|e| program_error("load", e))?;
        Ok(filter)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, XdpFilterError> {
        self.ebpf.map_mut(name).ok_or(XdpFilterError::Missing { what: "map", name })
    }

    fn program_mut(&mut self) -> Result<&mut Xdp, XdpFilterError> {
        let program = self.ebpf.program_mut(PROGRAM).ok_or(XdpFilterError::Missing { what: "program", name: PROGRAM })?;
        program.try_into().map_err(|e| program_error("program type", e))
    }

    /// Writes the one config entry (the program reads it on every packet, so it takes effect at
    /// once, also while attached).
    pub fn set_config(&mut self, config: XdpFilterConfig) -> Result<(), XdpFilterError> {
        let map_error = |source| XdpFilterError::Map { map: MAP_CONFIG, source };
        let mut array = Array::<_, XdpFilterConfig>::try_from(self.map_mut(MAP_CONFIG)?).map_err(map_error)?;
        array.set(0, config, 0).map_err(map_error)
    }

    /// Fills CPU-map entries for `cpus` and mirrors them, in order, into the slot array the
    /// program consults before it redirects (it may not look up the CPU map itself).
    fn fill_steering(&mut self, cpus: &[u32]) -> Result<(), XdpFilterError> {
        {
            if let Some(own) = self.cpumap.as_mut() {
                for &cpu in cpus {
                    own.set(cpu, CPUMAP_QUEUE_SIZE).map_err(|source| XdpFilterError::CpuMap { cpu, source: source.into() })?;
                }
            } else {
                let map_error = |source| XdpFilterError::Map { map: MAP_CPUMAP, source };
                let mut cpumap = CpuMap::try_from(self.map_mut(MAP_CPUMAP)?).map_err(map_error)?;
                for &cpu in cpus {
                    cpumap.set(cpu, CPUMAP_QUEUE_SIZE, None, 0).map_err(|source| XdpFilterError::CpuMap { cpu, source })?;
                }
            }
        }
        let map_error = |source| XdpFilterError::Map { map: MAP_CPU_SLOTS, source };
        let mut slots = Array::<_, XdpFilterCpuSlot>::try_from(self.map_mut(MAP_CPU_SLOTS)?).map_err(map_error)?;
        for (i, &cpu) in cpus.iter().enumerate() {
            slots.set(i as u32, XdpFilterCpuSlot { cpu, valid: 1 }, 0).map_err(map_error)?;
        }
        Ok(())
    }

    /// Adds a prefix to its family's blocklist (effective immediately).
    pub fn block(&mut self, prefix: Prefix) -> Result<(), XdpFilterError> {
        match prefix.addr {
            IpAddr::V4(a) => {
                let map_error = |source| XdpFilterError::Map { map: MAP_BLOCK_V4, source };
                let mut trie = LpmTrie::<_, [u8; 4], u32>::try_from(self.map_mut(MAP_BLOCK_V4)?).map_err(map_error)?;
                trie.insert(&Key::new(u32::from(prefix.len), a.octets()), 1, 0).map_err(map_error)
            }
            IpAddr::V6(a) => {
                let map_error = |source| XdpFilterError::Map { map: MAP_BLOCK_V6, source };
                let mut trie = LpmTrie::<_, [u8; 16], u32>::try_from(self.map_mut(MAP_BLOCK_V6)?).map_err(map_error)?;
                trie.insert(&Key::new(u32::from(prefix.len), a.octets()), 1, 0).map_err(map_error)
            }
        }
    }

    /// Removes a prefix from its blocklist.
    pub fn unblock(&mut self, prefix: Prefix) -> Result<(), XdpFilterError> {
        match prefix.addr {
            IpAddr::V4(a) => {
                let map_error = |source| XdpFilterError::Map { map: MAP_BLOCK_V4, source };
                let mut trie = LpmTrie::<_, [u8; 4], u32>::try_from(self.map_mut(MAP_BLOCK_V4)?).map_err(map_error)?;
                trie.remove(&Key::new(u32::from(prefix.len), a.octets())).map_err(map_error)
            }
            IpAddr::V6(a) => {
                let map_error = |source| XdpFilterError::Map { map: MAP_BLOCK_V6, source };
                let mut trie = LpmTrie::<_, [u8; 16], u32>::try_from(self.map_mut(MAP_BLOCK_V6)?).map_err(map_error)?;
                trie.remove(&Key::new(u32::from(prefix.len), a.octets())).map_err(map_error)
            }
        }
    }

    /// Attaches to `iface` in native mode, or in generic mode where the driver has no XDP
    /// support (`lo`, most virtual devices but veth). Returns the mode it got.
    pub fn attach(&mut self, iface: &str) -> Result<AttachMode, XdpFilterError> {
        let program = self.program_mut()?;
        let (mode, link) = match program.attach(iface, XdpMode::Driver) {
            Ok(link) => (AttachMode::Native, link),
            Err(native) => match program.attach(iface, XdpMode::Skb) {
                Ok(link) => {
                    tracing::debug!("xdp_filter: native attach to {iface} refused ({native}); generic mode");
                    (AttachMode::Generic, link)
                }
                Err(generic) => {
                    return Err(XdpFilterError::Attach { iface: iface.to_owned(), native: Box::new(native), generic: Box::new(generic) })
                }
            },
        };
        self.link = Some((iface.to_owned(), mode, link));
        Ok(mode)
    }

    /// Detaches from the interface (also done on drop).
    pub fn detach(&mut self) -> Result<(), XdpFilterError> {
        if let Some((_, _, link)) = self.link.take() {
            self.program_mut()?.detach(link).map_err(|e| program_error("detach", e))?;
        }
        Ok(())
    }

    /// The interface and mode it is attached with, if attached.
    pub fn attached(&self) -> Option<(&str, AttachMode)> {
        self.link.as_ref().map(|(iface, mode, _)| (iface.as_str(), *mode))
    }

    /// The loaded program's fd, for `BPF_PROG_TEST_RUN` ([`test_run`]).
    pub fn program_fd(&self) -> Result<BorrowedFd<'_>, XdpFilterError> {
        let program = self.ebpf.program(PROGRAM).ok_or(XdpFilterError::Missing { what: "program", name: PROGRAM })?;
        let xdp: &Xdp = program.try_into().map_err(|e| program_error("program type", e))?;
        Ok(xdp.fd().map_err(|e| program_error("fd", e))?.as_fd())
    }

    /// The verdict counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, XdpFilterError> {
        let map_error = |source| XdpFilterError::Map { map: MAP_VERDICTS, source };
        let map = self.ebpf.map(MAP_VERDICTS).ok_or(XdpFilterError::Missing { what: "map", name: MAP_VERDICTS })?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(map_error)?;
        let sum = |v: Verdict| -> Result<u64, XdpFilterError> {
            Ok(array.get(&(v as u32), 0).map_err(map_error)?.iter().sum())
        };
        Ok(Counters {
            pass: sum(Verdict::Pass)?,
            drop: sum(Verdict::Drop)?,
            redirect: sum(Verdict::Redirect)?,
            malformed: sum(Verdict::Malformed)?,
            aborted: sum(Verdict::Aborted)?,
        })
    }

    /// Zeroes every verdict counter on every CPU (tests and benchmarks start from zero).
    pub fn reset_counters(&mut self) -> Result<(), XdpFilterError> {
        let map_error = |source| XdpFilterError::Map { map: MAP_VERDICTS, source };
        let mut array = PerCpuArray::<_, u64>::try_from(self.map_mut(MAP_VERDICTS)?).map_err(map_error)?;
        let cpus = aya::util::nr_cpus().map_err(|(path, e)| XdpFilterError::Cpus { path, source: e })?;
        for v in Verdict::ALL {
            let zeros = aya::maps::PerCpuValues::try_from(vec![0u64; cpus])
                .map_err(|source| XdpFilterError::Cpus { path: "/sys/devices/system/cpu/possible", source })?;
            array.set(v as u32, zeros, 0).map_err(map_error)?;
        }
        Ok(())
    }
}

/// The first `n` online CPUs, the steering targets.
fn steering_cpus(n: u32) -> Result<Vec<u32>, XdpFilterError> {
    let err = |why: String| XdpFilterError::Steering { requested: n, why };
    if n == 0 || n > MAX_STEER_CPUS {
        return Err(err(format!("the count must be 1 to {MAX_STEER_CPUS}")));
    }
    let online = aya::util::online_cpus().map_err(|(path, e)| err(format!("{path}: {e}")))?;
    if (online.len() as u32) < n {
        return Err(err(format!("only {} cpus are online", online.len())));
    }
    Ok(online.into_iter().take(n as usize).collect())
}

/// Loads the object and its program through the running kernel's verifier, unattached, for
/// `check` and the verifier matrix. Ok: the verified instruction count where the kernel
/// reports one (5.16+), None before. Err: the reason, with the verifier log's tail.
pub fn check_load(btf: Option<&Btf>) -> Result<Option<u32>, XdpFilterError> {
    let filter = XdpFilter::load(btf, &FilterOptions::default())?;
    let program = filter.ebpf.program(PROGRAM).ok_or(XdpFilterError::Missing { what: "program", name: PROGRAM })?;
    Ok(program.info().ok().and_then(|info| info.verified_instruction_count()))
}

// ---------------------------------------------------------------------------------------------
// BPF_PROG_TEST_RUN: aya 0.13 has no wrapper, so the bpf(2) command is issued here.

/// `BPF_PROG_TEST_RUN` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (4.12 fields through 5.18's `batch_size`). Shorter than
/// the kernel's union, which the kernel allows: it zero-fills what the caller did not pass.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (`XDP_PASS` = 2, `XDP_DROP` = 1, ...).
    pub retval: u32,
    /// Mean nanoseconds per run as the kernel measured it over `repeat` runs.
    pub duration_ns: u32,
}

/// XDP action codes (`enum xdp_action`).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Runs an XDP program `repeat` times on `packet` in the kernel, without an interface.
///
/// The kernel needs at least an Ethernet header's worth of data (14 bytes) for XDP.
pub fn test_run(prog: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> Result<TestRun, XdpFilterError> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix whose data pointers outlive the
    // call, and its size is passed with it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if ret < 0 {
        return Err(XdpFilterError::TestRun(io::Error::last_os_error()));
    }
    Ok(TestRun { retval: attr.retval, duration_ns: attr.duration })
}

// ---------------------------------------------------------------------------------------------
// Packets for test runs and benchmarks.

/// A minimal Ethernet + IPv4 + UDP frame of `len` bytes (at least 42), from `src` to `dst`.
pub fn udp4_frame(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let len = len.max(42);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&dst.octets());
    let checksum = ipv4_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&checksum.to_be_bytes());
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// A minimal Ethernet + IPv6 + UDP frame of `len` bytes (at least 62), from `src` to `dst`.
pub fn udp6_frame(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Vec<u8> {
    let len = len.max(62);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    let payload = (len - 54) as u16;
    f[14] = 0x60;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f[20] = 17;
    f[21] = 64;
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&dst.octets());
    f[54..56].copy_from_slice(&40000u16.to_be_bytes());
    f[56..58].copy_from_slice(&9u16.to_be_bytes());
    f[58..60].copy_from_slice(&payload.to_be_bytes());
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---------------------------------------------------------------------------------------------
// `tapio-load xdp`: attach, print periodic stats, detach on SIGINT/SIGTERM.

/// Arguments of `tapio-load xdp attach` (the agent's CLI parses them: tapio-load's main.rs).
#[derive(Debug, Clone)]
pub struct AttachArgs {
    /// The interface to filter (native XDP where the driver allows, generic otherwise).
    pub iface: String,
    /// Prefixes to drop (`10.0.0.0/8`, `fd00::/8`, or one address).
    pub blocks: Vec<Prefix>,
    /// Which addresses a blocklist applies to.
    pub match_mode: MatchMode,
    /// Steer passed IP packets across the first N online CPUs through the CPU map.
    pub steer_cpus: Option<u32>,
    /// Milliseconds between `stats` records (at least 1).
    pub interval_ms: u64,
}

/// One periodic `stats` record: the contract's header fields, then the counts.
///
/// The header describes the loader process that reads the counters (the counts come from
/// packets, which have no task): `pid`/`tgid`/`comm`/`uid` are tapio-load's own, `cgroup_id`
/// is 0, and `ts_ns` is CLOCK_MONOTONIC, the clock of the other monitors' `bpf_ktime_get_ns`.
#[derive(Debug, Clone, Serialize)]
pub struct StatsRecord {
    pub ts_ns: u64,
    pub monitor: &'static str,
    pub event: &'static str,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub uid: u32,
    pub iface: String,
    pub mode: AttachMode,
    /// Cumulative since attach, summed over CPUs.
    #[serde(flatten)]
    pub counters: Counters,
}

impl StatsRecord {
    /// A record of `counters` stamped now with this process's identity.
    pub fn now(iface: &str, mode: AttachMode, counters: Counters) -> Self {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid timespec to write; getpid/gettid/getuid have no preconditions.
        let (pid, tgid, uid) = unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
            (libc::gettid() as u32, libc::getpid() as u32, libc::getuid())
        };
        let comm = std::fs::read_to_string("/proc/self/comm").map(|c| c.trim_end().to_owned()).unwrap_or_default();
        Self {
            ts_ns: ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
            monitor: OUTPUT_MONITOR,
            event: "stats",
            pid,
            tgid,
            comm,
            cgroup_id: 0,
            uid,
            iface: iface.to_owned(),
            mode,
            counters,
        }
    }
}

/// `tapio-load xdp attach`: loads, attaches, writes a `stats` line to `out` every interval and
/// once more at the end, and detaches on SIGINT or SIGTERM. `on_attached` hears the mode.
pub fn run_attach(
    args: &AttachArgs,
    btf: Option<&Btf>,
    out: &mut dyn Write,
    on_attached: impl FnOnce(AttachMode),
) -> Result<(), XdpFilterError> {
    let options = FilterOptions { blocks: args.blocks.clone(), match_mode: args.match_mode, steer_cpus: args.steer_cpus };
    let mut filter = XdpFilter::load(btf, &options)?;
    let mode = filter.attach(&args.iface)?;
    on_attached(mode);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(XdpFilterError::Signal)?;
    let write = |out: &mut dyn Write, filter: &XdpFilter| -> Result<(), XdpFilterError> {
        let record = StatsRecord::now(&args.iface, mode, filter.counters()?);
        let line = serde_json::to_string(&record).map_err(|e| XdpFilterError::Output(e.into()))?;
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(XdpFilterError::Output)
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(XdpFilterError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(XdpFilterError::Signal)?;
        let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => write(out, &filter)?,
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        Ok::<(), XdpFilterError>(())
    })?;
    write(out, &filter)?;
    filter.detach()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse() {
        assert_eq!("10.0.0.0/8".parse(), Ok(Prefix { addr: "10.0.0.0".parse().unwrap(), len: 8 }));
        assert_eq!("fd00::/8".parse(), Ok(Prefix { addr: "fd00::".parse().unwrap(), len: 8 }));
        assert_eq!("192.0.2.1".parse(), Ok(Prefix { addr: "192.0.2.1".parse().unwrap(), len: 32 }));
        assert_eq!("::1".parse(), Ok(Prefix { addr: "::1".parse().unwrap(), len: 128 }));
        assert_eq!("0.0.0.0/0".parse(), Ok(Prefix { addr: "0.0.0.0".parse().unwrap(), len: 0 }));
        assert!(matches!("10.1.2.3/8".parse::<Prefix>(), Err(PrefixError::HostBits(_))));
        assert!(matches!("10.0.0.0/33".parse::<Prefix>(), Err(PrefixError::Length { max: 32, .. })));
        assert!(matches!("fd00::/129".parse::<Prefix>(), Err(PrefixError::Length { max: 128, .. })));
        assert!(matches!("example.com/8".parse::<Prefix>(), Err(PrefixError::Address(_))));
        assert_eq!("fd00::/8".parse::<Prefix>().unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn frames_have_the_stated_layout() {
        let f = udp4_frame(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 64);
        assert_eq!(f.len(), 64);
        assert_eq!(ipv4_checksum(&f[14..34]), 0, "a header with its checksum sums to zero");
        let f = udp6_frame("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 64);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..14], &[0x86, 0xDD]);
    }

    fn stats_json() -> serde_json::Value {
        let r = StatsRecord::now("veth0", AttachMode::Generic, Counters { pass: 3, drop: 2, ..Default::default() });
        serde_json::to_value(&r).unwrap()
    }

    #[rstest::rstest]
    fn stats_record_has_contract_fields(
        #[values("ts_ns", "monitor", "event", "pid", "tgid", "comm", "cgroup_id", "uid", "pass", "drop", "redirect", "malformed", "aborted")]
        field: &str,
    ) {
        let v = stats_json();
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }

    #[test]
    fn stats_record_names_its_monitor_event_and_mode() {
        let v = stats_json();
        assert_eq!(v["monitor"], "xdp");
        assert_eq!(v["event"], "stats");
        assert_eq!(v["mode"], "generic");
    }
}
