//! Kernel feature probes: each gate of `shared/spec/kernel-features.md`, decided by a real
//! attempt through `bpf(2)` (or the kernel file that is the feature), never by `uname -r`.
//!
//! Distribution kernels backport features and disable others, so the version string says little.
//! Each probe creates a map, loads a tiny program, or attaches one, and reads the kernel's answer:
//!
//! * success is [`FeatureStatus::Present`];
//! * the kernel's own "not supported" answer (`EINVAL`, `E2BIG`, `EOPNOTSUPP`, `ENOTSUPP`, or an
//!   "unknown func" verifier message for a helper) is [`FeatureStatus::Absent`];
//! * anything else, above all `EPERM`/`EACCES`, is [`FeatureStatus::Error`]: a permission error
//!   says nothing about the kernel, and calling it "absent" would send users after the wrong fix.
//!
//! Map types, the XDP program type and helpers are asked through aya's probes (`aya::sys`),
//! which keep this three-way answer; the rest are ours, each saying why (see "Maps." below).
//!
//! Every probe carries the first upstream version of the feature, so a caller can say
//! "requires >= 5.8, running 5.4", and a test can fail when a kernel newer than the gate reports "absent"
//! (the probe is then wrong, as in cilium/ebpf's `checkVersion`).

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::OnceLock,
};

use aya::{
    maps::MapType,
    programs::{ProgramError, ProgramType},
    sys::BpfHelper,
};
use serde::Serialize;
use tapio_kernel_gates as gates;
use thiserror::Error;

/// One probed gate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Feature {
    /// Stable, human-readable name (the key of [`probe`]).
    pub name: &'static str,
    /// First upstream kernel that has the feature, as in the spec's table ("5.8").
    pub since: &'static str,
    /// What the running kernel answered.
    pub status: FeatureStatus,
}

/// The running kernel's answer to one probe.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FeatureStatus {
    /// The attempt succeeded.
    Present,
    /// The kernel itself said it does not support this (unknown map type, unknown helper, ...).
    Absent { reason: String },
    /// The probe could not decide: a permission error, or an answer that is no "not supported".
    Error { errno: i32, message: String },
}

impl FeatureStatus {
    /// True for [`FeatureStatus::Present`].
    pub fn is_present(&self) -> bool {
        matches!(self, Self::Present)
    }

    /// The answer as the skip judge reads it ([`gates::judge`]): a permission error is a
    /// refusal (policy: lockdown, an LSM, a sysctl), never "unsupported"; only a root process's
    /// refusals say anything about the kernel, which [`kernel_facts`] sees to.
    pub fn answer(&self) -> gates::ProbeAnswer {
        match self {
            Self::Present => gates::ProbeAnswer::Supported,
            Self::Absent { reason } => gates::ProbeAnswer::Unsupported { reason: reason.clone() },
            Self::Error { errno, message } if matches!(*errno, libc::EPERM | libc::EACCES) => {
                gates::ProbeAnswer::Refused { errno: *errno, message: message.clone() }
            }
            Self::Error { errno, message } => gates::ProbeAnswer::Failed { errno: *errno, message: message.clone() },
        }
    }
}

/// The running kernel's facts for [`gates::judge`]: its version, its config (`/proc/config.gz`
/// or `/boot/config-<release>`) and, when this process is root, every probe's answer (an
/// unprivileged process's EPERM says nothing about the kernel, so it is left out).
pub fn kernel_facts() -> gates::KernelFacts {
    let release = crate::kernel::release();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let probes = if root { probe_all().into_iter().map(|f| (f.name.to_owned(), f.status.answer())).collect() } else { Default::default() };
    gates::KernelFacts { running: gates::KernelVersion::parse(&release), arch: gates::Arch::this(), config: gates::KernelConfig::running(&release), probes }
}

/// The internal failure of one probe step, before it is classified into a [`FeatureStatus`].
#[derive(Debug, Error)]
enum ProbeError {
    /// A `bpf(2)` (or `perf_event_open`, netlink) call failed; `log` is the verifier's text.
    #[error("{what}: {source}{}", log_suffix(.log))]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
        log: String,
    },
    /// A kernel file that is itself the feature (or needed by the probe) is missing or unreadable.
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// vmlinux BTF could not be parsed.
    #[error("vmlinux btf: {0}")]
    Btf(#[from] crate::btf::BtfError),
    /// A conclusive "not supported" that is no errno (a missing file, a missing BTF function).
    #[error("{0}")]
    Unsupported(String),
}

fn log_suffix(log: &str) -> String {
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    if last.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {last})")
    }
}

type ProbeResult = Result<(), ProbeError>;

// ---------------------------------------------------------------------------------------------
// The table.

/// A probe: the feature it decides (name, first upstream version, config options: one table for
/// the loader, the harness and the tests, in tapio-kernel-gates) and the attempt.
struct Probe {
    gate: &'static str,
    run: fn() -> ProbeResult,
}

impl Probe {
    fn gate(&self) -> &'static gates::Gate {
        gates::gate(self.gate).expect("every probe's feature is in tapio_kernel_gates::GATES (tested)")
    }
}

