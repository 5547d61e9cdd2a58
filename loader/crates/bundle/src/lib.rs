//! The embedded objects: every monitor compiled twice (ring buffer and perf buffer transport).
//!
//! `tapio-load` is one self-contained binary; the objects built by `build.rs` are included at
//! compile time, aligned so the ELF parser can read them in place.
//!
//! The objects are built per architecture ([`Arch`]): [`OBJECTS`] is the bundle of the
//! architecture this crate is compiled for, so an aarch64 agent carries arm64 objects. With the
//! `all-arches` feature the other architectures' bundles are embedded too ([`objects_for`]), so
//! `tapio-load inspect --arch arm64` and `lint --arch arm64` work on an x86_64 machine; an agent
//! on a node does without them.
//!
//! tapio-bundle owns the build of `probes/` (`build.rs`) and the objects it makes: [`OBJECTS`],
//! [`object`], [`objects_for`], the `FIXTURE_*` test objects and [`Transport`]; its objects are
//! keyed by tapio-kernel-gates' [`Arch`]. It is data: it may import tapio-kernel-gates (for
//! [`Arch`] alone) and may not import aya, aya-obj, object, tokio, anyhow or any other tapio
//! crate. The rules live in one table, `loader/tests/crate_rules.rs`; docs/architecture.md draws
//! the picture.

use std::fmt;

use serde::Serialize;
/// The architectures the probes are built for (`build.rs`'s `ARCHES`): tapio-kernel-gates' one
/// [`Arch`] type, re-exported because every function here takes or returns one.
///
/// The objects differ by architecture only where a program reads registers (kprobes and the raw
/// `sys_enter` tracepoint): bpf_tracing.h names them per `__TARGET_ARCH_*`, and the register frame
/// in `probes/include/vmlinux.h` is the architecture's own. Each object also carries its
/// architecture's name ([`Arch::name`]) in an ELF note, which `tapio-object`'s `arch` module reads.
pub use tapio_kernel_gates::Arch;

