//! The embedded objects: every monitor compiled twice (ring buffer and perf buffer transport).
//!
//! `tapio-load` is one self-contained binary; the objects built by `build.rs` are included at
//! compile time, aligned so the ELF parser can read them in place.
//!
//! tapio-bundle owns the build of `probes/` (`build.rs`) and the objects it makes: [`OBJECTS`],
//! [`object`], the `FIXTURE_*` test objects and [`Transport`]. It is data: it may not import aya,
//! aya-obj, object, tokio, anyhow or any other tapio crate. The rules live in one table,
//! `loader/tests/crate_rules.rs`; docs/architecture.md draws the picture.

use std::fmt;

use serde::Serialize;

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
    ($monitor:literal, $transport:expr, $file:literal) => {
        EmbeddedObject {
            monitor: $monitor,
            transport: $transport,
            file: $file,
            bytes: include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $file)),
        }
    };
}

/// Every object in the bundle.
pub static OBJECTS: &[EmbeddedObject] = &[
    embed!("process", Transport::Ringbuf, "process.bpf.o"),
    embed!("process", Transport::Perf, "process.perf.bpf.o"),
    embed!("dns", Transport::Ringbuf, "dns.bpf.o"),
    embed!("dns", Transport::Perf, "dns.perf.bpf.o"),
    embed!("network", Transport::Ringbuf, "network.bpf.o"),
    embed!("network", Transport::Perf, "network.perf.bpf.o"),
    embed!("kernel", Transport::Ringbuf, "kernel.bpf.o"),
    embed!("kernel", Transport::Perf, "kernel.perf.bpf.o"),
    embed!("security", Transport::Ringbuf, "security.bpf.o"),
    embed!("security", Transport::Perf, "security.perf.bpf.o"),
    // No events map: both builds are the same program (see probes/xdp_filter.bpf.c).
    embed!("xdp_filter", Transport::Ringbuf, "xdp_filter.bpf.o"),
    embed!("xdp_filter", Transport::Perf, "xdp_filter.perf.bpf.o"),
    // Not a monitor: feeds container attribution (crate::attribution), loaded by `run` beside the
    // monitors asked for.
    embed!("cgroup_watch", Transport::Ringbuf, "cgroup_watch.bpf.o"),
    embed!("cgroup_watch", Transport::Perf, "cgroup_watch.perf.bpf.o"),
    embed!("advanced", Transport::Ringbuf, "advanced.bpf.o"),
    embed!("advanced", Transport::Perf, "advanced.perf.bpf.o"),
    // advanced with a bloom-filter pre-filter (5.16+): after the hash build so `object()` returns
    // the build every kernel can create; monitors::advanced::object picks this one where it can.
    embed!("advanced", Transport::Ringbuf, "advanced.bloom.bpf.o"),
];

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

/// A fixture the verifier must reject (probes/fixtures/rejected.bpf.c): the verifier matrix
/// loads it on request to prove rejections are reported with the log and the run goes on.
pub static FIXTURE_REJECTED: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fixture_rejected.bpf.o"));

/// The synthetic producer of `benches/ring_decode.rs` (probes/fixtures/bench_producer.bpf.c): an
/// XDP program that, under `BPF_PROG_TEST_RUN`, fills a ring buffer with process records, so the
/// drain and decode path can be measured through the real ring. Not a monitor, not in [`OBJECTS`].
pub static FIXTURE_BENCH_PRODUCER: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fixture_bench_producer.bpf.o"));

/// [`FIXTURE_BENCH_PRODUCER`] built with `-DTAPIO_PERF`: the same records through a perf event
/// array, for the delivery benchmark's perf figures (`benches/delivery.rs`).
pub static FIXTURE_BENCH_PRODUCER_PERF: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fixture_bench_producer_perf.bpf.o"));