const PROBES: &[Probe] = &[
    Probe { gate: "perf event array", run: probe_perf_event_array },
    Probe { gate: "bpf_perf_event_output", run: probe_perf_event_output },
    Probe { gate: "xdp", run: probe_xdp },
    Probe { gate: "lru hash", run: probe_lru_hash },
    Probe { gate: "generic xdp", run: probe_generic_xdp },
    Probe { gate: "bpf_redirect_map", run: probe_redirect_map },
    Probe { gate: "cpumap", run: probe_cpumap },
    Probe { gate: "bpf-to-bpf calls", run: probe_bpf_to_bpf },
    Probe { gate: "raw tracepoint", run: probe_raw_tracepoint },
    Probe { gate: "btf", run: probe_btf },
    Probe { gate: "btf func info", run: probe_btf_func_info },
    Probe { gate: "btf var+datasec", run: probe_btf_datasec },
    Probe { gate: "large programs", run: probe_large_program },
    Probe { gate: "global data", run: probe_global_data },
    Probe { gate: "bounded loops", run: probe_bounded_loop },
    Probe { gate: "vmlinux btf", run: probe_vmlinux_btf },
    Probe { gate: "bpf_probe_read_kernel", run: probe_probe_read_kernel },
    Probe { gate: "fentry", run: probe_fentry },
    Probe { gate: "tp_btf", run: probe_tp_btf },
    Probe { gate: "lsm", run: probe_lsm },
    Probe { gate: "bpf_link", run: probe_bpf_link },
    Probe { gate: "ring buffer", run: probe_ringbuf },
    Probe { gate: "bpf_ktime_get_boot_ns", run: probe_ktime_get_boot_ns },
    Probe { gate: "cpumap program", run: probe_cpumap_program },
    Probe { gate: "module btf", run: probe_module_btf },
    Probe { gate: "bpf_get_current_task_btf", run: probe_get_current_task_btf },
    Probe { gate: "bloom filter", run: probe_bloom_filter },
    Probe { gate: "bpf_loop", run: probe_bpf_loop },
    Probe { gate: "kprobe_multi", run: probe_kprobe_multi },
    Probe { gate: "kprobe", run: probe_kprobe },
];

/// The names of all probes, in table order.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROBES.iter().map(|p| p.gate().name)
}

static ALL: OnceLock<Vec<Feature>> = OnceLock::new();

/// Runs every probe once per process (later calls return the cached answers).
pub fn probe_all() -> Vec<Feature> {
    ALL.get_or_init(|| {
        crate::privileges::raise_memlock();
        PROBES.iter().map(run_probe).collect()
    })
    .clone()
}

/// Runs the probe called `name` (from the cache when [`probe_all`] already ran); `None` for an
/// unknown name.
pub fn probe(name: &str) -> Option<Feature> {
    if let Some(all) = ALL.get() {
        return all.iter().find(|f| f.name == name).cloned();
    }
    let probe = PROBES.iter().find(|p| p.gate == name)?;
    crate::privileges::raise_memlock();
    Some(run_probe(probe))
}

fn run_probe(probe: &Probe) -> Feature {
    let gate = probe.gate();
    let status = classify((probe.run)());
    tracing::debug!(feature = gate.name, ?status, "probed");
    Feature { name: gate.name, since: gate.since, status }
}

const ENOTSUPP: i32 = 524;

/// Sorts a probe's outcome into present / absent / error (see the module docs for why).
fn classify(result: ProbeResult) -> FeatureStatus {
    let err = match result {
        Ok(()) => return FeatureStatus::Present,
        Err(e) => e,
    };
    let message = err.to_string();
    match &err {
        ProbeError::Sys { source, log, .. } => {
            let errno = source.raw_os_error().unwrap_or(0);
            if log.contains("unknown func") || log.contains("invalid func") {
                return FeatureStatus::Absent { reason: message };
            }
            match errno {
                libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | ENOTSUPP => FeatureStatus::Absent { reason: message },
                _ => FeatureStatus::Error { errno, message },
            }
        }
        ProbeError::Unsupported(_) => FeatureStatus::Absent { reason: message },
        ProbeError::File { source, .. } => FeatureStatus::Error { errno: source.raw_os_error().unwrap_or(0), message },
        ProbeError::Btf(_) => FeatureStatus::Error { errno: 0, message },
    }
}

/// An aligned text table: feature, first upstream version, status.
pub fn render_text(features: &[Feature]) -> String {
    let width = features.iter().map(|f| f.name.len()).max().unwrap_or(0).max("FEATURE".len());
    let mut out = format!("{:<width$}  {:<6}  STATUS\n", "FEATURE", "SINCE");
    for f in features {
        let status = match &f.status {
            FeatureStatus::Present => "present".to_owned(),
            FeatureStatus::Absent { reason } => format!("absent: {reason}"),
            FeatureStatus::Error { errno, message } => format!("error ({}): {message}", errno_name(*errno)),
        };
        out.push_str(&format!("{:<width$}  {:<6}  {status}\n", f.name, f.since));
    }
    out
}