/// How a monitor's records reach user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `BPF_MAP_TYPE_RINGBUF`, Linux 5.8+: shared, ordered, no per-CPU buffers.
    Ringbuf,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`, Linux 4.4+: one buffer per CPU.
    Perf,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ringbuf => "ringbuf",
            Self::Perf => "perf",
        })
    }
}

/// One compiled object embedded in the binary.
#[derive(Debug)]
pub struct EmbeddedObject {
    /// The monitor's snake_case name, shared by its header, `.bpf.c` and Rust module.
    pub monitor: &'static str,
    pub transport: Transport,
    /// The architecture it was built for.
    pub arch: Arch,
    /// The object's file name, as `inspect` shows it.
    pub file: &'static str,
    pub bytes: &'static [u8],
}

/// `include_bytes!` aligned to 16 bytes, so the ELF parser can read the object in place (what
/// `aya::include_bytes_aligned!` does; here so the bundle needs no aya).
macro_rules! include_bytes_aligned {
    ($path:expr) => {{
        #[repr(C)]
        struct Aligned<B: ?Sized> {
            _align: [u128; 0],
            bytes: B,
        }
        const ALIGNED: &Aligned<[u8]> = &Aligned { _align: [], bytes: *include_bytes!($path) };
        &ALIGNED.bytes
    }};
}

macro_rules! embed {
    ($arch:expr, $dir:literal, $monitor:literal, $transport:expr, $file:literal) => {
        EmbeddedObject {
            monitor: $monitor,
            transport: $transport,
            arch: $arch,
            file: $file,
            bytes: include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $dir, "/", $file)),
        }
    };
}

/// Every object of one architecture's bundle; `$dir` is its directory under `OUT_DIR`, named as
/// [`Arch::name`] (build.rs writes each architecture's objects there).
macro_rules! bundle {
    ($arch:expr, $dir:literal) => {
        &[
            embed!($arch, $dir, "process", Transport::Ringbuf, "process.bpf.o"),
            embed!($arch, $dir, "process", Transport::Perf, "process.perf.bpf.o"),
            embed!($arch, $dir, "dns", Transport::Ringbuf, "dns.bpf.o"),
            embed!($arch, $dir, "dns", Transport::Perf, "dns.perf.bpf.o"),
            embed!($arch, $dir, "network", Transport::Ringbuf, "network.bpf.o"),
            embed!($arch, $dir, "network", Transport::Perf, "network.perf.bpf.o"),
            embed!($arch, $dir, "kernel", Transport::Ringbuf, "kernel.bpf.o"),
            embed!($arch, $dir, "kernel", Transport::Perf, "kernel.perf.bpf.o"),
            embed!($arch, $dir, "security", Transport::Ringbuf, "security.bpf.o"),
            embed!($arch, $dir, "security", Transport::Perf, "security.perf.bpf.o"),
            // No events map: both builds are the same program (see probes/xdp_filter.bpf.c).
            embed!($arch, $dir, "xdp_filter", Transport::Ringbuf, "xdp_filter.bpf.o"),
            embed!($arch, $dir, "xdp_filter", Transport::Perf, "xdp_filter.perf.bpf.o"),
            // Not a monitor: feeds container attribution (crate::attribution), loaded by `run`
            // beside the monitors asked for.
            embed!($arch, $dir, "cgroup_watch", Transport::Ringbuf, "cgroup_watch.bpf.o"),
            embed!($arch, $dir, "cgroup_watch", Transport::Perf, "cgroup_watch.perf.bpf.o"),
            embed!($arch, $dir, "advanced", Transport::Ringbuf, "advanced.bpf.o"),
            embed!($arch, $dir, "advanced", Transport::Perf, "advanced.perf.bpf.o"),
            // advanced with a bloom-filter pre-filter (5.16+): after the hash build so `object()`
            // returns the build every kernel can create; monitors::advanced::object picks this
            // one where it can.
            embed!($arch, $dir, "advanced", Transport::Ringbuf, "advanced.bloom.bpf.o"),
        ]
    };
}

#[cfg(any(target_arch = "x86_64", feature = "all-arches"))]
static X86_64_OBJECTS: &[EmbeddedObject] = bundle!(Arch::X86_64, "x86_64");
#[cfg(any(target_arch = "aarch64", feature = "all-arches"))]
static ARM64_OBJECTS: &[EmbeddedObject] = bundle!(Arch::Arm64, "arm64");

/// Every object in the bundle of the architecture this crate is compiled for.
#[cfg(target_arch = "x86_64")]
pub static OBJECTS: &[EmbeddedObject] = X86_64_OBJECTS;
/// Every object in the bundle of the architecture this crate is compiled for.
#[cfg(target_arch = "aarch64")]
pub static OBJECTS: &[EmbeddedObject] = ARM64_OBJECTS;

/// The bundle of `arch`: always there for [`Arch::TARGET`], for the others only when this crate
/// is built with the `all-arches` feature (None otherwise).
pub fn objects_for(arch: Arch) -> Option<&'static [EmbeddedObject]> {
    match arch {
        #[cfg(any(target_arch = "x86_64", feature = "all-arches"))]
        Arch::X86_64 => Some(X86_64_OBJECTS),
        #[cfg(any(target_arch = "aarch64", feature = "all-arches"))]
        Arch::Arm64 => Some(ARM64_OBJECTS),
        #[allow(unreachable_patterns, reason = "with all-arches every architecture has its arm above")]
        _ => None,
    }
}

/// The names of the monitors in the bundle, in a stable order.
pub fn monitor_names() -> Vec<&'static str> {
    let mut names: Vec<_> = OBJECTS.iter().map(|o| o.monitor).collect();
    names.dedup();
    names
}

/// The object of `monitor` built for `transport`.
pub fn object(monitor: &str, transport: Transport) -> Option<&'static EmbeddedObject> {
    OBJECTS.iter().find(|o| o.monitor == monitor && o.transport == transport)
}

/// The `OUT_DIR` directory of [`Arch::TARGET`]'s objects, as a literal for `concat!`.
#[cfg(target_arch = "x86_64")]
macro_rules! target_dir {
    () => {
        "x86_64"
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! target_dir {
    () => {
        "arm64"
    };
}

/// A fixture the verifier must reject (probes/fixtures/rejected.bpf.c): the verifier matrix
/// loads it on request to prove rejections are reported with the log and the run goes on.
pub static FIXTURE_REJECTED: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", target_dir!(), "/fixture_rejected.bpf.o"));

/// The synthetic producer of `benches/ring_decode.rs` (probes/fixtures/bench_producer.bpf.c): an
/// XDP program that, under `BPF_PROG_TEST_RUN`, fills a ring buffer with process records, so the
/// drain and decode path can be measured through the real ring. Not a monitor, not in [`OBJECTS`].
pub static FIXTURE_BENCH_PRODUCER: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", target_dir!(), "/fixture_bench_producer.bpf.o"));

/// [`FIXTURE_BENCH_PRODUCER`] built with `-DTAPIO_PERF`: the same records through a perf event
/// array, for the delivery benchmark's perf figures (`benches/delivery.rs`).
pub static FIXTURE_BENCH_PRODUCER_PERF: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", target_dir!(), "/fixture_bench_producer_perf.bpf.o"));

#[cfg(test)]
mod tests {
    use super::*;

    /// The default bundle is the target's, and every object in it says so in its note (the
    /// owner, padded to 4 bytes, then the architecture's name: build.rs's `arch_note`).
    #[test]
    fn the_default_bundle_is_the_targets_and_says_so() {
        let own = objects_for(Arch::TARGET).expect("the target's bundle is always embedded");
        assert!(std::ptr::eq(own, OBJECTS));
        assert_eq!(Arch::this(), Some(Arch::TARGET));
        for o in OBJECTS {
            assert_eq!(o.arch, Arch::TARGET, "{}", o.file);
            let note: Vec<u8> = [&b"tapio\0\0\0"[..], Arch::TARGET.name().as_bytes(), b"\0"].concat();
            assert!(o.bytes.windows(note.len()).any(|w| w == note), "{}: no {} note", o.file, Arch::TARGET);
        }
    }
}