fn errno_name(errno: i32) -> String {
    match errno {
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::ENOSPC => "ENOSPC".into(),
        ENOTSUPP => "ENOTSUPP".into(),
        n => format!("errno {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// bpf(2) plumbing, for the probes aya has no answer for. The attr structs below are prefixes of `union bpf_attr` (include/uapi/linux/bpf.h);
// the kernel zero-extends a shorter attr, so each command passes only the fields it uses.

const BPF_MAP_CREATE: i32 = 0;
const BPF_MAP_UPDATE_ELEM: i32 = 2;
const BPF_PROG_LOAD: i32 = 5;
const BPF_OBJ_GET_INFO_BY_FD: i32 = 15;
const BPF_RAW_TRACEPOINT_OPEN: i32 = 17;
const BPF_BTF_LOAD: i32 = 18;
const BPF_BTF_GET_FD_BY_ID: i32 = 19;
const BPF_BTF_GET_NEXT_ID: i32 = 23;
const BPF_LINK_CREATE: i32 = 28;

const MAP_ARRAY: u32 = 2;
const MAP_CPUMAP: u32 = 16;

const PROG_SOCKET_FILTER: u32 = 1;
const PROG_KPROBE: u32 = 2;
const PROG_XDP: u32 = 6;
const PROG_CGROUP_SKB: u32 = 8;
const PROG_RAW_TRACEPOINT: u32 = 17;
const PROG_TRACING: u32 = 26;
const PROG_LSM: u32 = 29;

const ATTACH_CGROUP_INET_INGRESS: u32 = 0;
const ATTACH_TRACE_RAW_TP: u32 = 23;
const ATTACH_TRACE_FENTRY: u32 = 24;
const ATTACH_LSM_MAC: u32 = 27;
const ATTACH_XDP_CPUMAP: u32 = 35;
const ATTACH_TRACE_KPROBE_MULTI: u32 = 42;

const BPF_F_RDONLY_PROG: u32 = 1 << 7;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

// Every attribute struct spells out its padding as a field, so `Default` zeroes it. The kernel
// refuses a command with EINVAL when any byte past the command's last field is not zero
// (`CHECK_ATTR` in kernel/bpf/syscall.c), and Rust leaves implicit padding undefined: whatever the
// stack held. That made the fentry and raw tracepoint probes fail now and then on 5.10 and 6.1,
// where `raw_tracepoint.prog_fd` is the last field and the 4 padding bytes after it are checked
// (6.10 added `cookie` behind a named hole, so later kernels no longer look at them).
// `attrs_have_no_implicit_padding` below keeps it so.

#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct RawTpOpenAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `link_create` with the `kprobe_multi` arm of its union (the other arms are a prefix of it).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    multi_flags: u32,
    multi_cnt: u32,
    multi_syms: u64,
    multi_addrs: u64,
    multi_cookies: u64,
}

#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_btf_info`; `name`, `name_len` and `kernel_btf` came with module BTF in 5.11.
#[repr(C)]
#[derive(Default)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

/// Calls `bpf(cmd, attr, sizeof attr)`; a non-negative answer is returned as is.
fn sys_bpf<T>(cmd: i32, attr: &mut T) -> Result<i64, std::io::Error> {
    // SAFETY: attr is a live, properly sized prefix of union bpf_attr; pointers inside it point at
    // buffers the caller keeps alive for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`sys_bpf`] for commands that return a new file descriptor.
fn sys_bpf_fd<T>(cmd: i32, attr: &mut T, what: &str) -> Result<OwnedFd, ProbeError> {
    let fd = sys_bpf(cmd, attr).map_err(|source| sys_err(what, source))?;
    // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn sys_err(what: &str, source: std::io::Error) -> ProbeError {
    ProbeError::Sys { what: what.to_owned(), source, log: String::new() }
}

fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> Result<OwnedFd, ProbeError> {
    let mut attr = MapCreateAttr { map_type, key_size, value_size, max_entries, map_flags: flags };
    sys_bpf_fd(BPF_MAP_CREATE, &mut attr, "map create")
}

/// What a probe program needs besides its instructions.
#[derive(Default)]
struct ProgSpec<'a> {
    prog_type: u32,
    expected_attach_type: u32,
    attach_btf_id: u32,
    btf_fd: Option<&'a OwnedFd>,
    /// `(insn_off, type_id)` records of `bpf_func_info`.
    func_info: &'a [[u32; 2]],
    /// Large programs skip the log: level 1 output of 4097 instructions would not fit.
    no_log: bool,
}

const LOG_SIZE: usize = 64 * 1024;

/// Loads a program (license "GPL", so GPL-only helpers are allowed) and keeps the verifier log.
fn load_prog(spec: &ProgSpec, insns: &[Insn]) -> Result<OwnedFd, ProbeError> {
    let license = c"GPL";
    let mut log = vec![0u8; if spec.no_log { 0 } else { LOG_SIZE }];
    let mut attr = ProgLoadAttr {
        prog_type: spec.prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: if spec.no_log { 0 } else { 1 },
        log_size: log.len() as u32,
        log_buf: if spec.no_log { 0 } else { log.as_mut_ptr() as u64 },
        expected_attach_type: spec.expected_attach_type,
        attach_btf_id: spec.attach_btf_id,
        ..Default::default()
    };
    if let Some(btf) = spec.btf_fd {
        attr.prog_btf_fd = btf.as_raw_fd() as u32;
    }
    if !spec.func_info.is_empty() {
        attr.func_info_rec_size = 8;
        attr.func_info = spec.func_info.as_ptr() as u64;
        attr.func_info_cnt = spec.func_info.len() as u32;
    }
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).into_owned();
            Err(ProbeError::Sys { what: "program load".into(), source, log })
        }
    }
}

fn load_simple(prog_type: u32, insns: &[Insn]) -> Result<OwnedFd, ProbeError> {
    load_prog(&ProgSpec { prog_type, ..Default::default() }, insns)
}

// ---------------------------------------------------------------------------------------------
// Instructions (`struct bpf_insn`): opcode, dst:4|src:4, off, imm.

#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0xf), off, imm }
}

/// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
const fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}

/// `dst += imm` (BPF_ALU64 | BPF_ADD | BPF_K).
const fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}

/// `if dst != imm goto pc + off` (BPF_JMP | BPF_JNE | BPF_K).
const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}

/// `dst = *(u64 *)(src + off)` (BPF_LDX | BPF_MEM | BPF_DW).
const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x79, dst, src, off, 0)
}

/// bpf-to-bpf call to `pc + 1 + rel` (src = BPF_PSEUDO_CALL).
const fn call_local(rel: i32) -> Insn {
    insn(0x85, 0, 1, 0, rel)
}

const EXIT: Insn = insn(0x95, 0, 0, 0, 0);

/// `dst = <map value of fd at offset>`: BPF_LD | BPF_IMM | BPF_DW, src = BPF_PSEUDO_MAP_VALUE.
fn ld_map_value(dst: u8, fd: &OwnedFd, offset: i32) -> [Insn; 2] {
    [insn(0x18, dst, 2, 0, fd.as_raw_fd()), insn(0, 0, 0, 0, offset)]
}

/// `return 0`.
const RETURN_0: [Insn; 2] = [mov64_imm(0, 0), EXIT];

/// XDP_PASS.
const RETURN_XDP_PASS: [Insn; 2] = [mov64_imm(0, 2), EXIT];

// ---------------------------------------------------------------------------------------------
// Maps.

// Map types, the XDP program type and the helpers are asked through aya's own probes
// (`aya::sys::is_map_supported`, `is_program_supported`, `is_helper_supported`): they answer
// present (`Ok(true)`), the kernel's own "no" (`Ok(false)`: EINVAL or E2BIG, or the verifier's
// "unknown func" / "invalid func" / "program of this type cannot use helper"), or an error that
// keeps the errno (`Err`, with the `io::Error` of the failed call), so a permission error stays
// an error ([`FeatureStatus::Error`], [`gates::ProbeAnswer::Refused`] for the skip judge) and
// is never taken for "unsupported". That is all this table needs of those probes. The others
// stay ours: aya has no probe for them, or its probe answers a different question (see each).

/// aya's answer to a probe, as ours: `Ok(false)` is the kernel's "no"; an error keeps its errno.
fn aya_answer<E: std::error::Error>(
    what: String,
    answer: Result<bool, E>,
    io_error: impl FnOnce(E) -> Result<std::io::Error, E>,
) -> ProbeResult {
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => Err(ProbeError::Unsupported(format!("{what}: not supported by this kernel"))),
        Err(e) => {
            let source = io_error(e).unwrap_or_else(|e| std::io::Error::other(e.to_string()));
            Err(ProbeError::Sys { what, source, log: String::new() })
        }
    }
}

/// Whether the kernel creates a map of type `map_type` ([`aya::sys::is_map_supported`]).
fn map_supported(map_type: MapType) -> ProbeResult {
    aya_answer(format!("map create {map_type:?}"), aya::sys::is_map_supported(map_type), |e| Ok(e.io_error))
}

/// The `io::Error` of a failed syscall inside a [`ProgramError`], or the error itself.
fn program_io_error(e: ProgramError) -> Result<std::io::Error, ProgramError> {
    match e {
        ProgramError::SyscallError(e) => Ok(e.io_error),
        e => Err(e),
    }
}

/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`, 4.3 (kernel/bpf/arraymap.c).
fn probe_perf_event_array() -> ProbeResult {
    map_supported(MapType::PerfEventArray)
}

/// `BPF_MAP_TYPE_LRU_HASH`, 4.10 (kernel/bpf/hashtab.c).
fn probe_lru_hash() -> ProbeResult {
    map_supported(MapType::LruHash)
}

/// `BPF_MAP_TYPE_CPUMAP`, 4.15 (kernel/bpf/cpumap.c), with the 4-byte (queue size) value.
fn probe_cpumap() -> ProbeResult {
    map_supported(MapType::CpuMap)
}

/// `BPF_MAP_TYPE_RINGBUF`, 5.8 (kernel/bpf/ringbuf.c): key and value 0, size one page.
fn probe_ringbuf() -> ProbeResult {
    map_supported(MapType::RingBuf)
}

/// `BPF_MAP_TYPE_BLOOM_FILTER`, 5.16 (kernel/bpf/bloom_filter.c): no key.
fn probe_bloom_filter() -> ProbeResult {
    map_supported(MapType::BloomFilter)
}

/// CPUMAP entries with a second program, 5.9: the value grows to `struct bpf_cpumap_val`
/// (`qsize`, `bpf_prog.fd`); older kernels refuse value size 8 with EINVAL. The entry is really
/// written with an XDP program of expected attach type `BPF_XDP_CPUMAP`, which starts (and, when
/// the map is closed, stops) a kthread on CPU 0.
fn probe_cpumap_program() -> ProbeResult {
    let map = create_map(MAP_CPUMAP, 4, 8, 1, 0)?;
    let prog = load_prog(
        &ProgSpec { prog_type: PROG_XDP, expected_attach_type: ATTACH_XDP_CPUMAP, ..Default::default() },
        &RETURN_XDP_PASS,
    )?;
    let key = 0u32;
    let value: [u32; 2] = [192, prog.as_raw_fd() as u32];
    let mut attr = MapUpdateAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map_err(|e| sys_err("cpumap update with program", e))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers. A program that calls the helper without setting up its arguments: the verifier looks
// the helper up first ("unknown func" / "invalid func unknown#N" when the kernel lacks it) and
// only then checks arguments ("R1 !read_ok"), so a load that fails on an argument still proves
// the helper exists.

/// Whether `prog_type` programs may call `helper` ([`aya::sys::is_helper_supported`]): a program
/// that calls it without setting up its arguments; the verifier looks the helper up first and
/// only then checks arguments, so a load that fails on an argument still proves the helper.
fn probe_helper(prog_type: ProgramType, helper: BpfHelper) -> ProbeResult {
    aya_answer(format!("helper {helper:?} from {prog_type:?}"), aya::sys::is_helper_supported(prog_type, helper), program_io_error)
}

/// `bpf_perf_event_output`, 4.4.
fn probe_perf_event_output() -> ProbeResult {
    probe_helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_perf_event_output)
}

/// `bpf_redirect_map` in XDP, 4.14.
fn probe_redirect_map() -> ProbeResult {
    probe_helper(ProgramType::Xdp, BpfHelper::BPF_FUNC_redirect_map)
}

/// `bpf_probe_read_kernel`, 5.5.
fn probe_probe_read_kernel() -> ProbeResult {
    probe_helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_probe_read_kernel)
}

/// `bpf_ktime_get_boot_ns`, 5.8 (takes no argument: the program loads outright).
fn probe_ktime_get_boot_ns() -> ProbeResult {
    probe_helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_ktime_get_boot_ns)
}

/// `bpf_get_current_task_btf`, 5.11, offered to every tracing program type.
fn probe_get_current_task_btf() -> ProbeResult {
    probe_helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_get_current_task_btf)
}

/// `bpf_loop`, 5.17.
fn probe_bpf_loop() -> ProbeResult {
    probe_helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_loop)
}

// ---------------------------------------------------------------------------------------------
// Verifier features: aya has no public probe for any of them (its global data and BTF probes
// are private to its loader), so these load their own programs.

/// bpf-to-bpf calls, 4.16: `call +1; exit; r0 = 0; exit`.
fn probe_bpf_to_bpf() -> ProbeResult {
    let insns = [call_local(1), EXIT, mov64_imm(0, 0), EXIT];
    load_simple(PROG_SOCKET_FILTER, &insns).map(drop)
}

/// Programs over 4096 instructions, 5.2 (BPF_COMPLEXITY_LIMIT_INSNS for privileged loaders);
/// older kernels answer E2BIG.
fn probe_large_program() -> ProbeResult {
    let mut insns = vec![mov64_imm(0, 0); 4097];
    insns.push(EXIT);
    load_prog(&ProgSpec { prog_type: PROG_SOCKET_FILTER, no_log: true, ..Default::default() }, &insns).map(drop)
}

/// Bounded loops, 5.3: `r0 = 0; do r0 += 1 while (r0 != 4)`; older verifiers refuse the back-edge.
fn probe_bounded_loop() -> ProbeResult {
    let insns = [mov64_imm(0, 0), add64_imm(0, 1), jne_imm(0, 4, -2), EXIT];
    load_simple(PROG_SOCKET_FILTER, &insns).map(drop)
}

/// Global data, 5.2: a read-only-to-programs array map (`BPF_F_RDONLY_PROG`) read through a
/// `BPF_PSEUDO_MAP_VALUE` ld_imm64, as `.rodata` is.
fn probe_global_data() -> ProbeResult {
    let map = create_map(MAP_ARRAY, 4, 8, 1, BPF_F_RDONLY_PROG)?;
    let [ld0, ld1] = ld_map_value(1, &map, 0);
    let insns = [ld0, ld1, ldx_dw(0, 1, 0), mov64_imm(0, 0), EXIT];
    load_simple(PROG_SOCKET_FILTER, &insns).map(drop)
}

// ---------------------------------------------------------------------------------------------
// BTF.

/// A tiny BTF blob writer: enough kinds for the probes (int, func_proto, func, var, datasec).
#[derive(Default)]
struct BtfBuilder {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
}

const KIND_INT: u32 = 1;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;

impl BtfBuilder {
    fn new() -> Self {
        Self { strings: vec![0], ..Default::default() }
    }

    fn string(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    fn words(&mut self, words: &[u32]) {
        for w in words {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Appends a type header (`name_off`, `info`, `size_or_type`) and returns the new type id.
    fn header(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
        let name_off = if name.is_empty() { 0 } else { self.string(name) };
        self.words(&[name_off, (kind << 24) | vlen, size_or_type]);
        self.count += 1;
        self.count
    }

    /// A signed 32-bit int.
    fn int(&mut self) -> u32 {
        let id = self.header("int", KIND_INT, 0, 4);
        self.words(&[(1 << 24) | 32]);
        id
    }

    /// Little-endian blob: 24-byte header, types, strings.
    fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.types.len() + self.strings.len());
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, self.types.len() as u32, self.types.len() as u32, self.strings.len() as u32] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

fn load_btf(blob: &[u8]) -> Result<OwnedFd, ProbeError> {
    let mut log = vec![0u8; LOG_SIZE];
    let mut attr = BtfLoadAttr {
        btf: blob.as_ptr() as u64,
        btf_size: blob.len() as u32,
        btf_log_buf: log.as_mut_ptr() as u64,
        btf_log_size: log.len() as u32,
        btf_log_level: 1,
        _pad: 0,
    };
    match sys_bpf(BPF_BTF_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(source) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let log = String::from_utf8_lossy(&log[..end]).into_owned();
            Err(ProbeError::Sys { what: "btf load".into(), source, log })
        }
    }
}

/// BTF objects in the kernel, 4.18: a blob with a single `int`.
fn probe_btf() -> ProbeResult {
    let mut b = BtfBuilder::new();
    b.int();
    load_btf(&b.finish()).map(drop)
}

/// BTF func info, 5.0: `int f(void)` in BTF (FUNC_PROTO + FUNC) and a program whose
/// `bpf_func_info` names it.
fn probe_btf_func_info() -> ProbeResult {
    let mut b = BtfBuilder::new();
    let int = b.int();
    let proto = b.header("", KIND_FUNC_PROTO, 0, int);
    let func = b.header("f", KIND_FUNC, 0, proto);
    let btf = load_btf(&b.finish())?;
    let func_info = [[0u32, func]];
    let spec =
        ProgSpec { prog_type: PROG_SOCKET_FILTER, btf_fd: Some(&btf), func_info: &func_info, ..Default::default() };
    load_prog(&spec, &RETURN_0).map(drop)
}

/// BTF VAR and DATASEC kinds, 5.2: what `.data`/`.rodata`/`.bss` carry in CO-RE objects.
fn probe_btf_datasec() -> ProbeResult {
    let mut b = BtfBuilder::new();
    let int = b.int();
    let var = b.header("a", KIND_VAR, 0, int);
    b.words(&[1]); // linkage: global allocated
    b.header(".data", KIND_DATASEC, 1, 4);
    b.words(&[var, 0, 4]); // btf_var_secinfo: type, offset, size
    load_btf(&b.finish()).map(drop)
}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// `/sys/kernel/btf/vmlinux`, 5.4: the file is the feature (CONFIG_DEBUG_INFO_BTF); a missing
/// file is the kernel's "no".
fn probe_vmlinux_btf() -> ProbeResult {
    match std::fs::metadata(VMLINUX_BTF) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(ProbeError::Unsupported(format!("{VMLINUX_BTF} does not exist")))
        }
        Err(source) => Err(ProbeError::File { path: VMLINUX_BTF.into(), source }),
    }
}

/// The id of the vmlinux BTF type called `name` whose kind `want` accepts. The file is read and
/// scanned per call, not parsed and kept: the loader holds the kernel's BTF already, and a second
/// parsed copy kept for a handful of ids was the largest part of its peak memory.
fn vmlinux_type_id(name: &str, want: fn(u32) -> bool) -> Result<u32, ProbeError> {
    // Missing is the kernel's "no"; unreadable (EACCES, EIO) is an error, not an absence.
    let data = std::fs::read(VMLINUX_BTF).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ProbeError::Unsupported(format!("{VMLINUX_BTF} does not exist")),
        _ => ProbeError::File { path: VMLINUX_BTF.into(), source },
    })?;
    match crate::btf::find_type_id(&data, name, want) {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(ProbeError::Unsupported(format!("vmlinux btf has no {name}"))),
        Err(e) => Err(ProbeError::Btf(e)),
    }
}

fn is_func(kind: u32) -> bool {
    kind == KIND_FUNC
}

fn is_alias(kind: u32) -> bool {
    use crate::btf::kind::*;
    matches!(kind, TYPEDEF | VOLATILE | CONST | RESTRICT | TYPE_TAG)
}

/// Attaches a BTF-attached tracing program the 5.5 way: `BPF_RAW_TRACEPOINT_OPEN` with no name.
fn attach_btf_program(prog: &OwnedFd) -> ProbeResult {
    let mut attr = RawTpOpenAttr { name: 0, prog_fd: prog.as_raw_fd() as u32, _pad: 0 };
    sys_bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr, "attach").map(drop)
}

/// Not `is_program_supported(Tracing)`: aya's probe takes the verifier's "Tracing programs must
/// provide btf_id" for "supported", which is also its answer when `/sys/kernel/btf/vmlinux` is
/// missing, where no fentry program can load; and it attaches `bpf_fentry_test1`, not a hook of
/// ours. The same holds for tp_btf and the LSM below.
///
/// fentry, 5.5: load a `BPF_PROG_TYPE_TRACING` program with `BPF_TRACE_FENTRY` on `tcp_connect`
/// and attach it (the spec: the feature can exist in the kernel and still be refused).
///
/// On the development machine (6.18 firecracker guest, `CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y`)
/// the load fails with EPERM as root and an empty verifier log, i.e. it is refused before the
/// verifier runs, while tp_btf (the same program type, no trampoline) loads; even reading
/// tracefs' `available_filter_functions` is EPERM there. The kernel has fentry and the sandbox
/// forbids it, so this is [`FeatureStatus::Error`], not absent. A kernel without trampolines
/// answers ENOTSUPP (absent).
fn probe_fentry() -> ProbeResult {
    let id = vmlinux_type_id("tcp_connect", is_func)?;
    let spec = ProgSpec {
        prog_type: PROG_TRACING,
        expected_attach_type: ATTACH_TRACE_FENTRY,
        attach_btf_id: id,
        ..Default::default()
    };
    let prog = load_prog(&spec, &RETURN_0)?;
    attach_btf_program(&prog)
}

/// tp_btf, 5.5: a `BPF_TRACE_RAW_TP` tracing program on `btf_trace_sched_process_fork`.
fn probe_tp_btf() -> ProbeResult {
    let id = vmlinux_type_id("btf_trace_sched_process_fork", is_alias)?;
    let spec = ProgSpec {
        prog_type: PROG_TRACING,
        expected_attach_type: ATTACH_TRACE_RAW_TP,
        attach_btf_id: id,
        ..Default::default()
    };
    let prog = load_prog(&spec, &RETURN_0)?;
    attach_btf_program(&prog)
}

const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// BPF LSM, 5.7 (ours, not `is_program_supported(Lsm)`: see fentry above; aya's probe also
/// attaches to the `bpf` hook for a moment): the kernel must have CONFIG_BPF_LSM (the `bpf_lsm_file_open` hook in BTF and
/// the program type loads) and `bpf` among the active LSMs. Without the LSM enabled an attach
/// succeeds but the hook never runs, so the list is read; when securityfs is not mounted the
/// answer is unknown and reported as an error.
fn probe_lsm() -> ProbeResult {
    let id = vmlinux_type_id("bpf_lsm_file_open", is_func)?;
    let spec =
        ProgSpec { prog_type: PROG_LSM, expected_attach_type: ATTACH_LSM_MAC, attach_btf_id: id, ..Default::default() };
    load_prog(&spec, &RETURN_0)?;
    let list = std::fs::read_to_string(LSM_LIST)
        .map_err(|source| ProbeError::File { path: format!("{LSM_LIST} (securityfs not mounted?)"), source })?;
    if list.trim().split(',').any(|lsm| lsm == "bpf") {
        Ok(())
    } else {
        Err(ProbeError::Unsupported(format!("bpf is not an active lsm ({})", list.trim())))
    }
}

// ---------------------------------------------------------------------------------------------
// Attach points.

/// Raw tracepoints, 4.17: load a raw_tp program and open `sched_process_fork` with it. Ours, not
/// `is_program_supported(RawTracePoint)`, which only loads: the attach is the feature.
fn probe_raw_tracepoint() -> ProbeResult {
    let prog = load_simple(PROG_RAW_TRACEPOINT, &RETURN_0)?;
    let name = c"sched_process_fork";
    let mut attr = RawTpOpenAttr { name: name.as_ptr() as u64, prog_fd: prog.as_raw_fd() as u32, _pad: 0 };
    sys_bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr, "raw tracepoint open").map(drop)
}

/// bpf_link, 5.7 (aya has no public probe for it): `BPF_LINK_CREATE` of a cgroup_skb program on a bad cgroup fd. A kernel with
/// the command gets as far as the target and answers EBADF; an older one rejects the unknown
/// command with EINVAL. Nothing is attached.
fn probe_bpf_link() -> ProbeResult {
    let prog = load_simple(PROG_CGROUP_SKB, &[mov64_imm(0, 1), EXIT])?;
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: u32::MAX,
        attach_type: ATTACH_CGROUP_INET_INGRESS,
        ..Default::default()
    };
    match sys_bpf(BPF_LINK_CREATE, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(()),
        Ok(fd) => {
            // SAFETY: an fd we did not expect, but ours to close.
            drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            Ok(())
        }
        Err(e) => Err(sys_err("link create", e)),
    }
}

/// XDP, 4.8: an XDP program loads ([`aya::sys::is_program_supported`]).
fn probe_xdp() -> ProbeResult {
    aya_answer("program type Xdp".to_owned(), aya::sys::is_program_supported(ProgramType::Xdp), program_io_error)
}

/// Generic (skb) XDP, 4.12 (aya has no probe for an attach mode): attach an XDP_PASS program with `XDP_FLAGS_SKB_MODE` over rtnetlink
/// (works on every XDP kernel, unlike an XDP bpf_link) to `lo` of a private network namespace,
/// made in a short-lived thread, so no interface of the host is touched.
fn probe_generic_xdp() -> ProbeResult {
    let prog = load_simple(PROG_XDP, &RETURN_XDP_PASS)?;
    let fd = prog.as_raw_fd();
    std::thread::scope(|s| s.spawn(move || attach_generic_xdp_in_new_netns(fd)).join())
        .unwrap_or_else(|_| Err(ProbeError::Unsupported("probe thread panicked".into())))
}

fn attach_generic_xdp_in_new_netns(prog_fd: i32) -> ProbeResult {
    // SAFETY: unshare only changes this thread's namespaces; the thread ends right after.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(sys_err("unshare network namespace", std::io::Error::last_os_error()));
    }
    netlink_set_xdp(1, prog_fd, XDP_FLAGS_SKB_MODE)
}

const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

/// `RTM_SETLINK` with `IFLA_XDP { FD, FLAGS }` on `ifindex`; returns the kernel's ack. Built
/// with netlink-packet-route (which carries both attributes) and sent over netlink-sys.
fn netlink_set_xdp(ifindex: u32, prog_fd: i32, flags: u32) -> ProbeResult {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use netlink_packet_route::{
        link::{LinkAttribute, LinkMessage, LinkXdp},
        RouteNetlinkMessage,
    };
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes.push(LinkAttribute::Xdp(vec![LinkXdp::Fd(prog_fd), LinkXdp::Flags(flags)]));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);

    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| sys_err("netlink socket", e))?;
    socket.bind_auto().map_err(|e| sys_err("netlink bind", e))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(|e| sys_err("netlink connect", e))?;
    socket.send(&buf, 0).map_err(|e| sys_err("netlink send", e))?;
    let (reply, _) = socket.recv_from_full().map_err(|e| sys_err("netlink recv", e))?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| ProbeError::Unsupported(format!("netlink: reply does not decode: {e}")))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
        NetlinkPayload::Error(e) => Err(sys_err("xdp attach (skb mode)", e.to_io())),
        other => Err(ProbeError::Unsupported(format!("netlink: unexpected reply {other:?}"))),
    }
}

/// kprobe_multi, 5.18: a kprobe program with expected attach type `BPF_TRACE_KPROBE_MULTI`,
/// linked to one symbol. Kernels built without fprobe answer EOPNOTSUPP.
fn probe_kprobe_multi() -> ProbeResult {
    let spec =
        ProgSpec { prog_type: PROG_KPROBE, expected_attach_type: ATTACH_TRACE_KPROBE_MULTI, ..Default::default() };
    let prog = load_prog(&spec, &RETURN_0)?;
    let sym = c"tcp_connect";
    let syms = [sym.as_ptr() as u64];
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        attach_type: ATTACH_TRACE_KPROBE_MULTI,
        multi_cnt: 1,
        multi_syms: syms.as_ptr() as u64,
        ..Default::default()
    };
    sys_bpf_fd(BPF_LINK_CREATE, &mut attr, "kprobe_multi link").map(drop)
}

const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";
const KPROBE_EVENTS: [&str; 2] = ["/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"];

/// kprobes (CONFIG_KPROBES): a kprobe perf event opened through the kprobe PMU (4.17), or, for
/// older kernels, tracefs' `kprobe_events`, which aya falls back to. Neither file means the
/// kernel has no kprobes (this is not an errno answer, but the kernel's own, by absence).
fn probe_kprobe() -> ProbeResult {
    match std::fs::read_to_string(KPROBE_PMU_TYPE) {
        Ok(text) => {
            let pmu: u32 = text.trim().parse().map_err(|_| ProbeError::File {
                path: KPROBE_PMU_TYPE.into(),
                source: std::io::ErrorKind::InvalidData.into(),
            })?;
            open_kprobe_event(pmu, c"tcp_connect")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if KPROBE_EVENTS.iter().any(|p| std::path::Path::new(p).exists()) {
                Ok(())
            } else {
                Err(ProbeError::Unsupported(
                    "no kprobe pmu and no kprobe_events in tracefs (CONFIG_KPROBES off?)".into(),
                ))
            }
        }
        Err(source) => Err(ProbeError::File { path: KPROBE_PMU_TYPE.into(), source }),
    }
}

const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `perf_event_open` of a kprobe on `func` through the kprobe PMU (`config1` = function name).
fn open_kprobe_event(pmu: u32, func: &std::ffi::CStr) -> ProbeResult {
    // struct perf_event_attr, PERF_ATTR_SIZE_VER1 (72 bytes): type, size, config, ..., config1
    // at byte 56, config2 (probe offset) at byte 64.
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&pmu.to_ne_bytes());
    attr[4..8].copy_from_slice(&72u32.to_ne_bytes());
    attr[56..64].copy_from_slice(&(func.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a valid perf_event_attr of the size it declares; func outlives the call.
    let fd =
        unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), -1i32, 0i32, -1i32, PERF_FLAG_FD_CLOEXEC) };
    if fd < 0 {
        return Err(sys_err("perf_event_open kprobe", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

/// Module BTF, 5.11. A BTF file besides `vmlinux` in `/sys/kernel/btf` settles it. Without one
/// (no modules loaded, `nomodule`, or `CONFIG_MODULES` off as on the development machine), the
/// kernel's BTF objects are asked for their name: the `name`/`kernel_btf` fields of
/// `bpf_btf_info` came with module BTF, and an older kernel refuses the longer info struct with
/// E2BIG. "Present" thus means "this kernel can expose module BTF", not "a module has BTF now".
fn probe_module_btf() -> ProbeResult {
    let dir = "/sys/kernel/btf";
    let entries = std::fs::read_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ProbeError::Unsupported(format!("{dir} does not exist")),
        _ => ProbeError::File { path: dir.into(), source },
    })?;
    if entries.flatten().any(|e| e.file_name() != "vmlinux") {
        return Ok(());
    }
    let mut id = 0u32;
    loop {
        let mut next = IdAttr { id, next_id: 0 };
        sys_bpf(BPF_BTF_GET_NEXT_ID, &mut next).map_err(|e| sys_err("btf get next id", e))?;
        id = next.next_id;
        let mut by_id = IdAttr { id, next_id: 0 };
        let fd = match sys_bpf_fd(BPF_BTF_GET_FD_BY_ID, &mut by_id, "btf get fd by id") {
            Ok(fd) => fd,
            // Freed between the two calls.
            Err(ProbeError::Sys { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let mut name = [0u8; 64];
        let mut info = BtfInfo { name: name.as_mut_ptr() as u64, name_len: name.len() as u32, ..Default::default() };
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<BtfInfo>() as u32,
            info: &mut info as *mut BtfInfo as u64,
        };
        sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|e| sys_err("btf info with name", e))?;
        if info.kernel_btf != 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{Btf, Type};

    #[test]
    fn every_probe_decides_a_feature_of_the_table() {
        for p in PROBES {
            assert!(gates::gate(p.gate).is_some(), "probe {} has no entry in tapio_kernel_gates::GATES", p.gate);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = names().collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn classify_separates_no_from_refusal() {
        let sys = |errno, log: &str| ProbeError::Sys {
            what: "x".into(),
            source: std::io::Error::from_raw_os_error(errno),
            log: log.into(),
        };
        assert!(matches!(classify(Err(sys(libc::EINVAL, ""))), FeatureStatus::Absent { .. }));
        assert!(matches!(classify(Err(sys(ENOTSUPP, ""))), FeatureStatus::Absent { .. }));
        assert!(matches!(classify(Err(sys(libc::EACCES, "invalid func unknown#181"))), FeatureStatus::Absent { .. }));
        assert!(matches!(classify(Err(sys(libc::EPERM, ""))), FeatureStatus::Error { errno: libc::EPERM, .. }));
        assert!(matches!(classify(Err(sys(libc::EACCES, ""))), FeatureStatus::Error { errno: libc::EACCES, .. }));
    }

    /// A helper id no kernel has must come out absent, by the verifier's words, not by errno.
    #[test]
    fn unknown_helper_is_absent() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP unknown_helper_is_absent: needs root");
            return;
        }
        // One past the last helper id: the kernel stopped adding helpers (kfuncs took over), so
        // none has it.
        let err = probe_helper(ProgramType::TracePoint, BpfHelper::__BPF_FUNC_MAX_ID).expect_err("no kernel has this helper");
        assert!(matches!(err, ProbeError::Unsupported(_)), "{err}");
        assert!(matches!(classify(Err(err)), FeatureStatus::Absent { .. }));
    }

    /// The size of each attribute struct is the sum of its fields: no padding byte is left
    /// undefined for the kernel's zero check to trip on (see the note above `BtfLoadAttr`).
    #[test]
    fn attrs_have_no_implicit_padding() {
        macro_rules! no_padding {
            ($t:ident { $($f:ident),* $(,)? }) => {{
                let v = $t::default();
                let fields = 0 $(+ std::mem::size_of_val(&v.$f))*;
                assert_eq!(std::mem::size_of::<$t>(), fields, "{} has implicit padding", stringify!($t));
            }};
        }
        no_padding!(MapCreateAttr { map_type, key_size, value_size, max_entries, map_flags });
        no_padding!(MapUpdateAttr { map_fd, _pad, key, value, flags });
        no_padding!(ProgLoadAttr {
            prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name,
            prog_ifindex, expected_attach_type, prog_btf_fd, func_info_rec_size, func_info, func_info_cnt,
            line_info_rec_size, line_info, line_info_cnt, attach_btf_id,
        });
        no_padding!(BtfLoadAttr { btf, btf_log_buf, btf_size, btf_log_size, btf_log_level, _pad });
        no_padding!(RawTpOpenAttr { name, prog_fd, _pad });
        no_padding!(LinkCreateAttr {
            prog_fd, target_fd, attach_type, flags, multi_flags, multi_cnt, multi_syms, multi_addrs, multi_cookies,
        });
        no_padding!(IdAttr { id, next_id });
        no_padding!(InfoAttr { bpf_fd, info_len, info });
    }

    /// The kernel's netlink answer comes back as its errno: a file that is no BPF program is
    /// refused (EINVAL), in a private network namespace so no interface of the host is touched.
    #[test]
    fn netlink_set_xdp_returns_the_kernels_errno() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP netlink_set_xdp_returns_the_kernels_errno: needs root");
            return;
        }
        let not_a_program = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = not_a_program.as_raw_fd();
        let result = std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: unshare only changes this thread's namespaces; the thread ends right after.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", std::io::Error::last_os_error());
                netlink_set_xdp(1, fd, XDP_FLAGS_SKB_MODE)
            })
            .join()
            .expect("probe thread")
        });
        let err = result.expect_err("/dev/null is no XDP program");
        let ProbeError::Sys { ref source, .. } = err else { panic!("{err}") };
        assert!(matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EBADF)), "{err}");
    }

    #[test]
    fn btf_blob_header_is_consistent() {
        let mut b = BtfBuilder::new();
        b.int();
        let blob = b.finish();
        let parsed = Btf::parse(&blob).expect("our own blob parses");
        assert_eq!(parsed.len(), 1);
        assert!(matches!(parsed.type_by_id(1), Ok(Type::Int { size: 4, .. })));
    }

    #[test]
    fn text_table_aligns() {
        let features = [
            Feature { name: "a", since: "5.8", status: FeatureStatus::Present },
            Feature { name: "longer name", since: "4.3", status: FeatureStatus::Absent { reason: "no".into() } },
        ];
        let text = render_text(&features);
        let since_col: Vec<_> = text.lines().map(|l| l.find(['5', '4', 'S']).unwrap()).collect();
        assert_eq!(since_col, [13, 13, 13], "{text}");
    }
}
